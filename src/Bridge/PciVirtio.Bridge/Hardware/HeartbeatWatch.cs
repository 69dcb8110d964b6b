namespace PciVirtio.Bridge.Hardware;

/// <summary>
/// When a peer's heartbeat was last looked at, so that it is judged only over time someone
/// was watching: when looks that should come every interval come more than two intervals
/// apart (an overloaded host, a paused guest, a stopped process), the peer, most likely held
/// up alike, may not have beaten either, and that gap less one interval is not held against
/// it. A peer that is really gone still times out after the timeout's worth of watching,
/// however far apart the looks. Used by the link's heartbeat and by the ivshmem hardware's.
/// </summary>
internal struct HeartbeatWatch
{
    private long _lastLookAt;
    private bool _looked;

    /// <summary>A look at <paramref name="now"/> (milliseconds); returns how many
    /// milliseconds since the last look were not watched (0 for a look on time, and for the
    /// first). A non-positive <paramref name="intervalMs"/> means nobody looks regularly.</summary>
    public long Look(long now, long intervalMs)
    {
        long gap = now - _lastLookAt;
        bool late = _looked && intervalMs > 0 && gap > 2 * intervalMs;
        _lastLookAt = now;
        _looked = true;
        return late ? gap - intervalMs : 0;
    }
}
