using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using PciVirtio.Tests.Guest;
using PciVirtio.Tests.Peers;
using Xunit.Abstractions;
using Executable = PciVirtio.Integration.Tests.LinkProcessTests.Executable;
using HostProcess = PciVirtio.Integration.Tests.LinkProcessTests.HostProcess;

namespace PciVirtio.Integration.Tests;

/// <summary>
/// A fact that runs <c>pcivirtio run</c> with a VM backend and a link end: root and
/// /dev/net/tun (TAPs, a network namespace), iproute2 and ping, and dpdk-testpmd (installed
/// as root when missing, as <see cref="DpdkFactAttribute"/> does). Skipped, with the reason,
/// when one of them is missing.
/// </summary>
public sealed class DaemonProcessFactAttribute : FactAttribute
{
    public DaemonProcessFactAttribute()
    {
        if (new LinkProcessFactAttribute().Skip is { } linkReason)
        {
            Skip = linkReason;
        }
        else if (TestpmdInstallation.SkipReason is { } dpdkReason)
        {
            Skip = dpdkReason;
        }
        else if (DaemonProcessTests.FindOnPath("ip") is null)
        {
            Skip = "needs iproute2 (ip) for the network namespace and the TAPs";
        }
        else if (DaemonProcessTests.FindOnPath("ping") is null)
        {
            Skip = "needs ping (iputils-ping) to cross the link";
        }
    }
}

/// <summary>
/// The daemon as an operator runs it: <c>pcivirtio run --config FILE</c> as a process of its
/// own, with one vhost-user backend bridged to a TAP and one link end on hw-sim's port 0 as a
/// TAP with an address in this (the root) namespace. A <c>pcivirtio link</c> process on port 1 in
/// a network namespace of the test's own is the link's other host, dpdk-testpmd's virtio-user
/// the VM. Pings cross the link both ways, testpmd's frames reach the backend's TAP, and
/// <c>pcivirtio stats</c> (a process too) reads it all from the control socket; SIGTERM stops
/// the daemon with exit code 0 and nothing left behind. A configuration with mistakes makes it
/// exit 2 at once, naming them.
/// </summary>
public sealed class DaemonProcessTests(ITestOutputHelper output)
{
    private const int PingCount = 5;
    private const string FrontendCpu = "1";

    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan LinkTimeout = TimeSpan.FromSeconds(20);
    private static readonly TimeSpan TrafficTime = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan DrainTimeout = TimeSpan.FromSeconds(15);

    /// <summary>The daemon's own graceful stop is bounded by its ShutdownSeconds (10 by default).</summary>
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(20);

