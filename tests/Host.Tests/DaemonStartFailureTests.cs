using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using PciVirtio.Host.Daemon;
using PciVirtio.Host.Tests.Support;

namespace PciVirtio.Host.Tests;

/// <summary>
/// Start is all or nothing: when one device cannot start, StartAsync throws and what had
/// started is stopped again (its sockets removed, its thread ended); sockets that belong to
/// someone else are left alone.
/// </summary>
public sealed class DaemonStartFailureTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly RecordingLoggerProvider _logs = new();
    private readonly string _first = TestDaemon.UniqueName();
    private readonly string _second = TestDaemon.UniqueName();

    public void Dispose() => _dir.Dispose();

    private string Config(string secondBackend, string? control = null) => $$"""
        {
          "PciVirtio": {
            "ControlSocket": "{{control ?? _dir.File("control.sock")}}",
            "Backends": [
              { "Name": "{{_first}}", "Sockets": [ "{{_dir.File("a.sock")}}", "{{_dir.File("b.sock")}}" ] },
              {{secondBackend}}
            ]
          }
        }
        """;

    /// <summary>No device runs once StartAsync has thrown; the control socket (which may
    /// have started before the devices failed) is gone once the host is disposed, as
    /// <c>pcivirtio run</c> does right after.</summary>
    private void AssertNothingRuns(IHost host)
    {
        foreach (string socket in new[] { "a.sock", "b.sock", "c.sock", "d.sock" })
        {
            Assert.False(File.Exists(_dir.File(socket)), $"{socket} is left behind");
        }

        Assert.Empty(host.Services.GetRequiredService<RunningDevices>().Backends);
        Assert.True(TestDaemon.WaitUntil(() => TestDaemon.ThreadsNamed($"vhost-{_first}") + TestDaemon.ThreadsNamed($"vhost-{_second}") == 0), "an event loop thread still runs");
        host.Dispose();
        Assert.False(File.Exists(_dir.File("control.sock")), "the control socket is left behind");
    }

    [Fact]
    public async Task A_tap_the_kernel_refuses_stops_the_backends_that_started()
    {
        // "lo" passes every check of the configuration, but it is no TAP: the kernel refuses
        // to attach to it (and without root, to create any TAP).
        string json = Config($$"""{ "Name": "{{_second}}", "Socket": "{{_dir.File("c.sock")}}", "Tap": "lo" }""");
        using var host = TestDaemon.Build(_dir, json, _logs);
        using var timeout = new CancellationTokenSource(TestDaemon.Timeout);
        var e = await Assert.ThrowsAsync<DaemonStartException>(() => host.StartAsync(timeout.Token));
        Assert.Contains($"backend {_second}", e.Message, StringComparison.Ordinal);
        Assert.Contains(_dir.File("c.sock"), e.Message, StringComparison.Ordinal);
        AssertNothingRuns(host);
        Assert.Contains(_logs.Entries, x => x.Message.Contains($"backend {_first}: stopped", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_socket_another_program_listens_on_stops_the_backends_that_started_and_stays_its_owners()
    {
        string busy = _dir.File("busy.sock");
        using var owner = TestDaemon.Occupy(busy);
        string json = Config($$"""{ "Name": "{{_second}}", "Sockets": [ "{{_dir.File("c.sock")}}", "{{busy}}" ] }""");
        using var host = TestDaemon.Build(_dir, json, _logs);
        using var timeout = new CancellationTokenSource(TestDaemon.Timeout);
        var e = await Assert.ThrowsAsync<DaemonStartException>(() => host.StartAsync(timeout.Token));
        Assert.Contains($"backend {_second}", e.Message, StringComparison.Ordinal);
        Assert.Contains(busy, e.Message, StringComparison.Ordinal);
        AssertNothingRuns(host);

        // The other program's socket is still there, and still its.
        Assert.True(File.Exists(busy));
        Assert.True(TestDaemon.Answers(busy));
    }

    [Fact]
    public async Task A_control_socket_another_daemon_answers_on_stops_the_devices()
    {
        string busy = _dir.File("other-control.sock");
        using var owner = TestDaemon.Occupy(busy);
        string json = Config($$"""{ "Name": "{{_second}}", "Sockets": [ "{{_dir.File("c.sock")}}", "{{_dir.File("d.sock")}}" ] }""", control: busy);
        using (var host = TestDaemon.Build(_dir, json, _logs))
        {
            using var timeout = new CancellationTokenSource(TestDaemon.Timeout);
            var e = await Assert.ThrowsAnyAsync<Exception>(() => host.StartAsync(timeout.Token));
            Assert.Contains(busy, e.Message, StringComparison.Ordinal);
            Assert.Contains("another pcivirtio daemon answers on it", e.Message, StringComparison.Ordinal);
            AssertNothingRuns(host);
        }

        Assert.True(TestDaemon.Answers(busy));
    }
}
