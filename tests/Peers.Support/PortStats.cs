using System.Globalization;
using System.Text.RegularExpressions;

namespace PciVirtio.Tests.Peers;

/// <summary>
/// One port's counters from <c>show port stats N</c> (the ethdev's own counters, since start-up or
/// the last <c>clear port stats</c>). The rates are testpmd's "throughput since last show": 0 on
/// the first call, then the average since the previous call.
/// </summary>
public sealed partial record PortStats(
    int Port,
    long RxPackets,
    long RxMissed,
    long RxErrors,
    long RxNoMbuf,
    long RxBytes,
    long TxPackets,
    long TxErrors,
    long TxBytes,
    long? RxPps,
    long? TxPps,
    long? RxBps,
    long? TxBps)
{
    /// <summary>Reads the output of <c>show port stats N</c>.</summary>
    public static PortStats Parse(int port, string output)
    {
        ArgumentNullException.ThrowIfNull(output);
        var values = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (Match match in Counter().Matches(output))
        {
            values[match.Groups[1].Value] = long.Parse(match.Groups[2].Value, CultureInfo.InvariantCulture);
        }

        long Required(string key) => values.TryGetValue(key, out long value)
            ? value
            : throw new TestpmdException($"no {key} in the stats of port {port}:\n{output}");
        long? Optional(string key) => values.TryGetValue(key, out long value) ? value : null;

        return new PortStats(port,
            Required("RX-packets"), Required("RX-missed"), Required("RX-errors"), Optional("RX-nombuf") ?? 0, Required("RX-bytes"),
            Required("TX-packets"), Required("TX-errors"), Required("TX-bytes"),
            Optional("Rx-pps"), Optional("Tx-pps"), Optional("Rx-bps"), Optional("Tx-bps"));
    }

    /// <summary>"RX-packets: 24044128", "Rx-pps:            0": a name with a dash, a colon, a count.</summary>
    [GeneratedRegex(@"\b([RT]X-[a-z]+|[RT]x-[bp]ps):\s+(\d+)")]
    private static partial Regex Counter();
}
