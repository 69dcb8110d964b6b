using System.Buffers.Binary;
using PciVirtio.VhostCore.Memory;

namespace PciVirtio.VhostCore.Tests.Notifications;

/// <summary>
/// A RAM accessor that can stop an operation just before its k-th memory access (ring load,
/// store, barrier or copy) and run the peer's whole operation there, on the same thread.
/// Enumerating k over every access point enumerates every way the peer's step can fall
/// inside ours: a deterministic, small-scale model check of the notification handshake.
/// </summary>
/// <remarks>
/// Optionally each side (<see cref="Side"/>: 0 device, 1 driver) gets a store buffer, as on
/// x86 (TSO): its stores, release stores included, stay invisible to the other side until it
/// executes a full barrier, while its own loads see them. That is exactly the store→load
/// reordering notification suppression must fence against, so a missing FullBarrier turns
/// into a lost wake-up these tests report, every time.
/// </remarks>
internal readonly struct HookedAccessor(int side) : IMemoryAccessor
{
    [ThreadStatic]
    private static int t_count;

    [ThreadStatic]
    private static int t_fireAt;

    [ThreadStatic]
    private static Action? t_hook;

    [ThreadStatic]
    private static List<(nint Address, byte[] Bytes)>[]? t_storeBuffers;

    public int Side { get; } = side;

    private static bool Buffering => t_storeBuffers is not null;

    /// <summary>
    /// Runs <paramref name="operation"/>, calling <paramref name="peer"/> just before its
    /// <paramref name="fireAt"/>-th memory access (1-based), or after it when it makes fewer
    /// accesses. Returns how many accesses <paramref name="operation"/> made. The peer's own
    /// accesses are not counted. With <paramref name="storeBuffers"/>, both sides' stores are
    /// buffered until their next full barrier (and all are drained when both are done).
    /// </summary>
    public static int Run(Action operation, int fireAt, Action peer, bool storeBuffers = false)
    {
        t_count = 0;
        t_fireAt = fireAt;
        t_hook = peer;
        t_storeBuffers = storeBuffers ? [[], []] : null;
        try
        {
            operation();
            var pending = t_hook;
            t_hook = null;
            pending?.Invoke();
        }
        finally
        {
            t_hook = null;
            if (t_storeBuffers is { } buffers)
            {
                Drain(buffers[0]);
                Drain(buffers[1]);
                t_storeBuffers = null;
            }
        }

        return t_count;
    }

    private static void Step()
    {
        if (t_hook is null)
        {
            return;
        }

        if (++t_count == t_fireAt)
        {
            var peer = t_hook;
            t_hook = null;
            peer();
        }
    }

    private static void Drain(List<(nint Address, byte[] Bytes)> buffer)
    {
        foreach (var (address, bytes) in buffer)
        {
            default(RamAccessor).CopyTo(address, bytes);
        }

        buffer.Clear();
    }

    /// <summary>Memory as this side sees it: memory overlaid with its own buffered stores.</summary>
    private void Read(nint address, Span<byte> destination)
    {
        default(RamAccessor).CopyFrom(address, destination);
        foreach (var (at, bytes) in t_storeBuffers![Side])
        {
            long from = Math.Max((long)at, (long)address);
            long to = Math.Min((long)at + bytes.Length, (long)address + destination.Length);
            if (from < to)
            {
                bytes.AsSpan((int)(from - at), (int)(to - from)).CopyTo(destination[(int)(from - address)..]);
            }
        }
    }

    private void Write(nint address, ReadOnlySpan<byte> source) => t_storeBuffers![Side].Add((address, source.ToArray()));

    public ushort LoadU16(nint address)
    {
        Step();
        if (!Buffering)
        {
            return default(RamAccessor).LoadU16(address);
        }

        Span<byte> b = stackalloc byte[2];
        Read(address, b);
        return BinaryPrimitives.ReadUInt16LittleEndian(b);
    }

    public uint LoadU32(nint address)
    {
        Step();
        if (!Buffering)
        {
            return default(RamAccessor).LoadU32(address);
        }

        Span<byte> b = stackalloc byte[4];
        Read(address, b);
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    public ulong LoadU64(nint address)
    {
        Step();
        if (!Buffering)
        {
            return default(RamAccessor).LoadU64(address);
        }

        Span<byte> b = stackalloc byte[8];
        Read(address, b);
        return BinaryPrimitives.ReadUInt64LittleEndian(b);
    }

    public ushort LoadAcquireU16(nint address)
    {
        Step();
        if (!Buffering)
        {
            return default(RamAccessor).LoadAcquireU16(address);
        }

        Span<byte> b = stackalloc byte[2];
        Read(address, b);
        return BinaryPrimitives.ReadUInt16LittleEndian(b);
    }

    public void StoreU16(nint address, ushort value)
    {
        Step();
        if (!Buffering)
        {
            default(RamAccessor).StoreU16(address, value);
            return;
        }

        Span<byte> b = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(b, value);
        Write(address, b);
    }

    public void StoreU32(nint address, uint value)
    {
        Step();
        if (!Buffering)
        {
            default(RamAccessor).StoreU32(address, value);
            return;
        }

        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        Write(address, b);
    }

    public void StoreU64Pair(nint address, ulong first, ulong second)
    {
        StoreU64(address, first);
        StoreU64(address + 8, second);
    }

    public void StoreU64(nint address, ulong value)
    {
        Step();
        if (!Buffering)
        {
            default(RamAccessor).StoreU64(address, value);
            return;
        }

        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        Write(address, b);
    }

    public void StoreReleaseU16(nint address, ushort value)
    {
        Step();
        if (!Buffering)
        {
            default(RamAccessor).StoreReleaseU16(address, value);
            return;
        }

        // On TSO a release store is an ordinary store: it orders after earlier stores (the
        // buffer is FIFO) but may still sit in the buffer past later loads.
        Span<byte> b = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(b, value);
        Write(address, b);
    }

    public void FullBarrier()
    {
        Step();
        if (Buffering)
        {
            Drain(t_storeBuffers![Side]);
        }

        default(RamAccessor).FullBarrier();
    }

    public void CopyFrom(nint source, Span<byte> destination)
    {
        Step();
        if (!Buffering)
        {
            default(RamAccessor).CopyFrom(source, destination);
            return;
        }

        Read(source, destination);
    }

    public void CopyTo(nint destination, ReadOnlySpan<byte> source)
    {
        Step();
        if (!Buffering)
        {
            default(RamAccessor).CopyTo(destination, source);
            return;
        }

        Write(destination, source);
    }
}
