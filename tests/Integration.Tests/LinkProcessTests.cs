using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using PciVirtio.Tests.Guest;
using Xunit.Abstractions;

namespace PciVirtio.Integration.Tests;

/// <summary>
/// A fact that needs root and /dev/net/tun (TAPs in network namespaces): skipped, with the
/// reason, without them.
/// </summary>
public sealed class LinkProcessFactAttribute : FactAttribute
{
    public LinkProcessFactAttribute()
    {
        if (LinkProcessNative.GetEuid() != 0)
        {
            Skip = "needs root: the link ends create TAPs in network namespaces of the test's own";
        }
        else if (!File.Exists("/dev/net/tun"))
        {
            Skip = "needs /dev/net/tun for the link ends' TAPs";
        }
    }
}

/// <summary>
/// The link as it runs on two hosts, each end its own process: <c>pcivirtio-hwsim serve</c> is
/// the bridge, and each <c>pcivirtio link</c> runs in a network namespace of the test's own with
/// its TAP and address. Ping and iperf3 cross it; a checksummed TCP stream, written and checked
/// byte for byte by this test from threads that entered the two namespaces, survives the link
/// being pulled and put back under it; and hw-sim's counters show that the data path reads
/// nothing across the link.
/// </summary>
public sealed class LinkProcessTests(ITestOutputHelper output)
{
    private const int PingCount = 5;
    private const int Flaps = 4;
    private const long MiB = 1 << 20;

    /// <summary>The checksummed stream's pace: tens of MB over the seconds the flaps take, with
    /// CPU left for both link ends on a 2-core machine.</summary>
    private const long StreamBytesPerSecond = 16 * MiB;

    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan FlapOutage = TimeSpan.FromMilliseconds(500);
    private static readonly TimeSpan StreamStallTimeout = TimeSpan.FromSeconds(20);

    [LinkProcessFact(Timeout = 90_000)]
    public async Task Two_link_processes_in_namespaces_of_their_own_ping_both_ways_and_carry_iperf3_tcp()
    {
        var clock = Stopwatch.StartNew();
        await using var rig = await LinkRig.StartAsync(Log);
        Log($"both ends up after {clock.Elapsed.TotalSeconds:0.0} s");

        await PingBothWaysAsync(rig);

        // iperf3 from A to B for 4 s, the server in B's namespace.
        var iperf = await IperfAsync(rig, seconds: 4, bidirectional: false);
        Log($"iperf3 TCP A -> B: {iperf.ReceivedBytes / 1e6:0.0} MB in {iperf.Seconds:0.0} s = {iperf.ReceivedBitsPerSecond / 1e9:0.00} Gbit/s, {iperf.Retransmits} retransmits");
        Assert.True(iperf.ReceivedBytes >= 10_000_000, $"iperf3 moved only {iperf.ReceivedBytes} bytes");

        // The ends' own view of it: the busiest second of A's "link Up: out X Mbit/s" lines, and
        // every byte iperf3 delivered went out of A's TAP end (plus headers).
        double busiest = rig.LinkA.Lines.Select(OutMbitPerSecond).DefaultIfEmpty(0).Max();
        Log($"link A's busiest second: out {busiest:0.0} Mbit/s");
        Assert.True(busiest > 0, "link A printed no throughput");
        var (finalA, finalB) = await rig.StopLinksAsync();
        Assert.Equal("Up", finalA.State);
        Assert.Equal("Up", finalB.State);
        Assert.True(finalA.TxBytes >= iperf.ReceivedBytes, $"A sent {finalA.TxBytes} B over the link, iperf3 received {iperf.ReceivedBytes}");
        Assert.True(finalB.RxBytes >= iperf.ReceivedBytes, $"B received {finalB.RxBytes} B over the link, iperf3 {iperf.ReceivedBytes}");
        Assert.Equal(0, finalA.Downs);
        Assert.Equal(0, finalB.Downs);
        Log($"test took {clock.Elapsed.TotalSeconds:0.0} s");
    }

