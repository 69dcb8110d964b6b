namespace PciVirtio.Mmio.Net;

/// <summary>The outcome of one <see cref="TapQueue.Write(ReadOnlySpan{byte}, out int)"/>.</summary>
public enum TapWriteResult
{
    /// <summary>The kernel took the whole frame (a TAP write is all or nothing).</summary>
    Written,

    /// <summary>EAGAIN: the queue's socket buffer is full; retry when the fd is writable.</summary>
    WouldBlock,

    /// <summary>The kernel refused this frame (EINVAL for a malformed vnet header, a bad GSO
    /// description or a frame shorter than an Ethernet header; EIO while the interface is down;
    /// EFAULT for memory we could not read; EMSGSIZE for more than
    /// <see cref="TapQueue.MaxSegments"/> segments; ...). The frame is dropped and the queue
    /// stays usable; the errno says why.</summary>
    Rejected,
}
