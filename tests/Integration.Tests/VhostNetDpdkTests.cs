using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using PciVirtio.Host.Serve;
using PciVirtio.Tests.Guest;
using PciVirtio.Tests.Peers;
using PciVirtio.VhostCore.Net;
using Xunit.Abstractions;

namespace PciVirtio.Integration.Tests;

/// <summary>
/// DPDK's virtio-user frontend (dpdk-testpmd) against our vhost-user virtio-net backend, run in
/// this process (<see cref="VhostNetServer"/>): two frontends joined by our port-to-port switch
/// (every frame one sends is counted once by each of our two devices and received by the other,
/// both ways, with and without mergeable receive buffers, small and 1500-byte frames, over one and
/// two queue pairs); one frontend bridged to a TAP in a network namespace of the test's own;
/// frontends killed and restarted against a sink, with our backend as server and as client, leaving
/// no descriptor or mapping behind; and a frontend killed in the middle of traffic without harm to
/// the other device. Every testpmd runs on CPU 1 (both its lcores there, see
/// <see cref="TestpmdOptions.Cores"/>); assertions are on counts, never on rates.
/// </summary>
public sealed class VhostNetDpdkTests(ITestOutputHelper output)
{
    private const string FrontendCpu = "1";
    private static readonly TimeSpan TrafficTime = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan ShortTrafficTime = TimeSpan.FromSeconds(0.3);
    private static readonly TimeSpan LinkTimeout = TimeSpan.FromSeconds(20);
    private static readonly TimeSpan StateTimeout = TimeSpan.FromSeconds(10);

    /// <summary>How long the counters must stay still before a drain is considered over.</summary>
    private static readonly TimeSpan QuietTime = TimeSpan.FromSeconds(1);

    private static readonly TimeSpan DrainTimeout = TimeSpan.FromSeconds(15);

    [DpdkFact(Timeout = 90_000)]
    public Task Switched_64_byte_frames_are_counted_alike_by_sender_both_devices_and_receiver_both_ways() =>
        RunSwitchAsync(queuePairs: 1, mrgRxbuf: null, packetLength: 64);

    [DpdkFact(Timeout = 90_000)]
    public Task Switched_frames_are_counted_alike_both_ways_without_mergeable_rx_buffers() =>
        RunSwitchAsync(queuePairs: 1, mrgRxbuf: false, packetLength: 64);

    [DpdkFact(Timeout = 90_000)]
    public Task Switched_1500_byte_frames_are_counted_alike_both_ways_with_mergeable_rx_buffers() =>
        RunSwitchAsync(queuePairs: 1, mrgRxbuf: true, packetLength: 1500);

    [DpdkFact(Timeout = 90_000)]
    public Task Switched_frames_flow_on_both_of_two_queue_pairs_and_are_counted_alike_both_ways() =>
        RunSwitchAsync(queuePairs: 2, mrgRxbuf: null, packetLength: 64);