    /// <summary>
    /// hw-sim first, then the daemon (backend vm-N on a socket, TAP pvdvN; link ntb-N on port 0,
    /// TAP pvdlN with 10.236.X.1/24), then the link's other end in a namespace (10.236.X.2/24)
    /// and testpmd on the backend's socket. Both hosts ping each other over the link and the
    /// link reads nothing across it; every frame testpmd sends (txonly, 64 bytes, one second) is
    /// counted by the device and by the TAP; stats shows both, as JSON and as a table. Then
    /// SIGTERM while testpmd sends again: exit code 0, the sockets and both TAPs gone.
    /// </summary>
    [DaemonProcessFact(Timeout = 150_000)]
    public async Task The_daemon_runs_a_vm_backend_and_a_link_end_reports_them_in_stats_and_stops_clean_on_sigterm()
    {
        var clock = Stopwatch.StartNew();
        await using var rig = await DaemonRig.StartAsync(Log);
        Log($"daemon, link peer and testpmd up after {clock.Elapsed.TotalSeconds:0.0} s");

        // The link: up on both ends, and the daemon's end reads nothing across the link while
        // pings go over it.
        var before = await StatsAsync(rig);
        var linkBefore = before.Link(rig.LinkName);
        Assert.Equal("Up", linkBefore.GetProperty("state").GetString());
        long tapRxBefore = TapCounter(rig.BackendTap, "rx_packets");

        // From the namespace to the daemon's TAP address: it exists only on the far side of the link.
        var fromPeer = await rig.Namespace.RunAsync(["ping", "-c", Text(PingCount), "-i", "0.2", "-W", "2", rig.DaemonAddress], CommandTimeout);
        Assert.True(fromPeer.Succeeded, $"ping {rig.DaemonAddress} from {rig.Namespace.Name}: {fromPeer.Output}");
        Assert.Contains($"{PingCount} packets transmitted, {PingCount} received", fromPeer.Output, StringComparison.Ordinal);

        // From here, out of the daemon's TAP, to the namespace's address.
        var fromHere = await HostProcess.RunAsync(new Executable("ping", []),
            ["-c", Text(PingCount), "-i", "0.2", "-W", "2", "-I", rig.LinkTap, rig.PeerAddress], CommandTimeout);
        Log(fromHere.Output.TrimEnd());
        Assert.True(fromHere.ExitCode == 0, $"ping {rig.PeerAddress} -I {rig.LinkTap}: exit code {fromHere.ExitCode}: {fromHere.Output}");
        Assert.Contains($"{PingCount} packets transmitted, {PingCount} received", fromHere.Output, StringComparison.Ordinal);

        // The VM: testpmd sends 64-byte frames for a second; the backend hands them to its TAP.
        await rig.Frontend.SetForwardModeAsync("txonly");
        await rig.Frontend.SetTxPacketLengthAsync(64);
        await rig.Frontend.ClearPortStatsAsync(0);
        await rig.Frontend.StartForwardingAsync();
        await Task.Delay(TrafficTime);
        await rig.Frontend.StopForwardingAsync();
        var sent = await rig.Frontend.GetPortStatsAsync(0);
        Assert.True(sent.TxPackets > 0, "testpmd sent frames");

        // The TAP's counter is cheap to read: wait for it first, then for the daemon's.
        long tapReceived = await DrainAsync(() => Task.FromResult(TapCounter(rig.BackendTap, "rx_packets") - tapRxBefore), sent.TxPackets, "the backend's TAP rx_packets");
        StatsReading after = null!;
        await DrainAsync(async () =>
        {
            after = await StatsAsync(rig);
            return after.DeviceQueues(rig.BackendName, "tx").Packets - before.DeviceQueues(rig.BackendName, "tx").Packets;
        }, sent.TxPackets, "the device's transmit packets in stats");

        var deviceTx = after.DeviceQueues(rig.BackendName, "tx") - before.DeviceQueues(rig.BackendName, "tx");
        var device = after.Device(rig.BackendName);
        var link = after.Link(rig.LinkName);
        long remoteReads = link.GetProperty("remoteReads").GetInt64() - linkBefore.GetProperty("remoteReads").GetInt64();
        long linkTx = link.GetProperty("txFrames").GetInt64() - linkBefore.GetProperty("txFrames").GetInt64();
        long linkRx = link.GetProperty("rxFrames").GetInt64() - linkBefore.GetProperty("rxFrames").GetInt64();
        Log($"testpmd sent {sent.TxPackets} frames ({sent.TxBytes} bytes); stats: device {rig.BackendName} took {deviceTx.Packets} ({deviceTx.Bytes} bytes, {deviceTx.Drops} drops), " +
            $"TAP {rig.BackendTap} received {tapReceived}; link {rig.LinkName}: {linkTx} frames out, {linkRx} in, {remoteReads} remote reads meanwhile " +
            $"({link.GetProperty("remoteReads").GetInt64()} since start)");

        Assert.True(device.GetProperty("connected").GetBoolean(), "stats shows the frontend connected");
        Assert.Equal($"tap {rig.BackendTap}", device.GetProperty("attachment").GetString());
        Assert.Equal(sent.TxPackets, deviceTx.Packets);
        Assert.Equal(sent.TxBytes, deviceTx.Bytes);
        Assert.Equal(0, deviceTx.Drops);
        Assert.Equal(sent.TxPackets, tapReceived);

        Assert.Equal("Up", link.GetProperty("state").GetString());
        Assert.Equal(rig.LinkTap, link.GetProperty("tap").GetString());
        Assert.Equal(0, link.GetProperty("linkDowns").GetInt64());
        Assert.True(linkTx >= 2 * PingCount && linkRx >= 2 * PingCount, $"the pings crossed the daemon's link end: {linkTx} frames out, {linkRx} in");
        Assert.Equal(0, remoteReads);

        // The table: one reading, naming the device, its queues and the link.
        var table = await HostProcess.RunAsync(Executable.Pcivirtio.Value, ["stats", "--control", rig.ControlSocket, "--count", "1"], CommandTimeout);
        Log(table.Output.TrimEnd());
        Assert.True(table.ExitCode == 0, $"pcivirtio stats --count 1: exit code {table.ExitCode}: {table.Output}");
        foreach (string name in new[] { rig.BackendName, $"{rig.BackendName}/tx0", rig.LinkName, rig.LinkTap })
        {
            Assert.Contains(name, table.Output, StringComparison.Ordinal);
        }

        // SIGTERM while the frontend sends again and the link's peer is still there.
        await rig.Frontend.StartForwardingAsync();
        await Task.Delay(TimeSpan.FromSeconds(0.3));
        var stopClock = Stopwatch.StartNew();
        Assert.Equal(0, LinkProcessNative.Kill(rig.Daemon.Pid, LinkProcessNative.SIGTERM));
        Assert.True(await rig.Daemon.WaitForExitAsync(StopTimeout), $"pcivirtio run (pid {rig.Daemon.Pid}) did not stop within {StopTimeout.TotalSeconds:0} s of SIGTERM");
        Log($"the daemon exited with code {rig.Daemon.ExitCode} {stopClock.Elapsed.TotalSeconds:0.00} s after SIGTERM");
        Assert.Equal(0, rig.Daemon.ExitCode);
        Assert.Contains(rig.Daemon.Lines, l => l.Contains($"backend {rig.BackendName}: stopped", StringComparison.Ordinal));
        Assert.Contains(rig.Daemon.Lines, l => l.Contains($"link {rig.LinkName}: stopped", StringComparison.Ordinal));
        Assert.False(File.Exists(rig.BackendSocket), $"the vhost-user socket {rig.BackendSocket} is left behind");
        Assert.False(File.Exists(rig.ControlSocket), $"the control socket {rig.ControlSocket} is left behind");
        foreach (string tap in new[] { rig.BackendTap, rig.LinkTap })
        {
            var show = await HostProcess.RunAsync(new Executable("ip", []), ["link", "show", tap], CommandTimeout);
            Assert.True(show.ExitCode != 0, $"TAP {tap} is still there after the daemon stopped: {show.Output}");
        }

        // Nobody answers on the control socket any more: stats says so and exits 1.
        var gone = await HostProcess.RunAsync(Executable.Pcivirtio.Value, ["stats", "--control", rig.ControlSocket, "--json"], CommandTimeout);
        Log($"pcivirtio stats after the stop: exit code {gone.ExitCode}: {gone.Output.Trim()}");
        Assert.Equal(1, gone.ExitCode);

        Log($"test took {clock.Elapsed.TotalSeconds:0.0} s");
    }

