namespace PciVirtio.Mmio.Vfio;

/// <summary>
/// VFIO_DEVICE_GET_INFO: how many regions and interrupt indexes a device has, so callers can
/// iterate them instead of assuming vfio-pci's fixed numbering.
/// </summary>
public readonly record struct VfioDeviceInfo(VfioDeviceFlags Flags, uint NumRegions, uint NumIrqs)
{
    public bool IsPci => (Flags & VfioDeviceFlags.Pci) != 0;

    public bool CanReset => (Flags & VfioDeviceFlags.Reset) != 0;
}

/// <summary>
/// One part of a region that may be mmapped (VFIO_REGION_INFO_CAP_SPARSE_MMAP): when a region
/// has such areas, mapping outside them fails or misbehaves (e.g. over an MSI-X table), so
/// callers map the areas one by one.
/// </summary>
public readonly record struct VfioSparseMmapArea(ulong Offset, ulong Size);

/// <summary>
/// The device-specific type of a region (VFIO_REGION_INFO_CAP_TYPE), the only way to know what a
/// region of index 9 or above is.
/// </summary>
public readonly record struct VfioRegionType(uint Type, uint Subtype);

/// <summary>
/// VFIO_DEVICE_GET_REGION_INFO: where a region lives in the device fd and how it may be accessed.
/// Every access (mmap, pread, pwrite, ioeventfd) is addressed as <see cref="Offset"/> + an offset
/// inside the region, so this is looked up once and cached by <see cref="VfioDevice"/>.
/// </summary>
public sealed record VfioRegionInfo(VfioRegionIndex Index, VfioRegionFlags Flags, ulong Size, ulong Offset)
{
    /// <summary>The mmappable parts, when the kernel restricts mmap to them; empty when the whole
    /// region may be mapped (given <see cref="VfioRegionFlags.Mmap"/>).</summary>
    public IReadOnlyList<VfioSparseMmapArea> SparseMmapAreas { get; init; } = [];

    /// <summary>The kernel reported VFIO_REGION_INFO_CAP_MSIX_MAPPABLE: the MSI-X table inside this
    /// BAR may be mapped along with the rest of it.</summary>
    public bool MsixMappable { get; init; }

    public VfioRegionType? RegionType { get; init; }

    public bool CanRead => (Flags & VfioRegionFlags.Read) != 0;

    public bool CanWrite => (Flags & VfioRegionFlags.Write) != 0;

    public bool CanMmap => (Flags & VfioRegionFlags.Mmap) != 0;

    /// <summary>Whether the region exists (unimplemented BARs report size 0).</summary>
    public bool IsImplemented => Size != 0;

    /// <summary>One line for logs, e.g. "Bar2: 0x100000 bytes at fd offset 0x20000000000 (Read, Write, Mmap)".</summary>
    public override string ToString()
    {
        string text = $"{Index}: 0x{Size:x} bytes at fd offset 0x{Offset:x} ({Flags})";
        if (SparseMmapAreas.Count > 0)
        {
            text += $", mmappable parts {string.Join(", ", SparseMmapAreas.Select(a => $"0x{a.Offset:x}+0x{a.Size:x}"))}";
        }

        if (MsixMappable)
        {
            text += ", MSI-X table mappable";
        }

        if (RegionType is VfioRegionType type)
        {
            text += $", type 0x{type.Type:x}/0x{type.Subtype:x}";
        }

        return text;
    }
}

/// <summary>
/// VFIO_DEVICE_GET_IRQ_INFO: how many vectors an interrupt index has and how they behave, so
/// eventfd bindings can be checked before the kernel rejects them with a bare EINVAL.
/// </summary>
public readonly record struct VfioIrqInfo(VfioIrqIndex Index, VfioIrqInfoFlags Flags, uint Count)
{
    public bool SupportsEventFd => (Flags & VfioIrqInfoFlags.EventFd) != 0;
}

/// <summary>
/// One usable IOVA range of a container (VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, inclusive end):
/// DMA mappings outside these ranges are refused, so an allocator of IO addresses needs them.
/// </summary>
public readonly record struct VfioIovaRange(ulong Start, ulong End);

/// <summary>
/// VFIO_IOMMU_GET_INFO for a type1 container: the IOMMU page sizes (the smallest one is the
/// alignment every DMA mapping needs) and the usable IOVA ranges.
/// </summary>
public sealed record VfioIommuInfo(VfioIommuInfoFlags Flags, ulong IovaPageSizes)
{
    public IReadOnlyList<VfioIovaRange> IovaRanges { get; init; } = [];

    /// <summary>The smallest supported IOMMU page size, or 0 when the kernel did not report sizes.</summary>
    public ulong MinimumPageSize => IovaPageSizes == 0 ? 0 : IovaPageSizes & (~IovaPageSizes + 1);
}
