using PciVirtio.VhostCore.Memory;

namespace PciVirtio.VhostCore.Tests.Properties;

/// <summary>
/// A RAM accessor that refuses (throws) any access outside one host range: the native block
/// behind the memory table. Ring code that ever touched memory outside the table would fail
/// the property instead of silently corrupting the test process.
/// </summary>
internal readonly struct CheckedAccessor(nint start, ulong length) : IMemoryAccessor
{
    private readonly ulong _start = (ulong)start;
    private readonly ulong _length = length;

    private void Check(nint address, int size)
    {
        ulong a = (ulong)address;
        if (a < _start || a - _start > _length || (ulong)size > _length - (a - _start))
        {
            throw new InvalidOperationException($"memory access of {size} B at host 0x{a:x} is outside the guest memory block 0x{_start:x}+0x{_length:x}");
        }
    }

    public ushort LoadU16(nint address)
    {
        Check(address, 2);
        return default(RamAccessor).LoadU16(address);
    }

    public uint LoadU32(nint address)
    {
        Check(address, 4);
        return default(RamAccessor).LoadU32(address);
    }

    public ulong LoadU64(nint address)
    {
        Check(address, 8);
        return default(RamAccessor).LoadU64(address);
    }

    public ushort LoadAcquireU16(nint address)
    {
        Check(address, 2);
        return default(RamAccessor).LoadAcquireU16(address);
    }

    public void StoreU16(nint address, ushort value)
    {
        Check(address, 2);
        default(RamAccessor).StoreU16(address, value);
    }

    public void StoreU32(nint address, uint value)
    {
        Check(address, 4);
        default(RamAccessor).StoreU32(address, value);
    }

    public void StoreU64(nint address, ulong value)
    {
        Check(address, 8);
        default(RamAccessor).StoreU64(address, value);
    }

    public void StoreReleaseU16(nint address, ushort value)
    {
        Check(address, 2);
        default(RamAccessor).StoreReleaseU16(address, value);
    }

    public void FullBarrier() => default(RamAccessor).FullBarrier();

    public void CopyFrom(nint source, Span<byte> destination)
    {
        Check(source, destination.Length);
        default(RamAccessor).CopyFrom(source, destination);
    }

    public void CopyTo(nint destination, ReadOnlySpan<byte> source)
    {
        Check(destination, source.Length);
        default(RamAccessor).CopyTo(destination, source);
    }
}
