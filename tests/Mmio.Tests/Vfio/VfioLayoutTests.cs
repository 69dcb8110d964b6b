using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PciVirtio.Mmio.Vfio;
using PciVirtio.Mmio.Vfio.Interop;

namespace PciVirtio.Mmio.Tests.Vfio;

/// <summary>Pins every ioctl argument to linux/vfio.h (sizes and offsets as gcc reports them
/// for the 6.1 header, plus the 24-byte vfio_device_info of newer headers).</summary>
public class VfioLayoutTests
{
    private static int Offset<T>(string field) => (int)Marshal.OffsetOf<T>(field);

    private static void AssertSize<T>(int expected)
        where T : unmanaged
    {
        Assert.Equal(expected, Unsafe.SizeOf<T>());
        Assert.Equal(expected, Marshal.SizeOf<T>());
    }

    [Fact]
    public void Group_status_is_8_bytes()
    {
        AssertSize<VfioGroupStatusArg>(8);
        Assert.Equal(0, Offset<VfioGroupStatusArg>(nameof(VfioGroupStatusArg.Argsz)));
        Assert.Equal(4, Offset<VfioGroupStatusArg>(nameof(VfioGroupStatusArg.Flags)));
    }

    [Fact]
    public void Device_info_is_24_bytes_and_we_pass_the_16_byte_minimum()
    {
        AssertSize<VfioDeviceInfoArg>(24);
        Assert.Equal(0, Offset<VfioDeviceInfoArg>(nameof(VfioDeviceInfoArg.Argsz)));
        Assert.Equal(4, Offset<VfioDeviceInfoArg>(nameof(VfioDeviceInfoArg.Flags)));
        Assert.Equal(8, Offset<VfioDeviceInfoArg>(nameof(VfioDeviceInfoArg.NumRegions)));
        Assert.Equal(12, Offset<VfioDeviceInfoArg>(nameof(VfioDeviceInfoArg.NumIrqs)));
        Assert.Equal(16, Offset<VfioDeviceInfoArg>(nameof(VfioDeviceInfoArg.CapOffset)));
        Assert.Equal(20, Offset<VfioDeviceInfoArg>(nameof(VfioDeviceInfoArg.Pad)));
        Assert.Equal(16u, VfioDeviceInfoArg.MinimumArgsz);
    }

    [Fact]
    public void Region_info_is_32_bytes()
    {
        AssertSize<VfioRegionInfoArg>(32);
        Assert.Equal(0, Offset<VfioRegionInfoArg>(nameof(VfioRegionInfoArg.Argsz)));
        Assert.Equal(4, Offset<VfioRegionInfoArg>(nameof(VfioRegionInfoArg.Flags)));
        Assert.Equal(8, Offset<VfioRegionInfoArg>(nameof(VfioRegionInfoArg.Index)));
        Assert.Equal(12, Offset<VfioRegionInfoArg>(nameof(VfioRegionInfoArg.CapOffset)));
        Assert.Equal(16, Offset<VfioRegionInfoArg>(nameof(VfioRegionInfoArg.Size)));
        Assert.Equal(24, Offset<VfioRegionInfoArg>(nameof(VfioRegionInfoArg.Offset)));
    }

    [Fact]
    public void Irq_info_is_16_bytes()
    {
        AssertSize<VfioIrqInfoArg>(16);
        Assert.Equal(0, Offset<VfioIrqInfoArg>(nameof(VfioIrqInfoArg.Argsz)));
        Assert.Equal(4, Offset<VfioIrqInfoArg>(nameof(VfioIrqInfoArg.Flags)));
        Assert.Equal(8, Offset<VfioIrqInfoArg>(nameof(VfioIrqInfoArg.Index)));
        Assert.Equal(12, Offset<VfioIrqInfoArg>(nameof(VfioIrqInfoArg.Count)));
    }

    [Fact]
    public void Irq_set_header_is_20_bytes_with_data_right_after()
    {
        AssertSize<VfioIrqSetArg>(20);
        Assert.Equal(0, Offset<VfioIrqSetArg>(nameof(VfioIrqSetArg.Argsz)));
        Assert.Equal(4, Offset<VfioIrqSetArg>(nameof(VfioIrqSetArg.Flags)));
        Assert.Equal(8, Offset<VfioIrqSetArg>(nameof(VfioIrqSetArg.Index)));
        Assert.Equal(12, Offset<VfioIrqSetArg>(nameof(VfioIrqSetArg.Start)));
        Assert.Equal(16, Offset<VfioIrqSetArg>(nameof(VfioIrqSetArg.Count)));
        Assert.Equal(20 + (3 * 4), VfioDevice.IrqSetSize(3));
    }

