namespace PciVirtio.VhostCore.Memory;

/// <summary>
/// One entry of the vhost memory map: <paramref name="Size"/> bytes of guest-physical
/// address space starting at <paramref name="GuestPhysAddr"/>, which the frontend sees
/// at <paramref name="UserAddr"/> (its own virtual address, used by SET_VRING_ADDR) and
/// which we reach at <paramref name="HostAddr"/> (our mapping of it).
/// </summary>
public readonly record struct MemoryRegion(ulong GuestPhysAddr, ulong Size, ulong UserAddr, nint HostAddr)
{
    /// <summary>Last guest-physical address inside the region (inclusive, so a region
    /// ending at 2^64 is representable).</summary>
    public ulong GuestLast => GuestPhysAddr + (Size - 1);

    public ulong UserLast => UserAddr + (Size - 1);

    public override string ToString() =>
        $"gpa 0x{GuestPhysAddr:x}..0x{GuestLast:x} (size 0x{Size:x}) uaddr 0x{UserAddr:x}";
}