    /// <summary>
    /// One socket bridged to a TAP that the test moves into a network namespace of its own and
    /// brings up there; the frontend sends 64-byte frames (txonly) for about a second. Every frame
    /// the frontend counts as sent is counted by our device and by the kernel as received on the TAP.
    /// </summary>
    [DpdkFact(Timeout = 90_000)]
    public async Task Frames_from_a_dpdk_frontend_all_reach_a_tap_in_a_network_namespace()
    {
        var clock = Stopwatch.StartNew();
        var work = Directory.CreateTempSubdirectory("pcivirtio-vhostdpdk-");
        try
        {
            string socket = Path.Combine(work.FullName, "net0.sock");
            string tap = "pcvd" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
            await using var ns = await NetNamespace.CreateAsync("pcvd", Log);
            using var server = VhostNetServer.Start(new ServeOptions { Sockets = [socket], Tap = tap }, new TestOutputLoggers(Log));
            await ns.MoveInterfaceAsync(tap, StateTimeout);
            await ns.SetUpAsync(tap);

            await using var frontend = await StartFrontendAsync("vu-tap", socket);
            await frontend.WaitForLinkAsync(0, up: true, LinkTimeout);
            await WaitForQueuesAsync(server, pairs: 1);
            Assert.Equal("1", (await ns.RunAsync(["cat", $"/sys/class/net/{tap}/carrier"], StateTimeout)).Output.Trim());

            await frontend.SetForwardModeAsync("txonly");
            await frontend.SetTxPacketLengthAsync(64);
            await frontend.StartForwardingAsync();
            await Task.Delay(TrafficTime);
            await frontend.StopForwardingAsync();
            var sent = await frontend.GetPortStatsAsync(0);

            async Task<long> TapReceivedAsync() => ReadCounter(await ns.RunAsync(["cat", $"/sys/class/net/{tap}/statistics/rx_packets"], StateTimeout));
            long tapReceived = 0;
            NetDeviceCounters ours = default;
            await DrainAsync(async () =>
            {
                ours = server.Counters()[0];
                tapReceived = await TapReceivedAsync();
                return [ours.TxPackets, tapReceived];
            }, sent.TxPackets);

            var tapDropped = ReadCounter(await ns.RunAsync(["cat", $"/sys/class/net/{tap}/statistics/rx_dropped"], StateTimeout));
            Log($"frontend sent {sent.TxPackets} frames ({sent.TxBytes} bytes); our device took {ours.TxPackets} ({ours.TxBytes} bytes, {ours.Drops} drops); " +
                $"the TAP received {tapReceived} (rx_dropped {tapDropped}); {string.Join("; ", server.QueueReport())}");
            Assert.True(sent.TxPackets > 0, "the frontend sent frames");
            Assert.Equal(sent.TxPackets, ours.TxPackets);
            Assert.Equal(sent.TxBytes, ours.TxBytes);
            Assert.Equal(0, ours.Drops);
            Assert.Equal(sent.TxPackets, tapReceived);
        }
        finally
        {
            work.Delete(recursive: true);
            Log($"test took {clock.Elapsed.TotalSeconds:0.00} s");
        }
    }

    /// <summary>
    /// Our backend listens (server mode) in front of a sink; five times a frontend connects, sends
    /// for a moment and is killed with SIGKILL. Each time our backend ends the session by itself,
    /// and afterwards the process holds as many descriptors and memfd mappings as before the first
    /// frontend came.
    /// </summary>
    [DpdkFact(Timeout = 90_000)]
    public async Task Frontends_killed_five_times_leave_no_descriptor_or_mapping_behind_in_server_mode()
    {
        var clock = Stopwatch.StartNew();
        var work = Directory.CreateTempSubdirectory("pcivirtio-vhostdpdk-");
        try
        {
            string socket = Path.Combine(work.FullName, "sink.sock");
            using var server = VhostNetServer.Start(new ServeOptions { Sockets = [socket], Traffic = TrafficMode.Sink }, new TestOutputLoggers(Log));
            var before = await ProcessResources.SettledAsync();
            Log($"before the first frontend: {before}");

            for (int round = 1; round <= 5; round++)
            {
                await KillRoundAsync(server, round, before, () => StartFrontendAsync($"vu-kill{round}", socket));
            }

            await AssertResourcesBackAsync(before);
        }
        finally
        {
            work.Delete(recursive: true);
            Log($"test took {clock.Elapsed.TotalSeconds:0.00} s");
        }
    }

