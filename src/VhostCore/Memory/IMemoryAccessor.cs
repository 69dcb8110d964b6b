namespace PciVirtio.VhostCore.Memory;

/// <summary>
/// How bytes at a host address are touched. Ring and buffer code never dereferences a
/// pointer itself: it goes through one of these, so the same algorithm runs over ordinary
/// shared memory and over PCI BAR (I/O) memory, where only aligned volatile accesses of at
/// most 64 bits are allowed and reads may be costly round trips.
/// </summary>
/// <remarks>
/// Implementations are structs and ring types take them as a constrained generic
/// parameter, so the JIT emits one specialised copy of the ring code per accessor and
/// every call here inlines (the vringh model: one algorithm, small accessors).
/// All multi-byte values are little-endian in memory, as virtio 1.x requires.
/// Addresses come from <see cref="MemoryTable"/> translation, which has already checked
/// that the whole access lies inside a mapped region.
/// </remarks>
public interface IMemoryAccessor
{
    ushort LoadU16(nint address);

    uint LoadU32(nint address);

    ulong LoadU64(nint address);

    /// <summary>Load with acquire semantics: used for ring indices, so the entries they
    /// publish are read after the index.</summary>
    ushort LoadAcquireU16(nint address);

    void StoreU16(nint address, ushort value);

    void StoreU32(nint address, uint value);

    void StoreU64(nint address, ulong value);

    /// <summary>Stores <paramref name="first"/> at <paramref name="address"/> and
    /// <paramref name="second"/> after it: a descriptor in one call. Where the memory allows,
    /// one 16-byte store (across a PCIe bridge, one posted write rather than two). The two
    /// halves may become visible in either order, so what this writes must be published
    /// afterwards by a release store.</summary>
    void StoreU64Pair(nint address, ulong first, ulong second);

    /// <summary>Store with release semantics: used to publish a ring index after the
    /// entries and payload it covers.</summary>
    void StoreReleaseU16(nint address, ushort value);

    /// <summary>Full barrier (virtio_mb): orders earlier stores before later loads, as
    /// notification suppression requires.</summary>
    void FullBarrier();

    /// <summary>Copies <paramref name="destination"/>.Length bytes from memory at
    /// <paramref name="source"/>.</summary>
    void CopyFrom(nint source, Span<byte> destination);

    /// <summary>Copies <paramref name="source"/> into memory at <paramref name="destination"/>.</summary>
    void CopyTo(nint destination, ReadOnlySpan<byte> source);
}
