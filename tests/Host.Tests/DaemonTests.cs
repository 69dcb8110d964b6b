using System.Diagnostics.Metrics;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using PciVirtio.Host.Control;
using PciVirtio.Host.Daemon;
using PciVirtio.Host.Stats;
using PciVirtio.Host.Tests.Support;

namespace PciVirtio.Host.Tests;

/// <summary>
/// The daemon in process: one port-to-port backend (two vhost-user sockets, no TAP) and the
/// control socket, all in the test's directory.
/// </summary>
public sealed class DaemonTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly RecordingLoggerProvider _logs = new();
    private readonly string _name = TestDaemon.UniqueName();

    public void Dispose() => _dir.Dispose();

    private string Control => _dir.File("control.sock");

    private string Left => _dir.File("left.sock");

    private string Right => _dir.File("right.sock");

    private string Config(int queues = 1) => $$"""
        {
          "PciVirtio": {
            "ControlSocket": "{{Control}}",
            "ShutdownSeconds": 20,
            "Backends": [ { "Name": "{{_name}}", "Sockets": [ "{{Left}}", "{{Right}}" ], "Queues": {{queues}} } ]
          }
        }
        """;

    [Fact]
    public async Task Serves_the_devices_and_their_counters_on_the_control_socket_and_stop_removes_every_socket()
    {
        using var host = TestDaemon.Build(_dir, Config(queues: 2), _logs);
        using var timeout = new CancellationTokenSource(TestDaemon.Timeout);
        await host.StartAsync(timeout.Token);
        try
        {
            Assert.Equal(1, TestDaemon.ThreadsNamed($"vhost-{_name}"));

            var status = ControlClient.Status(Control, TimeSpan.FromSeconds(5));
            Assert.Equal(Environment.ProcessId, status.ProcessId);
            Assert.Empty(status.Links);
            Assert.Equal([$"{_name}.0", $"{_name}.1"], status.Devices.Select(d => d.Name));
            Assert.Equal([Left, Right], status.Devices.Select(d => d.Socket));
            foreach (var d in status.Devices)
            {
                Assert.Equal(_name, d.Backend);
                Assert.False(d.Connected);
                Assert.Equal("port-to-port", d.Attachment);
                Assert.Equal([$"{d.Name}/rx0", $"{d.Name}/tx0", $"{d.Name}/rx1", $"{d.Name}/tx1", $"{d.Name}/ctrl"], d.Queues.Select(q => q.Name));
                Assert.All(d.Queues, q =>
                {
                    Assert.False(q.Running);
                    Assert.Null(q.Error);
                    Assert.Equal(0, q.Packets);
                });
            }

            // The answer is camel-case JSON, one line.
            string raw = ControlClient.Ask(Control, "stats", TimeSpan.FromSeconds(5));
            Assert.DoesNotContain('\n', raw);
            using (var json = JsonDocument.Parse(raw))
            {
                Assert.Equal(2, json.RootElement.GetProperty("devices").GetArrayLength());
                Assert.Equal($"{_name}.0/rx0", json.RootElement.GetProperty("devices")[0].GetProperty("queues")[0].GetProperty("name").GetString());
            }

            // Anything else is an error, as JSON.
            string unknown = ControlClient.Ask(Control, "reboot", TimeSpan.FromSeconds(5));
            using (var json = JsonDocument.Parse(unknown))
            {
                Assert.Contains("unknown request 'reboot'", json.RootElement.GetProperty("error").GetString(), StringComparison.Ordinal);
                Assert.False(json.RootElement.TryGetProperty("devices", out _));
            }

            // A second reading renders with rates against the first.
            Thread.Sleep(50);
            var later = ControlClient.Status(Control, TimeSpan.FromSeconds(5));
            string table = StatsTable.Render(later, status);
            Assert.Contains("DEVICE", table, StringComparison.Ordinal);
            Assert.Contains("rates over", table, StringComparison.Ordinal);
            foreach (var d in later.Devices)
            {
                Assert.Contains($"{d.Name} (no frontend)", table, StringComparison.Ordinal);
                foreach (var q in d.Queues)
                {
                    Assert.Contains(q.Name, table, StringComparison.Ordinal);
                }
            }

            Assert.Contains(_logs.Entries, e => e.Message.Contains($"backend {_name}: serving {Left}, {Right}", StringComparison.Ordinal));

            // Last: a probe is a frontend to the backend for a moment.
            Assert.True(TestDaemon.Answers(Left), "the first vhost-user socket does not listen");
            Assert.True(TestDaemon.Answers(Right), "the second vhost-user socket does not listen");
        }
        finally
        {
            await host.StopAsync(timeout.Token);
        }

        Assert.False(File.Exists(Left), "StopAsync left the first vhost-user socket behind");
        Assert.False(File.Exists(Right), "StopAsync left the second vhost-user socket behind");
        Assert.False(File.Exists(Control), "StopAsync left the control socket behind");
        Assert.Empty(host.Services.GetRequiredService<RunningDevices>().Backends);
        Assert.True(TestDaemon.WaitUntil(() => TestDaemon.ThreadsNamed($"vhost-{_name}") == 0), "the event loop thread still runs");
        Assert.Contains(_logs.Entries, e => e.Message.Contains($"backend {_name}: stopped", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Without_a_control_socket_the_devices_still_run()
    {
        string json = Config().Replace($"\"{Control}\"", "\"\"", StringComparison.Ordinal);
        using var host = TestDaemon.Build(_dir, json, _logs);
        using var timeout = new CancellationTokenSource(TestDaemon.Timeout);
        await host.StartAsync(timeout.Token);
        try
        {
            Assert.True(TestDaemon.Answers(Left));
            Assert.False(File.Exists(Control));
            Assert.Empty(host.Services.GetServices<IHostedService>().OfType<ControlServer>());
            Assert.Equal(2, host.Services.GetRequiredService<RunningDevices>().Status().Devices.Count);
        }
        finally
        {
            await host.StopAsync(timeout.Token);
        }

        Assert.False(File.Exists(Left));
        Assert.False(File.Exists(Right));
    }

    [Fact]
    public async Task A_stale_control_socket_file_is_replaced()
    {
        // A daemon that died left its socket file; nothing listens on it. (A .NET socket
        // removes its file when closed; this one, like a killed process, does not.)
        PciVirtio.Mmio.Sockets.UnixStreamSocket.Listen(Control).Dispose();

        Assert.True(File.Exists(Control));
        using var host = TestDaemon.Build(_dir, Config(), _logs);
        using var timeout = new CancellationTokenSource(TestDaemon.Timeout);
        await host.StartAsync(timeout.Token);
        try
        {
            Assert.Equal(2, ControlClient.Status(Control, TimeSpan.FromSeconds(5)).Devices.Count);
        }
        finally
        {
            await host.StopAsync(timeout.Token);
        }

        Assert.False(File.Exists(Control));
    }

    [Fact]
    public async Task The_metrics_show_every_queue_and_device_with_their_tags()
    {
        using var host = TestDaemon.Build(_dir, Config(), _logs);
        var factory = host.Services.GetRequiredService<IMeterFactory>();
        var measurements = new List<(string Instrument, long Value, Dictionary<string, string?> Tags)>();
        var instruments = new List<string>();
        using var listener = new MeterListener();

        // Only this host's meter: other tests run daemons of their own at the same time.
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == PciVirtioMetrics.MeterName && ReferenceEquals(instrument.Meter.Scope, factory))
            {
                lock (instruments)
                {
                    instruments.Add(instrument.Name);
                }

                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            var t = new Dictionary<string, string?>();
            foreach (var tag in tags)
            {
                t[tag.Key] = tag.Value?.ToString();
            }

            lock (measurements)
            {
                measurements.Add((instrument.Name, value, t));
            }
        });
        listener.Start();

        using var timeout = new CancellationTokenSource(TestDaemon.Timeout);
        await host.StartAsync(timeout.Token);
        try
        {
            listener.RecordObservableInstruments();
        }
        finally
        {
            await host.StopAsync(timeout.Token);
        }

        foreach (string name in new[]
        {
            "pcivirtio.queue.packets", "pcivirtio.queue.bytes", "pcivirtio.queue.drops", "pcivirtio.queue.kicks", "pcivirtio.queue.interrupts",
            "pcivirtio.queue.ring_full", "pcivirtio.queue.broken", "pcivirtio.device.connected", "pcivirtio.link.packets", "pcivirtio.link.up",
            "pcivirtio.link.remote_reads", "pcivirtio.link.transitions", "pcivirtio.link.rx_rearms",
        })
        {
            Assert.Contains(name, instruments);
        }

        var packets = measurements.Where(m => m.Instrument == "pcivirtio.queue.packets").ToList();
        string[] devices = [$"{_name}.0", $"{_name}.1"];
        var expected = devices.SelectMany(d => new[] { (d, $"{d}/rx0"), (d, $"{d}/tx0"), (d, $"{d}/ctrl") }).Order().ToList();
        Assert.Equal(expected, packets.Select(m => (m.Tags["device"]!, m.Tags["queue"]!)).Order().ToList());
        Assert.All(packets, m => Assert.Equal(0, m.Value));

        var connected = measurements.Where(m => m.Instrument == "pcivirtio.device.connected").ToList();
        Assert.Equal(devices, connected.Select(m => m.Tags["device"]!).Order());
        Assert.All(connected, m => Assert.Equal(0, m.Value));

        // No links: the link instruments have nothing to say.
        Assert.DoesNotContain(measurements, m => m.Instrument.StartsWith("pcivirtio.link.", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Frames_between_two_frontends_show_in_the_counters_the_table_and_the_metrics()
    {
        using var host = TestDaemon.Build(_dir, Config(), _logs);
        var factory = host.Services.GetRequiredService<IMeterFactory>();
        var packets = new Dictionary<string, long>();
        var connected = new Dictionary<string, long>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (ReferenceEquals(instrument.Meter.Scope, factory) && instrument.Name is "pcivirtio.queue.packets" or "pcivirtio.device.connected")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            var t = new Dictionary<string, object?>();
            foreach (var tag in tags)
            {
                t[tag.Key] = tag.Value;
            }

            if (instrument.Name == "pcivirtio.queue.packets")
            {
                packets[(string)t["queue"]!] = value;
            }
            else
            {
                connected[(string)t["device"]!] = value;
            }
        });
        listener.Start();

        using var timeout = new CancellationTokenSource(TestDaemon.Timeout);
        await host.StartAsync(timeout.Token);
        var frames = Enumerable.Range(0, 32).Select(Frame).ToList();
        try
        {
            using (var left = new SocketFrontend(Left))
            using (var right = new SocketFrontend(Right))
            {
                right.PostReceiveBuffers(64);
                left.Send(frames);
                var received = right.Receive(frames.Count, TimeSpan.FromSeconds(10));
                Assert.Equal(frames.Count, received.Count);
                for (int i = 0; i < frames.Count; i++)
                {
                    Assert.Equal(frames[i], received[i]);
                }

                Assert.Equal(frames.Count, left.ReapTransmitted(frames.Count, TimeSpan.FromSeconds(10)));

                // The counters are written on the loop thread after the rings: wait for them.
                DeviceStatus Device(DaemonStatus s, int i) => s.Devices.Single(d => d.Name == $"{_name}.{i}");
                QueueStatus Queue(DaemonStatus s, int i, string q) => Device(s, i).Queues.Single(x => x.Name == $"{_name}.{i}/{q}");
                DaemonStatus status = ControlClient.Status(Control, TimeSpan.FromSeconds(5));
                Assert.True(
                    TestDaemon.WaitUntil(() =>
                    {
                        status = ControlClient.Status(Control, TimeSpan.FromSeconds(5));
                        return Queue(status, 0, "tx0").Packets == frames.Count && Queue(status, 1, "rx0").Packets == frames.Count;
                    }),
                    $"counters: {JsonSerializer.Serialize(status, ControlJsonContext.Default.DaemonStatus)}");

                long bytes = frames.Sum(f => (long)f.Length);
                Assert.Equal(bytes, Queue(status, 0, "tx0").Bytes);
                Assert.Equal(bytes, Queue(status, 1, "rx0").Bytes);
                Assert.Equal(0, Queue(status, 0, "rx0").Packets);
                Assert.Equal(0, Queue(status, 1, "tx0").Packets);
                Assert.All(status.Devices, d => Assert.True(d.Connected));
                Assert.All(status.Devices, d => Assert.All(d.Queues.Where(q => !q.Name.EndsWith("/ctrl", StringComparison.Ordinal)), q => Assert.True(q.Running, q.Name)));
                Assert.All(status.Devices.SelectMany(d => d.Queues), q => Assert.Equal(0, q.Drops));
                Assert.True(Queue(status, 0, "tx0").Kicks >= 1);
                Assert.True(Queue(status, 1, "rx0").Interrupts >= 1);

                string table = StatsTable.Render(status, null);
                Assert.DoesNotContain("(no frontend)", table, StringComparison.Ordinal);
                Assert.Matches($@"{System.Text.RegularExpressions.Regex.Escape($"{_name}.0/tx0")}\s+running\s+32\s+-\s+{bytes}\s", table);

                Thread.Sleep(150); // past the metrics' shared reading
                listener.RecordObservableInstruments();
                Assert.Equal(frames.Count, packets[$"{_name}.0/tx0"]);
                Assert.Equal(frames.Count, packets[$"{_name}.1/rx0"]);
                Assert.Equal(1, connected[$"{_name}.0"]);
                Assert.Equal(1, connected[$"{_name}.1"]);
            }

            // The frontends went away: the devices say so.
            Assert.True(TestDaemon.WaitUntil(() => ControlClient.Status(Control, TimeSpan.FromSeconds(5)).Devices.All(d => !d.Connected)), "a device still shows a frontend");
        }
        finally
        {
            await host.StopAsync(timeout.Token);
        }

        Assert.False(File.Exists(Left));
        Assert.False(File.Exists(Right));
        Assert.False(File.Exists(Control));
    }

    private static byte[] Frame(int seq)
    {
        var frame = new byte[60 + (seq * 7)];
        frame.AsSpan(0, 6).Fill(0x02);
        frame.AsSpan(6, 6).Fill(0x04);
        frame[12] = 0x88;
        frame[13] = 0xb5;
        for (int i = 14; i < frame.Length; i++)
        {
            frame[i] = (byte)(seq + i);
        }

        return frame;
    }
}