    /// <summary>
    /// Our backend connects (client mode) to a frontend that listens (<c>server=1</c>); three times
    /// the frontend is killed and a new one started on the same path, and our backend connects to
    /// each by itself. Afterwards no descriptor or mapping is left.
    /// </summary>
    [DpdkFact(Timeout = 90_000)]
    public async Task Our_client_reconnects_to_restarted_frontends_and_leaves_nothing_behind()
    {
        var clock = Stopwatch.StartNew();
        var work = Directory.CreateTempSubdirectory("pcivirtio-vhostdpdk-");
        try
        {
            string socket = Path.Combine(work.FullName, "frontend.sock");
            using var server = VhostNetServer.Start(new ServeOptions { Sockets = [socket], Client = true, Traffic = TrafficMode.Sink }, new TestOutputLoggers(Log));
            var before = await ProcessResources.SettledAsync();
            Log($"before the first frontend: {before}");

            for (int round = 1; round <= 3; round++)
            {
                // The killed frontend left its socket file: a new one cannot bind over it.
                File.Delete(socket);
                await KillRoundAsync(server, round, before, async () =>
                {
                    var frontend = Testpmd.Launch(FrontendOptions($"vu-srv{round}", socket, server: true), Log);
                    try
                    {
                        await frontend.WaitUntilReadyAsync(TimeSpan.FromSeconds(60));
                        return frontend;
                    }
                    catch
                    {
                        await frontend.DisposeAsync();
                        throw;
                    }
                });
            }

            File.Delete(socket);
            await AssertResourcesBackAsync(before);
        }
        finally
        {
            work.Delete(recursive: true);
            Log($"test took {clock.Elapsed.TotalSeconds:0.00} s");
        }
    }

    /// <summary>
    /// Two frontends on the switch, one sending to the other; the receiving one is killed in the
    /// middle of the traffic. The sender's device keeps its session and its transmit queue goes on
    /// (frames for the absent peer are dropped and counted); a frontend started on the killed
    /// one's socket is served at once, and traffic both ways is counted alike again.
    /// </summary>
    [DpdkFact(Timeout = 90_000)]
    public async Task A_frontend_killed_mid_traffic_does_not_hurt_the_other_device()
    {
        var clock = Stopwatch.StartNew();
        var work = Directory.CreateTempSubdirectory("pcivirtio-vhostdpdk-");
        try
        {
            string[] sockets = [Path.Combine(work.FullName, "net0.sock"), Path.Combine(work.FullName, "net1.sock")];
            using var server = VhostNetServer.Start(new ServeOptions { Sockets = [.. sockets] }, new TestOutputLoggers(Log));
            await using var sender = await StartFrontendAsync("vu-a", sockets[0]);
            var victim = await StartFrontendAsync("vu-b", sockets[1]);
            try
            {
                await sender.WaitForLinkAsync(0, up: true, LinkTimeout);
                await victim.WaitForLinkAsync(0, up: true, LinkTimeout);
                await WaitForQueuesAsync(server, pairs: 1);
                var session = server.Backends[0].Session;
                Assert.NotNull(session);

                await victim.SetForwardModeAsync("rxonly");
                await victim.StartForwardingAsync();
                await sender.SetForwardModeAsync("txonly");
                await sender.SetTxPacketLengthAsync(64);
                await sender.StartForwardingAsync();
                await Task.Delay(ShortTrafficTime);
                Assert.True(server.Counters()[1].RxPackets > 0, "frames reached the second frontend before it was killed");

                victim.Kill();
                Assert.True(await victim.WaitForExitAsync(StateTimeout), "the killed frontend exited");
                Assert.Equal(128 + 9, victim.ExitCode); // SIGKILL
                await WaitUntilAsync(() => !server.Backends[1].IsConnected, "our second device sees its frontend gone");
                Log($"second device's session ended: {server.Backends[1].LastEndReason}");

                // The first device's session is the same one, still connected, and its transmit
                // queue goes on: the sender's frames for the absent peer are dropped and counted.
                var gone = server.Counters()[0];
                await Task.Delay(ShortTrafficTime);
                var later = server.Counters()[0];
                Log($"first device while the peer is gone: {gone} -> {later}");
                Assert.True(server.Backends[0].IsConnected);
                Assert.Same(session, server.Backends[0].Session);
                Assert.Equal(0, server.Backends[0].SessionsEnded);
                Assert.True(later.TxPackets + later.Drops > gone.TxPackets + gone.Drops,
                    $"the first device's transmit queue kept running while the peer was gone: {gone} -> {later}");

                await sender.StopForwardingAsync();
                var sentSoFar = await sender.GetPortStatsAsync(0);
                await DrainAsync(() =>
                {
                    var c = server.Counters()[0];
                    return Task.FromResult<long[]>([c.TxPackets + c.Drops]);
                }, sentSoFar.TxPackets);
                var taken = server.Counters()[0];
                Assert.Equal(sentSoFar.TxPackets, taken.TxPackets + taken.Drops);
            }
            finally
            {
                await victim.DisposeAsync();
            }

            // A new frontend on the killed one's socket: both directions counted alike again.
            await using var replacement = await StartFrontendAsync("vu-b2", sockets[1]);
            await replacement.WaitForLinkAsync(0, up: true, LinkTimeout);
            await WaitForQueuesAsync(server, pairs: 1);
            Assert.Equal(1, server.Backends[1].SessionsEnded);
            Assert.Equal(0, server.Backends[0].SessionsEnded);
            await replacement.SetTxPacketLengthAsync(64);
            await MeasureOneWayAsync(server, sender, 0, replacement, 1, pairs: 1);
            await MeasureOneWayAsync(server, replacement, 1, sender, 0, pairs: 1);
        }
        finally
        {
            work.Delete(recursive: true);
            Log($"test took {clock.Elapsed.TotalSeconds:0.00} s");
        }
    }

