using System.Runtime.InteropServices;

namespace PciVirtio.Mmio.Vfio.Interop;

// The ioctl arguments of linux/vfio.h, field for field. Every struct starts with argsz, which the
// caller sets to the number of bytes it provides; the kernel never reads or writes past it.
// Sizes and offsets are pinned by tests (VfioLayoutTests) against the kernel header.

/// <summary>struct vfio_group_status (8 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct VfioGroupStatusArg
{
    public uint Argsz;
    public uint Flags;
}

/// <summary>
/// struct vfio_device_info as in the newest headers (24 bytes: argsz, flags, num_regions,
/// num_irqs, cap_offset, pad; Linux 6.1 headers end after cap_offset, 20 bytes). We pass
/// <see cref="MinimumArgsz"/> (16, the kernel's minimum) so every kernel behaves alike and none
/// appends a capability chain; the extra bytes are only slack.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct VfioDeviceInfoArg
{
    public const uint MinimumArgsz = 16;

    public uint Argsz;
    public uint Flags;
    public uint NumRegions;
    public uint NumIrqs;
    public uint CapOffset;
    public uint Pad;
}

/// <summary>struct vfio_region_info (32 bytes), followed by a capability chain when argsz allows.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct VfioRegionInfoArg
{
    public uint Argsz;
    public uint Flags;
    public uint Index;
    public uint CapOffset;
    public ulong Size;
    public ulong Offset;
}

/// <summary>struct vfio_irq_info (16 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct VfioIrqInfoArg
{
    public uint Argsz;
    public uint Flags;
    public uint Index;
    public uint Count;
}

/// <summary>The 20-byte header of struct vfio_irq_set; <c>data[]</c> (one s32 eventfd or one
/// u8 bool per interrupt) follows it directly, unaligned.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct VfioIrqSetArg
{
    public uint Argsz;
    public uint Flags;
    public uint Index;
    public uint Start;
    public uint Count;
}

/// <summary>struct vfio_iommu_type1_info (24 bytes: the u64 makes the tail padded to 24 in
/// every header version; newer ones name the padding <c>pad</c>).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct VfioIommuType1InfoArg
{
    public uint Argsz;
    public uint Flags;
    public ulong IovaPageSizes;
    public uint CapOffset;
    public uint Pad;
}

/// <summary>struct vfio_iommu_type1_dma_map (32 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct VfioDmaMapArg
{
    public uint Argsz;
    public uint Flags;
    public ulong Vaddr;
    public ulong Iova;
    public ulong Size;
}

/// <summary>struct vfio_iommu_type1_dma_unmap (24 bytes; the kernel writes back the size it unmapped).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct VfioDmaUnmapArg
{
    public uint Argsz;
    public uint Flags;
    public ulong Iova;
    public ulong Size;
}

/// <summary>struct vfio_device_ioeventfd (32 bytes). The kernel header ends at <c>fd</c> and the
/// alignment of the u64 fields pads it to 32; we name that tail <see cref="Reserved"/> so it is
/// visibly zero.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct VfioIoEventFdArg
{
    public uint Argsz;
    public uint Flags;
    public ulong Offset;
    public ulong Data;
    public int Fd;
    public uint Reserved;
}

/// <summary>struct vfio_info_cap_header (8 bytes): one link of an INFO capability chain; offsets
/// are from the start of the INFO buffer.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct VfioInfoCapHeader
{
    public ushort Id;
    public ushort Version;
    public uint Next;
}
