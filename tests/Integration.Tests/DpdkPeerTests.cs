using System.Diagnostics;
using PciVirtio.Tests.Peers;
using Xunit.Abstractions;

namespace PciVirtio.Integration.Tests;

/// <summary>
/// A fact that needs dpdk-testpmd: skipped, with the reason, when it is not installed and this is
/// not root; as root the test installs it when missing (<see cref="TestpmdInstallation"/>), so a
/// missing binary is then a failure.
/// </summary>
public sealed class DpdkFactAttribute : FactAttribute
{
    public DpdkFactAttribute()
    {
        if (TestpmdInstallation.SkipReason is { } reason)
        {
            Skip = reason;
        }
    }
}

/// <summary>
/// The testpmd harness against DPDK itself: DPDK's virtio-user frontend sends 64-byte packets
/// (txonly) to DPDK's vhost PMD (rxonly) through a vhost-user socket, each testpmd on a CPU of
/// its own, and every packet the frontend counts as sent is counted as received by the backend.
/// Also the harness's own behaviour: a frontend without a backend fails to start, with testpmd's
/// words in the message, and leaves no process or runtime directory behind.
/// </summary>
public sealed class DpdkPeerTests(ITestOutputHelper output)
{
    private const int PacketLength = 64;
    private static readonly TimeSpan TrafficTime = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan LinkTimeout = TimeSpan.FromSeconds(20);

    [DpdkFact(Timeout = 120_000)]
    public Task Virtio_user_txonly_packets_all_reach_the_vhost_pmd() =>
        RunPairAsync(queues: 1, mrgRxbuf: null);

    [DpdkFact(Timeout = 120_000)]
    public Task Virtio_user_txonly_packets_all_reach_the_vhost_pmd_over_two_queue_pairs() =>
        RunPairAsync(queues: 2, mrgRxbuf: null);

    [DpdkFact(Timeout = 120_000)]
    public Task Virtio_user_txonly_packets_all_reach_the_vhost_pmd_without_mergeable_rx_buffers() =>
        RunPairAsync(queues: 1, mrgRxbuf: false);

    [DpdkFact(Timeout = 120_000)]
    public async Task A_virtio_user_client_without_a_backend_fails_to_start_and_is_cleaned_up()
    {
        var work = Directory.CreateTempSubdirectory("pcivirtio-dpdk-");
        try
        {
            string missing = Path.Combine(work.FullName, "nobody.sock");
            var options = new TestpmdOptions
            {
                Name = "orphan",
                Cores = "1",
                Vdevs = [Vdev.VirtioUser(missing)],
                StartTimeout = TimeSpan.FromSeconds(60),
            };

            var clock = Stopwatch.StartNew();
            var failure = await Assert.ThrowsAsync<TestpmdException>(() => Testpmd.StartAsync(options, output.WriteLine));
            output.WriteLine($"failed as expected after {clock.Elapsed.TotalSeconds:0.00} s");
            Assert.Contains("No probed ethernet devices", failure.Message, StringComparison.Ordinal);
            Assert.Contains("failed to initialize net_virtio_user0", failure.Message, StringComparison.Ordinal);

            // Nothing of it is left: no testpmd with our file prefix, no runtime directory.
            string ourPrefix = $"pv{Environment.ProcessId}-";
            Assert.DoesNotContain(RunningTestpmdCommandLines(), line => line.Contains(ourPrefix, StringComparison.Ordinal));
            Assert.False(Directory.Exists("/var/run/dpdk") && Directory.EnumerateDirectories("/var/run/dpdk", ourPrefix + "*").Any(),
                "the runtime directory is removed");
        }
        finally
        {
            work.Delete(recursive: true);
        }
    }

