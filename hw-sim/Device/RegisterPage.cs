using System.Runtime.CompilerServices;

namespace PciVirtio.HwSim.Device;

/// <summary>
/// One port's register block in shared memory. Every access is one aligned volatile or atomic
/// operation on a naturally aligned register (the block is page-aligned and registers are
/// aligned to their width), so two processes mapping the same memfd see consistent values.
/// </summary>
public readonly unsafe struct RegisterPage
{
    public RegisterPage(nint address)
    {
        if ((address & (NtbRegisters.PageSize - 1)) != 0)
        {
            throw new ArgumentException("a register page must be page-aligned", nameof(address));
        }

        Address = address;
    }

    public nint Address { get; }

    public uint Read32(int offset) => Volatile.Read(ref *(uint*)At(offset, 4));

    public ulong Read64(int offset) => Volatile.Read(ref *(ulong*)At(offset, 8));

    public void Write32(int offset, uint value) => Volatile.Write(ref *(uint*)At(offset, 4), value);

    public void Write64(int offset, ulong value) => Volatile.Write(ref *(ulong*)At(offset, 8), value);

    /// <summary>Atomic OR; returns the previous value.</summary>
    public ulong Or64(int offset, ulong bits) => Interlocked.Or(ref *(ulong*)At(offset, 8), bits);

    /// <summary>Atomic AND-NOT; returns the previous value.</summary>
    public ulong AndNot64(int offset, ulong bits) => Interlocked.And(ref *(ulong*)At(offset, 8), ~bits);

    /// <summary>Atomic add (counters).</summary>
    public void Add64(int offset, long value) => Interlocked.Add(ref *(long*)At(offset, 8), value);

    /// <summary>Add by a counter's only writer: a volatile load and a volatile store, no lock.
    /// On x86 a locked add is a full barrier that waits for every store before it, so on a
    /// path that counts each store it costs more than the stores; a second writer at the
    /// same moment may lose counts, never corrupt anything else.</summary>
    public void AddSingleWriter64(int offset, long value)
    {
        ref long cell = ref *(long*)At(offset, 8);
        Volatile.Write(ref cell, Volatile.Read(ref cell) + value);
    }

    /// <summary>Atomically decrements a non-zero u64; true when it was non-zero.</summary>
    public bool TryDecrement64(int offset)
    {
        ref long cell = ref *(long*)At(offset, 8);
        while (true)
        {
            long current = Volatile.Read(ref cell);
            if (current <= 0)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref cell, current - 1, current) == current)
            {
                return true;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private nint At(int offset, int width)
    {
        if ((uint)offset > NtbRegisters.PageSize - (uint)width || (offset & (width - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"not an aligned {width}-byte register");
        }

        return Address + offset;
    }
}