    [LinkProcessFact(Timeout = 90_000)]
    public async Task A_checksummed_tcp_stream_survives_link_flaps_whole_and_the_link_comes_back_each_time()
    {
        var clock = Stopwatch.StartNew();
        await using var rig = await LinkRig.StartAsync(Log);
        long retransBefore = await TcpRetransmittedSegmentsAsync(rig.NamespaceA);

        using var stream = CheckedStream.Start(rig.NamespaceA.Name, rig.NamespaceB.Name, rig.AddressB, port: 7000, StreamBytesPerSecond);
        var flapClock = Stopwatch.StartNew();
        long resumedAt = 0;
        int markA = 0, markB = 0;
        for (int flap = 1; flap <= Flaps; flap++)
        {
            // Traffic flows before each pull: the receiver got more since the link came back.
            await stream.WaitForProgressAsync(resumedAt + MiB, StreamStallTimeout);
            await rig.HwSimAsync("fault", "link-down");
            long downAt = stream.Received;
            await Task.Delay(FlapOutage);
            long whileDown = stream.Received - downAt;
            await rig.HwSimAsync("fault", "link-up");
            markA = rig.LinkA.Lines.Count;
            markB = rig.LinkB.Lines.Count;
            resumedAt = stream.Received;

            // What arrives while down was already in the receiving kernel's socket buffer.
            Log($"flap {flap} at {flapClock.Elapsed.TotalSeconds:0.0} s: link down at {downAt / 1e6:0.0} MB received ({whileDown} B read from the socket buffer while down), up again at {resumedAt / 1e6:0.0} MB");
            await Task.Delay(FlapOutage);
        }

        // After the last flap the stream resumes and completes: every byte checked, as many
        // received as sent.
        await stream.WaitForProgressAsync(resumedAt + (4 * MiB), StreamStallTimeout);
        stream.Finish();
        var (sent, received) = await stream.CompleteAsync(TimeSpan.FromSeconds(40));
        long retransmitted = await TcpRetransmittedSegmentsAsync(rig.NamespaceA) - retransBefore;
        Log($"stream: {sent / 1e6:0.0} MB sent, {received.Bytes / 1e6:0.0} MB received and checked in {flapClock.Elapsed.TotalSeconds:0.0} s; {retransmitted} TCP segments retransmitted in A's namespace");
        Assert.Null(received.Mismatch);
        Assert.Equal(sent, received.Bytes);
        Assert.True(sent >= 20 * MiB, $"only {sent} bytes were streamed");
        Assert.True(retransmitted > 0, "the outages cost no retransmission: they did not hit the stream");

        // Both ends came up again after the last flap, and the link still carries pings.
        await WaitForLineAfterAsync(rig.LinkA, markA, l => l.StartsWith("link Up", StringComparison.Ordinal), StartTimeout);
        await WaitForLineAfterAsync(rig.LinkB, markB, l => l.StartsWith("link Up", StringComparison.Ordinal), StartTimeout);
        await PingBothWaysAsync(rig);

        var (finalA, finalB) = await rig.StopLinksAsync();
        foreach (var (end, final) in new[] { ("A", finalA), ("B", finalB) })
        {
            Assert.True(final.Downs >= Flaps, $"{end}: down {final.Downs}x after {Flaps} flaps");
            Assert.Equal("Up", final.State);
            Assert.Equal(final.Downs + 1, final.Ups);
        }

        Log($"test took {clock.Elapsed.TotalSeconds:0.0} s");
    }

    [LinkProcessFact(Timeout = 90_000)]
    public async Task Steady_state_tcp_reads_nothing_across_the_link_and_writes_millions_of_bytes()
    {
        var clock = Stopwatch.StartNew();
        await using var rig = await LinkRig.StartAsync(Log);

        // Handshake done: both ends printed "link Up". Idle for two seconds (heartbeats and
        // link supervision only), then three seconds of TCP both ways at once.
        var start = await rig.CountersAsync();
        await Task.Delay(TimeSpan.FromSeconds(2));
        var idle = await rig.CountersAsync();
        var iperf = await IperfAsync(rig, seconds: 3, bidirectional: true);
        var busy = await rig.CountersAsync();
        Log($"iperf3 TCP both ways: {iperf.ReceivedBytes / 1e6:0.0} MB A -> B, {iperf.ReverseReceivedBytes / 1e6:0.0} MB B -> A in {iperf.Seconds:0.0} s");
        for (int port = 0; port < 2; port++)
        {
            var idleDelta = idle[port] - start[port];
            var busyDelta = busy[port] - idle[port];
            Log($"port {port}: idle 2 s: {idleDelta}; iperf3: {busyDelta}; since start: remote reads {busy[port].RemoteReads}");
            Assert.True(idleDelta.RemoteReads <= 50, $"port {port}: {idleDelta.RemoteReads} remote reads while idle");
            Assert.True(busyDelta.RemoteReads <= 50, $"port {port}: {busyDelta.RemoteReads} remote reads while {busyDelta.RemoteWrittenBytes} bytes were written");
            Assert.True(busyDelta.RemoteWrittenBytes >= 10_000_000, $"port {port}: only {busyDelta.RemoteWrittenBytes} bytes written remotely");
            Assert.Equal(0, busyDelta.FailedReads);
        }

        Assert.True(iperf.ReceivedBytes >= 5_000_000 && iperf.ReverseReceivedBytes >= 5_000_000, $"iperf3 moved {iperf.ReceivedBytes} and {iperf.ReverseReceivedBytes} bytes");
        Log($"test took {clock.Elapsed.TotalSeconds:0.0} s");
    }

