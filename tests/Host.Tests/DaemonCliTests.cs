using System.Text.Json;
using PciVirtio.Host.Tests.Support;

namespace PciVirtio.Host.Tests;

/// <summary><c>pcivirtio stats</c> against a daemon running in process, and <c>pcivirtio
/// run</c> when a device cannot start.</summary>
public sealed class DaemonCliTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly string _name = TestDaemon.UniqueName();

    public void Dispose() => _dir.Dispose();

    private string Config(string control, string left, string right) => $$"""
        { "PciVirtio": { "ControlSocket": "{{control}}", "Backends": [ { "Name": "{{_name}}", "Sockets": [ "{{left}}", "{{right}}" ] } ] } }
        """;

    [Fact]
    public async Task Stats_prints_the_daemons_counters_as_json_and_as_tables()
    {
        string control = _dir.File("control.sock");
        using var host = TestDaemon.Build(_dir, Config(control, _dir.File("l.sock"), _dir.File("r.sock")), new RecordingLoggerProvider());
        using var timeout = new CancellationTokenSource(TestDaemon.Timeout);
        await host.StartAsync(timeout.Token);
        try
        {
            var json = CommandLine.Run("stats", "--control", control, "--json");
            Assert.True(json.ExitCode == 0, json.ToString());
            using (var doc = JsonDocument.Parse(json.Output))
            {
                var devices = doc.RootElement.GetProperty("devices");
                Assert.Equal([$"{_name}.0", $"{_name}.1"], devices.EnumerateArray().Select(d => d.GetProperty("name").GetString()));
            }

            // Two readings into a pipe: one after the other, the second with rates.
            var tables = CommandLine.Run("stats", "--control", control, "--count", "2", "--interval", "0.1");
            Assert.True(tables.ExitCode == 0, tables.ToString());
            Assert.Equal(2, tables.Output.Split("DEVICE").Length - 1);
            Assert.Contains("rates over", tables.Output, StringComparison.Ordinal);
            Assert.Contains($"{_name}.1/ctrl", tables.Output, StringComparison.Ordinal);
            Assert.DoesNotContain('\u001b', tables.Output);
        }
        finally
        {
            await host.StopAsync(timeout.Token);
        }

        // The daemon is gone: stats says so and fails.
        var gone = CommandLine.Run("stats", "--control", control, "--json");
        Assert.Equal(1, gone.ExitCode);
        Assert.Contains($"control socket {control}", gone.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void Run_exits_1_naming_the_device_that_cannot_start_and_leaves_nothing_behind()
    {
        string busy = _dir.File("busy.sock");
        using var owner = TestDaemon.Occupy(busy);
        string config = _dir.Write("pv.json", Config(_dir.File("control.sock"), _dir.File("l.sock"), busy));
        var r = CommandLine.Run("run", "--config", config);
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.Contains($"pcivirtio run: backend {_name}", r.Error, StringComparison.Ordinal);
        Assert.Contains(busy, r.Error, StringComparison.Ordinal);
        Assert.False(File.Exists(_dir.File("l.sock")));
        Assert.False(File.Exists(_dir.File("control.sock")));
        Assert.True(TestDaemon.Answers(busy));
        Assert.Equal(0, TestDaemon.ThreadsNamed($"vhost-{_name}"));
    }
}
