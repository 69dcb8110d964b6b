using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using PciVirtio.Bridge.Link;
using PciVirtio.Host.Daemon;

namespace PciVirtio.Host.LinkEnd;

/// <summary><c>pcivirtio link</c>: one end of a host-to-host link as a TAP, until
/// SIGINT/SIGTERM or the duration, printing the link state and throughput.</summary>
public static class LinkCommand
{
    /// <summary>Runs the end <paramref name="settings"/> describes (already checked) until
    /// SIGINT/SIGTERM or <paramref name="duration"/>, printing a status line every
    /// <paramref name="stats"/> seconds (0: never).</summary>
    public static int Run(LinkEndSettings settings, double? duration, double stats, bool verbose, TextWriter output)
    {
        string? address = settings.Address;
        int mtu = settings.Mtu;
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
            end = LinkEndStart.Start(settings, settings.Name ?? settings.Tap ?? "link", loggers);
        }
        catch (Exception e) when (LinkEndStart.IsStartFailure(e))
        {
            output.WriteLine($"pcivirtio link: {e.Message}");
            return 1;
        }

        using (end)
        {
            if (address is not null && InterfaceAddress.Assign(end.Tap.Name, address) is { } failed)
            {
                output.WriteLine($"pcivirtio link: {failed}");
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
}
