using System.Diagnostics;
using System.Globalization;
using PciVirtio.Tests.Peers;

namespace PciVirtio.Benchmarks;

/// <summary>
/// Our vhost-user backend against DPDK's vhost PMD (the reference), both driven by the same
/// DPDK virtio-user frontend, in one run: the frontend transmits (txonly; the backend
/// discards, as testpmd's rxonly does) or receives (rxonly; the backend generates, as
/// testpmd's txonly does), at each frame size. Each backend gets CPU 0 and busy-polls; the
/// frontend gets CPU 1. Prints Mpps for both and the ratio, and the managed bytes our
/// backend allocated per frame after warm-up. Only ratios within one run mean anything.
/// </summary>
/// <remarks>
/// On a virtual machine the two CPUs' cost of passing a cache line between them changes
/// while it runs (the hypervisor moves them), by up to twice either way, so one measurement
/// of each backend can compare two different machines. Each case therefore alternates the
/// two backends for several rounds, and the ratio printed is the median of the rounds'
/// ratios (each taken from back-to-back runs), with their range. Each run warms up for 3 s
/// before it is measured: with both CPUs busy-polling, the JIT's background compilation of
/// the hot methods has little CPU left and takes that long.
/// </remarks>
public static class VhostBenchmark
{
    public static async Task<int> RunAsync(string[] args)
    {
        double seconds = 3;
        int rounds = 3;
        int[] sizes = [64, 1500];
        string[] modes = ["txonly", "rxonly"];
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--seconds" && i + 1 < args.Length)
            {
                seconds = double.Parse(args[++i], CultureInfo.InvariantCulture);
            }
            else if (args[i] == "--rounds" && i + 1 < args.Length)
            {
                rounds = Math.Max(1, int.Parse(args[++i], CultureInfo.InvariantCulture));
            }
            else if (args[i] == "--modes" && i + 1 < args.Length)
            {
                modes = args[++i].Split(',');
            }
            else if (args[i] == "--sizes" && i + 1 < args.Length)
            {
                sizes = [.. args[++i].Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture))];
            }
        }

        if (TestpmdInstallation.FindExecutable() is null)
        {
            Console.Error.WriteLine($"dpdk-testpmd not found: apt-get install -y {TestpmdInstallation.DebianPackage}");
            return 1;
        }

        string pcivirtio = Path.Combine(AppContext.BaseDirectory, "pcivirtio.dll");
        Console.WriteLine($"vhost-user backends against one DPDK virtio-user frontend, {seconds:0.#} s per run after {WarmUp.TotalSeconds:0} s of warm-up, {rounds} rounds per case, backend on CPU 0, frontend on CPU 1");
        Console.WriteLine();
        Console.WriteLine("| frontend | frame | pcivirtio Mpps | DPDK vhost Mpps | ratio (median) | ratio range | pcivirtio B/frame |");
        Console.WriteLine("|---|---|---|---|---|---|---|");
        foreach (string mode in modes)
        {
            foreach (int size in sizes)
            {
                var ours = new List<double>();
                var theirs = new List<double>();
                var ratios = new List<double>();
                string perFrame = "?";
                Task<(double Mpps, string BytesPerFrame)> Ours() => MeasureAsync(mode, size, seconds, socket => StartOurs(pcivirtio, socket, mode, size));
                Task<(double Mpps, string BytesPerFrame)> Theirs() => MeasureAsync(mode, size, seconds, socket => StartDpdk(socket, mode, size));
                for (int round = 0; round < rounds; round++)
                {
                    // Alternate which goes first, so a drift during the round favours neither.
                    (double Mpps, string BytesPerFrame) o, t;
                    if (round % 2 == 0)
                    {
                        o = await Ours();
                        t = await Theirs();
                    }
                    else
                    {
                        t = await Theirs();
                        o = await Ours();
                    }

                    ours.Add(o.Mpps);
                    theirs.Add(t.Mpps);
                    ratios.Add(o.Mpps / t.Mpps);
                    perFrame = o.BytesPerFrame;
                    await Console.Error.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                        $"{mode} {size} B round {round + 1}: pcivirtio {o.Mpps:0.000} Mpps, DPDK {t.Mpps:0.000} Mpps, {o.Mpps / t.Mpps:0.00}x"));
                }

                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {mode} | {size} B | {Median(ours):0.000} | {Median(theirs):0.000} | {Median(ratios):0.00}x | {ratios.Min():0.00}-{ratios.Max():0.00}x | {perFrame} |"));
            }
        }

        return 0;
    }

    private static readonly TimeSpan WarmUp = TimeSpan.FromSeconds(3);

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        int mid = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    }

    private static async Task<(double Mpps, string BytesPerFrame)> MeasureAsync(string mode, int size, double seconds, Func<string, Task<IBackend>> start)
    {
        string socket = Path.Combine(Path.GetTempPath(), $"pcivirtio-bench-{Environment.ProcessId}-{Guid.NewGuid():N}.sock");
        await using var backend = await start(socket);
        await using var frontend = await Testpmd.StartAsync(new TestpmdOptions
        {
            Name = "fe",
            Cores = "1",
            Vdevs = [Vdev.VirtioUser(socket)],
            ForwardMode = mode,
        });
        await frontend.SetTxPacketLengthAsync(size);
        await frontend.StartForwardingAsync();
        await Task.Delay(WarmUp); // JIT tiering, first buffers
        backend.MarkWarm();
        var first = await frontend.GetPortStatsAsync(0);
        var clock = Stopwatch.StartNew();
        await Task.Delay(TimeSpan.FromSeconds(seconds));
        var last = await frontend.GetPortStatsAsync(0);
        double elapsed = clock.Elapsed.TotalSeconds;
        await frontend.StopForwardingAsync();
        long packets = mode == "txonly" ? last.TxPackets - first.TxPackets : last.RxPackets - first.RxPackets;
        await frontend.QuitAsync();
        string perFrame = await backend.StopAsync();
        return (packets / elapsed / 1e6, perFrame);
    }

    private static async Task<IBackend> StartOurs(string dll, string socket, string mode, int size)
    {
        var psi = new ProcessStartInfo("taskset") { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (string a in new[] { "-c", "0", "dotnet", dll, "serve", "--socket", socket, mode == "txonly" ? "--sink" : "--source", "--frame-size", size.ToString(CultureInfo.InvariantCulture), "--poll", "--stats", "0.5" })
        {
            psi.ArgumentList.Add(a);
        }

        var process = Process.Start(psi) ?? throw new InvalidOperationException("could not start pcivirtio");
        var backend = new OurBackend(process);
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!File.Exists(socket))
        {
            if (process.HasExited || DateTime.UtcNow > deadline)
            {
                throw new InvalidOperationException("pcivirtio serve did not start");
            }

            await Task.Delay(50);
        }

        return backend;
    }

    private static async Task<IBackend> StartDpdk(string socket, string mode, int size)
    {
        var backend = await Testpmd.StartAsync(new TestpmdOptions
        {
            Name = "vb",
            Cores = "0",
            Vdevs = [Vdev.Vhost(socket)],
            ForwardMode = mode == "txonly" ? "rxonly" : "txonly",
        });
        await backend.SetTxPacketLengthAsync(size);
        await backend.StartForwardingAsync();
        return new DpdkBackend(backend);
    }

    private interface IBackend : IAsyncDisposable
    {
        void MarkWarm();

        Task<string> StopAsync();
    }

    private sealed class DpdkBackend(Testpmd testpmd) : IBackend
    {
        public void MarkWarm()
        {
        }

        public async Task<string> StopAsync()
        {
            await testpmd.StopForwardingAsync();
            await testpmd.QuitAsync();
            return "-";
        }

        public ValueTask DisposeAsync() => testpmd.DisposeAsync();
    }

    /// <summary>`pcivirtio serve` in its own process; its exit report gives the allocations.</summary>
    private sealed class OurBackend : IBackend
    {
        private readonly Process _process;
        private readonly Task<string> _output;

        public OurBackend(Process process)
        {
            _process = process;
            _output = process.StandardOutput.ReadToEndAsync();
        }

        public void MarkWarm()
        {
        }

        public async Task<string> StopAsync()
        {
            // SIGTERM, not SIGINT: a shell starts background jobs with SIGINT ignored, and
            // the benchmark may be one.
            Terminate();
            string output = await _output.WaitAsync(TimeSpan.FromSeconds(20));
            // The per-queue report (kicks, interrupts, stalls) goes to stderr: it says how the
            // two sides paced each other, which the rate alone does not.
            foreach (string queue in output.Split('\n').Where(l => l.StartsWith("  ", StringComparison.Ordinal)))
            {
                await Console.Error.WriteLineAsync($"pcivirtio serve:{queue}");
            }

            var line = output.Split('\n').FirstOrDefault(l => l.Contains("allocated after warm-up", StringComparison.Ordinal));
            return line is null ? "?" : line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
        }

        public ValueTask DisposeAsync()
        {
            if (!_process.HasExited)
            {
                _process.Kill();
            }

            _process.Dispose();
            return ValueTask.CompletedTask;
        }

        private void Terminate()
        {
            using var kill = Process.Start("kill", ["-TERM", _process.Id.ToString(CultureInfo.InvariantCulture)]);
            kill?.WaitForExit();
        }
    }
}
