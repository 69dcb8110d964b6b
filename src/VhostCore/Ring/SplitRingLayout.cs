namespace PciVirtio.VhostCore.Ring;

/// <summary>
/// Sizes and offsets of the three areas of a split virtqueue (virtio 1.x 2.7):
/// the descriptor table (16 bytes per entry, 16-byte aligned), the avail ring (flags,
/// idx, ring[N], used_event; 2-byte aligned) and the used ring (flags, idx, ring[N] of
/// 8-byte elements, avail_event; 4-byte aligned).
/// </summary>
public static class SplitRingLayout
{
    public const int MaxQueueSize = 32768;
    public const int DescSize = 16;
    public const int DescAlign = 16;
    public const int AvailAlign = 2;
    public const int UsedAlign = 4;

    public const int AvailFlagsOffset = 0;
    public const int AvailIdxOffset = 2;
    public const int AvailRingOffset = 4;
    public const int UsedFlagsOffset = 0;
    public const int UsedIdxOffset = 2;
    public const int UsedRingOffset = 4;
    public const int UsedElemSize = 8;

    public static ulong DescTableBytes(int size) => (ulong)size * DescSize;

    /// <summary>Avail ring bytes including the trailing used_event.</summary>
    public static ulong AvailRingBytes(int size) => 6 + (2 * (ulong)size);

    /// <summary>Used ring bytes including the trailing avail_event.</summary>
    public static ulong UsedRingBytes(int size) => 6 + (8 * (ulong)size);

    public static int UsedEventOffset(int size) => AvailRingOffset + (2 * size);

    public static int AvailEventOffset(int size) => UsedRingOffset + (8 * size);

    /// <summary>True for a valid split-ring size: a power of two from 1 to 32768.</summary>
    public static bool IsValidSize(int size) => size is > 0 and <= MaxQueueSize && (size & (size - 1)) == 0;

    /// <summary>
    /// Places a ring contiguously from <paramref name="baseAddr"/> in the legacy layout
    /// (desc, avail, then used at the next <paramref name="usedAlign"/> boundary) and
    /// returns the three addresses and the total size.
    /// </summary>
    public static (ulong Desc, ulong Avail, ulong Used, ulong TotalBytes) Place(int size, ulong baseAddr, ulong usedAlign = 4096)
    {
        if (!IsValidSize(size))
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "queue size must be a power of two from 1 to 32768");
        }

        if (usedAlign == 0 || (usedAlign & (usedAlign - 1)) != 0 || usedAlign < UsedAlign)
        {
            throw new ArgumentOutOfRangeException(nameof(usedAlign), "alignment must be a power of two of at least 4");
        }

        ulong desc = AlignUp(baseAddr, DescAlign);
        ulong avail = desc + DescTableBytes(size);
        ulong used = AlignUp(avail + AvailRingBytes(size), usedAlign);
        return (desc, avail, used, used + UsedRingBytes(size) - baseAddr);
    }

    public static ulong AlignUp(ulong value, ulong alignment) => (value + alignment - 1) & ~(alignment - 1);

    /// <summary>
    /// The vring_need_event rule: an event (kick or interrupt) is due when the index moved
    /// from <paramref name="oldIdx"/> to <paramref name="newIdx"/> passed
    /// <paramref name="eventIdx"/>, all in 16-bit wrapping arithmetic.
    /// </summary>
    public static bool NeedEvent(ushort eventIdx, ushort newIdx, ushort oldIdx) =>
        (ushort)(newIdx - eventIdx - 1) < (ushort)(newIdx - oldIdx);
}
