namespace PciVirtio.VhostCore.Ring;

/// <summary>Where a chain walk failed; turned into a message only when it is logged, so a
/// guest flooding bad chains costs no allocation per chain.</summary>
internal readonly record struct ChainFault(QueueError Error, int Index, ulong Address, ulong Length, bool InIndirect)
{
    public string Describe(int queueSize) => Error switch
    {
        QueueError.NextOutOfRange => $"next index {Index} is outside the {(InIndirect ? "indirect table" : "descriptor table")} of {(InIndirect ? (long)Length : queueSize)} entries",
        QueueError.ChainTooLong => InIndirect
            ? $"indirect chain is longer than its table of {Length} entries (a loop)"
            : $"chain is longer than the queue size {queueSize} (a loop)",
        QueueError.AddressOverflow => $"descriptor {Index}: address 0x{Address:x} + length 0x{Length:x} overflows",
        QueueError.BufferOutOfMemory => $"descriptor {Index}: buffer 0x{Address:x}+0x{Length:x} is not inside guest memory",
        QueueError.LengthOverflow => "the readable or the writable length of the chain exceeds 4 GiB",
        QueueError.ReadableAfterWritable => $"descriptor {Index}: a device-readable descriptor follows a device-writable one",
        QueueError.IndirectNotNegotiated => $"descriptor {Index} is indirect but VIRTIO_F_INDIRECT_DESC was not negotiated",
        QueueError.IndirectNested => $"indirect table entry {Index} is itself indirect",
        QueueError.IndirectWithNext => $"descriptor {Index} has both INDIRECT and NEXT set",
        QueueError.IndirectBadLength => $"indirect table at 0x{Address:x} has length {Length}, not a non-zero multiple of 16 within the limit",
        QueueError.IndirectOutOfMemory => InIndirect
            ? $"indirect table entry {Index} at 0x{Address:x} straddles two memory regions"
            : $"indirect table 0x{Address:x}+0x{Length:x} is not inside guest memory",
        QueueError.TooManySegments => "chain has more segments than the caller's segment buffer holds",
        QueueError.NotSingleDescriptor => $"descriptor {Index} (0x{Address:x}+0x{Length:x}) is chained, indirect or device-writable where one device-readable descriptor is expected",
        QueueError.WrongDirection => $"descriptor {Index} (0x{Address:x}+0x{Length:x}) is device-writable where a device-readable one is expected",
        _ => Error.ToString(),
    };
}
