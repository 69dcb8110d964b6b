using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using PciVirtio.VhostCore.Memory;

namespace PciVirtio.Mmio.Memory;

/// <summary>
/// Accessor for PCI BAR (I/O) memory. Every load and every scalar store is a single aligned
/// volatile access of 1, 2, 4 or 8 bytes — never an unaligned or read-modify-write access,
/// which a device may reject or tear; the body of a bulk copy into the BAR is aligned 64-,
/// 32- or 16-byte vector stores (see <see cref="CopyTo"/>) — and index publication is preceded by a
/// full barrier, so payload → barrier → index → doorbell holds on any bus. The raw loads are never
/// inlined: inlined into a caller that masks the result, the JIT narrows a volatile 64-bit
/// load to a 1-byte one (<c>test byte ptr [reg], 1</c>), which a device may refuse or answer
/// with garbage; a call boundary keeps every load at the width written. With an
/// <see cref="AccessCounters"/> attached it counts each transaction.
/// </summary>
public readonly struct IoMemoryAccessor(AccessCounters? counters) : IMemoryAccessor
{
    public AccessCounters? Counters { get; } = counters;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ushort LoadU16(nint address)
    {
        if ((address & 1) == 0)
        {
            return Le(Read16(address));
        }

        return (ushort)(Read8(address) | (Read8(address + 1) << 8));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint LoadU32(nint address)
    {
        if ((address & 3) == 0)
        {
            return Le(Read32(address));
        }

        return LoadU16Pair(address);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong LoadU64(nint address)
    {
        if ((address & 7) == 0)
        {
            return Le(Read64(address));
        }

        return LoadU32(address) | ((ulong)LoadU32(address + 4) << 32);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ushort LoadAcquireU16(nint address) => LoadU16(address);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void StoreU16(nint address, ushort value)
    {
        if ((address & 1) == 0)
        {
            Write16(address, Le(value));
        }
        else
        {
            Write8(address, (byte)value);
            Write8(address + 1, (byte)(value >> 8));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void StoreU32(nint address, uint value)
    {
        if ((address & 3) == 0)
        {
            Write32(address, Le(value));
        }
        else
        {
            StoreU16(address, (ushort)value);
            StoreU16(address + 2, (ushort)(value >> 16));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void StoreU64(nint address, ulong value)
    {
        if ((address & 7) == 0)
        {
            Write64(address, Le(value));
        }
        else
        {
            StoreU32(address, (uint)value);
            StoreU32(address + 4, (uint)(value >> 32));
        }
    }

    /// <summary>One aligned 16-byte vector store when the address is 16-byte aligned (a
    /// descriptor is), counted as one transaction; otherwise two <see cref="StoreU64"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public unsafe void StoreU64Pair(nint address, ulong first, ulong second)
    {
        if ((address & 15) == 0 && Vector128.IsHardwareAccelerated)
        {
            Counters?.Write(address, 16);
            Vector128.Create(Le(first), Le(second)).StoreAligned((ulong*)address);
        }
        else
        {
            StoreU64(address, first);
            StoreU64(address + 8, second);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void StoreReleaseU16(nint address, ushort value)
    {
        // Everything written before (descriptors, ring entries, payload) must reach the
        // device before the index that publishes it, whatever the memory type.
        FullBarrier();
        StoreU16(address, value);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void FullBarrier()
    {
        Interlocked.MemoryBarrier();
        Counters?.Barrier();
    }

    public void CopyFrom(nint source, Span<byte> destination)
    {
        int i = 0;
        int n = destination.Length;

        // Head: smaller aligned loads until the source is 8-byte aligned.
        while (i < n && ((source + i) & 7) != 0)
        {
            int step = HeadStep(source + i, n - i);
            Load(source + i, destination.Slice(i, step));
            i += step;
        }

        // Body: aligned 8-byte words.
        for (; n - i >= 8; i += 8)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(destination[i..], Le(Read64(source + i)));
        }

        // Tail.
        while (i < n)
        {
            int step = TailStep(n - i);
            Load(source + i, destination.Slice(i, step));
            i += step;
        }
    }

    /// <summary>
    /// Copies <paramref name="source"/> into I/O memory: aligned 1/2/4-byte stores up to an
    /// 8-byte boundary, one aligned 8-, 16- and 32-byte store where needed up to the boundary
    /// of the widest vector the runtime accelerates (64, 32 or 16 bytes), aligned stores of
    /// that width for the body, and the tail back down the same widths.
    /// </summary>
    /// <remarks>
    /// Writes across PCIe are posted: nothing waits for them and nothing is read, so a wide
    /// store costs one transaction where 8-byte stores cost four, and the copy of a frame is
    /// the link's largest per-packet cost. Wide stores are valid on every mapping a BAR gets:
    /// on x86 an aligned 16-, 32- or 64-byte store to uncached (UC) memory is one ordered bus
    /// write (or split into smaller ordered ones, never torn across its alignment), and to
    /// write-combining (WC) memory it fills part of a combining buffer (a 64-byte one all of
    /// it) exactly as the 8-byte stores did, so the ordering question there (the barrier before the index store) is
    /// the one it always was; on ARM64 a 16-byte aligned store to Device memory is
    /// permitted (only unaligned ones fault). Not non-temporal stores: into hw-sim's window
    /// (ordinary memory) they made a 1500-byte frame three times dearer. Nothing here is
    /// read back, and the order that matters (payload, barrier, index, doorbell) is kept by
    /// <see cref="StoreReleaseU16"/>: the JIT does not move stores across that barrier.
    /// Only the destination is aligned; the source is ordinary memory, read unaligned.
    /// </remarks>
    public void CopyTo(nint destination, ReadOnlySpan<byte> source)
    {
        int i = 0;
        int n = source.Length;
        int stores = 0;
        while (i < n && ((destination + i) & 7) != 0)
        {
            int step = HeadStep(destination + i, n - i);
            StoreUncounted(destination + i, source.Slice(i, step));
            i += step;
            stores++;
        }

        if (n - i >= WideCopyMinimum)
        {
            i = CopyWide(destination, source, i, out int wide);
            stores += wide;
        }

        for (; n - i >= 8; i += 8, stores++)
        {
            Raw64(destination + i, Le(BinaryPrimitives.ReadUInt64LittleEndian(source[i..])));
        }

        while (i < n)
        {
            int step = TailStep(n - i);
            StoreUncounted(destination + i, source.Slice(i, step));
            i += step;
            stores++;
        }

        // Counted once per copy, every store still a transaction: a locked add per store
        // would make each wait for the stores before it to reach memory (a full barrier on
        // x86), which costs more than the copy.
        if (stores != 0)
        {
            Counters?.Write(destination, n, stores);
        }
    }

    /// <summary>Below this many bytes (from an 8-byte aligned start) 8-byte stores do as well:
    /// reaching the vector alignment would take most of them anyway.</summary>
    private const int WideCopyMinimum = 64;

    /// <summary>The vector body of <see cref="CopyTo"/>, from byte <paramref name="i"/> (the
    /// destination 8-byte aligned there, at least <see cref="WideCopyMinimum"/> bytes left);
    /// returns where the 8-byte tail starts, and in <paramref name="stores"/> how many stores
    /// it made (none, and <paramref name="i"/> back, without vectors).</summary>
    /// <remarks>
    /// <para>The destination is brought to the widest alignment by one store of each smaller
    /// width (8, 16, 32 bytes) where its address needs it, the body is the widest vectors,
    /// four a turn, and what is left below that width goes down the same steps (32, 16).
    /// Against 8-byte stores up to the alignment and after the body, that is at most one
    /// store per width at each end, and on a write-combining window a 64-byte store fills a
    /// whole combining buffer: one full-line posted write. Into ordinary memory the copy
    /// runs as fast as the platform's own (tests/Benchmarks, WindowCopyBenchmarks).</para>
    /// <para>Nothing is counted in the loops: the count is arithmetic on the lengths. A counter
    /// passed by reference and incremented per store lived on the stack once this was
    /// inlined into the link's sender, and each increment waited for the previous one's
    /// store: a dependency through memory that set the pace of the whole copy.</para>
    /// </remarks>
    private static unsafe int CopyWide(nint destination, ReadOnlySpan<byte> source, int i, out int stores)
    {
        int n = source.Length;
        ref byte from = ref MemoryMarshal.GetReference(source);
        stores = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            stores = AlignTo64(destination, ref from, ref i);
            int body = (n - i) / 64;
            stores += body;

            // Four vectors a turn: the loop's own instructions (index, compare, branch) were
            // as many as its loads and stores, and the stores wait on memory anyway.
            for (; n - i >= 256; i += 256)
            {
                var a = Vector512.LoadUnsafe(ref from, (nuint)i);
                var b = Vector512.LoadUnsafe(ref from, (nuint)i + 64);
                var c = Vector512.LoadUnsafe(ref from, (nuint)i + 128);
                var d = Vector512.LoadUnsafe(ref from, (nuint)i + 192);
                byte* to = (byte*)(destination + i);
                a.StoreAligned(to);
                b.StoreAligned(to + 64);
                c.StoreAligned(to + 128);
                d.StoreAligned(to + 192);
            }

            for (; n - i >= 64; i += 64)
            {
                Vector512.LoadUnsafe(ref from, (nuint)i).StoreAligned((byte*)(destination + i));
            }

            stores += FinishBelow64(destination, ref from, ref i, n);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            stores = AlignTo32(destination, ref from, ref i);
            stores += (n - i) / 32;
            for (; n - i >= 128; i += 128)
            {
                var a = Vector256.LoadUnsafe(ref from, (nuint)i);
                var b = Vector256.LoadUnsafe(ref from, (nuint)i + 32);
                var c = Vector256.LoadUnsafe(ref from, (nuint)i + 64);
                var d = Vector256.LoadUnsafe(ref from, (nuint)i + 96);
                byte* to = (byte*)(destination + i);
                a.StoreAligned(to);
                b.StoreAligned(to + 32);
                c.StoreAligned(to + 64);
                d.StoreAligned(to + 96);
            }

            for (; n - i >= 32; i += 32)
            {
                Vector256.LoadUnsafe(ref from, (nuint)i).StoreAligned((byte*)(destination + i));
            }

            stores += FinishBelow32(destination, ref from, ref i, n);
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            stores = AlignTo16(destination, ref from, ref i);
            stores += (n - i) / 16;
            for (; n - i >= 16; i += 16)
            {
                Vector128.LoadUnsafe(ref from, (nuint)i).StoreAligned((byte*)(destination + i));
            }
        }

        return i;
    }

    // The alignment steps of CopyWide: from 8-byte alignment, one store of each width the
    // address needs to reach the next; each returns how many it made. The caller has left
    // at least 64 bytes, more than the 8 + 16 + 32 they can take.
    private static int AlignTo16(nint destination, ref byte from, ref int i)
    {
        if (((destination + i) & 8) == 0)
        {
            return 0;
        }

        Raw64(destination + i, Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref from, i)));
        i += 8;
        return 1;
    }

    private static unsafe int AlignTo32(nint destination, ref byte from, ref int i)
    {
        int stores = AlignTo16(destination, ref from, ref i);
        if (((destination + i) & 16) != 0)
        {
            Vector128.LoadUnsafe(ref from, (nuint)i).StoreAligned((byte*)(destination + i));
            i += 16;
            stores++;
        }

        return stores;
    }

    private static unsafe int AlignTo64(nint destination, ref byte from, ref int i)
    {
        int stores = AlignTo32(destination, ref from, ref i);
        if (((destination + i) & 32) != 0)
        {
            Vector256.LoadUnsafe(ref from, (nuint)i).StoreAligned((byte*)(destination + i));
            i += 32;
            stores++;
        }

        return stores;
    }

    // The steps back down after the body (fewer than 64 or 32 bytes left of n): one store of
    // each smaller vector width that still fits, leaving under 16 bytes for the 8-byte tail;
    // each returns how many it made.
    private static unsafe int FinishBelow32(nint destination, ref byte from, ref int i, int n)
    {
        if (n - i < 16)
        {
            return 0;
        }

        Vector128.LoadUnsafe(ref from, (nuint)i).StoreAligned((byte*)(destination + i));
        i += 16;
        return 1;
    }

    private static unsafe int FinishBelow64(nint destination, ref byte from, ref int i, int n)
    {
        int stores = 0;
        if (n - i >= 32)
        {
            Vector256.LoadUnsafe(ref from, (nuint)i).StoreAligned((byte*)(destination + i));
            i += 32;
            stores++;
        }

        return stores + FinishBelow32(destination, ref from, ref i, n);
    }

    /// <summary>Largest naturally aligned access at <paramref name="address"/> that fits in
    /// <paramref name="remaining"/> bytes.</summary>
    private static int HeadStep(nint address, int remaining)
    {
        if ((address & 1) != 0 || remaining < 2)
        {
            return 1;
        }

        if ((address & 2) != 0 || remaining < 4)
        {
            return 2;
        }

        return 4;
    }

    /// <summary>For an 8-byte aligned address, the largest access that fits.</summary>
    private static int TailStep(int remaining) => remaining >= 4 ? 4 : remaining >= 2 ? 2 : 1;

    private void Load(nint address, Span<byte> into)
    {
        switch (into.Length)
        {
            case 1: into[0] = Read8(address); break;
            case 2: BinaryPrimitives.WriteUInt16LittleEndian(into, Le(Read16(address))); break;
            default: BinaryPrimitives.WriteUInt32LittleEndian(into, Le(Read32(address))); break;
        }
    }

    /// <summary>One aligned store of 1, 2 or 4 bytes, counted by the caller.</summary>
    private static unsafe void StoreUncounted(nint address, ReadOnlySpan<byte> from)
    {
        switch (from.Length)
        {
            case 1: Volatile.Write(ref *(byte*)address, from[0]); break;
            case 2: Volatile.Write(ref *(ushort*)address, Le(BinaryPrimitives.ReadUInt16LittleEndian(from))); break;
            default: Volatile.Write(ref *(uint*)address, Le(BinaryPrimitives.ReadUInt32LittleEndian(from))); break;
        }
    }

    /// <summary>One aligned 8-byte store, counted by the caller.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Raw64(nint a, ulong v) => Volatile.Write(ref *(ulong*)a, v);

    private uint LoadU16Pair(nint address)
    {
        // An unaligned 32-bit load becomes aligned smaller loads, never one that straddles.
        if ((address & 1) == 0)
        {
            return Le(Read16(address)) | ((uint)Le(Read16(address + 2)) << 16);
        }

        return Read8(address) | ((uint)Le(Read16(address + 1)) << 8) | ((uint)Read8(address + 3) << 24);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private unsafe byte Read8(nint a)
    {
        Counters?.Read(a, 1);
        return Volatile.Read(ref *(byte*)a);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private unsafe ushort Read16(nint a)
    {
        Counters?.Read(a, 2);
        return Volatile.Read(ref *(ushort*)a);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private unsafe uint Read32(nint a)
    {
        Counters?.Read(a, 4);
        return Volatile.Read(ref *(uint*)a);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private unsafe ulong Read64(nint a)
    {
        Counters?.Read(a, 8);
        return Volatile.Read(ref *(ulong*)a);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private unsafe void Write8(nint a, byte v)
    {
        Counters?.Write(a, 1);
        Volatile.Write(ref *(byte*)a, v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private unsafe void Write16(nint a, ushort v)
    {
        Counters?.Write(a, 2);
        Volatile.Write(ref *(ushort*)a, v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private unsafe void Write32(nint a, uint v)
    {
        Counters?.Write(a, 4);
        Volatile.Write(ref *(uint*)a, v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private unsafe void Write64(nint a, ulong v)
    {
        Counters?.Write(a, 8);
        Volatile.Write(ref *(ulong*)a, v);
    }

    private static ushort Le(ushort v) => BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v);

    private static uint Le(uint v) => BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v);

    private static ulong Le(ulong v) => BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v);
}
