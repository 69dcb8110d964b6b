using PciVirtio.VhostCore.Memory;

namespace PciVirtio.VhostCore.Tests.Notifications;

/// <summary>
/// A RAM accessor that can stop an operation just before its k-th memory access (ring load,
/// store, barrier or copy) and run the peer's whole operation there, on the same thread.
/// Enumerating k over every access point enumerates every way the peer's step can fall
/// inside ours under sequential consistency: a deterministic, small-scale model check of
/// the notification handshake.
/// </summary>
internal readonly struct HookedAccessor : IMemoryAccessor
{
    [ThreadStatic]
    private static int t_count;

    [ThreadStatic]
    private static int t_fireAt;

    [ThreadStatic]
    private static Action? t_hook;

    /// <summary>
    /// Runs <paramref name="operation"/>, calling <paramref name="peer"/> just before its
    /// <paramref name="fireAt"/>-th memory access (1-based), or after it when it makes fewer
    /// accesses. Returns how many accesses <paramref name="operation"/> made. The peer's own
    /// accesses are not counted.
    /// </summary>
    public static int Run(Action operation, int fireAt, Action peer)
    {
        t_count = 0;
        t_fireAt = fireAt;
        t_hook = peer;
        try
        {
            operation();
        }
        finally
        {
            var pending = t_hook;
            t_hook = null;
            pending?.Invoke();
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

    public ushort LoadU16(nint address)
    {
        Step();
        return default(RamAccessor).LoadU16(address);
    }

    public uint LoadU32(nint address)
    {
        Step();
        return default(RamAccessor).LoadU32(address);
    }

    public ulong LoadU64(nint address)
    {
        Step();
        return default(RamAccessor).LoadU64(address);
    }

    public ushort LoadAcquireU16(nint address)
    {
        Step();
        return default(RamAccessor).LoadAcquireU16(address);
    }

    public void StoreU16(nint address, ushort value)
    {
        Step();
        default(RamAccessor).StoreU16(address, value);
    }

    public void StoreU32(nint address, uint value)
    {
        Step();
        default(RamAccessor).StoreU32(address, value);
    }

    public void StoreU64(nint address, ulong value)
    {
        Step();
        default(RamAccessor).StoreU64(address, value);
    }

    public void StoreReleaseU16(nint address, ushort value)
    {
        Step();
        default(RamAccessor).StoreReleaseU16(address, value);
    }

    public void FullBarrier()
    {
        Step();
        default(RamAccessor).FullBarrier();
    }

    public void CopyFrom(nint source, Span<byte> destination)
    {
        Step();
        default(RamAccessor).CopyFrom(source, destination);
    }

    public void CopyTo(nint destination, ReadOnlySpan<byte> source)
    {
        Step();
        default(RamAccessor).CopyTo(destination, source);
    }
}
