using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using PciVirtio.Bridge.Hardware;
using PciVirtio.Bridge.Link;

namespace PciVirtio.Host.LinkEnd;

/// <summary><c>pcivirtio link</c>: one end of a host-to-host link as a TAP, until
/// SIGINT/SIGTERM or the duration, printing the link state and throughput.</summary>
public static class LinkCommand
{
    public const string Usage = """
        link options:
          --hw SPEC          hw-sim:SOCKET[#PORT] (a running pcivirtio-hwsim serve) or vfio:BDF
          --tap NAME         TAP interface to create (default: the kernel names one)
          --mtu N            MTU of the TAP, 68..65521 (default 1500)
          --address CIDR     address to give the TAP, e.g. 10.77.0.1/24 (runs ip addr add)
          --queues N         queue pairs to offer, 1..16 (default 1)
          --queue-size N     ring size to offer (default 256)
          --buffer-size B    receive buffer bytes per ring slot (default 4096)
          --duration S       stop after S seconds (default: on SIGINT/SIGTERM)
          --stats S          print state and throughput every S seconds (default 1, 0: never)
          --poll             busy-poll the rings (lowest latency, one core spins) instead of doorbells
          --verbose          debug logging
        """;

    public static int Run(ReadOnlySpan<string> arguments, TextWriter output)
    {
        string[] args = arguments.ToArray();
        string? hw = null, tap = null, address = null;
        int mtu = 1500, queues = 1, queueSize = 256, bufferSize = 4096;
        double? duration = null;
        double stats = 1;
        bool verbose = false, poll = false;
        for (int i = 0; i < args.Length; i++)
        {
            string a = args[i];
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{a} needs a value");
            int Int(int min, int max)
            {
                string v = Next();
                return int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= min && n <= max
                    ? n
                    : throw new ArgumentException($"{a} needs a number in {min}..{max}, not '{v}'");
            }

            try
            {
                switch (a)
                {
                    case "--hw": hw = Next(); break;
                    case "--tap": tap = Next(); break;
                    case "--address": address = Next(); break;
                    case "--mtu": mtu = Int(68, 65521); break;
                    case "--queues": queues = Int(1, LinkParameters.MaxQueuePairs); break;
                    case "--queue-size": queueSize = Int(LinkParameters.MinQueueSize, LinkParameters.MaxQueueSize); break;
                    case "--buffer-size": bufferSize = Int(256, 1 << 20); break;
                    case "--duration": duration = Int(1, int.MaxValue); break;
                    case "--stats": stats = Int(0, 3600); break;
                    case "--verbose": verbose = true; break;
                    case "--poll": poll = true; break;
                    default: throw new ArgumentException($"unknown link option '{a}'");
                }
            }
            catch (ArgumentException e)
            {
                output.WriteLine($"pcivirtio link: {e.Message}");
                output.WriteLine(Usage);
                return 2;
            }
        }

        if (hw is null)
        {
            output.WriteLine($"pcivirtio link: --hw is required: {NtbHardware.SpecForms}");
            return 2;
        }

        var offer = new LinkParameters { QueuePairs = queues, QueueSize = queueSize, BufferSize = bufferSize };
        if (offer.Validate() is { } invalid)
        {
            output.WriteLine($"pcivirtio link: {invalid}");
            return 2;
        }

        using var loggers = LoggerFactory.Create(b => b
            .SetMinimumLevel(verbose ? LogLevel.Debug : LogLevel.Information)
            .AddSimpleConsole(o =>
            {
                o.SingleLine = true;
                o.TimestampFormat = "HH:mm:ss.fff ";
            }));
        TapLinkEnd end;
        try
        {
            end = TapLinkEnd.Start(NtbHardware.Open(hw), tap, mtu, new LinkOptions { Name = tap ?? "link", Offer = offer, Poll = poll }, loggers);
        }
        catch (Exception e) when (e is Mmio.Interop.NativeCallException or ArgumentException or IOException or InvalidOperationException or TimeoutException or UnauthorizedAccessException)
        {
            output.WriteLine($"pcivirtio link: {e.Message}");
            return 1;
        }

        using (end)
        {
            if (address is not null && !AssignAddress(end.Tap.Name, address, output))
            {
                return 1;
            }

            output.WriteLine($"link on {end.Hardware.Name} as TAP {end.Tap.Name} (MTU {mtu}{(address is null ? "" : $", {address}")})");
            output.Flush();
            using var stop = new ManualResetEventSlim();
            using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Set(); });
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Set(); });
            var clock = Stopwatch.StartNew();
            var interval = TimeSpan.FromSeconds(stats == 0 ? 1 : stats);
            var last = end.Snapshot();
            var lastAt = clock.Elapsed;
            while (!stop.IsSet && (duration is null || clock.Elapsed.TotalSeconds < duration))
            {
                stop.Wait(interval);
                var now = end.Snapshot();
                var at = clock.Elapsed;
                if (stats > 0)
                {
                    output.WriteLine(Describe(now, last, (at - lastAt).TotalSeconds));
                    output.Flush();
                }

                last = now;
                lastAt = at;
            }

            var final = end.Snapshot();
            output.WriteLine($"link {final.State}: {final.Stats}");
            return 0;
        }
    }

    /// <summary>One status line: state, Mbit/s and frames/s each way.</summary>
    public static string Describe((LinkState State, LinkStats Stats, string? Problem) now, (LinkState State, LinkStats Stats, string? Problem) last, double seconds)
    {
        double s = Math.Max(seconds, 1e-3);
        double txMbps = (now.Stats.TxBytes - last.Stats.TxBytes) * 8 / s / 1e6;
        double rxMbps = (now.Stats.RxBytes - last.Stats.RxBytes) * 8 / s / 1e6;
        double txFps = (now.Stats.TxFrames - last.Stats.TxFrames) / s;
        double rxFps = (now.Stats.RxFrames - last.Stats.RxFrames) / s;
        string problem = now.State == LinkState.Up || now.Problem is null ? "" : $" ({now.Problem})";
        return string.Create(CultureInfo.InvariantCulture,
            $"link {now.State}{problem}: out {txMbps:0.0} Mbit/s {txFps:0} frames/s, in {rxMbps:0.0} Mbit/s {rxFps:0} frames/s");
    }

    private static bool AssignAddress(string tap, string cidr, TextWriter output)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { "addr", "add", cidr, "dev", tap })
        {
            psi.ArgumentList.Add(a);
        }

        using var ip = Process.Start(psi);
        if (ip is null)
        {
            output.WriteLine("pcivirtio link: could not run ip (iproute2) to assign the address");
            return false;
        }

        string error = ip.StandardError.ReadToEnd();
        ip.WaitForExit();
        if (ip.ExitCode != 0)
        {
            output.WriteLine($"pcivirtio link: ip addr add {cidr} dev {tap} failed: {error.Trim()}");
            return false;
        }

        return true;
    }
}
