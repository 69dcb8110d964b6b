using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace PciVirtio.VhostCore.Memory;

/// <summary>
/// Accessor for ordinary cacheable memory: guest RAM shared through memfd, or native
/// memory in-process. Plain loads and stores, <see cref="Volatile"/> for the ordered
/// index accesses, and the platform's fast copy for payload.
/// </summary>
public readonly struct RamAccessor : IMemoryAccessor
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public unsafe ushort LoadU16(nint address)
    {
        ushort v = Unsafe.ReadUnaligned<ushort>((void*)address);
        return BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public unsafe uint LoadU32(nint address)
    {
        uint v = Unsafe.ReadUnaligned<uint>((void*)address);
        return BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public unsafe ulong LoadU64(nint address)
    {
        ulong v = Unsafe.ReadUnaligned<ulong>((void*)address);
        return BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public unsafe ushort LoadAcquireU16(nint address)
    {
        // Ring indices are 2-byte aligned (the ring bases are validated), so this is a
        // single atomic load.
        ushort v = Volatile.Read(ref Unsafe.AsRef<ushort>((void*)address));
        return BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public unsafe void StoreU16(nint address, ushort value)
    {
        Unsafe.WriteUnaligned((void*)address, BitConverter.IsLittleEndian ? value : BinaryPrimitives.ReverseEndianness(value));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public unsafe void StoreU32(nint address, uint value)
    {
        Unsafe.WriteUnaligned((void*)address, BitConverter.IsLittleEndian ? value : BinaryPrimitives.ReverseEndianness(value));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public unsafe void StoreU64(nint address, ulong value)
    {
        Unsafe.WriteUnaligned((void*)address, BitConverter.IsLittleEndian ? value : BinaryPrimitives.ReverseEndianness(value));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public unsafe void StoreU64Pair(nint address, ulong first, ulong second)
    {
        StoreU64(address, first);
        StoreU64(address + 8, second);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public unsafe void StoreReleaseU16(nint address, ushort value)
    {
        Volatile.Write(ref Unsafe.AsRef<ushort>((void*)address), BitConverter.IsLittleEndian ? value : BinaryPrimitives.ReverseEndianness(value));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void FullBarrier() => Interlocked.MemoryBarrier();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public unsafe void CopyFrom(nint source, Span<byte> destination)
    {
        new ReadOnlySpan<byte>((void*)source, destination.Length).CopyTo(destination);
    }

    /// <remarks>32 to 128 bytes (a small frame) go as two or four overlapping 32-byte
    /// stores, where the general copy takes 16-byte steps: into memory another core has just
    /// read, each store waits in the store buffer for its line, and fewer of them leave room
    /// for the next frame's.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public unsafe void CopyTo(nint destination, ReadOnlySpan<byte> source)
    {
        int n = source.Length;
        if (n is >= 32 and <= 128 && Vector256.IsHardwareAccelerated)
        {
            ref byte from = ref MemoryMarshal.GetReference(source);
            byte* to = (byte*)destination;
            var a = Vector256.LoadUnsafe(ref from);
            var b = Vector256.LoadUnsafe(ref from, (nuint)(n - 32));
            if (n > 64)
            {
                var c = Vector256.LoadUnsafe(ref from, 32);
                var d = Vector256.LoadUnsafe(ref from, (nuint)(n - 64));
                c.Store(to + 32);
                d.Store(to + n - 64);
            }

            a.Store(to);
            b.Store(to + n - 32);
            return;
        }

        source.CopyTo(new Span<byte>((void*)destination, source.Length));
    }
}
