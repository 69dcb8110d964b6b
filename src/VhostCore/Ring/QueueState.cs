using PciVirtio.VhostCore.Memory;

namespace PciVirtio.VhostCore.Ring;

/// <summary>
/// Everything a split virtqueue is, apart from the memory it reads: its size, where its
/// three areas are (guest-physical addresses), the next avail entry the device will read,
/// the next used entry it will write, and the negotiated ring features. A plain value, so
/// it can be saved and restored (GET_VRING_BASE / SET_VRING_BASE, migration, a restarted
/// backend) — and because it may come from an untrusted frontend, turning it back into a
/// live queue re-validates every field (<see cref="Validate"/>).
/// </summary>
public readonly record struct QueueState
{
    public int Size { get; init; }

    public ulong DescTable { get; init; }

    public ulong AvailRing { get; init; }

    public ulong UsedRing { get; init; }

    /// <summary>last_avail_idx: the free-running index of the next avail entry to consume.</summary>
    public ushort NextAvail { get; init; }

    /// <summary>The free-running index of the next used entry to write.</summary>
    public ushort NextUsed { get; init; }

    public VirtioFeatures Features { get; init; }

    public bool EventIdx => (Features & VirtioFeatures.RingEventIdx) != 0;

    public bool IndirectDesc => (Features & VirtioFeatures.RingIndirectDesc) != 0;

    /// <summary>VIRTIO_F_IN_ORDER: descriptors are used in ring order, and one used element
    /// may stand for a whole batch (see <see cref="SplitQueueDriver{TAccess}.TryAddInOrder"/>).</summary>
    public bool InOrder => (Features & VirtioFeatures.InOrder) != 0;

    /// <summary>A state for a ring placed contiguously at <paramref name="baseAddr"/>
    /// (see <see cref="SplitRingLayout.Place"/>).</summary>
    public static QueueState AtBase(int size, ulong baseAddr, VirtioFeatures features, ulong usedAlign = 4096)
    {
        var (desc, avail, used, _) = SplitRingLayout.Place(size, baseAddr, usedAlign);
        return new QueueState { Size = size, DescTable = desc, AvailRing = avail, UsedRing = used, Features = features };
    }

    /// <summary>
    /// Checks the state against <paramref name="table"/>: a legal size, aligned ring areas
    /// each lying wholly inside one region, and (when <paramref name="ring"/> is given) the
    /// pointers to them in our mapping.
    /// </summary>
    public QueueError Validate(MemoryTable table, out string reason, out RingPointers ring)
    {
        ring = default;
        if (!SplitRingLayout.IsValidSize(Size))
        {
            reason = $"queue size {Size} is not a power of two from 1 to {SplitRingLayout.MaxQueueSize}";
            return QueueError.BadQueueSize;
        }

        if (DescTable % SplitRingLayout.DescAlign != 0 || AvailRing % SplitRingLayout.AvailAlign != 0 || UsedRing % SplitRingLayout.UsedAlign != 0)
        {
            reason = $"ring areas misaligned: desc 0x{DescTable:x} (16), avail 0x{AvailRing:x} (2), used 0x{UsedRing:x} (4)";
            return QueueError.RingOutOfMemory;
        }

        if (!table.TryTranslate(DescTable, SplitRingLayout.DescTableBytes(Size), out nint desc))
        {
            reason = $"descriptor table at 0x{DescTable:x} ({SplitRingLayout.DescTableBytes(Size)} B) is not inside one memory region";
            return QueueError.RingOutOfMemory;
        }

        if (!table.TryTranslate(AvailRing, SplitRingLayout.AvailRingBytes(Size), out nint avail))
        {
            reason = $"avail ring at 0x{AvailRing:x} ({SplitRingLayout.AvailRingBytes(Size)} B) is not inside one memory region";
            return QueueError.RingOutOfMemory;
        }

        if (!table.TryTranslate(UsedRing, SplitRingLayout.UsedRingBytes(Size), out nint used))
        {
            reason = $"used ring at 0x{UsedRing:x} ({SplitRingLayout.UsedRingBytes(Size)} B) is not inside one memory region";
            return QueueError.RingOutOfMemory;
        }

        if ((Features & VirtioFeatures.RingPacked) != 0)
        {
            reason = "packed ring negotiated but the state describes a split ring";
            return QueueError.UnsupportedFeature;
        }

        ring = new RingPointers(desc, avail, used, Size);
        reason = string.Empty;
        return QueueError.None;
    }
}

/// <summary>The three ring areas translated once to our mapping when a queue starts
/// (Linux's vq_meta_prefetch idea), so the data path does no lookup for ring accesses.</summary>
public readonly record struct RingPointers(nint Desc, nint Avail, nint Used, int Size)
{
    public nint AvailFlags => Avail + SplitRingLayout.AvailFlagsOffset;

    public nint AvailIdx => Avail + SplitRingLayout.AvailIdxOffset;

    public nint AvailEntries => Avail + SplitRingLayout.AvailRingOffset;

    public nint UsedEvent => Avail + SplitRingLayout.UsedEventOffset(Size);

    public nint UsedFlags => Used + SplitRingLayout.UsedFlagsOffset;

    public nint UsedIdx => Used + SplitRingLayout.UsedIdxOffset;

    public nint UsedEntries => Used + SplitRingLayout.UsedRingOffset;

    public nint AvailEvent => Used + SplitRingLayout.AvailEventOffset(Size);
}
