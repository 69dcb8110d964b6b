using System.Globalization;
using System.Text;
using PciVirtio.Host.Control;

namespace PciVirtio.Host.Stats;

/// <summary>
/// Renders a daemon's status as tables: one row per queue and one per link, with totals and,
/// given the previous reading, rates over the time between the two.
/// </summary>
public static class StatsTable
{
    private static readonly string[] QueueHeader = ["DEVICE", "QUEUE", "STATE", "PACKETS", "PKT/S", "BYTES", "MBIT/S", "DROPS", "KICKS", "IRQS", "RING FULL"];
    private static readonly string[] LinkHeader = ["LINK", "TAP", "STATE", "TX PACKETS", "TX MBIT/S", "RX PACKETS", "RX MBIT/S", "DROPS", "DOORBELLS", "UP/DOWN", "REMOTE READS"];

    public static string Render(DaemonStatus now, DaemonStatus? before)
    {
        var text = new StringBuilder();
        double seconds = before is null ? 0 : (now.Time - before.Time).TotalSeconds;
        text.Append(CultureInfo.InvariantCulture, $"pcivirtio (pid {now.ProcessId}), up {Uptime(now.UptimeSeconds)}, at {now.Time:HH:mm:ss} UTC");
        text.AppendLine(seconds > 0 ? string.Create(CultureInfo.InvariantCulture, $", rates over {seconds:0.0} s") : "");
        if (now.Devices.Count > 0)
        {
            var rows = new List<string[]> { QueueHeader };
            foreach (var d in now.Devices)
            {
                var old = before?.Devices.Find(x => x.Name == d.Name);
                foreach (var q in d.Queues)
                {
                    var oq = old?.Queues.Find(x => x.Name == q.Name);
                    rows.Add(
                    [
                        $"{d.Name}{(d.Connected ? "" : " (no frontend)")}", q.Name, q.Error is null ? (q.Running ? "running" : "stopped") : "BROKEN",
                        Count(q.Packets), Rate(q.Packets, oq?.Packets, seconds), Count(q.Bytes), Mbps(q.Bytes, oq?.Bytes, seconds),
                        Count(q.Drops), Count(q.Kicks), Count(q.Interrupts), Count(q.RingFull),
                    ]);
                }
            }

            Table(text, rows);
            foreach (var d in now.Devices)
            {
                foreach (var q in d.Queues)
                {
                    if (q.Error is { } e)
                    {
                        text.AppendLine(CultureInfo.InvariantCulture, $"  {q.Name}: {e}");
                    }
                }
            }
        }

        if (now.Links.Count > 0)
        {
            text.AppendLine();
            var rows = new List<string[]> { LinkHeader };
            foreach (var l in now.Links)
            {
                var o = before?.Links.Find(x => x.Name == l.Name);
                rows.Add(
                [
                    l.Name, l.Tap, l.State, Count(l.TxFrames), Mbps(l.TxBytes, o?.TxBytes, seconds), Count(l.RxFrames), Mbps(l.RxBytes, o?.RxBytes, seconds),
                    Count(l.TxDropped + l.RxDropped), $"{Count(l.DoorbellsSent)}/{Count(l.DoorbellsTaken)}", $"{l.LinkUps}/{l.LinkDowns}", Count(l.RemoteReads),
                ]);
            }

            Table(text, rows);
            foreach (var l in now.Links)
            {
                if (l.State != "Up" && l.Problem is { } p)
                {
                    text.AppendLine(CultureInfo.InvariantCulture, $"  {l.Name}: {p}");
                }
            }
        }

        if (now.Devices.Count == 0 && now.Links.Count == 0)
        {
            text.AppendLine("no devices or links running");
        }

        return text.ToString();
    }

    private static void Table(StringBuilder text, List<string[]> rows)
    {
        int columns = rows[0].Length;
        var widths = new int[columns];
        foreach (var row in rows)
        {
            for (int c = 0; c < columns; c++)
            {
                widths[c] = Math.Max(widths[c], row[c].Length);
            }
        }

        foreach (var row in rows)
        {
            for (int c = 0; c < columns; c++)
            {
                // Names left, numbers right, as people read them.
                bool left = c < 3;
                text.Append(left ? row[c].PadRight(widths[c]) : row[c].PadLeft(widths[c]));
                text.Append(c + 1 < columns ? "  " : "");
            }

            text.AppendLine();
        }
    }

    private static string Count(long n) => n.ToString(CultureInfo.InvariantCulture);

    private static string Rate(long now, long? before, double seconds) =>
        before is { } b && seconds > 0 ? ((now - b) / seconds).ToString("0", CultureInfo.InvariantCulture) : "-";

    private static string Mbps(long now, long? before, double seconds) =>
        before is { } b && seconds > 0 ? ((now - b) * 8 / seconds / 1e6).ToString("0.0", CultureInfo.InvariantCulture) : "-";

    private static string Uptime(double seconds)
    {
        var t = TimeSpan.FromSeconds(seconds);
        return t.TotalHours >= 1 ? $"{(int)t.TotalHours}h{t.Minutes:00}m" : t.TotalMinutes >= 1 ? $"{t.Minutes}m{t.Seconds:00}s" : $"{t.Seconds}s";
    }
}
