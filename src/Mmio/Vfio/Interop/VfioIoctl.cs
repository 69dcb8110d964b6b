namespace PciVirtio.Mmio.Vfio.Interop;

/// <summary>
/// The VFIO ioctl request numbers of linux/vfio.h. VFIO defines them with <c>_IO(';', 100 + n)</c>
/// (no size or direction bits: every argument carries its own <c>argsz</c>), so they are plain
/// constants rather than computed from struct sizes.
/// </summary>
internal static class VfioIoctl
{
    private const int Type = ';' << 8; // 0x3B00
    private const int Base = 100;

    public const int GetApiVersion = Type | (Base + 0);           // 0x3B64
    public const int CheckExtension = Type | (Base + 1);          // 0x3B65
    public const int SetIommu = Type | (Base + 2);                // 0x3B66
    public const int GroupGetStatus = Type | (Base + 3);          // 0x3B67
    public const int GroupSetContainer = Type | (Base + 4);       // 0x3B68
    public const int GroupUnsetContainer = Type | (Base + 5);     // 0x3B69
    public const int GroupGetDeviceFd = Type | (Base + 6);        // 0x3B6A
    public const int DeviceGetInfo = Type | (Base + 7);           // 0x3B6B
    public const int DeviceGetRegionInfo = Type | (Base + 8);     // 0x3B6C
    public const int DeviceGetIrqInfo = Type | (Base + 9);        // 0x3B6D
    public const int DeviceSetIrqs = Type | (Base + 10);          // 0x3B6E
    public const int DeviceReset = Type | (Base + 11);            // 0x3B6F
    public const int IommuGetInfo = Type | (Base + 12);           // 0x3B70
    public const int IommuMapDma = Type | (Base + 13);            // 0x3B71
    public const int IommuUnmapDma = Type | (Base + 14);          // 0x3B72
    public const int DeviceIoEventFd = Type | (Base + 16);        // 0x3B74

    /// <summary>The API version the kernel reports from VFIO_GET_API_VERSION (VFIO_API_VERSION).</summary>
    public const int ApiVersion = 0;

    // Capability ids of the INFO capability chains.
    public const ushort RegionCapSparseMmap = 1;
    public const ushort RegionCapType = 2;
    public const ushort RegionCapMsixMappable = 3;
    public const ushort IommuCapIovaRange = 1;

    // How the failing call is named in NativeCallException messages.
    public const string GetApiVersionCall = "ioctl(VFIO_GET_API_VERSION)";
    public const string CheckExtensionCall = "ioctl(VFIO_CHECK_EXTENSION)";
    public const string SetIommuCall = "ioctl(VFIO_SET_IOMMU)";
    public const string GroupGetStatusCall = "ioctl(VFIO_GROUP_GET_STATUS)";
    public const string GroupSetContainerCall = "ioctl(VFIO_GROUP_SET_CONTAINER)";
    public const string GroupUnsetContainerCall = "ioctl(VFIO_GROUP_UNSET_CONTAINER)";
    public const string GroupGetDeviceFdCall = "ioctl(VFIO_GROUP_GET_DEVICE_FD)";
    public const string DeviceGetInfoCall = "ioctl(VFIO_DEVICE_GET_INFO)";
    public const string DeviceGetRegionInfoCall = "ioctl(VFIO_DEVICE_GET_REGION_INFO)";
    public const string DeviceGetIrqInfoCall = "ioctl(VFIO_DEVICE_GET_IRQ_INFO)";
    public const string DeviceSetIrqsCall = "ioctl(VFIO_DEVICE_SET_IRQS)";
    public const string DeviceResetCall = "ioctl(VFIO_DEVICE_RESET)";
    public const string IommuGetInfoCall = "ioctl(VFIO_IOMMU_GET_INFO)";
    public const string IommuMapDmaCall = "ioctl(VFIO_IOMMU_MAP_DMA)";
    public const string IommuUnmapDmaCall = "ioctl(VFIO_IOMMU_UNMAP_DMA)";
    public const string DeviceIoEventFdCall = "ioctl(VFIO_DEVICE_IOEVENTFD)";
}
