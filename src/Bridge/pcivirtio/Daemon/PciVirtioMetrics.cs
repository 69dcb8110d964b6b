using System.Diagnostics.Metrics;
using PciVirtio.Host.Control;

namespace PciVirtio.Host.Daemon;

/// <summary>
/// The daemon's metrics (meter <c>PciVirtio</c>, for <c>dotnet-counters monitor -n pcivirtio
/// --counters PciVirtio</c> or any OpenTelemetry exporter). Every instrument is observable:
/// the data path keeps its plain counters and pays nothing; a collection reads them all once.
/// Queue instruments carry <c>device</c> and <c>queue</c> tags, link instruments <c>link</c>
/// (and <c>direction</c> where there are two).
/// </summary>
public sealed class PciVirtioMetrics : IDisposable
{
    public const string MeterName = "PciVirtio";

    private readonly Meter _meter;
    private readonly RunningDevices _devices;

    // One collection asks every instrument in turn; they share one reading of the counters
    // taken when the first asks, so a collection is a consistent picture and costs one pass.
    private readonly Lock _lock = new();
    private DaemonStatus? _reading;
    private long _readingAt;

    public PciVirtioMetrics(IMeterFactory meters, RunningDevices devices)
    {
        ArgumentNullException.ThrowIfNull(meters);
        _devices = devices;
        _meter = meters.Create(MeterName);
        Queue("pcivirtio.queue.packets", "{packet}", "Frames a queue moved: sent by the guest (tx) or delivered to it (rx)", q => q.Packets);
        Queue("pcivirtio.queue.bytes", "By", "Packet bytes a queue moved, without the virtio-net header", q => q.Bytes);
        Queue("pcivirtio.queue.drops", "{packet}", "Frames dropped: refused by the backend or undeliverable to the guest", q => q.Drops);
        Queue("pcivirtio.queue.kicks", "{notification}", "Kicks (available-buffer notifications) taken from the guest", q => q.Kicks);
        Queue("pcivirtio.queue.interrupts", "{notification}", "Interrupts (used-buffer notifications) sent to the guest", q => q.Interrupts);
        Queue("pcivirtio.queue.ring_full", "{event}", "Times a queue waited: no receive buffers from the guest, or a full backend", q => q.RingFull);
        _meter.CreateObservableUpDownCounter("pcivirtio.queue.broken", () => Queues(q => q.Error is null ? 0 : 1), "{queue}",
            "1 while bad input from the guest has stopped the queue");
        _meter.CreateObservableUpDownCounter("pcivirtio.device.connected", ConnectedDevices, "{device}", "1 while a frontend is connected");
        Link("pcivirtio.link.packets", "{packet}", "Frames a link end sent (tx) and received (rx)", l => l.TxFrames, l => l.RxFrames);
        Link("pcivirtio.link.bytes", "By", "Frame bytes a link end sent (tx) and received (rx)", l => l.TxBytes, l => l.RxBytes);
        Link("pcivirtio.link.drops", "{packet}", "Frames a link end dropped", l => l.TxDropped, l => l.RxDropped);
        Link("pcivirtio.link.ring_full", "{event}", "Times a link end waited for ring space (tx) or for buffers (rx)", l => l.TxRingFull, l => l.RxRingFull);
        Link("pcivirtio.link.doorbells", "{notification}", "Doorbells rung at the peer (tx) and taken from it (rx)", l => l.DoorbellsSent, l => l.DoorbellsTaken);
        _meter.CreateObservableCounter("pcivirtio.link.rx_rearms", () => Links(l => l.RxRearms), "{event}",
            "Times the receive ring ran dry, its linger ran out, and the peer was asked for kicks again");
        _meter.CreateObservableCounter("pcivirtio.link.transitions", Transitions, "{transition}", "Times a link came up (to=up) and went down (to=down)");
        _meter.CreateObservableCounter("pcivirtio.link.remote_reads", () => Links(l => l.RemoteReads), "{read}",
            "Reads across the link (non-posted round trips); only the handshake and link-state checks should make them");
        _meter.CreateObservableUpDownCounter("pcivirtio.link.up", () => Links(l => l.State == "Up" ? 1 : 0), "{link}", "1 while the link is up");
    }

    public void Dispose() => _meter.Dispose();

    private DaemonStatus Reading()
    {
        lock (_lock)
        {
            long now = Environment.TickCount64;
            if (_reading is null || now - _readingAt > 100)
            {
                _reading = _devices.Status();
                _readingAt = now;
            }

            return _reading;
        }
    }

    private void Queue(string name, string unit, string description, Func<QueueStatus, long> value) =>
        _meter.CreateObservableCounter(name, () => Queues(value), unit, description);

    private IEnumerable<Measurement<long>> Queues(Func<QueueStatus, long> value)
    {
        foreach (var d in Reading().Devices)
        {
            foreach (var q in d.Queues)
            {
                yield return new Measurement<long>(value(q), new("device", d.Name), new("queue", q.Name));
            }
        }
    }

    private IEnumerable<Measurement<long>> ConnectedDevices()
    {
        foreach (var d in Reading().Devices)
        {
            yield return new Measurement<long>(d.Connected ? 1 : 0, new KeyValuePair<string, object?>("device", d.Name));
        }
    }

    private void Link(string name, string unit, string description, Func<LinkStatus, long> tx, Func<LinkStatus, long> rx) =>
        _meter.CreateObservableCounter(name, () => LinkDirections(tx, rx), unit, description);

    private IEnumerable<Measurement<long>> LinkDirections(Func<LinkStatus, long> tx, Func<LinkStatus, long> rx)
    {
        foreach (var l in Reading().Links)
        {
            yield return new Measurement<long>(tx(l), new("link", l.Name), new("direction", "tx"));
            yield return new Measurement<long>(rx(l), new("link", l.Name), new("direction", "rx"));
        }
    }

    private IEnumerable<Measurement<long>> Links(Func<LinkStatus, long> value)
    {
        foreach (var l in Reading().Links)
        {
            yield return new Measurement<long>(value(l), new KeyValuePair<string, object?>("link", l.Name));
        }
    }

    private IEnumerable<Measurement<long>> Transitions()
    {
        foreach (var l in Reading().Links)
        {
            yield return new Measurement<long>(l.LinkUps, new("link", l.Name), new("to", "up"));
            yield return new Measurement<long>(l.LinkDowns, new("link", l.Name), new("to", "down"));
        }
    }
}