    /// <summary>
    /// Two frontends on our switch; the first sends (txonly) for about a second while the second
    /// receives (rxonly), then the roles swap on the same connections. Each way, once the
    /// receiver has drained the rings, the sender's TX-packets, the sending device's frames from
    /// its driver, the receiving device's frames to its driver and the receiver's RX-packets are
    /// one and the same number (and so are the bytes): the switch holds a sender back when the
    /// receiver has no buffers, it does not drop.
    /// </summary>
    private async Task RunSwitchAsync(int queuePairs, bool? mrgRxbuf, int packetLength)
    {
        var clock = Stopwatch.StartNew();
        var work = Directory.CreateTempSubdirectory("pcivirtio-vhostdpdk-");
        try
        {
            string[] sockets = [Path.Combine(work.FullName, "net0.sock"), Path.Combine(work.FullName, "net1.sock")];
            using var server = VhostNetServer.Start(new ServeOptions { Sockets = [.. sockets], QueuePairs = queuePairs }, new TestOutputLoggers(Log));
            await using var first = await StartFrontendAsync("vu-a", sockets[0], queuePairs, mrgRxbuf);
            await using var second = await StartFrontendAsync("vu-b", sockets[1], queuePairs, mrgRxbuf);
            var firstPort = await first.WaitForLinkAsync(0, up: true, LinkTimeout);
            await second.WaitForLinkAsync(0, up: true, LinkTimeout);
            Assert.Equal(queuePairs, firstPort.TxQueues);
            await WaitForQueuesAsync(server, queuePairs);
            Log($"start-up: {first.StartupTime?.TotalSeconds:0.00} s and {second.StartupTime?.TotalSeconds:0.00} s; ready {clock.Elapsed.TotalSeconds:0.00} s into the test");
            foreach (var device in server.Devices)
            {
                var features = (VirtioNetFeatures)server.Invoke(() => device.AckedFeatures);
                Assert.Equal(mrgRxbuf ?? true, (features & VirtioNetFeatures.MrgRxbuf) != 0);
            }

            await first.SetTxPacketLengthAsync(packetLength);
            await second.SetTxPacketLengthAsync(packetLength);
            await MeasureOneWayAsync(server, first, 0, second, 1, queuePairs);
            await MeasureOneWayAsync(server, second, 1, first, 0, queuePairs);
        }
        finally
        {
            work.Delete(recursive: true);
            Log($"test took {clock.Elapsed.TotalSeconds:0.00} s");
        }
    }

