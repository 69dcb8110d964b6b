namespace PciVirtio.VhostCore.Ring;

/// <summary>A buffer the driver hands to the device: guest address and length.</summary>
public readonly record struct GuestBuffer(ulong Address, uint Length);

/// <summary>A buffer the device gave back: the driver's token for it and the bytes the
/// device wrote into its writable part.</summary>
public readonly record struct UsedBuffer(ulong Token, uint Length);

/// <summary>
/// Driver-owned memory for indirect descriptor tables: one table of
/// <see cref="EntriesPerHead"/> descriptors per possible head, at
/// <see cref="GuestAddress"/> + head × entries × 16. The device must be able to read it
/// (across a link, it lies in the device's memory like the descriptor table).
/// </summary>
public readonly record struct IndirectArea(ulong GuestAddress, int EntriesPerHead)
{
    public ulong Bytes(int queueSize) => (ulong)queueSize * (ulong)EntriesPerHead * SplitRingLayout.DescSize;
}
