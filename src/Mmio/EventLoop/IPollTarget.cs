namespace PciVirtio.Mmio.EventLoop;

/// <summary>
/// What an <see cref="AdaptivePoller"/> drives: a queue (or a set of queues) that can be
/// polled for work and told whether to notify. A split virtqueue maps directly:
/// <see cref="Poll"/> pops, processes and completes chains; <see cref="EnableNotifications"/> is
/// <c>SplitQueueDevice.EnableNotifications</c> (or the driver side's <c>EnableInterrupts</c>);
/// <see cref="DisableNotifications"/> is <c>DisableNotifications</c> / <c>DisableInterrupts</c>.
/// </summary>
public interface IPollTarget
{
    /// <summary>Processes at most <paramref name="budget"/> items of pending work and returns
    /// how many it processed; 0 means it found none. Must not block.</summary>
    int Poll(int budget);

    /// <summary>
    /// Asks the other side to signal on new work, then re-checks (after a full barrier):
    /// returns true when work arrived meanwhile. That work may have been published without a
    /// signal (the other side still saw notifications off), so the caller must process it
    /// itself rather than wait.
    /// </summary>
    bool EnableNotifications();

    /// <summary>Asks the other side not to signal: the caller is polling.</summary>
    void DisableNotifications();
}
