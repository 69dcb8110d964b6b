using Microsoft.Extensions.Logging;
using PciVirtio.Mmio.Vfio;

namespace PciVirtio.Bridge.Hardware;

/// <summary>Knobs of <see cref="IvshmemVfioHardware"/>.</summary>
public sealed class IvshmemNtbOptions
{
    public static IvshmemNtbOptions Default { get; } = new();

    /// <summary>The other peer's IVPosition. Null: 1 when ours is 0, 0 when ours is 1 (the
    /// ids an ivshmem server hands the first two peers); other ids need it set.</summary>
    public uint? PeerId { get; init; }

    /// <summary>How often we write our heartbeat into the peer's link area and look at
    /// theirs. Zero: no heartbeat and no background check (the link state then changes only
    /// on <see cref="IvshmemVfioHardware.RefreshLinkState"/>), and the peer does not time us out.</summary>
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>A heartbeating peer whose heartbeat has not moved for this long (at least
    /// four of its intervals) is down: the process or guest died without detaching. Zero:
    /// never time the peer out.</summary>
    public TimeSpan LinkTimeout { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>At most this many doorbell bits (MSI-X vectors 1..N), up to
    /// <see cref="IvshmemLinkArea.MaxDoorbells"/>.</summary>
    public int MaxDoorbells { get; init; } = IvshmemLinkArea.MaxDoorbells;

    /// <summary>How the vfio-pci device is opened (no-IOMMU mode, other sysfs roots).</summary>
    public VfioOpenOptions? Vfio { get; init; }

    public ILogger? Logger { get; init; }

    /// <summary>The clock of the heartbeat (its timer and the timeout); tests drive it by hand.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;
}