    /// <summary>
    /// The receiver forwards in rxonly, the sender in txonly for <see cref="TrafficTime"/>; after
    /// the sender stopped, waits until our counters and the receiver's stop moving (or match) and
    /// asserts that every count agrees, per queue pair too when there are several.
    /// </summary>
    private async Task MeasureOneWayAsync(VhostNetServer server, Testpmd sender, int senderDevice, Testpmd receiver, int receiverDevice, int pairs)
    {
        await sender.ClearPortStatsAsync(0);
        await receiver.ClearPortStatsAsync(0);
        var before = PairCounts(server);
        var switchPort = senderDevice == 0 ? server.Switch!.Left : server.Switch!.Right;
        long forwardedBefore = switchPort.Forwarded;
        long switchDropsBefore = switchPort.Dropped;
        await receiver.SetForwardModeAsync("rxonly");
        await receiver.StartForwardingAsync();
        await sender.SetForwardModeAsync("txonly");
        await sender.StartForwardingAsync();
        await Task.Delay(TrafficTime);
        await sender.StopForwardingAsync();
        var sent = await sender.GetPortStatsAsync(0);

        // What the sender put in its ring after our last look, and what our switch held back for
        // want of receive buffers, arrives while the receiver goes on taking frames.
        await DrainAsync(async () =>
        {
            var now = Totals(PairCounts(server), before);
            var taken = await receiver.GetPortStatsAsync(0);
            return [now[senderDevice].TxPackets, now[receiverDevice].RxPackets, taken.RxPackets];
        }, sent.TxPackets);
        await receiver.StopForwardingAsync();
        var received = await receiver.GetPortStatsAsync(0);
        var after = PairCounts(server);
        var totals = Totals(after, before);
        var from = totals[senderDevice];
        var to = totals[receiverDevice];

        Log($"{sender.Name} -> {receiver.Name}: sent {sent.TxPackets} frames ({sent.TxBytes} bytes, {sent.TxErrors} errors); " +
            $"net{senderDevice} took {from.TxPackets} ({from.TxBytes} bytes), net{receiverDevice} delivered {to.RxPackets} ({to.RxBytes} bytes); " +
            $"received {received.RxPackets} ({received.RxBytes} bytes, {received.RxErrors} errors, {received.RxNoMbuf} no-mbuf); drops {from.Drops + to.Drops}");
        foreach (string line in server.QueueReport())
        {
            Log(line);
        }

        Assert.True(sent.TxPackets > 0, "the sender sent frames");
        Assert.Equal(sent.TxPackets, from.TxPackets);
        Assert.Equal(sent.TxPackets, to.RxPackets);
        Assert.Equal(sent.TxPackets, received.RxPackets);
        Assert.Equal(sent.TxBytes, from.TxBytes);
        Assert.Equal(sent.TxBytes, to.RxBytes);
        Assert.Equal(sent.TxBytes, received.RxBytes);
        Assert.Equal(0, from.Drops + to.Drops);
        Assert.Equal(0, received.RxErrors);
        Assert.Equal(sent.TxPackets, switchPort.Forwarded - forwardedBefore);
        Assert.Equal(0, switchPort.Dropped - switchDropsBefore);

        // Pair N of the sender goes to pair N of the receiver: each pair carried traffic, and the
        // two devices agree pair by pair.
        for (int p = 0; p < pairs; p++)
        {
            var tx = after[senderDevice][p].TxPackets - before[senderDevice][p].TxPackets;
            var rx = after[receiverDevice][p].RxPackets - before[receiverDevice][p].RxPackets;
            Assert.True(tx > 0, $"pair {p} of net{senderDevice} carried frames");
            Assert.Equal(tx, rx);
        }
    }

    /// <summary>
    /// Polls <paramref name="sample"/> until every count equals <paramref name="expected"/>, or
    /// until none has moved for <see cref="QuietTime"/>, bounded by <see cref="DrainTimeout"/>;
    /// the caller's assertions then tell the difference.
    /// </summary>
    private async Task DrainAsync(Func<Task<long[]>> sample, long expected)
    {
        var clock = Stopwatch.StartNew();
        long[] last = await sample();
        var still = Stopwatch.StartNew();
        while (!last.All(count => count == expected) && still.Elapsed < QuietTime && clock.Elapsed < DrainTimeout)
        {
            await Task.Delay(50);
            long[] now = await sample();
            if (!now.SequenceEqual(last))
            {
                still.Restart();
                last = now;
            }
        }

        Log($"drained in {clock.Elapsed.TotalSeconds:0.00} s: expected {expected}, counts {string.Join(", ", last)}");
    }

