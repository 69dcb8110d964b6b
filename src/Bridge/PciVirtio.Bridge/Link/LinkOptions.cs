namespace PciVirtio.Bridge.Link;

/// <summary>How one end of a link is run.</summary>
public sealed record LinkOptions
{
    /// <summary>What this end offers (the window size is filled in from the hardware).</summary>
    public LinkParameters Offer { get; init; } = new();

    /// <summary>Handshake retry, heartbeat and link-state check period.</summary>
    public TimeSpan Tick { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>A peer whose heartbeat has not moved for this long is gone (link down).</summary>
    public TimeSpan PeerTimeout { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Busy-poll the rings on the link's thread (lowest latency; one core spins)
    /// instead of waiting for doorbells.</summary>
    public bool Poll { get; init; }

    /// <summary>
    /// Doorbells mode: how long a receive ring that ran dry, or a transmit ring that ran out of
    /// space, is looked at again on each turn of the link's loop before the peer is asked for a
    /// doorbell (a kick, a used doorbell); zero asks at once. A peer that keeps sending is
    /// then served without kicks, and buffers it returns soon are taken without a used
    /// doorbell, for at most this much CPU after the last frame. Default 20 µs; at most
    /// <see cref="MaxLinger"/>.
    /// </summary>
    public TimeSpan Linger { get; init; } = DefaultLinger;

    public static readonly TimeSpan DefaultLinger = TimeSpan.FromMicroseconds(20);

    public static readonly TimeSpan MaxLinger = TimeSpan.FromMilliseconds(1);

    /// <summary>Why <paramref name="linger"/> cannot be a link's <see cref="Linger"/>, or null.</summary>
    public static string? LingerError(TimeSpan linger) =>
        linger < TimeSpan.Zero || linger > MaxLinger ? $"linger {linger.TotalMicroseconds} µs is outside 0..{MaxLinger.TotalMicroseconds} µs" : null;

    /// <summary>The clock the linger is measured by (tests move it by hand).</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>Name in logs.</summary>
    public string Name { get; init; } = "link";
}

/// <summary>Where a link end is in its life.</summary>
public enum LinkState
{
    /// <summary>No link, or waiting for the hardware link.</summary>
    Down,

    /// <summary>Our offer is in the peer's scratchpads; waiting for the peer's.</summary>
    Offered,

    /// <summary>Agreed and our rings are set up; waiting for the peer to be ready.</summary>
    Ready,

    /// <summary>Both sides ready: frames flow.</summary>
    Up,
}
