using PciVirtio.Host.Daemon;
using PciVirtio.Host.Tests.Support;

namespace PciVirtio.Host.Tests;

/// <summary><see cref="DaemonHost.LoadSettings"/> binds every field of the file.</summary>
public sealed class ConfigurationTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Every_field_of_backends_and_links_is_bound()
    {
        string config = _dir.Write("pv.json", $$"""
            {
              "Logging": { "LogLevel": { "Default": "Warning" } },
              "PciVirtio": {
                "ControlSocket": "{{_dir.File("control.sock")}}",
                "ShutdownSeconds": 2.5,
                "Backends": [
                  { "Name": "vm0", "Socket": "{{_dir.File("vm0.sock")}}", "Client": true, "Queues": 4, "Tap": "pvt0", "Mtu": 9000, "Mergeable": false, "Poll": true },
                  { "Sockets": [ "{{_dir.File("a.sock")}}", "{{_dir.File("b.sock")}}" ] }
                ],
                "Links": [
                  { "Name": "east", "Hardware": "hw-sim:{{_dir.File("ntb.sock")}}#1", "Tap": "ntb1", "Mtu": 4000, "Address": "fd00::1/64", "Queues": 2, "QueueSize": 512, "BufferSize": 8192, "Poll": true, "LingerMicroseconds": 0 },
                  { "Hardware": "vfio:0000:01:00.0" }
                ]
              }
            }
            """);
        var (settings, errors, configuration) = DaemonHost.LoadSettings(config, []);
        Assert.Empty(errors);
        Assert.NotNull(settings);
        Assert.Equal(_dir.File("control.sock"), settings.ControlSocket);
        Assert.Equal(_dir.File("control.sock"), settings.ResolvedControlSocket);
        Assert.Equal(2.5, settings.ShutdownSeconds);
        Assert.Equal("Warning", configuration["Logging:LogLevel:Default"]);

        Assert.Equal(2, settings.Backends.Count);
        var vm0 = settings.Backends[0];
        Assert.Equal("vm0", vm0.Name);
        Assert.Equal(_dir.File("vm0.sock"), vm0.Socket);
        Assert.Empty(vm0.Sockets);
        Assert.Equal([_dir.File("vm0.sock")], vm0.AllSockets);
        Assert.True(vm0.Client);
        Assert.Equal(4, vm0.Queues);
        Assert.Equal("pvt0", vm0.Tap);
        Assert.Equal(9000, vm0.Mtu);
        Assert.False(vm0.Mergeable);
        Assert.True(vm0.Poll);

        // The second takes every default.
        var pair = settings.Backends[1];
        Assert.Null(pair.Name);
        Assert.Equal("net1", SettingsValidator.BackendName(pair, 1));
        Assert.Null(pair.Socket);
        Assert.Equal([_dir.File("a.sock"), _dir.File("b.sock")], pair.AllSockets);
        Assert.False(pair.Client);
        Assert.Equal(1, pair.Queues);
        Assert.Null(pair.Tap);
        Assert.Null(pair.Mtu);
        Assert.True(pair.Mergeable);
        Assert.False(pair.Poll);

        Assert.Equal(2, settings.Links.Count);
        var east = settings.Links[0];
        Assert.Equal("east", east.Name);
        Assert.Equal($"hw-sim:{_dir.File("ntb.sock")}#1", east.Hardware);
        Assert.Equal("ntb1", east.Tap);
        Assert.Equal(4000, east.Mtu);
        Assert.Equal("fd00::1/64", east.Address);
        Assert.Equal(2, east.Queues);
        Assert.Equal(512, east.QueueSize);
        Assert.Equal(8192, east.BufferSize);
        Assert.True(east.Poll);
        Assert.Equal(0, east.LingerMicroseconds);

        var plain = settings.Links[1];
        Assert.Null(plain.Name);
        Assert.Equal("link1", SettingsValidator.LinkName(plain, 1));
        Assert.Equal("vfio:0000:01:00.0", plain.Hardware);
        Assert.Null(plain.Tap);
        Assert.Equal(1500, plain.Mtu);
        Assert.Null(plain.Address);
        Assert.Equal(1, plain.Queues);
        Assert.Equal(4096, plain.QueueSize); // LinkParameters' defaults
        Assert.Equal(2048, plain.BufferSize);
        Assert.False(plain.Poll);
        Assert.Equal(20, plain.LingerMicroseconds);
    }

    [Fact]
    public void Overrides_are_bound_after_the_file()
    {
        string config = _dir.Write("pv.json", $$"""{ "PciVirtio": { "ControlSocket": "", "Backends": [ { "Socket": "{{_dir.File("a.sock")}}", "Queues": 1 } ] } }""");
        var (settings, errors, _) = DaemonHost.LoadSettings(config, ["--PciVirtio:Backends:0:Queues=8", "--PciVirtio:Backends:0:Name", "vmx"]);
        Assert.Empty(errors);
        Assert.Equal(8, settings!.Backends[0].Queues);
        Assert.Equal("vmx", settings.Backends[0].Name);
        Assert.Equal("", settings.ControlSocket);
    }

    [Fact]
    public void Errors_come_without_settings()
    {
        string config = _dir.Write("pv.json", $$"""{ "PciVirtio": { "Backends": [ { "Socket": "{{_dir.File("a.sock")}}", "Queues": 0 } ] } }""");
        var (settings, errors, _) = DaemonHost.LoadSettings(config, []);
        Assert.Null(settings);
        Assert.Equal(["PciVirtio:Backends:0:Queues: 0 is not in 1..64"], errors);
    }

    [Fact]
    public void The_default_control_socket_is_roots_or_the_users()
    {
        var settings = new DaemonSettings();
        Assert.Null(settings.ControlSocket);
        Assert.Equal(DaemonSettings.DefaultControlSocket, settings.ResolvedControlSocket);
        if (Environment.IsPrivilegedProcess)
        {
            Assert.Equal("/run/pcivirtio/control.sock", settings.ResolvedControlSocket);
        }
        else
        {
            Assert.EndsWith("/control.sock", settings.ResolvedControlSocket, StringComparison.Ordinal);
        }
    }
}
