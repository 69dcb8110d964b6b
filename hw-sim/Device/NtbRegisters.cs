namespace PciVirtio.HwSim.Device;

/// <summary>
/// The register map of one emulated NTB port (one 4 KiB page per port in the register memfd;
/// port 0 at offset 0, port 1 at <see cref="PageSize"/>). All registers are little-endian and
/// naturally aligned; every access is a single aligned volatile or atomic operation.
/// Documented in docs/hw-sim.md.
/// </summary>
public static class NtbRegisters
{
    /// <summary>Size of one port's register block.</summary>
    public const int PageSize = 4096;

    /// <summary>Value of <see cref="Id"/>: "NTBS".</summary>
    public const uint IdValue = 0x5342544E;

    /// <summary>Value of <see cref="Version"/>.</summary>
    public const uint VersionValue = 1;

    /// <summary>Number of doorbell bits (and interrupt eventfds) per port.</summary>
    public const int DoorbellCount = 16;

    /// <summary>Mask of the valid doorbell bits (ntb_db_valid_mask).</summary>
    public const ulong DoorbellValidMask = (1UL << DoorbellCount) - 1;

    /// <summary>Number of scratchpads per port.</summary>
    public const int ScratchpadCount = 16;

    /// <summary>Maximum number of memory windows per port.</summary>
    public const int MaxWindows = 8;

    // Identification (read-only).
    public const int Id = 0x000;             // u32
    public const int Version = 0x004;        // u32
    public const int PortIndex = 0x008;      // u32: 0 or 1
    public const int WindowCount = 0x00C;    // u32
    public const int LinkStatus = 0x010;     // u32: bit 0 = link up
    public const int DoorbellBits = 0x014;   // u32: number of doorbell bits
    public const int Doorbell = 0x018;       // u64: set by the peer (atomic OR), cleared by the owner (write 1 to clear)
    public const int DoorbellMask = 0x020;   // u64: 1 = interrupt suppressed
    public const int ScratchpadBits = 0x028; // u32: number of scratchpads
    public const int LocalMemorySize = 0x030; // u64: bytes of this port's local (inbound) memory
    public const int LocalMemoryOffset = 0x038; // u64: where this port's local memory starts in the local-memory memfd
    public const int Scratchpad = 0x040;     // u32 × ScratchpadCount

    /// <summary>Per-window block: 32 bytes each from <see cref="Windows"/>.</summary>
    public const int Windows = 0x100;
    public const int WindowStride = 0x20;
    public const int WindowMaxSize = 0x00;   // u64 (read-only): the largest translation the window accepts
    public const int WindowXlatOffset = 0x08; // u64: owner-set offset into its local memory where the peer's writes land
    public const int WindowXlatSize = 0x10;  // u64: the size granted (0 = not translated)

    /// <summary>Counters (u64, atomic adds) from <see cref="Counters"/>.</summary>
    public const int Counters = 0x200;
    public const int RemoteReads = Counters + 0x00;
    public const int RemoteWrites = Counters + 0x08;
    public const int RemoteReadBytes = Counters + 0x10;
    public const int RemoteWrittenBytes = Counters + 0x18;
    public const int DoorbellsSent = Counters + 0x20;
    public const int DoorbellsReceived = Counters + 0x28;
    public const int InterruptsRaised = Counters + 0x30;
    public const int DoorbellsDropped = Counters + 0x38;
    public const int LinkChanges = Counters + 0x40;
    public const int DroppedWrites = Counters + 0x48;
    public const int FailedReads = Counters + 0x50;

    /// <summary>Fault control (written by the fault injector, honoured by the clients).</summary>
    public const int Faults = 0x300;
    public const int FaultDropDoorbells = Faults + 0x00;  // u64: drop the next N doorbells this port sends
    public const int FaultDoorbellDelayMs = Faults + 0x08; // u64: deliver this port's doorbells after D ms
    public const int FaultReadDelayNs = Faults + 0x10;    // u64: spin this long on every remote read
    public const int FaultWindowLimit = Faults + 0x18;    // u64: 0 = none; otherwise SetTranslation grants at most this

    /// <summary>Offset of window <paramref name="window"/>'s register <paramref name="register"/>.</summary>
    public static int WindowRegister(int window, int register) => Windows + (window * WindowStride) + register;
}