    private async Task PingBothWaysAsync(LinkRig rig)
    {
        foreach (var (from, to) in new[] { (rig.NamespaceA, rig.AddressB), (rig.NamespaceB, rig.AddressA) })
        {
            var ping = await from.RunAsync(["ping", "-c", PingCount.ToString(CultureInfo.InvariantCulture), "-i", "0.2", "-W", "2", to.ToString()], CommandTimeout);
            Assert.True(ping.Succeeded, $"ping {to} from {from.Name}: {ping.Output}");
            Assert.Contains($"{PingCount} packets transmitted, {PingCount} received", ping.Output, StringComparison.Ordinal);
        }
    }

    private async Task<IperfResult> IperfAsync(LinkRig rig, int seconds, bool bidirectional)
    {
        var server = rig.NamespaceB.Start("iperf3", ["-s", "-1", "--forceflush", "-B", rig.AddressB.ToString(), "-p", "5201"]);
        await server.WaitForLineAsync(l => l.Contains("Server listening", StringComparison.Ordinal), StartTimeout);
        List<string> client = ["iperf3", "-c", rig.AddressB.ToString(), "-p", "5201", "-t", seconds.ToString(CultureInfo.InvariantCulture), "-i", "0", "-J"];
        if (bidirectional)
        {
            client.Add("--bidir");
        }

        var run = await rig.NamespaceA.RunAsync(client, TimeSpan.FromSeconds(seconds + 30));
        Assert.True(run.Succeeded, $"iperf3 client: {run.Output}");
        int first = run.Output.IndexOf('{', StringComparison.Ordinal);
        int last = run.Output.LastIndexOf('}');
        Assert.True(first >= 0 && last > first, $"iperf3 printed no JSON: {run.Output}");
        using var json = JsonDocument.Parse(run.Output[first..(last + 1)]);
        var end = json.RootElement.GetProperty("end");
        var sent = end.GetProperty("sum_sent");
        var received = end.GetProperty("sum_received");
        long reverse = bidirectional ? end.GetProperty("sum_received_bidir_reverse").GetProperty("bytes").GetInt64() : 0;
        await server.WaitForExitAsync(TimeSpan.FromSeconds(10));
        return new IperfResult(received.GetProperty("bytes").GetInt64(), received.GetProperty("seconds").GetDouble(),
            received.GetProperty("bits_per_second").GetDouble(), sent.TryGetProperty("retransmits", out var r) ? r.GetInt64() : -1, reverse);
    }

    /// <summary>TCP segments retransmitted so far in a namespace (/proc/net/snmp is per namespace).</summary>
    private static async Task<long> TcpRetransmittedSegmentsAsync(NetNamespace ns)
    {
        var snmp = await ns.RunAsync(["cat", "/proc/net/snmp"], CommandTimeout);
        Assert.True(snmp.Succeeded, snmp.Output);
        string[] tcp = snmp.Output.Split('\n').Where(l => l.StartsWith("Tcp:", StringComparison.Ordinal)).ToArray();
        Assert.True(tcp.Length >= 2, snmp.Output);
        int column = Array.IndexOf(tcp[0].Split(' '), "RetransSegs");
        return long.Parse(tcp[1].Split(' ')[column], CultureInfo.InvariantCulture);
    }

    private static double OutMbitPerSecond(string line)
    {
        var m = Regex.Match(line, @"^link Up: out (?<mbps>[0-9.]+) Mbit/s");
        return m.Success ? double.Parse(m.Groups["mbps"].Value, CultureInfo.InvariantCulture) : 0;
    }

