using PciVirtio.Host.Cli;
using PciVirtio.Host.Tests.Support;

namespace PciVirtio.Host.Tests;

/// <summary>
/// <c>run --check</c>: the daemon's configuration is read and checked, and either what would
/// run is printed (exit 0) or every problem, each under its key (exit 2). Nothing starts.
/// (Environment variables are read too; the tests that set them run apart from these.)
/// </summary>
public sealed class RunCheckTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private CliResult Check(string json, params string[] more)
    {
        string config = _dir.Write("config.json", json);
        return CommandLine.Run(["run", "--config", config, "--check", .. more]);
    }

    private static void AssertProblems(CliResult r, params string[] keys)
    {
        Assert.True(r.ExitCode == PciVirtioCli.UsageError, r.ToString());
        Assert.Contains("the configuration has", r.All, StringComparison.Ordinal);
        foreach (string key in keys)
        {
            Assert.True(r.All.Contains(key, StringComparison.Ordinal), $"no problem names {key}:\n{r}");
        }
    }

    [Fact]
    public void A_valid_configuration_prints_what_would_run()
    {
        var r = Check($$"""
            {
              "PciVirtio": {
                "ControlSocket": "{{_dir.File("control.sock")}}",
                "Backends": [
                  { "Name": "vm0", "Socket": "{{_dir.File("vm0.sock")}}", "Tap": "pvt0", "Queues": 2 },
                  { "Sockets": [ "{{_dir.File("a.sock")}}", "{{_dir.File("b.sock")}}" ] },
                  { "Name": "far", "Socket": "/no/such/dir/c.sock", "Client": true }
                ],
                "Links": [
                  { "Hardware": "hw-sim:{{_dir.File("ntb.sock")}}#1", "Tap": "ntb7", "Mtu": 9000, "Address": "10.77.0.2/24" }
                ]
              }
            }
            """);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains($"configuration OK: 3 backend(s), 1 link(s), control socket {_dir.File("control.sock")}", r.Output, StringComparison.Ordinal);
        Assert.Contains($"backend vm0: {_dir.File("vm0.sock")} (server, 2 queue pair(s), TAP pvt0)", r.Output, StringComparison.Ordinal);
        Assert.Contains($"backend net1: {_dir.File("a.sock")}, {_dir.File("b.sock")} (server, 1 queue pair(s), port to port)", r.Output, StringComparison.Ordinal);
        Assert.Contains("backend far: /no/such/dir/c.sock (client, 1 queue pair(s), TAP (named by the kernel))", r.Output, StringComparison.Ordinal);
        Assert.Contains($"link ntb7: hw-sim:{_dir.File("ntb.sock")}#1 as TAP ntb7, MTU 9000, 10.77.0.2/24", r.Output, StringComparison.Ordinal);

        // Checking starts nothing: no socket appears.
        Assert.Equal(["config.json"], Directory.GetFiles(_dir.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void An_empty_control_socket_turns_it_off()
    {
        var r = Check($$"""{ "PciVirtio": { "ControlSocket": "", "Backends": [ { "Sockets": [ "{{_dir.File("a.sock")}}", "{{_dir.File("b.sock")}}" ] } ] } }""");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("control socket off", r.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void Each_problem_names_its_key()
    {
        var r = Check($$"""
            {
              "PciVirtio": {
                "ShutdownSeconds": 0,
                "Backends": [
                  { "Name": "vm0", "Socket": "{{_dir.File("vm0.sock")}}", "Queues": 0, "Mtu": 10 },
                  { "Name": "vm0", "Socket": "{{_dir.File("vm0.sock")}}", "Tap": "pvdup" },
                  { "Socket": "{{_dir.File("missing/vm2.sock")}}", "Tap": "pvdup" },
                  { "Name": "bad name", "Sockets": [ "{{_dir.File("a.sock")}}", "{{_dir.File("b.sock")}}" ], "Tap": "pvx" }
                ],
                "Links": [
                  { "Hardware": "foo", "Address": "10.77.0.300/24", "QueueSize": 100, "BufferSize": 300, "Mtu": 70000, "Queues": 0, "LingerMicroseconds": 1001 },
                  { "Name": "vm0", "Hardware": "hw-sim:/tmp/n.sock", "Address": "10.77.0.1/33", "Tap": "pvdup" }
                ]
              }
            }
            """);
        AssertProblems(r,
            "PciVirtio:ShutdownSeconds: 0",
            "PciVirtio:Backends:0:Queues: 0 is not in 1..64",
            "PciVirtio:Backends:0:Mtu: 10 is not in 68..",
            "PciVirtio:Backends:1:Name: name 'vm0' is already used by PciVirtio:Backends:0:Name",
            $"PciVirtio:Backends:1:Socket: socket '{_dir.File("vm0.sock")}' is already used by PciVirtio:Backends:0:Socket",
            $"PciVirtio:Backends:2:Socket: the directory of '{_dir.File("missing/vm2.sock")}'",
            "PciVirtio:Backends:2:Tap: TAP 'pvdup' is already used by PciVirtio:Backends:1:Tap",
            "PciVirtio:Backends:3:Tap: a TAP goes with one socket",
            "PciVirtio:Backends:3:Name: 'bad name' holds ' '",
            "PciVirtio:Links:0:Hardware: 'foo'",
            "PciVirtio:Links:0:Address: '10.77.0.300/24'",
            "PciVirtio:Links:0:QueueSize: 100",
            "PciVirtio:Links:0:BufferSize: 300",
            "PciVirtio:Links:0:Mtu: 70000",
            "PciVirtio:Links:0:Queues: 0",
            "PciVirtio:Links:0:LingerMicroseconds: 1001 is outside 0..1000",
            "PciVirtio:Links:1:Address: '10.77.0.1/33'",
            "PciVirtio:Links:1:Name: name 'vm0' is already used by PciVirtio:Backends:0:Name",
            "PciVirtio:Links:1:Tap: TAP 'pvdup' is already used by PciVirtio:Backends:1:Tap");
        Assert.Contains("the configuration has 19 problem(s)", r.All, StringComparison.Ordinal);
    }

    [Fact]
    public void A_misspelt_key_is_named_with_its_path()
    {
        var r = Check($$"""{ "PciVirtio": { "Backends": [ { "Socket": "{{_dir.File("a.sock")}}", "Queus": 2 } ] } }""");
        AssertProblems(r, "PciVirtio:Backends:0:Queus");
    }

    [Fact]
    public void A_misspelt_top_level_key_is_named()
    {
        var r = Check($$"""{ "PciVirtio": { "ControlSockt": "/tmp/x.sock", "Backends": [ { "Socket": "{{_dir.File("a.sock")}}" } ] } }""");
        AssertProblems(r, "PciVirtio:ControlSockt");
    }

    [Fact]
    public void A_value_of_the_wrong_type_is_named_with_its_key()
    {
        var r = Check($$"""{ "PciVirtio": { "Backends": [ { "Socket": "{{_dir.File("a.sock")}}", "Queues": "two" } ] } }""");
        AssertProblems(r, "PciVirtio:Backends:0:Queues");
        Assert.Contains("'two'", r.All, StringComparison.Ordinal);
    }

    [Fact]
    public void An_empty_configuration_has_nothing_to_run()
    {
        var r = Check("{}");
        AssertProblems(r, "PciVirtio: names no Backends and no Links");
    }

    [Fact]
    public void A_file_that_is_not_json_is_refused()
    {
        var r = Check("{ \"PciVirtio\": ");
        AssertProblems(r, "config.json");
    }

    [Fact]
    public void A_missing_file_is_refused_naming_it()
    {
        var r = CommandLine.Run("run", "--config", _dir.File("nowhere.json"), "--check");
        AssertProblems(r, "nowhere.json");
    }

    [Fact]
    public void A_command_line_setting_wins_over_the_file()
    {
        string json = $$"""{ "PciVirtio": { "ControlSocket": "{{_dir.File("c.sock")}}", "Backends": [ { "Name": "vm0", "Socket": "{{_dir.File("a.sock")}}", "Queues": 1 } ] } }""";
        var r = Check(json, "--PciVirtio:Backends:0:Queues=2");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("(server, 2 queue pair(s),", r.Output, StringComparison.Ordinal);

        // The same key with a bad value is checked like one from the file.
        var bad = Check(json, "--PciVirtio:Backends:0:Queues=0");
        AssertProblems(bad, "PciVirtio:Backends:0:Queues: 0 is not in 1..64");

        // A setting can add what the file lacks, its value in the next argument.
        var added = Check(json, "--PciVirtio:Backends:1:Socket", _dir.File("b.sock"), "--PciVirtio:Backends:1:Name", "vm1");
        Assert.True(added.ExitCode == 0, added.ToString());
        Assert.Contains($"backend vm1: {_dir.File("b.sock")}", added.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void A_misspelt_setting_on_the_command_line_is_named()
    {
        string json = $$"""{ "PciVirtio": { "Backends": [ { "Socket": "{{_dir.File("a.sock")}}" } ] } }""";
        var r = Check(json, "--PciVirtio:Backends:0:Queus=2");
        AssertProblems(r, "PciVirtio:Backends:0:Queus");
    }
}