    [Fact]
    public void Iommu_type1_info_is_24_bytes()
    {
        AssertSize<VfioIommuType1InfoArg>(24);
        Assert.Equal(4, Offset<VfioIommuType1InfoArg>(nameof(VfioIommuType1InfoArg.Flags)));
        Assert.Equal(8, Offset<VfioIommuType1InfoArg>(nameof(VfioIommuType1InfoArg.IovaPageSizes)));
        Assert.Equal(16, Offset<VfioIommuType1InfoArg>(nameof(VfioIommuType1InfoArg.CapOffset)));
        Assert.Equal(20, Offset<VfioIommuType1InfoArg>(nameof(VfioIommuType1InfoArg.Pad)));
    }

    [Fact]
    public void Dma_map_is_32_bytes()
    {
        AssertSize<VfioDmaMapArg>(32);
        Assert.Equal(0, Offset<VfioDmaMapArg>(nameof(VfioDmaMapArg.Argsz)));
        Assert.Equal(4, Offset<VfioDmaMapArg>(nameof(VfioDmaMapArg.Flags)));
        Assert.Equal(8, Offset<VfioDmaMapArg>(nameof(VfioDmaMapArg.Vaddr)));
        Assert.Equal(16, Offset<VfioDmaMapArg>(nameof(VfioDmaMapArg.Iova)));
        Assert.Equal(24, Offset<VfioDmaMapArg>(nameof(VfioDmaMapArg.Size)));
    }

    [Fact]
    public void Dma_unmap_is_24_bytes()
    {
        AssertSize<VfioDmaUnmapArg>(24);
        Assert.Equal(0, Offset<VfioDmaUnmapArg>(nameof(VfioDmaUnmapArg.Argsz)));
        Assert.Equal(4, Offset<VfioDmaUnmapArg>(nameof(VfioDmaUnmapArg.Flags)));
        Assert.Equal(8, Offset<VfioDmaUnmapArg>(nameof(VfioDmaUnmapArg.Iova)));
        Assert.Equal(16, Offset<VfioDmaUnmapArg>(nameof(VfioDmaUnmapArg.Size)));
    }

    [Fact]
    public void Device_ioeventfd_is_32_bytes()
    {
        AssertSize<VfioIoEventFdArg>(32);
        Assert.Equal(0, Offset<VfioIoEventFdArg>(nameof(VfioIoEventFdArg.Argsz)));
        Assert.Equal(4, Offset<VfioIoEventFdArg>(nameof(VfioIoEventFdArg.Flags)));
        Assert.Equal(8, Offset<VfioIoEventFdArg>(nameof(VfioIoEventFdArg.Offset)));
        Assert.Equal(16, Offset<VfioIoEventFdArg>(nameof(VfioIoEventFdArg.Data)));
        Assert.Equal(24, Offset<VfioIoEventFdArg>(nameof(VfioIoEventFdArg.Fd)));
        Assert.Equal(28, Offset<VfioIoEventFdArg>(nameof(VfioIoEventFdArg.Reserved)));
    }

    [Fact]
    public void Capability_header_is_8_bytes()
    {
        AssertSize<VfioInfoCapHeader>(8);
        Assert.Equal(0, Offset<VfioInfoCapHeader>(nameof(VfioInfoCapHeader.Id)));
        Assert.Equal(2, Offset<VfioInfoCapHeader>(nameof(VfioInfoCapHeader.Version)));
        Assert.Equal(4, Offset<VfioInfoCapHeader>(nameof(VfioInfoCapHeader.Next)));
    }

