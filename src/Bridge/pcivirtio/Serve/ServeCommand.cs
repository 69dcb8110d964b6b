using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace PciVirtio.Host.Serve;

/// <summary><c>pcivirtio serve</c>: runs the backends until SIGINT/SIGTERM (or the
/// duration), printing counters, then a summary.</summary>
public static class ServeCommand
{
    public static int Run(ServeOptions options, TextWriter output)
    {
        using var loggers = LoggerFactory.Create(b => b
            .SetMinimumLevel(options.Verbose ? LogLevel.Debug : LogLevel.Information)
            .AddSimpleConsole(o =>
            {
                o.SingleLine = true;
                o.TimestampFormat = "HH:mm:ss.fff ";
            }));
        VhostNetServer server;
        try
        {
            server = VhostNetServer.Start(options, loggers);
        }
        catch (Exception e) when (e is Mmio.Interop.NativeCallException or ArgumentException or IOException or UnauthorizedAccessException)
        {
            output.WriteLine($"pcivirtio serve: {e.Message}");
            return 1;
        }

        using (server)
        {
            using var stop = new ManualResetEventSlim();
            using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
            string what = server.Tap is { } tap ? $"bridged to TAP {tap.Name}"
                : server.Traffic is { } t ? $"{t.Mode.ToString().ToLowerInvariant()} of {options.FrameSize}-byte frames"
                : "joined port to port";
            output.WriteLine($"serving {string.Join(", ", options.Sockets)} ({(options.Client ? "client" : "server")} mode, {options.QueuePairs} queue pair(s), {what})");
            output.Flush();
            var started = DateTime.UtcNow;
            var deadline = options.Duration is { } d ? started + d : DateTime.MaxValue;
            var interval = options.StatsInterval ?? TimeSpan.FromSeconds(1);
            var last = server.Counters();
            long warmAllocated = -1, warmFrames = 0;
            while (!stop.IsSet && DateTime.UtcNow < deadline)
            {
                var wait = deadline - DateTime.UtcNow;
                stop.Wait(wait < interval ? wait : interval);
                if (options.StatsInterval is null || stop.IsSet)
                {
                    continue;
                }

                var now = server.Counters();
                long frames = Frames(now);
                if (warmAllocated < 0 && frames > 0 && Frames(last) > 0)
                {
                    // Warm from the second interval with traffic on (JIT and first buffers done).
                    warmAllocated = server.LoopAllocatedBytes();
                    warmFrames = frames;
                }

                for (int i = 0; i < now.Count; i++)
                {
                    var (n, p) = (now[i], last[i]);
                    double secs = interval.TotalSeconds;
                    output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{n.Device}: from guest {(n.TxPackets - p.TxPackets) / secs:F0} pps, to guest {(n.RxPackets - p.RxPackets) / secs:F0} pps, drops {n.Drops}"));
                }

                output.Flush();
                last = now;
            }

            foreach (var c in server.Counters())
            {
                output.WriteLine($"{c.Device}: {c.TxPackets} frames ({c.TxBytes} bytes) from the guest, {c.RxPackets} frames ({c.RxBytes} bytes) to the guest, {c.Drops} dropped");
            }

            if (warmAllocated >= 0)
            {
                long bytes = server.LoopAllocatedBytes() - warmAllocated;
                long frames = Frames(server.Counters()) - warmFrames;
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"allocated after warm-up: {(frames > 0 ? (double)bytes / frames : 0):0.000} B/frame ({bytes} bytes on the data-plane thread, counter snapshots included, over {frames} frames)"));
            }

            foreach (var line in server.QueueReport())
            {
                output.WriteLine(line);
            }

            return 0;

            static long Frames(IReadOnlyList<NetDeviceCounters> counters) => counters.Sum(c => c.TxPackets + c.RxPackets);

            void Stop(PosixSignalContext context)
            {
                context.Cancel = true;
                stop.Set();
            }
        }
    }
}
