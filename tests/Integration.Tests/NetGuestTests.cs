using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using PciVirtio.Host.Serve;
using PciVirtio.Tests.Guest;
using Xunit.Abstractions;

namespace PciVirtio.Integration.Tests;

/// <summary>
/// A QEMU guest (TCG) whose only NIC is a vhost-user virtio-net device, on a backend that bridges
/// it to a TAP in a network namespace of the test's own: the guest pings the namespace's address
/// and iperf3 moves TCP data both ways. The backend here is DPDK's dpdk-testpmd (vhost PMD + TAP
/// PMD, io forwarding), which tests the guest harness (<see cref="NetGuest"/>,
/// <see cref="NetNamespace"/>); the same body runs with our backend once it exists, through
/// <see cref="RunGuestTrafficAsync"/>'s backend hook.
/// </summary>
public sealed class NetGuestTests(ITestOutputHelper output)
{
    /// <summary>The whole test; xunit's Timeout is the backstop.</summary>
    private static readonly TimeSpan Budget = TimeSpan.FromSeconds(150);

    private static readonly TimeSpan BackendStartTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan BootTimeout = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(40);
    private static readonly TimeSpan IperfDuration = TimeSpan.FromSeconds(3);
    private const int PingCount = 5;

    /// <summary>Starts a vhost-user backend that listens on the socket (first argument) and
    /// forwards between it and a TAP of the given name (second argument) in this process's
    /// namespace; ready for QEMU to connect when the task completes. Disposing stops it.</summary>
    private delegate Task<IAsyncDisposable> BackendStarter(string socket, string tap, CancellationToken cancellationToken);

    [Fact(Timeout = 180_000)]
    public Task A_guest_pings_and_runs_iperf3_through_testpmd_as_its_vhost_user_backend() =>
        RunGuestTrafficAsync("dpdk-testpmd", async (socket, tap, token) => await TestpmdBackend.StartAsync(socket, tap, Log, BackendStartTimeout, token));

    [Fact(Timeout = 180_000)]
    public async Task A_guest_pings_and_runs_iperf3_through_our_vhost_user_backend_and_tap()
    {
        OurBackend? ours = null;
        await RunGuestTrafficAsync("pcivirtio", (socket, tap, token) =>
        {
            ours = new OurBackend(VhostNetServer.Start(new ServeOptions { Sockets = [socket], Tap = tap }, new TestOutputLoggers(Log)));
            return Task.FromResult<IAsyncDisposable>(ours);
        });

        // Our counters agree that traffic went both ways, and TSO frames crossed whole: with
        // the guest's and the TAP's segmentation offloads on, frames above the MTU travel.
        Assert.NotNull(ours);
        var c = Assert.Single(ours.Final);
        Log($"pcivirtio counters: {c}; {string.Join("; ", ours.Queues)}");
        Assert.True(c.TxPackets > 1000 && c.RxPackets > 1000, c.ToString());
        Assert.True(c.TxBytes / c.TxPackets > 1500 || c.RxBytes / c.RxPackets > 1500, $"no frame above the MTU crossed: {c}");
    }

    /// <summary>Our backend in this process; keeps its last counters when disposed.</summary>
    private sealed class OurBackend(VhostNetServer server) : IAsyncDisposable
    {
        public IReadOnlyList<NetDeviceCounters> Final { get; private set; } = [];

        public IReadOnlyList<string> Queues { get; private set; } = [];

        public ValueTask DisposeAsync()
        {
            Final = server.Counters();
            Queues = server.QueueReport();
            server.Dispose();
            return ValueTask.CompletedTask;
        }
    }

