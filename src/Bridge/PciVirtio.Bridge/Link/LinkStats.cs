namespace PciVirtio.Bridge.Link;

/// <summary>Counters of a link, written on its loop thread.</summary>
public sealed class LinkStats
{
    public long TxFrames;
    public long TxBytes;
    public long TxDropped;
    public long TxStalls;
    public long RxFrames;
    public long RxBytes;
    public long RxDropped;
    public long RxStalls;
    public long DoorbellsSent;
    public long DoorbellsTaken;

    /// <summary>Times the receive ring, dry and its linger over, asked the peer for kicks again.</summary>
    public long RxRearms;
    public long LinkUps;
    public long LinkDowns;

    public LinkStats Snapshot() => (LinkStats)MemberwiseClone();

    public override string ToString() =>
        $"tx {TxFrames} frames/{TxBytes} B ({TxDropped} dropped, {TxStalls} stalls), rx {RxFrames} frames/{RxBytes} B ({RxDropped} dropped, {RxStalls} stalls), doorbells {DoorbellsSent} sent/{DoorbellsTaken} taken, rx re-armed {RxRearms}x, link up {LinkUps}x down {LinkDowns}x";
}