    /// <summary>
    /// Mistakes in the configuration: <c>pcivirtio run</c> exits 2 within seconds, names each
    /// mistake by its key, and starts nothing (no socket appears, no TAP).
    /// </summary>
    [Fact(Timeout = 90_000)]
    public async Task A_configuration_with_mistakes_makes_run_exit_2_at_once_naming_the_keys()
    {
        var work = Directory.CreateTempSubdirectory("pcivirtio-daemon-");
        try
        {
            string id = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3));
            string socket = Path.Combine(work.FullName, "vm.sock");
            string control = Path.Combine(work.FullName, "control.sock");
            string tap = "pvdx" + id;
            string Backend(string extra) => $$"""
                { "PciVirtio": { "ControlSocket": "{{control}}",
                  "Backends": [ { "Name": "vm-{{id}}", "Socket": "{{socket}}", "Tap": "{{tap}}"{{extra}} } ] } }
                """;

            var cases = new (string What, string Json, string[] Keys)[]
            {
                ("a queue count out of range", Backend(", \"Queues\": 0"), ["PciVirtio:Backends:0:Queues"]),
                ("a misspelt key", Backend(", \"Queus\": 2"), ["PciVirtio:Backends:0:Queus"]),
                ("both, and a misspelt link key", Backend(", \"Queues\": 0, \"Queus\": 2").Replace(
                    "] } }", $"], \"Links\": [ {{ \"Hardware\": \"hw-sim:{work.FullName}/ntb.sock#0\", \"Adress\": \"10.236.0.1/24\" }} ] }} }}", StringComparison.Ordinal),
                    ["PciVirtio:Backends:0:Queus", "PciVirtio:Links:0:Adress"]),
            };
            foreach (var (what, json, keys) in cases)
            {
                string config = Path.Combine(work.FullName, "config.json");
                await File.WriteAllTextAsync(config, json);
                Log($"{what}: {json.ReplaceLineEndings(" ")}");
                var clock = Stopwatch.StartNew();
                var run = await HostProcess.RunAsync(Executable.Pcivirtio.Value, ["run", "--config", config], CommandTimeout);
                Log($"exit code {run.ExitCode} after {clock.Elapsed.TotalSeconds:0.00} s:\n{run.Output.TrimEnd()}");
                Assert.True(run.ExitCode == 2, $"{what}: exit code {run.ExitCode}, not 2: {run.Output}");
                Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), $"{what}: it took {clock.Elapsed.TotalSeconds:0.0} s to refuse");
                Assert.Contains("the configuration has", run.Output, StringComparison.Ordinal);
                foreach (string key in keys)
                {
                    Assert.True(run.Output.Contains(key, StringComparison.Ordinal), $"{what}: the output does not name {key}:\n{run.Output}");
                }

                Assert.Equal(["config.json"], Directory.GetFiles(work.FullName).Select(Path.GetFileName));
                Assert.False(Directory.Exists(Path.Combine("/sys/class/net", tap)), $"{what}: TAP {tap} is there");
            }
        }
        finally
        {
            work.Delete(recursive: true);
        }
    }

    /// <summary>The full path of <paramref name="program"/> on PATH (or in /usr/sbin, /sbin,
    /// /usr/bin, /bin), else null.</summary>
    internal static string? FindOnPath(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Concat(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
            .Select(d => Path.Combine(d, program))
            .FirstOrDefault(File.Exists);

    private static string Text(long value) => value.ToString(CultureInfo.InvariantCulture);

    /// <summary>A counter of an interface in this namespace (/sys/class/net/NAME/statistics).</summary>
    private static long TapCounter(string tap, string counter) =>
        long.Parse(File.ReadAllText(Path.Combine("/sys/class/net", tap, "statistics", counter)).Trim(), CultureInfo.InvariantCulture);

    /// <summary><c>pcivirtio stats --json</c>, run as a process against the daemon's control socket.</summary>
    private static async Task<StatsReading> StatsAsync(DaemonRig rig)
    {
        var run = await HostProcess.RunAsync(Executable.Pcivirtio.Value, ["stats", "--control", rig.ControlSocket, "--json"], CommandTimeout);
        Assert.True(run.ExitCode == 0, $"pcivirtio stats --json: exit code {run.ExitCode}: {run.Output}");
        return new StatsReading(JsonDocument.Parse(run.Output).RootElement.Clone());
    }

    /// <summary>
    /// Samples until the count equals <paramref name="expected"/> or has not moved for a second,
    /// bounded by <see cref="DrainTimeout"/>; the caller's assertions tell the difference.
    /// </summary>
    private async Task<long> DrainAsync(Func<Task<long>> sample, long expected, string what)
    {
        var clock = Stopwatch.StartNew();
        var still = Stopwatch.StartNew();
        long last = await sample();
        while (last != expected && still.Elapsed < TimeSpan.FromSeconds(1) && clock.Elapsed < DrainTimeout)
        {
            await Task.Delay(50);
            long now = await sample();
            if (now != last)
            {
                still.Restart();
                last = now;
            }
        }

        Log($"{what}: {last} of {expected} after {clock.Elapsed.TotalSeconds:0.00} s");
        return last;
    }

    private void Log(string text)
    {
        try
        {
            output.WriteLine($"{DateTime.Now:HH:mm:ss.fff} {text}");
        }
        catch (InvalidOperationException)
        {
            // the test has finished
        }
    }

    /// <summary>Packets, bytes and drops of some queues, summed.</summary>
    private readonly record struct QueueTotals(long Packets, long Bytes, long Drops)
    {
        public static QueueTotals operator -(QueueTotals a, QueueTotals b) => new(a.Packets - b.Packets, a.Bytes - b.Bytes, a.Drops - b.Drops);
    }

    /// <summary>One answer of <c>pcivirtio stats --json</c> (camelCase names).</summary>
    private sealed record StatsReading(JsonElement Root)
    {
        public JsonElement Device(string name) => Named("devices", name);

        public JsonElement Link(string name) => Named("links", name);

        /// <summary>The device's queues named NAME/KIND0, NAME/KIND1, … (kind rx or tx), summed.</summary>
        public QueueTotals DeviceQueues(string device, string kind)
        {
            var total = default(QueueTotals);
            foreach (var q in Device(device).GetProperty("queues").EnumerateArray())
            {
                string? name = q.GetProperty("name").GetString();
                if (name is not null && name.StartsWith($"{device}/{kind}", StringComparison.Ordinal) && char.IsAsciiDigit(name[^1]))
                {
                    total = new QueueTotals(total.Packets + q.GetProperty("packets").GetInt64(), total.Bytes + q.GetProperty("bytes").GetInt64(),
                        total.Drops + q.GetProperty("drops").GetInt64());
                }
            }

            return total;
        }

        private JsonElement Named(string list, string name)
        {
            foreach (var e in Root.GetProperty(list).EnumerateArray())
            {
                if (e.GetProperty("name").GetString() == name)
                {
                    return e;
                }
            }

            throw new Xunit.Sdk.XunitException($"stats has no {list} entry named {name}: {Root}");
        }
    }

    /// <summary>
    /// hw-sim, the daemon (its configuration file written to a temporary directory), a network
    /// namespace with the link's other end, and testpmd on the backend's socket, each waited for.
    /// Disposing kills whatever still runs (by pid), deletes the namespace and the directory,
    /// also when the test failed.
    /// </summary>
    private sealed class DaemonRig : IAsyncDisposable
    {
        private readonly Action<string> _log;
        private readonly DirectoryInfo _directory = Directory.CreateTempSubdirectory("pcivirtio-daemon-");
        private HostProcess? _hwSim;
        private HostProcess? _daemon;
        private NetNamespace? _namespace;
        private Testpmd? _frontend;

        private DaemonRig(Action<string> log)
        {
            _log = log;
            string id = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3));
            BackendName = $"vm-{id}";
            LinkName = $"ntb-{id}";
            BackendTap = $"pvdv{id}";
            LinkTap = $"pvdl{id}";
            PeerTap = $"pvdp{id}";
            HwSimSocket = Path.Combine(_directory.FullName, "ntb.sock");
            BackendSocket = Path.Combine(_directory.FullName, "vm.sock");
            ControlSocket = Path.Combine(_directory.FullName, "control.sock");

            // 10.231/10.232 are the link guests', 10.100-199 the link processes'.
            string subnet = string.Create(CultureInfo.InvariantCulture, $"10.236.{RandomNumberGenerator.GetInt32(1, 255)}");
            DaemonAddress = subnet + ".1";
            PeerAddress = subnet + ".2";
        }

        public string BackendName { get; }

        public string LinkName { get; }

        public string BackendTap { get; }

        public string LinkTap { get; }

        public string PeerTap { get; }

        public string HwSimSocket { get; }

        public string BackendSocket { get; }

        public string ControlSocket { get; }

        public string DaemonAddress { get; }

        public string PeerAddress { get; }

        public HostProcess Daemon => _daemon!;

        public NetNamespace Namespace => _namespace!;

        public Testpmd Frontend => _frontend!;

        public static async Task<DaemonRig> StartAsync(Action<string> log)
        {
            var rig = new DaemonRig(log);
            try
            {
                await rig.StartAsync();
                return rig;
            }
            catch
            {
                await rig.DisposeAsync();
                throw;
            }
        }

        public async ValueTask DisposeAsync()
        {
            if (_frontend is not null)
            {
                await _frontend.DisposeAsync();
            }

            // The namespace kills the link's other end and takes its TAP.
            if (_namespace is not null)
            {
                await _namespace.DisposeAsync();
            }

            _daemon?.Dispose();
            _hwSim?.Dispose();
            try
            {
                _directory.Delete(recursive: true);
            }
            catch (IOException e)
            {
                _log($"could not remove {_directory.FullName}: {e.Message}");
            }
        }

        private async Task StartAsync()
        {
            // The bridge (pcivirtio's own 'sim serve'): one 16 MiB window each way; --duration
            // is a backstop should this process die without killing it.
            _hwSim = HostProcess.Start(Executable.Pcivirtio.Value, ["sim", "serve", "--socket", HwSimSocket, "--windows", "1", "--window-size", "16777216", "--duration", "140"], _log);
            await _hwSim.WaitForLineAsync(l => l.StartsWith("hw-sim: serving on", StringComparison.Ordinal), StartTimeout);

            string config = Path.Combine(_directory.FullName, "pcivirtio.json");
            await File.WriteAllTextAsync(config, $$"""
                {
                  "PciVirtio": {
                    "ControlSocket": "{{ControlSocket}}",
                    "Backends": [
                      { "Name": "{{BackendName}}", "Socket": "{{BackendSocket}}", "Tap": "{{BackendTap}}", "Queues": 1 }
                    ],
                    "Links": [
                      { "Name": "{{LinkName}}", "Hardware": "hw-sim:{{HwSimSocket}}#0", "Tap": "{{LinkTap}}", "Mtu": 1500, "Address": "{{DaemonAddress}}/24" }
                    ]
                  }
                }
                """);
            _log($"{config}:\n{await File.ReadAllTextAsync(config)}");
            _daemon = HostProcess.Start(Executable.Pcivirtio.Value, ["run", "--config", config], _log);
            await _daemon.WaitForLineAsync(l => l.Contains("listening for pcivirtio stats", StringComparison.Ordinal), StartTimeout);

            _namespace = await NetNamespace.CreateAsync("pcvdm", _log);
            var pcivirtio = Executable.Pcivirtio.Value;
            var peer = _namespace.Start(pcivirtio.Program, pcivirtio.Arguments(
            [
                "link", "--hw", $"hw-sim:{HwSimSocket}#1", "--tap", PeerTap, "--address", $"{PeerAddress}/24", "--mtu", "1500", "--duration", "130",
            ]));
            await peer.WaitForLineAsync(l => l.StartsWith("link Up", StringComparison.Ordinal), StartTimeout);

            // The daemon's end is up too (it printed "up with" in its log).
            await _daemon.WaitForLineAsync(l => l.Contains($"link {LinkName}: up with", StringComparison.Ordinal), StartTimeout);

            _frontend = await Testpmd.StartAsync(new TestpmdOptions
            {
                Name = "daemon-vm",
                Cores = FrontendCpu,
                Vdevs = [Vdev.VirtioUser(BackendSocket)],
            }, _log);
            await _frontend.WaitForLinkAsync(0, up: true, LinkTimeout);
        }
    }
}