    /// <summary>One frontend's life against our sink: connect, send for a moment, die by
    /// SIGKILL; our backend ends the session by itself.</summary>
    private async Task KillRoundAsync(VhostNetServer server, int round, ProcessResources before, Func<Task<Testpmd>> start)
    {
        var backend = server.Backends[0];
        int ended = backend.SessionsEnded;
        long sunk = server.Traffic!.Sunk;
        var frontend = await start();
        try
        {
            await frontend.WaitForLinkAsync(0, up: true, LinkTimeout);
            await WaitForQueuesAsync(server, pairs: 1);
            int mappings = server.Invoke(() => backend.Session?.LiveMappings ?? 0);
            Assert.True(mappings > 0, "the frontend's memory is mapped");
            var connected = ProcessResources.Now();
            Assert.True(connected.MemfdMappings > before.MemfdMappings, $"the frontend's memfd shows in /proc/self/maps: {connected}");
            await frontend.SetForwardModeAsync("txonly");
            await frontend.StartForwardingAsync();
            await Task.Delay(ShortTrafficTime);
            frontend.Kill();
            Assert.True(await frontend.WaitForExitAsync(StateTimeout), "the killed frontend exited");
            Assert.Equal(128 + 9, frontend.ExitCode); // SIGKILL
        }
        finally
        {
            await frontend.DisposeAsync();
        }

        await WaitUntilAsync(() => !backend.IsConnected && backend.SessionsEnded == ended + 1, $"round {round}: our backend ends the session");
        Log($"round {round}: {server.Traffic.Sunk - sunk} frames sunk; session {backend.SessionsEnded} ended: {backend.LastEndReason}");
        Assert.True(server.Traffic.Sunk > sunk, $"round {round}: frames reached the sink");
    }

    private async Task AssertResourcesBackAsync(ProcessResources before)
    {
        var after = await ProcessResources.SettledAsync(before);
        Log($"after the last frontend: {after}");
        Assert.Equal(before.Descriptors, after.Descriptors);
        Assert.Equal(before.MemfdMappings, after.MemfdMappings);
    }

    private Task<Testpmd> StartFrontendAsync(string name, string socket, int queues = 1, bool? mrgRxbuf = null) =>
        Testpmd.StartAsync(FrontendOptions(name, socket, queues, mrgRxbuf), Log);

    private static TestpmdOptions FrontendOptions(string name, string socket, int queues = 1, bool? mrgRxbuf = null, bool server = false) => new()
    {
        Name = name,
        Cores = FrontendCpu,
        Vdevs = [Vdev.VirtioUser(socket, queues, server: server, mrgRxbuf: mrgRxbuf)],
        RxQueues = queues,
        TxQueues = queues,
    };