    private async Task RunGuestTrafficAsync(string backendName, BackendStarter startBackend)
    {
        using var budget = new CancellationTokenSource(Budget);
        var token = budget.Token;
        var clock = Stopwatch.StartNew();
        var environment = GuestEnvironment.Get();
        Log($"guest kernel {environment.KernelPackage}; prepare.sh took {environment.PrepareResult.Duration.TotalSeconds:0.0} s");

        var work = Directory.CreateTempSubdirectory("pcivirtio-netguest-");
        try
        {
            string image = await NetGuest.BuildInitramfsAsync(environment, Path.Combine(work.FullName, "net-guest.cpio"), cancellationToken: token);
            string socket = Path.Combine(work.FullName, "vhost-net.sock");
            string tap = "pcvtap" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3));
            string subnet = string.Create(CultureInfo.InvariantCulture, $"10.{RandomNumberGenerator.GetInt32(100, 200)}.{RandomNumberGenerator.GetInt32(1, 255)}");
            string hostIp = subnet + ".1";
            string guestIp = subnet + ".2";
            const string mac = "52:54:00:12:34:56";

            // Disposed in reverse: the guest, then the backend, then the namespace (with the TAP
            // and the iperf3 server in it).
            await using var ns = await NetNamespace.CreateAsync("pcvnet", Log, token);
            await using var backend = await startBackend(socket, tap, token);
            await ns.MoveInterfaceAsync(tap, TimeSpan.FromSeconds(10), token);
            await ns.AddAddressAsync(tap, hostIp + "/24", token);
            await ns.SetUpAsync(tap, token);
            var server = ns.Start("iperf3", ["-s", "--forceflush"]);
            await server.WaitForLineAsync(l => l.Contains("Server listening", StringComparison.Ordinal), TimeSpan.FromSeconds(10), token);
            var setUp = clock.Elapsed;

            var settings = new NetGuestSettings
            {
                Address = guestIp + "/24",
                HostAddress = hostIp,
                PingCount = PingCount,
                Iperf = NetGuestIperfMode.Client,
                IperfDuration = IperfDuration,
                CommandWait = TimeSpan.FromSeconds(60),
            };
            var options = NetGuest.Options("net-" + backendName, image, new NetGuestNic { Socket = socket, Mac = mac }, settings) with
            {
                GuestDeadline = Budget,
            };
            await using var vm = GuestVm.Start(environment, options, output.WriteLine);
            Log($"QEMU pid {vm.Pid}");

            // 1. Boot: the interface is up on the backend's link.
            var ready = await NetGuest.WaitForReadyAsync(vm, BootTimeout, token);
            Assert.Equal("eth0", ready.Interface);
            Assert.Equal(mac, ready.Mac);
            Assert.True(ready.Carrier, "the guest sees the link up");
            Assert.True(ready.HasFeature(32), $"VIRTIO_F_VERSION_1 negotiated (features 0x{ready.Features:x})");
            Assert.True(ready.HasFeature(5), $"VIRTIO_NET_F_MAC negotiated (features 0x{ready.Features:x})");

            // 2. The guest pings the namespace's address.
            var ping = await NetGuest.WaitForPingAsync(vm, StepTimeout, cancellationToken: token);
            Assert.Equal(hostIp, ping.Host);
            Assert.Equal(PingCount, ping.Sent);
            Assert.Equal(PingCount, ping.Received);
            Assert.Equal(0, ping.ExitCode);

            // 3. guest -> namespace: the guest's iperf3 client sends to the server in the namespace.
            var upload = await NetGuest.WaitForIperfAsync(vm, StepTimeout, cancellationToken: token);
            Assert.True(upload.Succeeded, $"guest iperf3 client: {upload}");
            Assert.True(upload.SentBytes > 0 && upload.ReceivedBytes > 0, $"data moved: {upload}");

            // 4. namespace -> guest, driven through the console: the guest's client in reverse mode
            //    (-R: the namespace's server sends).
            var reverse = await NetGuest.IperfClientAsync(vm, hostIp, IperfDuration, StepTimeout, ["-R"], token);
            Assert.True(reverse.Succeeded, $"guest iperf3 client -R: {reverse}");
            Assert.True(reverse.ReceivedBytes > 0, $"data moved: {reverse}");

