namespace PciVirtio.VhostCore.Ring;

/// <summary>Why a queue stopped (or why one chain was rejected). The values are stable and
/// appear in logs and metrics.</summary>
public enum QueueError
{
    None = 0,

    // Ring-level: the ring itself is unusable; the queue is broken until reset.
    BadQueueSize,
    UnsupportedFeature,
    RingOutOfMemory,
    AvailIndexJump,
    HeadOutOfRange,
    UsedIndexJump,
    UsedIdNotInFlight,
    UsedLengthTooLong,

    // Chain-level: one descriptor chain is malformed.
    NextOutOfRange,
    ChainTooLong,
    AddressOverflow,
    BufferOutOfMemory,
    LengthOverflow,
    ReadableAfterWritable,
    IndirectNotNegotiated,
    IndirectNested,
    IndirectWithNext,
    IndirectBadLength,
    IndirectOutOfMemory,
    TooManySegments,

    // Device-level: the chain is well formed but not what this queue of the device takes.
    /// <summary>Writable buffers on a transmit queue, readable ones on a receive queue.</summary>
    WrongDirection,

    /// <summary>A chain too short for the device's header (virtio_net_hdr, a control header).</summary>
    ShortHeader,

    // Appended (the values are stable).
    /// <summary>With VIRTIO_F_IN_ORDER, an avail entry that names another head than the next in ring order.</summary>
    OutOfOrder,

    /// <summary>A chain of several descriptors (or an indirect one) where the queue takes one descriptor per buffer.</summary>
    NotSingleDescriptor,
}

/// <summary>What a device queue does with a malformed descriptor chain.</summary>
public enum ChainErrorPolicy
{
    /// <summary>Mark the queue broken (virtio DEVICE_NEEDS_RESET): nothing more is
    /// processed until the queue is restarted. The spec's recommendation and the default.</summary>
    BreakQueue,

    /// <summary>Return the bad chain's head with length 0, log it, and go on with the next
    /// one, so a single bad request does not stop a queue. Ring-level errors still break
    /// the queue.</summary>
    DiscardChain,
}
