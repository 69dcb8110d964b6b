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
public static class VhostBenchmark
{
    public static async Task<int> RunAsync(string[] args)
    {
        double seconds = 3;
        int[] sizes = [64, 1500];
        string[] modes = ["txonly", "rxonly"];
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--seconds" && i + 1 < args.Length)
            {
                seconds = double.Parse(args[++i], CultureInfo.InvariantCulture);
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
        Console.WriteLine($"vhost-user backends against one DPDK virtio-user frontend, {seconds:0.#} s per case, backend on CPU 0, frontend on CPU 1");
        Console.WriteLine();
        Console.WriteLine("| frontend | frame | pcivirtio Mpps | DPDK vhost Mpps | ratio | pcivirtio B/frame |");
        Console.WriteLine("|---|---|---|---|---|---|");
        foreach (string mode in modes)
        {
            foreach (int size in sizes)
            {
                var ours = await MeasureAsync(mode, size, seconds, socket => StartOurs(pcivirtio, socket, mode, size));
                var theirs = await MeasureAsync(mode, size, seconds, socket => StartDpdk(socket, mode, size));
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {mode} | {size} B | {ours.Mpps:0.000} | {theirs.Mpps:0.000} | {ours.Mpps / theirs.Mpps:0.00}x | {ours.BytesPerFrame} |"));
            }
        }

        return 0;
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
        await Task.Delay(TimeSpan.FromSeconds(1)); // warm-up (JIT, first buffers)
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
            Kill(Signal.Int);
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

        private void Kill(Signal signal)
        {
            using var kill = Process.Start("kill", [signal == Signal.Int ? "-INT" : "-KILL", _process.Id.ToString(CultureInfo.InvariantCulture)]);
            kill?.WaitForExit();
        }

        private enum Signal
        {
            Int,
        }
    }
}