            // 5. namespace -> guest: a client in the namespace sends to a one-off server in the guest.
            int from = await NetGuest.StartIperfServerAsync(vm, StepTimeout, cancellationToken: token);
            string seconds = ((int)IperfDuration.TotalSeconds).ToString(CultureInfo.InvariantCulture);
            var client = await ns.RunAsync(["iperf3", "-c", guestIp, "-t", seconds, "--connect-timeout", "5000"], StepTimeout, token);
            Assert.True(client.Succeeded, $"iperf3 client in the namespace: {client.Output}");
            var download = await NetGuest.WaitForIperfAsync(vm, StepTimeout, from, token);
            Assert.True(download.Succeeded, $"guest iperf3 server: {download}");
            Assert.True(download.ReceivedBytes > 0, $"data moved: {download}");

            // 6. Commands through the console: a ping, a shell command; then power off.
            var again = await NetGuest.PingAsync(vm, hostIp, 2, StepTimeout, token);
            Assert.Equal(2, again.Received);
            var link = await NetGuest.RunAsync(vm, "ip addr show dev eth0", StepTimeout, token);
            Assert.Equal(0, link.ExitCode);
            Assert.Contains(link.Output, l => l.Contains(mac, StringComparison.Ordinal));
            Assert.Contains(link.Output, l => l.Contains($"inet {guestIp}/24", StringComparison.Ordinal));
            await NetGuest.PowerOffAsync(vm, TimeSpan.FromSeconds(30), token);
            Assert.Equal(0, vm.ExitCode);
            var exit = await vm.WaitForMarkerAsync(GuestMarkers.Exit, TimeSpan.Zero, cancellationToken: token);
            Assert.Equal("0", GuestMarkers.Fields(exit.From(GuestMarkers.Exit)!)["rc"]);