    [DpdkFact(Timeout = 60_000)]
    public async Task An_eal_error_at_start_up_is_reported_with_testpmd_output()
    {
        // This machine kind has 2 CPUs: EAL refuses CPU 7 and testpmd exits with its usage text.
        var failure = await Assert.ThrowsAsync<TestpmdException>(() => Testpmd.StartAsync(
            new TestpmdOptions { Name = "bad-cores", Cores = $"{Environment.ProcessorCount + 5}" }, output.WriteLine));
        Assert.Contains("exited with code", failure.Message, StringComparison.Ordinal);
        Assert.Contains("unavailable", failure.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// A virtio-user frontend in server mode blocks its start-up until a backend connects: it is
    /// launched without waiting for the prompt, a vhost PMD in client mode connects, and both
    /// links come up. When that backend quits the frontend's link goes down and it waits for the
    /// next one, which brings the link up again.
    /// </summary>
    [DpdkFact(Timeout = 120_000)]
    public async Task A_virtio_user_server_waits_for_a_vhost_client_and_takes_it_back_after_it_left()
    {
        var work = Directory.CreateTempSubdirectory("pcivirtio-dpdk-");
        try
        {
            string socket = Path.Combine(work.FullName, "server.sock");
            await using var frontend = Testpmd.Launch(new TestpmdOptions
            {
                Name = "virtio-server",
                Cores = "1",
                Vdevs = [Vdev.VirtioUser(socket, server: true)],
            }, output.WriteLine);
            await frontend.WaitForLineAsync(line => line.Contains("waiting for client connection", StringComparison.Ordinal),
                TimeSpan.FromSeconds(60), description: "\"waiting for client connection\"");
            Assert.Null(frontend.StartupTime);

            for (int round = 1; round <= 2; round++)
            {
                await using var backend = await Testpmd.StartAsync(new TestpmdOptions
                {
                    Name = $"vhost-client{round}",
                    Cores = "0",
                    Vdevs = [Vdev.Vhost(socket, client: true)],
                }, output.WriteLine);
                if (round == 1)
                {
                    await frontend.WaitUntilReadyAsync(TimeSpan.FromSeconds(60));
                    output.WriteLine($"the frontend reached its prompt {frontend.StartupTime?.TotalSeconds:0.00} s after launch");
                }

                await frontend.WaitForLinkAsync(0, up: true, LinkTimeout);
                await backend.WaitForLinkAsync(0, up: true, LinkTimeout);
                Assert.Equal(0, await backend.QuitAsync());
                await frontend.WaitForLinkAsync(0, up: false, LinkTimeout);
            }

            Assert.Equal(0, await frontend.QuitAsync());
        }
        finally
        {
            work.Delete(recursive: true);
        }
    }

    /// <summary>
    /// The vhost PMD (backend, CPU 0, rxonly) serves the socket; the virtio-user frontend (CPU 1)
    /// connects, sends 64-byte packets (txonly) for about a second and stops; once the backend has
    /// drained the rings, the frontend's TX counters equal the backend's RX counters. When the
    /// backend quits, the frontend's link goes down.
    /// </summary>
    private async Task RunPairAsync(int queues, bool? mrgRxbuf)
    {
        var total = Stopwatch.StartNew();
        var work = Directory.CreateTempSubdirectory("pcivirtio-dpdk-");
        try
        {
            string socket = Path.Combine(work.FullName, "vhost.sock");
            await using var backend = await Testpmd.StartAsync(new TestpmdOptions
            {
                Name = "vhost",
                Cores = "0",
                Vdevs = [Vdev.Vhost(socket, queues)],
                RxQueues = queues,
                TxQueues = queues,
            }, output.WriteLine);
            await backend.SetForwardModeAsync("rxonly");
            await backend.StartForwardingAsync();
            Assert.False(await backend.IsLinkUpAsync(0), "no frontend yet: the vhost port is down");

            await using var frontend = await Testpmd.StartAsync(new TestpmdOptions
            {
                Name = "virtio-user",
                Cores = "1",
                Vdevs = [Vdev.VirtioUser(socket, queues, mrgRxbuf: mrgRxbuf)],
                RxQueues = queues,
                TxQueues = queues,
            }, output.WriteLine);
            output.WriteLine($"start-up: backend {backend.StartupTime?.TotalSeconds:0.00} s, frontend {frontend.StartupTime?.TotalSeconds:0.00} s");

            var frontendPort = await frontend.WaitForLinkAsync(0, up: true, LinkTimeout);
            var backendPort = await backend.WaitForLinkAsync(0, up: true, LinkTimeout);
            Assert.Equal("net_virtio_user", frontendPort.DriverName);
            Assert.Equal("net_vhost", backendPort.DriverName);
            Assert.Equal(queues, frontendPort.TxQueues);
            Assert.Equal(queues, backendPort.RxQueues);

            await frontend.SetForwardModeAsync("txonly");
            await frontend.SetTxPacketLengthAsync(PacketLength);
            await frontend.StartForwardingAsync();
            await Task.Delay(TrafficTime);
            await frontend.StopForwardingAsync();
            var sent = await frontend.GetPortStatsAsync(0);

            // What the frontend put in the rings after the backend's last poll is still there:
            // let the backend (still forwarding) take it before stopping it.
            var received = await WaitForReceivedAsync(backend, sent.TxPackets, TimeSpan.FromSeconds(10));
            await backend.StopForwardingAsync();
            received = await backend.GetPortStatsAsync(0);
            output.WriteLine($"frontend sent {sent.TxPackets} packets ({sent.TxBytes} bytes, {sent.TxErrors} errors); " +
                $"backend received {received.RxPackets} ({received.RxBytes} bytes), missed {received.RxMissed}, errors {received.RxErrors}; " +
                $"{sent.TxPackets / TrafficTime.TotalSeconds / 1e6:0.00} Mpps over the nominal {TrafficTime.TotalSeconds:0} s");

            Assert.True(sent.TxPackets > 0, "the frontend sent packets");
            Assert.Equal(sent.TxPackets * PacketLength, sent.TxBytes);
            Assert.Equal(sent.TxPackets, received.RxPackets + received.RxMissed);
            Assert.Equal(sent.TxBytes, received.RxBytes);
            Assert.Equal(0, received.RxErrors);
            Assert.Equal(0, sent.TxErrors);

            // The backend goes away: the frontend sees its link go down.
            Assert.Equal(0, await backend.QuitAsync());
            var down = await frontend.WaitForLinkAsync(0, up: false, LinkTimeout);
            Assert.Equal("down", down.LinkStatus);

            // Closing a virtio-user port whose backend is gone writes to the dead socket ("Broken pipe"):
            // testpmd inherits .NET's ignored SIGPIPE and exits 0; started from a shell it dies of SIGPIPE (141).
            int code = await frontend.QuitAsync();
            Assert.True(code is 0 or 141, $"frontend exit code {code}");
        }
        finally
        {
            work.Delete(recursive: true);
            output.WriteLine($"test took {total.Elapsed.TotalSeconds:0.00} s");
        }
    }

    /// <summary>Polls the backend's RX counters until they reach <paramref name="expected"/> or stop
    /// growing for half a second (then the assertions show the difference).</summary>
    private static async Task<PortStats> WaitForReceivedAsync(Testpmd backend, long expected, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        var stats = await backend.GetPortStatsAsync(0);
        long last = -1;
        var unchangedSince = clock.Elapsed;
        while (stats.RxPackets + stats.RxMissed < expected && clock.Elapsed < timeout)
        {
            long now = stats.RxPackets + stats.RxMissed;
            if (now != last)
            {
                last = now;
                unchangedSince = clock.Elapsed;
            }
            else if (clock.Elapsed - unchangedSince > TimeSpan.FromMilliseconds(500))
            {
                break;
            }

            await Task.Delay(50);
            stats = await backend.GetPortStatsAsync(0);
        }

        return stats;
    }

    private static IEnumerable<string> RunningTestpmdCommandLines()
    {
        foreach (string directory in Directory.EnumerateDirectories("/proc"))
        {
            string? commandLine = null;
            try
            {
                if (int.TryParse(Path.GetFileName(directory), out _))
                {
                    commandLine = File.ReadAllText(Path.Combine(directory, "cmdline")).Replace('\0', ' ');
                }
            }
            catch (IOException)
            {
                // the process ended meanwhile
            }
            catch (UnauthorizedAccessException)
            {
                // not ours to read
            }

            if (commandLine is not null && commandLine.Contains("dpdk-testpmd", StringComparison.Ordinal))
            {
                yield return commandLine;
            }
        }
    }
}