    [Theory]
    [InlineData(VfioIoctl.GetApiVersion, 0x3B64)]
    [InlineData(VfioIoctl.CheckExtension, 0x3B65)]
    [InlineData(VfioIoctl.SetIommu, 0x3B66)]
    [InlineData(VfioIoctl.GroupGetStatus, 0x3B67)]
    [InlineData(VfioIoctl.GroupSetContainer, 0x3B68)]
    [InlineData(VfioIoctl.GroupUnsetContainer, 0x3B69)]
    [InlineData(VfioIoctl.GroupGetDeviceFd, 0x3B6A)]
    [InlineData(VfioIoctl.DeviceGetInfo, 0x3B6B)]
    [InlineData(VfioIoctl.DeviceGetRegionInfo, 0x3B6C)]
    [InlineData(VfioIoctl.DeviceGetIrqInfo, 0x3B6D)]
    [InlineData(VfioIoctl.DeviceSetIrqs, 0x3B6E)]
    [InlineData(VfioIoctl.DeviceReset, 0x3B6F)]
    [InlineData(VfioIoctl.IommuGetInfo, 0x3B70)]
    [InlineData(VfioIoctl.IommuMapDma, 0x3B71)]
    [InlineData(VfioIoctl.IommuUnmapDma, 0x3B72)]
    [InlineData(VfioIoctl.DeviceIoEventFd, 0x3B74)]
    public void Ioctl_request_numbers_match_the_kernel(int actual, int expected) => Assert.Equal(expected, actual);

    [Fact]
    public void Flag_enums_have_the_kernel_values()
    {
        Assert.Equal(1u, (uint)VfioRegionFlags.Read);
        Assert.Equal(2u, (uint)VfioRegionFlags.Write);
        Assert.Equal(4u, (uint)VfioRegionFlags.Mmap);
        Assert.Equal(8u, (uint)VfioRegionFlags.Caps);

        Assert.Equal(1u, (uint)VfioIrqInfoFlags.EventFd);
        Assert.Equal(2u, (uint)VfioIrqInfoFlags.Maskable);
        Assert.Equal(4u, (uint)VfioIrqInfoFlags.AutoMasked);
        Assert.Equal(8u, (uint)VfioIrqInfoFlags.NoResize);

        Assert.Equal(1u, (uint)VfioIrqSetFlags.DataNone);
        Assert.Equal(2u, (uint)VfioIrqSetFlags.DataBool);
        Assert.Equal(4u, (uint)VfioIrqSetFlags.DataEventFd);
        Assert.Equal(8u, (uint)VfioIrqSetFlags.ActionMask);
        Assert.Equal(0x10u, (uint)VfioIrqSetFlags.ActionUnmask);
        Assert.Equal(0x20u, (uint)VfioIrqSetFlags.ActionTrigger);

        Assert.Equal(1u, (uint)VfioDmaMapFlags.Read);
        Assert.Equal(2u, (uint)VfioDmaMapFlags.Write);

        Assert.Equal(1u, (uint)VfioGroupFlags.Viable);
        Assert.Equal(2u, (uint)VfioGroupFlags.ContainerSet);

        Assert.Equal(1u, (uint)VfioDeviceFlags.Reset);
        Assert.Equal(2u, (uint)VfioDeviceFlags.Pci);
        Assert.Equal(0x80u, (uint)VfioDeviceFlags.Caps);

        Assert.Equal(1u, (uint)VfioIommuInfoFlags.PageSizes);
        Assert.Equal(2u, (uint)VfioIommuInfoFlags.Caps);

        Assert.Equal(2, (int)PciCommand.MemorySpace);
        Assert.Equal(4, (int)PciCommand.BusMaster);
        Assert.Equal(0x400, (int)PciCommand.InterruptDisable);
    }

    [Fact]
    public void Index_and_iommu_enums_have_the_kernel_values()
    {
        Assert.Equal(0u, (uint)VfioRegionIndex.Bar0);
        Assert.Equal(5u, (uint)VfioRegionIndex.Bar5);
        Assert.Equal(6u, (uint)VfioRegionIndex.Rom);
        Assert.Equal(7u, (uint)VfioRegionIndex.Config);
        Assert.Equal(8u, (uint)VfioRegionIndex.Vga);

        Assert.Equal(0u, (uint)VfioIrqIndex.IntX);
        Assert.Equal(1u, (uint)VfioIrqIndex.Msi);
        Assert.Equal(2u, (uint)VfioIrqIndex.MsiX);
        Assert.Equal(3u, (uint)VfioIrqIndex.Err);
        Assert.Equal(4u, (uint)VfioIrqIndex.Req);

        Assert.Equal(1, (int)VfioIommuType.Type1);
        Assert.Equal(3, (int)VfioIommuType.Type1v2);
        Assert.Equal(8, (int)VfioIommuType.NoIommu);
        Assert.Equal(0, VfioIoctl.ApiVersion);
    }
}
