using System.Runtime.InteropServices;

namespace PciVirtio.VhostCore.Memory;

/// <summary>
/// Page-aligned, zeroed native memory owned by this process: the in-process stand-in for
/// guest RAM in tests, benchmarks and the demo. The address never moves, so it can back a
/// <see cref="MemoryRegion"/>.
/// </summary>
public sealed unsafe class NativeMemoryBlock : IDisposable
{
    private const nuint PageSize = 4096;
    private void* _base;

    public NativeMemoryBlock(ulong size)
    {
        ArgumentOutOfRangeException.ThrowIfZero(size);
        Size = size;
        _base = NativeMemory.AlignedAlloc((nuint)size, PageSize);
        NativeMemory.Clear(_base, (nuint)size);
    }

    public ulong Size { get; }

    public nint Address => _base == null ? throw new ObjectDisposedException(nameof(NativeMemoryBlock)) : (nint)_base;

    /// <summary>The whole block as a span (test and demo convenience; ring code uses an accessor).</summary>
    public Span<byte> Span => new((void*)Address, checked((int)Size));

    /// <summary>A region describing <paramref name="length"/> bytes of this block from
    /// <paramref name="offset"/>, at guest-physical <paramref name="guestPhysAddr"/>.</summary>
    public MemoryRegion Region(ulong guestPhysAddr, ulong offset = 0, ulong length = 0, ulong? userAddr = null)
    {
        if (length == 0)
        {
            length = Size - offset;
        }

        if (offset > Size || length > Size - offset)
        {
            throw new ArgumentOutOfRangeException(nameof(length), "region exceeds the block");
        }

        return new MemoryRegion(guestPhysAddr, length, userAddr ?? (ulong)(Address + (nint)offset), Address + (nint)offset);
    }

    public void Dispose()
    {
        if (_base != null)
        {
            NativeMemory.AlignedFree(_base);
            _base = null;
        }
    }
}