    private static async Task WaitForLineAfterAsync(NetNamespaceProcess process, int after, Func<string, bool> match, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (!process.Lines.Skip(after).Any(match))
        {
            if (clock.Elapsed > timeout || process.HasExited)
            {
                throw new TimeoutException($"{process.CommandLine} printed no awaited line after line {after} within {timeout.TotalSeconds:0} s; its output:\n{string.Join('\n', process.Lines)}");
            }

            await Task.Delay(100);
        }
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

    private sealed record IperfResult(long ReceivedBytes, double Seconds, double ReceivedBitsPerSecond, long Retransmits, long ReverseReceivedBytes);

    /// <summary>The last line of <c>pcivirtio link</c>: "link STATE: tx F frames/B B (...), rx ..., link up Nx down Nx".</summary>
    private sealed record FinalLine(string State, long TxBytes, long RxBytes, long Ups, long Downs)
    {
        public static FinalLine Parse(string end, NetNamespaceProcess process)
        {
            var line = process.Lines.LastOrDefault(l => l.StartsWith("link ", StringComparison.Ordinal) && l.Contains(" link up ", StringComparison.Ordinal));
            var m = line is null ? Match.Empty : Regex.Match(line,
                @"^link (?<state>\w+): tx \d+ frames/(?<tx>\d+) B .*, rx \d+ frames/(?<rx>\d+) B .*, link up (?<up>\d+)x down (?<down>\d+)x$");
            Assert.True(m.Success, $"link {end} printed no final line; its output:\n{string.Join('\n', process.Lines)}");
            long Number(string name) => long.Parse(m.Groups[name].Value, CultureInfo.InvariantCulture);
            return new FinalLine(m.Groups["state"].Value, Number("tx"), Number("rx"), Number("up"), Number("down"));
        }

        /// <summary>
        /// The state as the stop found it. Both ends are stopped at once, and the first to go
        /// withdraws its offer: the other, still running, may see that before its own SIGTERM
        /// and go down with "the peer withdrew its offer", as it should. That one down, logged
        /// after the stop began (<paramref name="sinceStop"/>) and from Up, is the stop's, not
        /// the run's.
        /// </summary>
        public FinalLine AtStop(IEnumerable<string> sinceStop) =>
            State != "Up" && sinceStop.Any(l => l.Contains("down (was Up): the peer withdrew its offer", StringComparison.Ordinal))
                ? this with { State = "Up", Downs = Downs - 1 }
                : this;
    }

    /// <summary>One port's hw-sim counters (<c>pcivirtio-hwsim stats --json</c>).</summary>
    private sealed record PortCounts(long RemoteReads, long RemoteWrites, long RemoteWrittenBytes, long FailedReads)
    {
        public static PortCounts operator -(PortCounts a, PortCounts b) =>
            new(a.RemoteReads - b.RemoteReads, a.RemoteWrites - b.RemoteWrites, a.RemoteWrittenBytes - b.RemoteWrittenBytes, a.FailedReads - b.FailedReads);

        public override string ToString() =>
            $"remote reads {RemoteReads}, remote writes {RemoteWrites} ({RemoteWrittenBytes / 1e6:0.0} MB), failed reads {FailedReads}";
    }

    /// <summary>A built program of this repository: its apphost (told where the running .NET
    /// is), or <c>dotnet</c> with its dll when there is no apphost; or any program on PATH
    /// (<c>new Executable("ip", [])</c>).</summary>
    internal sealed record Executable(string Program, IReadOnlyList<string> Prefix)
    {
        public static readonly Lazy<Executable> HwSim = new(() => Find("pcivirtio-hwsim", "HwSim", "hw-sim"));
        public static readonly Lazy<Executable> Pcivirtio = new(() => Find("pcivirtio", "pcivirtio", Path.Combine("src", "Bridge", "pcivirtio")));

        public List<string> Arguments(IEnumerable<string> arguments) => [.. Prefix, .. arguments];

        /// <summary>Next to the test assembly (the project references copy it there), else in
        /// the project's own output (artifacts layout, then bin/CONFIGURATION/TFM).</summary>
        private static Executable Find(string assembly, string artifactsName, string projectDirectory)
        {
            var here = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
            string? root = typeof(LinkProcessTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
                .FirstOrDefault(a => a.Key == "PciVirtio.RepositoryRoot")?.Value;
            List<string> places = [here.FullName];
            if (here.Parent is { Parent: { } bin } parent)
            {
                places.Add(Path.Combine(bin.FullName, artifactsName, here.Name));
                if (root is not null)
                {
                    places.Add(Path.Combine(root, projectDirectory, "bin", parent.Name, here.Name));
                }
            }

            string dotnetRoot = Path.GetFullPath(Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), "..", "..", ".."));
            string dotnet = Path.Combine(dotnetRoot, "dotnet");
            foreach (string place in places)
            {
                string apphost = Path.Combine(place, assembly);
                string dll = apphost + ".dll";
                if (!File.Exists(dll))
                {
                    continue;
                }

                if (OperatingSystem.IsLinux() && File.Exists(apphost) && (File.GetUnixFileMode(apphost) & UnixFileMode.UserExecute) != 0)
                {
                    return new Executable("env", [$"DOTNET_ROOT={dotnetRoot}", apphost]);
                }

                return File.Exists(dotnet) ? new Executable(dotnet, [dll]) : new Executable("dotnet", [dll]);
            }

            throw new FileNotFoundException($"{assembly}.dll is in none of: {string.Join(", ", places)} (build the solution first)");
        }
    }

