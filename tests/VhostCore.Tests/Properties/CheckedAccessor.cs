using PciVirtio.VhostCore.Memory;

namespace PciVirtio.VhostCore.Tests.Properties;

/// <summary>
/// An accessor that refuses (throws) any access outside one host range — the memory behind
/// the memory table — and passes every other access to <typeparamref name="TInner"/> (RAM
/// or I/O memory). Ring code that ever touched memory outside the table would fail the
/// property instead of silently corrupting the test process.
/// </summary>
internal readonly struct CheckedAccessor<TInner>(nint start, ulong length, TInner inner) : IMemoryAccessor
    where TInner : struct, IMemoryAccessor
{
    private readonly ulong _start = (ulong)start;
    private readonly ulong _length = length;
    private readonly TInner _inner = inner;

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
        return _inner.LoadU16(address);
    }

    public uint LoadU32(nint address)
    {
        Check(address, 4);
        return _inner.LoadU32(address);
    }

    public ulong LoadU64(nint address)
    {
        Check(address, 8);
        return _inner.LoadU64(address);
    }

    public ushort LoadAcquireU16(nint address)
    {
        Check(address, 2);
        return _inner.LoadAcquireU16(address);
    }

    public void StoreU16(nint address, ushort value)
    {
        Check(address, 2);
        _inner.StoreU16(address, value);
    }

    public void StoreU32(nint address, uint value)
    {
        Check(address, 4);
        _inner.StoreU32(address, value);
    }

    public void StoreU64(nint address, ulong value)
    {
        Check(address, 8);
        _inner.StoreU64(address, value);
    }

    public void StoreU64Pair(nint address, ulong first, ulong second)
    {
        Check(address, 16);
        _inner.StoreU64Pair(address, first, second);
    }

    public void StoreReleaseU16(nint address, ushort value)
    {
        Check(address, 2);
        _inner.StoreReleaseU16(address, value);
    }

    public void FullBarrier() => _inner.FullBarrier();

    public void CopyFrom(nint source, Span<byte> destination)
    {
        Check(source, destination.Length);
        _inner.CopyFrom(source, destination);
    }

    public void CopyTo(nint destination, ReadOnlySpan<byte> source)
    {
        Check(destination, source.Length);
        _inner.CopyTo(destination, source);
    }
}
