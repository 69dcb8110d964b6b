namespace PciVirtio.Mmio.EventLoop;

/// <summary>Tuning of an <see cref="AdaptivePoller"/>. Validated when the poller is built.</summary>
public sealed record AdaptivePollerOptions
{
    /// <summary>Most items one <see cref="IPollTarget.Poll"/> may process (NAPI's weight,
    /// vhost's <c>vhost_exceeds_weight</c>): bounds how long one pass runs, so a stop request,
    /// and whatever else the target interleaves between passes, waits at most one budget.</summary>
    public int Budget { get; init; } = 64;

    /// <summary>Consecutive empty polls before falling back to notifications. Larger values
    /// trade CPU for latency: work arriving during the spin is picked up with no signal at all.
    /// At least 1.</summary>
    public int SpinPolls { get; init; } = 64;

    /// <summary><see cref="Thread.SpinWait"/> iterations between empty polls (0 = none). A
    /// short pause eases the memory bus and a sibling hyper-thread while spinning.</summary>
    public int PauseIterations { get; init; }

    /// <summary>Longest sleep before polling again without a signal
    /// (<see cref="Timeout.Infinite"/> = until signalled). A finite value is a safety net
    /// against a peer that never signals; it costs a wake-up per period when idle.</summary>
    public int MaxSleepMilliseconds { get; init; } = Timeout.Infinite;

    internal void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(Budget, 1, nameof(Budget));
        ArgumentOutOfRangeException.ThrowIfLessThan(SpinPolls, 1, nameof(SpinPolls));
        ArgumentOutOfRangeException.ThrowIfNegative(PauseIterations, nameof(PauseIterations));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxSleepMilliseconds, Timeout.Infinite, nameof(MaxSleepMilliseconds));
    }
}
