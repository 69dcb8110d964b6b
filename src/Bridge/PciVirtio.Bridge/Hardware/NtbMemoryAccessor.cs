using System.Runtime.CompilerServices;
using PciVirtio.HwSim.Client;
using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;

namespace PciVirtio.Bridge.Hardware;

/// <summary>How one range of link memory is touched.</summary>
internal enum AccessPath : byte
{
    /// <summary>Ordinary cacheable memory: <see cref="RamAccessor"/>.</summary>
    Ram,

    /// <summary>PCI I/O memory (a BAR), counted when it is the peer's:
    /// <see cref="IoMemoryAccessor"/>.</summary>
    Io,

    /// <summary>hw-sim's outbound window: <see cref="SimWindowAccessor"/>, which adds the
    /// fabric (link down, read delay) and hw-sim's own counters to the I/O memory rules.</summary>
    SimulatedWindow,
}

/// <summary>
/// The accessor for link memory: one type for both windows, so the link builds a single
/// memory table over its local window and its peer window and the ring code is instantiated
/// once. An address inside the peer window is remote — aligned volatile accesses of at most
/// 64 bits, copies into it as aligned vector stores (posted writes, see
/// <see cref="IoMemoryAccessor.CopyTo"/>), counted in <see cref="INtbHardware.RemoteAccesses"/> — and
/// anything else is local, touched the way the local memory allows (plain loads and the
/// platform copy for RAM, the I/O rules for a BAR).
/// </summary>
/// <remarks>
/// The choice costs one range compare and one predictable branch per access, against an
/// uncached bus transaction on real hardware. Copies are decided by their first byte: the
/// memory table never hands out a range that spans two regions. The default value treats
/// every address as local RAM.
/// </remarks>
public readonly struct NtbMemoryAccessor : IMemoryAccessor
{
    private readonly IoMemoryAccessor _io;
    private readonly SimWindowAccessor _window;
    private readonly nint _peerStart;
    private readonly nuint _peerLength;
    private readonly AccessPath _local;
    private readonly AccessPath _peer;

    internal NtbMemoryAccessor(AccessPath local, AccessPath peer, IoMemoryAccessor io, SimWindowAccessor window, nint peerStart, ulong peerLength)
    {
        _local = local;
        _peer = peer;
        _io = io;
        _window = window;
        _peerStart = peerStart;
        _peerLength = (nuint)peerLength;
    }

    /// <summary>True when <paramref name="address"/> lies in the peer window, i.e. an access
    /// there crosses the link.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsRemote(nint address) => (nuint)(address - _peerStart) < _peerLength;

    public ushort LoadU16(nint address) => PathOf(address) switch
    {
        AccessPath.Ram => default(RamAccessor).LoadU16(address),
        AccessPath.Io => _io.LoadU16(address),
        _ => _window.LoadU16(address),
    };

    public uint LoadU32(nint address) => PathOf(address) switch
    {
        AccessPath.Ram => default(RamAccessor).LoadU32(address),
        AccessPath.Io => _io.LoadU32(address),
        _ => _window.LoadU32(address),
    };

    public ulong LoadU64(nint address) => PathOf(address) switch
    {
        AccessPath.Ram => default(RamAccessor).LoadU64(address),
        AccessPath.Io => _io.LoadU64(address),
        _ => _window.LoadU64(address),
    };

    public ushort LoadAcquireU16(nint address) => PathOf(address) switch
    {
        AccessPath.Ram => default(RamAccessor).LoadAcquireU16(address),
        AccessPath.Io => _io.LoadAcquireU16(address),
        _ => _window.LoadAcquireU16(address),
    };

    public void StoreU16(nint address, ushort value)
    {
        switch (PathOf(address))
        {
            case AccessPath.Ram: default(RamAccessor).StoreU16(address, value); break;
            case AccessPath.Io: _io.StoreU16(address, value); break;
            default: _window.StoreU16(address, value); break;
        }
    }

    public void StoreU32(nint address, uint value)
    {
        switch (PathOf(address))
        {
            case AccessPath.Ram: default(RamAccessor).StoreU32(address, value); break;
            case AccessPath.Io: _io.StoreU32(address, value); break;
            default: _window.StoreU32(address, value); break;
        }
    }

    public void StoreU64(nint address, ulong value)
    {
        switch (PathOf(address))
        {
            case AccessPath.Ram: default(RamAccessor).StoreU64(address, value); break;
            case AccessPath.Io: _io.StoreU64(address, value); break;
            default: _window.StoreU64(address, value); break;
        }
    }

    public void StoreU64Pair(nint address, ulong first, ulong second)
    {
        switch (PathOf(address))
        {
            case AccessPath.Ram: default(RamAccessor).StoreU64Pair(address, first, second); break;
            case AccessPath.Io: _io.StoreU64Pair(address, first, second); break;
            default: _window.StoreU64Pair(address, first, second); break;
        }
    }

    public void StoreReleaseU16(nint address, ushort value)
    {
        switch (PathOf(address))
        {
            // A release store is enough for RAM shared with a peer on the same coherent
            // memory; the remote and I/O paths put a full barrier first, as a bus needs.
            case AccessPath.Ram: default(RamAccessor).StoreReleaseU16(address, value); break;
            case AccessPath.Io: _io.StoreReleaseU16(address, value); break;
            default: _window.StoreReleaseU16(address, value); break;
        }
    }

    /// <summary>A full barrier, whichever memory comes next: it orders local stores before
    /// remote ones as much as the other way round.</summary>
    public void FullBarrier() => _io.FullBarrier();

    public void CopyFrom(nint source, Span<byte> destination)
    {
        switch (PathOf(source))
        {
            case AccessPath.Ram: default(RamAccessor).CopyFrom(source, destination); break;
            case AccessPath.Io: _io.CopyFrom(source, destination); break;
            default: _window.CopyFrom(source, destination); break;
        }
    }

    public void CopyTo(nint destination, ReadOnlySpan<byte> source)
    {
        switch (PathOf(destination))
        {
            case AccessPath.Ram: default(RamAccessor).CopyTo(destination, source); break;
            case AccessPath.Io: _io.CopyTo(destination, source); break;
            default: _window.CopyTo(destination, source); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private AccessPath PathOf(nint address) => IsRemote(address) ? _peer : _local;
}