            Log(string.Create(CultureInfo.InvariantCulture,
                $"timings ({backendName}): namespace + backend + iperf3 server set up {setUp.TotalSeconds:0.0} s after the test started; " +
                $"guest ready {ready.At.TotalSeconds:0.0} s after QEMU started (guest uptime {ready.GuestUptime:0.00} s), features 0x{ready.Features:x}; " +
                $"ping {ping.Received}/{ping.Sent} in {ping.Seconds:0.00} s (avg {ping.AverageMilliseconds:0.0} ms); " +
                $"iperf3 guest->ns {upload.ReceivedBitsPerSecond / 1e6:0.0} Mbit/s ({upload.ReceivedBytes / 1e6:0.0} MB in {upload.Seconds:0.0} s, {upload.Retransmits} retransmits); " +
                $"iperf3 ns->guest (guest client -R) {reverse.ReceivedBitsPerSecond / 1e6:0.0} Mbit/s ({reverse.ReceivedBytes / 1e6:0.0} MB in {reverse.Seconds:0.0} s); " +
                $"iperf3 ns->guest (guest server) {download.ReceivedBitsPerSecond / 1e6:0.0} Mbit/s ({download.ReceivedBytes / 1e6:0.0} MB, guest side {download.Seconds:0.0} s); " +
                $"powered off {vm.Elapsed.TotalSeconds:0.0} s after QEMU started; whole test {clock.Elapsed.TotalSeconds:0.0} s"));
        }
        finally
        {
            work.Delete(recursive: true);
        }
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

    /// <summary>
    /// dpdk-testpmd as a vhost-user-to-TAP switch (real-peers.md): the vhost PMD listens on the
    /// socket, the TAP PMD creates the TAP, io forwarding moves frames between them. It runs
    /// without hugepages (its memory is a memfd), with a file prefix of its own; stdin stays open
    /// (non-interactive testpmd quits at the first line on stdin) and stdbuf makes its output come
    /// line by line. Disposing asks it to quit, kills its pid when it does not, and removes its
    /// runtime directory.
    /// </summary>
    private sealed class TestpmdBackend : IAsyncDisposable
    {
        private const string Program = "/usr/bin/dpdk-testpmd";

        private readonly Process _process;
        private readonly string _prefix;
        private readonly string _socket;
        private readonly Action<string> _log;
        private readonly List<string> _lines = [];
        private readonly Task _readers;

        private TestpmdBackend(Process process, string prefix, string socket, Action<string> log)
        {
            _process = process;
            _prefix = prefix;
            _socket = socket;
            _log = log;
            _readers = Task.WhenAll(Task.Run(() => ReadAsync(process.StandardOutput)), Task.Run(() => ReadAsync(process.StandardError)));
        }

        public static async Task<IAsyncDisposable> StartAsync(string socket, string tap, Action<string> log, TimeSpan timeout, CancellationToken cancellationToken)
        {
            if (!File.Exists(Program))
            {
                throw new InvalidOperationException($"{Program} is missing: on Debian 12 it is in the dpdk-dev package (apt-get install -y dpdk-dev), not in dpdk");
            }

            string prefix = $"pcvnet-{Environment.ProcessId}-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3))}";
            var start = new ProcessStartInfo("stdbuf")
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (string argument in new[]
            {
                "-oL", "-eL", Program,
                "-l", "0-1", "--no-huge", "-m", "512", "--no-pci", "--file-prefix", prefix,
                "--vdev", $"net_vhost0,iface={socket},queues=1", "--vdev", $"net_tap0,iface={tap}",
                "--", "--forward-mode=io", "--auto-start", "--total-num-mbufs=8192",
            })
            {
                start.ArgumentList.Add(argument);
            }

            log("$ " + string.Join(' ', start.ArgumentList));
            // stdbuf execs testpmd: the pid is testpmd's.
            var process = Process.Start(start) ?? throw new InvalidOperationException("could not start dpdk-testpmd");
            log($"  dpdk-testpmd pid {process.Id}");
            var backend = new TestpmdBackend(process, prefix, socket, log);
            try
            {
                // Ports are started (the TAP configured in this namespace) once it checks link
                // statuses; the vhost socket listens from the probe on.
                var clock = Stopwatch.StartNew();
                while (!(backend.Printed("Checking link statuses") && File.Exists(socket) && Directory.Exists($"/sys/class/net/{tap}")))
                {
                    if (process.HasExited)
                    {
                        throw new InvalidOperationException($"dpdk-testpmd exited with code {process.ExitCode}:\n{backend.Output()}");
                    }

                    if (clock.Elapsed > timeout)
                    {
                        throw new TimeoutException($"dpdk-testpmd did not start within {timeout.TotalSeconds:0} s:\n{backend.Output()}");
                    }

                    await Task.Delay(50, cancellationToken);
                }

                return backend;
            }
            catch
            {
                await backend.DisposeAsync();
                throw;
            }
        }

        public async ValueTask DisposeAsync()
        {
            if (!_process.HasExited)
            {
                try
                {
                    await _process.StandardInput.WriteLineAsync(); // "Press enter to exit"
                    await _process.StandardInput.FlushAsync();
                }
                catch (IOException)
                {
                    // it is going anyway
                }

                try
                {
                    await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
                }
                catch (TimeoutException)
                {
                    _log($"dpdk-testpmd (pid {_process.Id}) did not quit; killing it");
                    _process.Kill(); // SIGKILL to the pid we started
                    await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
                }
            }

            await _readers.WaitAsync(TimeSpan.FromSeconds(10));
            _log($"dpdk-testpmd exited with code {_process.ExitCode}");
            _process.Dispose();
            foreach (string runtime in new[] { $"/var/run/dpdk/{_prefix}", $"/run/dpdk/{_prefix}" })
            {
                if (Directory.Exists(runtime))
                {
                    Directory.Delete(runtime, recursive: true);
                }
            }

            File.Delete(_socket);
        }

        private bool Printed(string text)
        {
            lock (_lines)
            {
                return _lines.Any(l => l.Contains(text, StringComparison.Ordinal));
            }
        }

        private string Output()
        {
            lock (_lines)
            {
                return string.Join('\n', _lines);
            }
        }

        private async Task ReadAsync(StreamReader reader)
        {
            while (await reader.ReadLineAsync() is { } line)
            {
                lock (_lines)
                {
                    _lines.Add(line);
                }

                _log("[testpmd] " + line);
            }
        }
    }
}