    /// <summary>hw-sim serving on a socket of a temporary directory, two namespaces, a link
    /// end in each (TAP, address), both up. Disposing kills every process it started (by pid)
    /// and deletes the namespaces and the directory, also when the test failed.</summary>
    private sealed class LinkRig : IAsyncDisposable
    {
        private readonly Action<string> _log;
        private readonly DirectoryInfo _directory = Directory.CreateTempSubdirectory("pcivirtio-link-");
        private HostProcess? _hwSim;

        private LinkRig(Action<string> log)
        {
            _log = log;
            Socket = Path.Combine(_directory.FullName, "ntb.sock");
            string subnet = string.Create(CultureInfo.InvariantCulture, $"10.{RandomNumberGenerator.GetInt32(100, 200)}.{RandomNumberGenerator.GetInt32(1, 255)}");
            AddressA = IPAddress.Parse(subnet + ".1");
            AddressB = IPAddress.Parse(subnet + ".2");
        }

        public string Socket { get; }

        public IPAddress AddressA { get; }

        public IPAddress AddressB { get; }

        public NetNamespace NamespaceA { get; private set; } = null!;

        public NetNamespace NamespaceB { get; private set; } = null!;

        public NetNamespaceProcess LinkA { get; private set; } = null!;

        public NetNamespaceProcess LinkB { get; private set; } = null!;