    /// <summary>Waits until every queue of the first <paramref name="pairs"/> pairs of every device runs.</summary>
    private static Task WaitForQueuesAsync(VhostNetServer server, int pairs) =>
        WaitUntilAsync(() => server.Invoke(() => server.Devices.All(d => d.Pairs.Count >= pairs && d.Pairs.Take(pairs).All(p => p.Rx.IsRunning && p.Tx.IsRunning))),
            $"the queues of {pairs} pair(s) run on every device");

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > StateTimeout)
            {
                throw new TimeoutException($"not within {StateTimeout.TotalSeconds:0} s: {what}");
            }

            await Task.Delay(20);
        }
    }

    /// <summary>Per device, per pair: the counters of its transmit and receive queues.</summary>
    private static PairCount[][] PairCounts(VhostNetServer server) => server.Invoke(() => server.Devices
        .Select(d => d.Pairs.Select(p => new PairCount(p.Tx.Stats.Packets, p.Tx.Stats.Bytes, p.Rx.Stats.Packets, p.Rx.Stats.Bytes, p.Tx.Stats.Drops + p.Rx.Stats.Drops)).ToArray())
        .ToArray());

    private static PairCount[] Totals(PairCount[][] after, PairCount[][] before) =>
        [.. after.Select((pairs, d) => pairs.Select((p, i) => p - before[d][i]).Aggregate(default(PairCount), (a, b) => a + b))];

    private static long ReadCounter(ScriptResult result)
    {
        Assert.True(result.Succeeded, result.Output);
        return long.Parse(result.Output.Trim(), CultureInfo.InvariantCulture);
    }

    private void Log(string line)
    {
        try
        {
            output.WriteLine(line);
        }
        catch (InvalidOperationException)
        {
            // the test has finished
        }
    }

    private readonly record struct PairCount(long TxPackets, long TxBytes, long RxPackets, long RxBytes, long Drops)
    {
        public static PairCount operator +(PairCount a, PairCount b) =>
            new(a.TxPackets + b.TxPackets, a.TxBytes + b.TxBytes, a.RxPackets + b.RxPackets, a.RxBytes + b.RxBytes, a.Drops + b.Drops);

        public static PairCount operator -(PairCount a, PairCount b) =>
            new(a.TxPackets - b.TxPackets, a.TxBytes - b.TxBytes, a.RxPackets - b.RxPackets, a.RxBytes - b.RxBytes, a.Drops - b.Drops);
    }

    /// <summary>
    /// What our backend could leave behind: this process's open descriptors by kind (sockets,
    /// eventfds and other anonymous inodes, memfds, devices) and its memfd mappings. Not counted:
    /// pipes, which are the harness's stdio pipes to each testpmd (our backend opens none; the
    /// harness reads the streams itself, so disposing the Process leaves them to the finalizer),
    /// regular files, which the runtime opens as it loads assemblies (xunit.assert.dll at the
    /// first assertion, ...), and the runtime's own memfd mappings ("doublemapper": JIT code
    /// mapped twice, more of it as methods are compiled).
    /// </summary>
    private sealed record ProcessResources(string Descriptors, int MemfdMappings)
    {
        public static ProcessResources Now()
        {
            var kinds = new SortedDictionary<string, int>(StringComparer.Ordinal);
            foreach (string fd in Directory.GetFileSystemEntries("/proc/self/fd"))
            {
                string? kind;
                try
                {
                    kind = Kind(new FileInfo(fd).LinkTarget);
                }
                catch (IOException)
                {
                    kind = null; // closed meanwhile, or the descriptor of this listing
                }

                if (kind is not null)
                {
                    kinds[kind] = kinds.GetValueOrDefault(kind) + 1;
                }
            }

            int memfdMappings = File.ReadLines("/proc/self/maps")
                .Count(line => line.Contains("memfd", StringComparison.Ordinal) && !line.Contains("doublemapper", StringComparison.Ordinal));
            return new ProcessResources(string.Join(", ", kinds.Select(k => $"{k.Key} x{k.Value}")), memfdMappings);
        }

        /// <summary>
        /// Samples until two readings 200 ms apart agree (a descriptor held for a moment, such
        /// as a client's connect attempt, is not counted) — and, with <paramref name="target"/>,
        /// until they equal it; for up to 5 s.
        /// </summary>
        public static async Task<ProcessResources> SettledAsync(ProcessResources? target = null)
        {
            var clock = Stopwatch.StartNew();
            var last = Now();
            while (clock.Elapsed < TimeSpan.FromSeconds(5))
            {
                await Task.Delay(200);
                var now = Now();
                if (now == last && (target is null || now == target))
                {
                    return now;
                }

                last = now;
            }

            return last;
        }

        /// <summary>socket, anon_inode:[eventfd], memfd:NAME, /dev/...; null for what is not counted.</summary>
        private static string? Kind(string? target) => target switch
        {
            null => null,
            _ when target.StartsWith("pipe:", StringComparison.Ordinal) => null,
            _ when target.StartsWith("socket:", StringComparison.Ordinal) => "socket",
            _ when target.StartsWith("/memfd:", StringComparison.Ordinal) => "memfd:" + target["/memfd:".Length..].Replace(" (deleted)", string.Empty, StringComparison.Ordinal),
            _ when target.StartsWith("/dev/", StringComparison.Ordinal) => target,
            _ when target.StartsWith('/') => null,
            _ => target,
        };
    }
}
