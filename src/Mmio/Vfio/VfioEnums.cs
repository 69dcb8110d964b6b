namespace PciVirtio.Mmio.Vfio;

/// <summary>
/// What a device region allows (VFIO_REGION_INFO_FLAG_*). Callers check it before choosing
/// between mmap (the fast path: rings in BAR memory) and pread/pwrite (the only way into regions
/// such as PCI config space, which the kernel must mediate).
/// </summary>
[Flags]
public enum VfioRegionFlags : uint
{
    None = 0,
    Read = 1,
    Write = 2,
    Mmap = 4,
    Caps = 8,
}

/// <summary>
/// How an interrupt index can be signalled (VFIO_IRQ_INFO_*). It tells whether eventfds can be
/// bound at all, and whether the line needs an explicit unmask after each interrupt (INTx is
/// AUTOMASKED; MSI-X is not), which decides how an interrupt loop must be written.
/// </summary>
[Flags]
public enum VfioIrqInfoFlags : uint
{
    None = 0,
    EventFd = 1,
    Maskable = 2,
    AutoMasked = 4,
    NoResize = 8,
}

/// <summary>
/// The data-type and action bits of VFIO_DEVICE_SET_IRQS (VFIO_IRQ_SET_*). One DATA_ bit says
/// how to read the trailing data, one ACTION_ bit what to do with it; kept public so callers can
/// see (and tests can pin) exactly what a request asks of the kernel.
/// </summary>
[Flags]
public enum VfioIrqSetFlags : uint
{
    None = 0,
    DataNone = 1,
    DataBool = 2,
    DataEventFd = 4,
    ActionMask = 8,
    ActionUnmask = 0x10,
    ActionTrigger = 0x20,
}

/// <summary>
/// Which directions of device DMA an IOMMU mapping permits (VFIO_DMA_MAP_FLAG_*). Granting only
/// what the device needs (e.g. Read for a TX buffer) keeps a misbehaving device from corrupting
/// our memory.
/// </summary>
[Flags]
public enum VfioDmaMapFlags : uint
{
    None = 0,
    Read = 1,
    Write = 2,
    ReadWrite = Read | Write,
}

/// <summary>
/// The state of an IOMMU group (VFIO_GROUP_FLAGS_*). A group is only safe to hand to user space
/// when it is VIABLE: every device in it is bound to vfio-pci (or to no driver), because devices
/// in one group can DMA into each other.
/// </summary>
[Flags]
public enum VfioGroupFlags : uint
{
    None = 0,
    Viable = 1,
    ContainerSet = 2,
}

/// <summary>
/// What kind of device a VFIO fd is and what it supports (VFIO_DEVICE_FLAGS_*); Reset in
/// particular says whether <see cref="VfioDevice.Reset"/> can succeed.
/// </summary>
[Flags]
public enum VfioDeviceFlags : uint
{
    None = 0,
    Reset = 1,
    Pci = 2,
    Platform = 4,
    Amba = 8,
    Ccw = 0x10,
    Ap = 0x20,
    FslMc = 0x40,
    Caps = 0x80,
    Cdx = 0x100,
}

/// <summary>
/// Which fields of VFIO_IOMMU_GET_INFO are valid (VFIO_IOMMU_INFO_*): the page-size bitmap tells
/// the alignment DMA mappings must have.
/// </summary>
[Flags]
public enum VfioIommuInfoFlags : uint
{
    None = 0,
    PageSizes = 1,
    Caps = 2,
}

/// <summary>
/// vfio-pci's fixed region indexes (VFIO_PCI_*_REGION_INDEX). They are user ABI, so naming them
/// avoids magic numbers when mapping a BAR; indexes of 9 and above are device specific and can
/// be passed by casting.
/// </summary>
public enum VfioRegionIndex : uint
{
    Bar0 = 0,
    Bar1 = 1,
    Bar2 = 2,
    Bar3 = 3,
    Bar4 = 4,
    Bar5 = 5,
    Rom = 6,
    Config = 7,
    Vga = 8,
}

/// <summary>
/// vfio-pci's fixed interrupt indexes (VFIO_PCI_*_IRQ_INDEX): an index selects the interrupt
/// mechanism, and vectors are sub-indexes within it.
/// </summary>
public enum VfioIrqIndex : uint
{
    IntX = 0,
    Msi = 1,
    MsiX = 2,
    Err = 3,
    Req = 4,
}

/// <summary>
/// The IOMMU back ends a container can use (VFIO_*_IOMMU, also the VFIO_CHECK_EXTENSION values).
/// Type1v2 has the saner unmap semantics and is preferred; NoIommu exists only when the kernel
/// runs in its unsafe no-IOMMU mode and offers no DMA mapping (nor protection) at all.
/// </summary>
public enum VfioIommuType
{
    /// <summary>No IOMMU selected yet (not a kernel value).</summary>
    None = 0,
    Type1 = 1,
    Type1v2 = 3,
    NoIommu = 8,
}

/// <summary>
/// Bits of the PCI COMMAND register (config offset 4). A device bound to vfio-pci starts with
/// memory decoding and bus mastering as the previous owner left them; a user-space driver must
/// switch them on itself before BAR accesses or device DMA work.
/// </summary>
[Flags]
public enum PciCommand : ushort
{
    None = 0,
    IoSpace = 1,
    MemorySpace = 2,
    BusMaster = 4,
    SpecialCycles = 8,
    MemoryWriteAndInvalidate = 0x10,
    VgaPaletteSnoop = 0x20,
    ParityErrorResponse = 0x40,
    Serr = 0x100,
    FastBackToBack = 0x200,
    InterruptDisable = 0x400,
}
