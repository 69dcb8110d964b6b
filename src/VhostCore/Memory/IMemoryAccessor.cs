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
