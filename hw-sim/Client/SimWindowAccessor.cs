using System.Diagnostics;
using System.Runtime.CompilerServices;
using PciVirtio.HwSim.Device;
using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;

namespace PciVirtio.HwSim.Client;

/// <summary>
/// The accessor for a port's outbound (peer) window: the accesses of
/// <see cref="IoMemoryAccessor"/> (aligned volatile loads and stores of at most 8 bytes,
/// copies into the window as aligned vector stores), and on every access it consults the port's
/// register page as the PCIe fabric would: with the link down reads return all-ones and
/// writes are dropped; each remote read spins the configured delay (a non-posted read);
/// remote reads, writes and bytes are added to the port's shared counters. Use it only for
/// the peer window — the port's own local memory is not remote.
/// </summary>
public readonly struct SimWindowAccessor : IMemoryAccessor
{
    private static readonly double TicksPerNanosecond = Stopwatch.Frequency / 1e9;
    private readonly IoMemoryAccessor _io;
    private readonly RegisterPage _page;

    public SimWindowAccessor(RegisterPage ownPage)
    {
        _io = new IoMemoryAccessor(null);
        _page = ownPage;
    }

    public ushort LoadU16(nint address) => BeginRead(2) ? _io.LoadU16(address) : ushort.MaxValue;

    public uint LoadU32(nint address) => BeginRead(4) ? _io.LoadU32(address) : uint.MaxValue;

    public ulong LoadU64(nint address) => BeginRead(8) ? _io.LoadU64(address) : ulong.MaxValue;

    public ushort LoadAcquireU16(nint address) => LoadU16(address);

    public void StoreU16(nint address, ushort value)
    {
        if (BeginWrite(2))
        {
            _io.StoreU16(address, value);
        }
    }

    public void StoreU32(nint address, uint value)
    {
        if (BeginWrite(4))
        {
            _io.StoreU32(address, value);
        }
    }

    public void StoreU64(nint address, ulong value)
    {
        if (BeginWrite(8))
        {
            _io.StoreU64(address, value);
        }
    }

    public void StoreU64Pair(nint address, ulong first, ulong second)
    {
        if (BeginWrite(16))
        {
            _io.StoreU64Pair(address, first, second);
        }
    }

    public void StoreReleaseU16(nint address, ushort value)
    {
        FullBarrier();
        StoreU16(address, value);
    }

    public void FullBarrier() => _io.FullBarrier();

    public void CopyFrom(nint source, Span<byte> destination)
    {
        if (destination.IsEmpty)
        {
            return;
        }

        if (BeginRead(destination.Length))
        {
            _io.CopyFrom(source, destination);
        }
        else
        {
            destination.Fill(0xFF);
        }
    }

    public void CopyTo(nint destination, ReadOnlySpan<byte> source)
    {
        if (!source.IsEmpty && BeginWrite(source.Length))
        {
            _io.CopyTo(destination, source);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool LinkUp() => (_page.Read32(NtbRegisters.LinkStatus) & 1) != 0;

    private bool BeginRead(int bytes)
    {
        ulong delay = _page.Read64(NtbRegisters.FaultReadDelayNs);
        if (delay != 0)
        {
            Spin(delay);
        }

        if (!LinkUp())
        {
            _page.Add64(NtbRegisters.FailedReads, 1);
            return false;
        }

        _page.Add64(NtbRegisters.RemoteReads, 1);
        _page.Add64(NtbRegisters.RemoteReadBytes, bytes);
        return true;
    }

    private bool BeginWrite(int bytes)
    {
        if (!LinkUp())
        {
            _page.Add64(NtbRegisters.DroppedWrites, 1);
            return false;
        }

        // Only this port's owner writes through its window (the link's loop thread), so the
        // write counters have one writer and need no locked add: a locked add would wait for
        // the payload stores before it to reach memory on every descriptor and index store,
        // which real posted writes never do (it tripled the simulated cost of a send). Reads
        // stay atomic: they are rare, and their count is what tests assert is zero.
        _page.AddSingleWriter64(NtbRegisters.RemoteWrites, 1);
        _page.AddSingleWriter64(NtbRegisters.RemoteWrittenBytes, bytes);
        return true;
    }

    private static void Spin(ulong nanoseconds)
    {
        long end = Stopwatch.GetTimestamp() + (long)(nanoseconds * TicksPerNanosecond);
        while (Stopwatch.GetTimestamp() < end)
        {
            Thread.SpinWait(1);
        }
    }
}
