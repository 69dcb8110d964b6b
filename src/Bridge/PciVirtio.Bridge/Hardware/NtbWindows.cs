using PciVirtio.HwSim.Client;
using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;

namespace PciVirtio.Bridge.Hardware;

/// <summary>What kind of memory a window is, which decides how it may be touched.</summary>
public enum NtbMemoryKind
{
    /// <summary>Ordinary cacheable memory (hw-sim's local memory, a DMA buffer): any access
    /// width, the platform's fast copy.</summary>
    Ram,

    /// <summary>PCI I/O memory (a BAR mapped through VFIO): aligned volatile accesses of at
    /// most 64 bits only.</summary>
    IoMemory,
}

/// <summary>
/// Our inbound window: local memory the peer writes into through its outbound window, which
/// we read locally (so the link keeps here everything this side reads). Valid until the
/// hardware object is disposed.
/// </summary>
public sealed class NtbLocalWindow
{
    internal NtbLocalWindow(nint address, ulong size, NtbMemoryKind kind)
    {
        Address = address;
        Size = size;
        Kind = kind;
    }

    /// <summary>Where the window starts in our address space.</summary>
    public nint Address { get; }

    public ulong Size { get; }

    public NtbMemoryKind Kind { get; }

    /// <summary>An accessor for this window alone (nothing is remote); the peer window's
    /// <see cref="NtbPeerWindow.Accessor"/> covers this window too.</summary>
    public NtbMemoryAccessor Accessor =>
        new(Kind == NtbMemoryKind.Ram ? AccessPath.Ram : AccessPath.Io, AccessPath.Io, new IoMemoryAccessor(null), default, 0, 0);

    /// <summary><paramref name="length"/> bytes of the window from <paramref name="offset"/>
    /// (0 = to the end) as a memory-table region at link address <paramref name="linkAddress"/>.</summary>
    public MemoryRegion Region(ulong linkAddress, ulong offset = 0, ulong length = 0) =>
        NtbWindowRegion.Create(Address, Size, linkAddress, offset, length);

    public override string ToString() => $"local window 0x{Size:x} bytes of {Kind}";
}

/// <summary>
/// Our outbound window: the peer's inbound memory, which we write into. Every access made
/// through <see cref="Accessor"/> to an address in this window is remote: aligned, volatile,
/// at most 64 bits, and counted; a store is posted, a load is a round trip the link's data
/// path must never need. Valid until the hardware object is disposed; with the link down
/// stores may be dropped and loads may return all-ones (as on PCIe).
/// </summary>
public sealed class NtbPeerWindow
{
    private readonly NtbLocalWindow _local;
    private readonly IoMemoryAccessor _io;
    private readonly SimWindowAccessor _simulated;
    private readonly bool _isSimulated;

    private NtbPeerWindow(nint address, ulong size, NtbLocalWindow local, IoMemoryAccessor io, SimWindowAccessor simulated, bool isSimulated)
    {
        Address = address;
        Size = size;
        _local = local;
        _io = io;
        _simulated = simulated;
        _isSimulated = isSimulated;
    }

    /// <summary>Where the window starts in our address space.</summary>
    public nint Address { get; }

    public ulong Size { get; }

    /// <summary>
    /// The accessor for the link's memory: remote (counted) for addresses in this window,
    /// local for everything else — so one accessor serves a memory table holding both the
    /// local and the peer window.
    /// </summary>
    public NtbMemoryAccessor Accessor => new(
        _local.Kind == NtbMemoryKind.Ram ? AccessPath.Ram : AccessPath.Io,
        _isSimulated ? AccessPath.SimulatedWindow : AccessPath.Io,
        _io,
        _simulated,
        Address,
        Size);

    /// <summary><paramref name="length"/> bytes of the window from <paramref name="offset"/>
    /// (0 = to the end) as a memory-table region at link address <paramref name="linkAddress"/>.</summary>
    public MemoryRegion Region(ulong linkAddress, ulong offset = 0, ulong length = 0) =>
        NtbWindowRegion.Create(Address, Size, linkAddress, offset, length);

    public override string ToString() => $"peer window 0x{Size:x} bytes";

    /// <summary>A window on I/O memory counted by <paramref name="io"/>'s counters (which
    /// must cover exactly this window, so local accesses through the same accessor are not
    /// counted as remote).</summary>
    internal static NtbPeerWindow OverIoMemory(nint address, ulong size, NtbLocalWindow local, IoMemoryAccessor io) =>
        new(address, size, local, io, default, isSimulated: false);

    /// <summary>hw-sim's outbound window: accesses go through the port's fabric-aware accessor.</summary>
    internal static NtbPeerWindow OverSimulatedWindow(nint address, ulong size, NtbLocalWindow local, SimWindowAccessor window) =>
        new(address, size, local, new IoMemoryAccessor(null), window, isSimulated: true);
}

/// <summary>Accesses made through a peer window: the numbers a test asserts on ("no remote
/// read on the data path"). A copy counts as one transaction on hw-sim (a burst) and as one
/// per aligned word on I/O memory; bytes are the same on both.</summary>
public readonly record struct RemoteAccessCounts(long Reads, long Writes, long ReadBytes, long WrittenBytes)
{
    /// <summary>What happened between <paramref name="earlier"/> and this snapshot.</summary>
    public RemoteAccessCounts Since(RemoteAccessCounts earlier) =>
        new(Reads - earlier.Reads, Writes - earlier.Writes, ReadBytes - earlier.ReadBytes, WrittenBytes - earlier.WrittenBytes);

    public override string ToString() => $"remote reads {Reads} ({ReadBytes} B), remote writes {Writes} ({WrittenBytes} B)";
}

internal static class NtbWindowRegion
{
    public static MemoryRegion Create(nint address, ulong size, ulong linkAddress, ulong offset, ulong length)
    {
        if (length == 0)
        {
            length = size - Math.Min(offset, size);
        }

        if (offset > size || length > size - offset || length == 0)
        {
            throw new ArgumentOutOfRangeException(nameof(length), $"0x{offset:x}+0x{length:x} exceeds the window of 0x{size:x} bytes");
        }

        return new MemoryRegion(linkAddress, length, linkAddress, address + (nint)offset);
    }
}
