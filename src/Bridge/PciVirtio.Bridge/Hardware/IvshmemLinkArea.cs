namespace PciVirtio.Bridge.Hardware;

/// <summary>What a peer last said about itself in the link area it writes.</summary>
public enum IvshmemPeerState : uint
{
    /// <summary>Nothing written yet (fresh shared memory).</summary>
    Absent = 0,

    /// <summary>The writer is attached and heartbeating.</summary>
    Attached = 1,

    /// <summary>The writer closed its end.</summary>
    Detached = 2,
}

/// <summary>
/// The register area ivshmem lacks, emulated at the start of each half of BAR2 (see
/// docs/ntb-hardware.md). The area at the start of a side's half is written only by the
/// other side and read only by its owner, like an NTB's scratchpad and doorbell registers:
/// the peer's writes are posted, our reads are local. Little-endian, every field naturally
/// aligned and accessed with one aligned volatile load or store; no read-modify-write
/// crosses the link.
/// </summary>
public static class IvshmemLinkArea
{
    /// <summary>Bytes reserved at the start of each half; the window follows, page-aligned.</summary>
    public const int Size = 4096;

    /// <summary>"PVNT".</summary>
    public const uint MagicValue = 0x544E5650;

    public const uint VersionValue = 1;

    /// <summary>Scratchpads each way.</summary>
    public const int ScratchpadCount = 16;

    /// <summary>Most doorbell bits each way (the MSI-X vectors after the link vector).</summary>
    public const int MaxDoorbells = 32;

    /// <summary>u32: <see cref="MagicValue"/>, written by the peer when it attaches.</summary>
    public const int Magic = 0x000;

    /// <summary>u32: <see cref="VersionValue"/>.</summary>
    public const int Version = 0x004;

    /// <summary>u32: the writer's IVPosition.</summary>
    public const int WriterId = 0x008;

    /// <summary>u32: an <see cref="IvshmemPeerState"/>; written after everything else on
    /// attach, first on detach.</summary>
    public const int State = 0x00C;

    /// <summary>u64: a random non-zero number per attach; a new value means the peer
    /// restarted and reset its doorbell counts.</summary>
    public const int Session = 0x010;

    /// <summary>u64: incremented by the writer every heartbeat interval.</summary>
    public const int Heartbeat = 0x018;

    /// <summary>u32: the writer's heartbeat interval in ms (0 = it does not heartbeat, so
    /// its heartbeat is not checked).</summary>
    public const int HeartbeatIntervalMs = 0x020;

    /// <summary>u32: how many doorbell bits the writer can receive (its vectors less one).</summary>
    public const int DoorbellBits = 0x024;

    /// <summary>u32 × <see cref="ScratchpadCount"/>: the owner's scratchpads, written by the peer.</summary>
    public const int Scratchpads = 0x040;

    /// <summary>u32 × <see cref="MaxDoorbells"/>: per doorbell bit, how many times the peer
    /// rang it (written by the peer from its own count, never read back by it). A bit is
    /// pending while its count differs from the one the owner saw when it last cleared it.</summary>
    public const int DoorbellRings = 0x080;

    public static int Scratchpad(int index) => Scratchpads + (index * 4);

    public static int DoorbellRing(int bit) => DoorbellRings + (bit * 4);
}
