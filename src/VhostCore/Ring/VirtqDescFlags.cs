namespace PciVirtio.VhostCore.Ring;

/// <summary>struct virtq_desc flags.</summary>
[Flags]
public enum VirtqDescFlags : ushort
{
    None = 0,

    /// <summary>VIRTQ_DESC_F_NEXT: the chain continues at <c>next</c>.</summary>
    Next = 1,

    /// <summary>VIRTQ_DESC_F_WRITE: the device writes this buffer.</summary>
    Write = 2,

    /// <summary>VIRTQ_DESC_F_INDIRECT: the buffer is a table of descriptors.</summary>
    Indirect = 4,
}

/// <summary>struct virtq_avail flags.</summary>
[Flags]
public enum VirtqAvailFlags : ushort
{
    None = 0,

    /// <summary>VIRTQ_AVAIL_F_NO_INTERRUPT: the driver asks not to be interrupted.</summary>
    NoInterrupt = 1,
}

/// <summary>struct virtq_used flags.</summary>
[Flags]
public enum VirtqUsedFlags : ushort
{
    None = 0,

    /// <summary>VIRTQ_USED_F_NO_NOTIFY: the device asks not to be kicked.</summary>
    NoNotify = 1,
}