        public static async Task<LinkRig> StartAsync(Action<string> log)
        {
            var rig = new LinkRig(log);
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

        /// <summary>Runs a <c>pcivirtio-hwsim</c> command (fault, stats) against our socket; its stdout.</summary>
        public async Task<string> HwSimAsync(string command, params string[] arguments)
        {
            var result = await HostProcess.RunAsync(Executable.HwSim.Value, [command, "--socket", Socket, .. arguments], CommandTimeout);
            Assert.True(result.ExitCode == 0, $"pcivirtio-hwsim {command} {string.Join(' ', arguments)}: exit code {result.ExitCode}: {result.Output}");
            if (command != "stats")
            {
                _log($"pcivirtio-hwsim {command} {string.Join(' ', arguments)}: {result.Output.Trim()}");
            }

            return result.Output;
        }

        /// <summary>Both ports' counters now.</summary>
        public async Task<PortCounts[]> CountersAsync()
        {
            using var json = JsonDocument.Parse(await HwSimAsync("stats", "--json"));
            return [.. new[] { "port0", "port1" }.Select(p =>
            {
                var port = json.RootElement.GetProperty(p);
                return new PortCounts(port.GetProperty("RemoteReads").GetInt64(), port.GetProperty("RemoteWrites").GetInt64(),
                    port.GetProperty("RemoteWrittenBytes").GetInt64(), port.GetProperty("FailedReads").GetInt64());
            })];
        }

        /// <summary>SIGTERM to both link processes; their final lines once they exited.</summary>
        public async Task<(FinalLine A, FinalLine B)> StopLinksAsync()
        {
            int markA = LinkA.Lines.Count;
            int markB = LinkB.Lines.Count;
            foreach (var link in new[] { LinkA, LinkB })
            {
                Assert.Equal(0, LinkProcessNative.Kill(link.Pid, LinkProcessNative.SIGTERM));
            }

            foreach (var link in new[] { LinkA, LinkB })
            {
                Assert.True(await link.WaitForExitAsync(TimeSpan.FromSeconds(20)), $"{link.CommandLine} (pid {link.Pid}) did not stop on SIGTERM");
                Assert.Equal(0, link.ExitCode);
            }

            var a = FinalLine.Parse("A", LinkA);
            var b = FinalLine.Parse("B", LinkB);
            _log($"final: A {a}; B {b}");
            var (atStopA, atStopB) = (a.AtStop(LinkA.Lines.Skip(markA)), b.AtStop(LinkB.Lines.Skip(markB)));
            if (atStopA != a || atStopB != b)
            {
                _log($"as the stop found them (the down after the peer withdrew at its stop not counted): A {atStopA}; B {atStopB}");
            }

            return (atStopA, atStopB);
        }

        public async ValueTask DisposeAsync()
        {
            // The namespaces kill what runs in them (the link ends, iperf3) and take the TAPs.
            if (NamespaceA is not null)
            {
                await NamespaceA.DisposeAsync();
            }

            if (NamespaceB is not null)
            {
                await NamespaceB.DisposeAsync();
            }

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
            // The bridge: one 16 MiB window each way. --duration is a backstop should this
            // process die without killing it.
            _hwSim = HostProcess.Start(Executable.HwSim.Value, ["serve", "--socket", Socket, "--windows", "1", "--window-size", "16777216", "--duration", "110"], _log);
            await _hwSim.WaitForLineAsync(l => l.StartsWith("hw-sim: serving on", StringComparison.Ordinal), StartTimeout);
            NamespaceA = await NetNamespace.CreateAsync("pcvla", _log);
            NamespaceB = await NetNamespace.CreateAsync("pcvlb", _log);
            LinkA = StartLink(NamespaceA, 0, AddressA);
            LinkB = StartLink(NamespaceB, 1, AddressB);
            foreach (var link in new[] { LinkA, LinkB })
            {
                await link.WaitForLineAsync(l => l.StartsWith("link Up", StringComparison.Ordinal), StartTimeout);
            }
        }

        private NetNamespaceProcess StartLink(NetNamespace ns, int port, IPAddress address)
        {
            string tap = "pvl" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3));
            var pcivirtio = Executable.Pcivirtio.Value;
            return ns.Start(pcivirtio.Program, pcivirtio.Arguments(
            [
                "link", "--hw", $"hw-sim:{Socket}#{port}", "--tap", tap, "--address", $"{address}/24", "--mtu", "1500", "--stats", "1", "--duration", "100",
            ]));
        }
    }

    /// <summary>A process of ours in this namespace (hw-sim, the daemon): output lines, bounded
    /// waits, killed by pid.</summary>
    internal sealed class HostProcess : IDisposable
    {
        private readonly Process _process;
        private readonly List<string> _lines = [];
        private readonly Action<string> _log;

        private HostProcess(Process process, Action<string> log)
        {
            _process = process;
            _log = log;
            _process.OutputDataReceived += (_, e) => Add(e.Data);
            _process.ErrorDataReceived += (_, e) => Add(e.Data);
            _process.BeginOutputReadLine();
            _process.BeginErrorReadLine();
        }

        public static HostProcess Start(Executable executable, IEnumerable<string> arguments, Action<string> log)
        {
            var start = Info(executable, arguments);
            log($"$ {executable.Program} {string.Join(' ', start.ArgumentList)} &");
            var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {executable.Program}");
            log($"  pid {process.Id}");
            return new HostProcess(process, log);
        }

        public int Pid => _process.Id;

        /// <summary>The exit code once it exited, else null.</summary>
        public int? ExitCode => _process.HasExited ? _process.ExitCode : null;

        /// <summary>The stdout and stderr lines so far.</summary>
        public IReadOnlyList<string> Lines
        {
            get
            {
                lock (_lines)
                {
                    return [.. _lines];
                }
            }
        }

        /// <summary>Waits for the process to exit and its output to end; false when it still
        /// runs after <paramref name="timeout"/>.</summary>
        public async Task<bool> WaitForExitAsync(TimeSpan timeout)
        {
            using var limit = new CancellationTokenSource(timeout);
            try
            {
                await _process.WaitForExitAsync(limit.Token);
                return true;
            }
            catch (OperationCanceledException)
            {
                return false;
            }
        }

        /// <summary>Runs to completion within <paramref name="timeout"/> (killed by pid after it).</summary>
        public static async Task<(int ExitCode, string Output)> RunAsync(Executable executable, IEnumerable<string> arguments, TimeSpan timeout)
        {
            var start = Info(executable, arguments);
            using var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {executable.Program}");
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            using var limit = new CancellationTokenSource(timeout);
            try
            {
                await process.WaitForExitAsync(limit.Token);
            }
            catch (OperationCanceledException)
            {
                process.Kill();
                await process.WaitForExitAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
                throw new TimeoutException($"{executable.Program} {string.Join(' ', start.ArgumentList)} did not finish within {timeout.TotalSeconds:0} s");
            }

            return (process.ExitCode, await stdout.WaitAsync(TimeSpan.FromSeconds(10)) + await stderr.WaitAsync(TimeSpan.FromSeconds(10)));
        }

        public async Task WaitForLineAsync(Func<string, bool> match, TimeSpan timeout)
        {
            var clock = Stopwatch.StartNew();
            while (true)
            {
                lock (_lines)
                {
                    if (_lines.Any(match))
                    {
                        return;
                    }
                }

                if (clock.Elapsed > timeout || _process.HasExited)
                {
                    throw new TimeoutException($"pid {_process.Id} printed no awaited line within {timeout.TotalSeconds:0} s (exited: {_process.HasExited}); its output:\n{string.Join('\n', _lines)}");
                }

                await Task.Delay(50);
            }
        }

        public void Dispose()
        {
            try
            {
                if (!_process.HasExited)
                {
                    _process.Kill(); // SIGKILL to that pid only
                }
            }
            catch (InvalidOperationException)
            {
                // exited meanwhile
            }

            _process.WaitForExit(10_000);
            _process.Dispose();
        }

        private static ProcessStartInfo Info(Executable executable, IEnumerable<string> arguments)
        {
            var start = new ProcessStartInfo(executable.Program)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (string a in executable.Arguments(arguments))
            {
                start.ArgumentList.Add(a);
            }

            return start;
        }

        private void Add(string? line)
        {
            if (line is null)
            {
                return;
            }

            lock (_lines)
            {
                _lines.Add(line);
            }

            _log($"[pid {_process.Id}] {line}");
        }
    }

    /// <summary>
    /// A TCP stream from namespace A to namespace B, each end on a thread of its own that entered
    /// its namespace (setns), so its sockets live there. The sender writes a deterministic,
    /// position-dependent pattern at a steady pace until told to finish; the receiver checks
    /// every byte against the pattern at its offset, so a corrupted, lost, duplicated or
    /// reordered byte shows as a mismatch (and a short stream as a byte count below the sent one).
    /// </summary>
    private sealed class CheckedStream : IDisposable
    {
        private readonly ManualResetEventSlim _finish = new();
        private readonly ManualResetEventSlim _listening = new();
        private readonly List<Socket> _sockets = [];
        private long _received;

        private CheckedStream()
        {
        }

        public Task<StreamCheck> Receiver { get; private set; } = null!;

        public Task<long> Sender { get; private set; } = null!;

        public long Received => Interlocked.Read(ref _received);

        public static CheckedStream Start(string senderNamespace, string receiverNamespace, IPAddress address, int port, long bytesPerSecond)
        {
            var stream = new CheckedStream();
            var endpoint = new IPEndPoint(address, port);
            stream.Receiver = OnThreadIn(receiverNamespace, "stream-receiver", () => stream.Receive(endpoint));
            var clock = Stopwatch.StartNew();
            while (!stream._listening.Wait(50))
            {
                if (stream.Receiver.IsCompleted)
                {
                    stream.Receiver.GetAwaiter().GetResult(); // its exception
                }

                if (clock.Elapsed > TimeSpan.FromSeconds(10))
                {
                    stream.Dispose();
                    throw new TimeoutException("the stream's receiver did not listen within 10 s");
                }
            }

            stream.Sender = OnThreadIn(senderNamespace, "stream-sender", () => stream.Send(endpoint, bytesPerSecond));
            return stream;
        }

        public void Finish() => _finish.Set();

        public async Task WaitForProgressAsync(long bytes, TimeSpan timeout)
        {
            var clock = Stopwatch.StartNew();
            while (Received < bytes)
            {
                if (Receiver.IsCompleted || Sender.IsCompleted)
                {
                    await CompleteAsync(TimeSpan.FromSeconds(10));
                    throw new InvalidOperationException($"the stream ended at {Received} bytes, before {bytes}");
                }

                if (clock.Elapsed > timeout)
                {
                    throw new TimeoutException($"the stream stalled at {Received} bytes received for {timeout.TotalSeconds:0} s (waiting for {bytes})");
                }

                await Task.Delay(20);
            }
        }

        public async Task<(long Sent, StreamCheck Received)> CompleteAsync(TimeSpan timeout)
        {
            // The receiver first: a mismatch closes its socket, which then fails the sender.
            var received = await Receiver.WaitAsync(timeout);
            Assert.Null(received.Mismatch);
            long sent = await Sender.WaitAsync(timeout);
            return (sent, received);
        }

        public void Dispose()
        {
            _finish.Set();
            lock (_sockets)
            {
                foreach (var s in _sockets)
                {
                    s.Dispose(); // unblocks a thread still in a call on it
                }
            }

            _finish.Dispose();
            _listening.Dispose();
        }

        /// <summary>The pattern's 8-byte word number <paramref name="k"/> (a splitmix64 step).</summary>
        private static ulong Word(long k)
        {
            ulong z = ((ulong)k * 0x9E37_79B9_7F4A_7C15UL) + 0x5043_5669_7274_696FUL;
            z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EBUL;
            return z ^ (z >> 31);
        }

        private static byte At(long offset) => (byte)(Word(offset >> 3) >> (int)((offset & 7) * 8));

        /// <summary>The pattern's bytes from stream offset <paramref name="offset"/>.</summary>
        private static void Fill(Span<byte> destination, long offset)
        {
            int i = 0;
            for (; i < destination.Length && ((offset + i) & 7) != 0; i++)
            {
                destination[i] = At(offset + i);
            }

            for (; i + 8 <= destination.Length; i += 8)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(destination[i..], Word((offset + i) >> 3));
            }

            for (; i < destination.Length; i++)
            {
                destination[i] = At(offset + i);
            }
        }

        /// <summary>Runs <paramref name="body"/> on a new thread that first enters the network
        /// namespace <paramref name="ns"/> (only that thread moves; it ends with the body).</summary>
        private static Task<T> OnThreadIn<T>(string ns, string name, Func<T> body)
        {
            var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
            var thread = new Thread(() =>
            {
                try
                {
                    LinkProcessNative.EnterNetworkNamespace(ns);
                    done.SetResult(body());
                }
                catch (Exception e)
                {
                    done.SetException(e);
                }
            })
            {
                IsBackground = true,
                Name = name,
            };
            thread.Start();
            return done.Task;
        }

        private Socket NewSocket()
        {
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            lock (_sockets)
            {
                _sockets.Add(s);
            }

            return s;
        }

        private StreamCheck Receive(IPEndPoint endpoint)
        {
            var listener = NewSocket();
            listener.Bind(endpoint);
            listener.Listen(1);
            _listening.Set();
            if (!listener.Poll(TimeSpan.FromSeconds(20), SelectMode.SelectRead))
            {
                throw new TimeoutException("the sender did not connect within 20 s");
            }

            var s = listener.Accept();
            lock (_sockets)
            {
                _sockets.Add(s);
            }

            s.ReceiveTimeout = (int)StreamStallTimeout.TotalMilliseconds;
            var buffer = new byte[256 * 1024];
            var expected = new byte[buffer.Length];
            long at = 0;
            while (true)
            {
                int n = s.Receive(buffer);
                if (n == 0)
                {
                    s.Dispose();
                    return new StreamCheck(at, null);
                }

                Fill(expected.AsSpan(0, n), at);
                if (!buffer.AsSpan(0, n).SequenceEqual(expected.AsSpan(0, n)))
                {
                    int i = buffer.AsSpan(0, n).CommonPrefixLength(expected.AsSpan(0, n));
                    s.Dispose();
                    return new StreamCheck(at + i, $"byte {at + i} is 0x{buffer[i]:x2}, the pattern says 0x{expected[i]:x2} (in a read of {n} bytes at {at})");
                }

                at += n;
                Interlocked.Exchange(ref _received, at);
            }
        }

        private long Send(IPEndPoint endpoint, long bytesPerSecond)
        {
            var s = NewSocket();
            s.SendTimeout = (int)StreamStallTimeout.TotalMilliseconds;
            using (var limit = new CancellationTokenSource(TimeSpan.FromSeconds(15)))
            {
                s.ConnectAsync(endpoint, limit.Token).AsTask().GetAwaiter().GetResult();
            }

            var buffer = new byte[64 * 1024];
            var clock = Stopwatch.StartNew();
            long sent = 0;
            while (!_finish.IsSet)
            {
                if (clock.Elapsed > TimeSpan.FromSeconds(75))
                {
                    throw new TimeoutException($"the stream was not finished within 75 s ({sent} bytes sent)");
                }

                // A steady pace: no further ahead than the rate allows.
                if (sent > clock.Elapsed.TotalSeconds * bytesPerSecond)
                {
                    _finish.Wait(2);
                    continue;
                }

                Fill(buffer, sent);
                for (int off = 0; off < buffer.Length;)
                {
                    off += s.Send(buffer.AsSpan(off));
                }

                sent += buffer.Length;
            }

            s.Shutdown(SocketShutdown.Send);
            return sent;
        }
    }

    private sealed record StreamCheck(long Bytes, string? Mismatch);
}

/// <summary>The few libc calls the link process tests make.</summary>
internal static partial class LinkProcessNative
{
    public const int SIGTERM = 15;
    private const int CLONE_NEWNET = 0x4000_0000;
    private const int O_RDONLY = 0;
    private const int O_CLOEXEC = 0x8_0000;

    [LibraryImport("libc", EntryPoint = "geteuid")]
    public static partial uint GetEuid();

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);

    /// <summary>Moves the calling thread into the network namespace <paramref name="name"/>
    /// (<c>ip netns</c>'s /var/run/netns/NAME); sockets it creates from then on live there.</summary>
    public static void EnterNetworkNamespace(string name)
    {
        string path = Path.Combine("/var/run/netns", name);
        int fd = Open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
        {
            throw new IOException($"open {path}: errno {Marshal.GetLastPInvokeError()}");
        }

        try
        {
            if (SetNs(fd, CLONE_NEWNET) != 0)
            {
                throw new IOException($"setns {path}: errno {Marshal.GetLastPInvokeError()}");
            }
        }
        finally
        {
            _ = Close(fd);
        }
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "setns", SetLastError = true)]
    private static partial int SetNs(int fd, int nstype);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);
}
