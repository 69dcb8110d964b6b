using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Vfio;

namespace PciVirtio.Mmio.Tests.Vfio;

public class VfioContainerTests
{
    private static readonly ulong Page = (ulong)Environment.SystemPageSize;

    [Fact]
    public void Opening_a_missing_container_names_open_the_path_and_ENOENT()
    {
        var e = Assert.Throws<NativeCallException>(() => VfioContainer.Open("/nonexistent/vfio/vfio"));
        Assert.Equal("open", e.Call);
        Assert.Equal(Errno.ENOENT, e.Errno);
        Assert.Contains("/nonexistent/vfio/vfio", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Opening_something_that_is_not_vfio_fails_at_the_api_version_check()
    {
        var e = Assert.Throws<NativeCallException>(() => VfioContainer.Open("/dev/null"));
        Assert.Equal("ioctl(VFIO_GET_API_VERSION)", e.Call);
        Assert.Equal(Errno.ENOTTY, e.Errno);
        Assert.Contains("/dev/null", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Check_extension_errors_name_the_ioctl()
    {
        using var c = new VfioContainer(VfioSyscallsForTests.OpenNull(), "/dev/null");
        var e = Assert.Throws<NativeCallException>(() => c.CheckExtension(VfioIommuType.Type1v2));
        Assert.Equal("ioctl(VFIO_CHECK_EXTENSION)", e.Call);
        Assert.Throws<ArgumentOutOfRangeException>(() => c.CheckExtension(VfioIommuType.None));
        Assert.Throws<ArgumentOutOfRangeException>(() => c.CheckExtension((VfioIommuType)2));
    }

    [Fact]
    public void The_iommu_cannot_be_set_before_a_group_is_attached()
    {
        using var c = new VfioContainer(VfioSyscallsForTests.OpenNull(), "/dev/null");
        var e = Assert.Throws<InvalidOperationException>(() => c.SetIommu(VfioIommuType.Type1v2));
        Assert.Contains("SetContainer", e.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => c.SetIommu(VfioIommuType.None));
        Assert.Equal(VfioIommuType.None, c.IommuType);
    }

    [Fact]
    public void Dma_arguments_are_validated_before_the_container_state()
    {
        using var c = new VfioContainer(VfioSyscallsForTests.OpenNull(), "/dev/null");
        nint va = (nint)(16 * Page);
        Assert.Throws<ArgumentOutOfRangeException>(() => c.MapDma(va, 0, 0));
        Assert.Throws<ArgumentException>(() => c.MapDma(va, 1, Page));
        Assert.Throws<ArgumentException>(() => c.MapDma(va, 0, Page + 1));
        Assert.Throws<ArgumentException>(() => c.MapDma(va + 8, 0, Page));
        Assert.Throws<ArgumentException>(() => c.MapDma(0, 0, Page));
        Assert.Throws<ArgumentException>(() => c.MapDma(va, ulong.MaxValue - Page + 1, 2 * Page));
        Assert.Throws<ArgumentException>(() => c.MapDma(va, 0, Page, VfioDmaMapFlags.None));
        Assert.Throws<ArgumentException>(() => c.MapDma(va, 0, Page, (VfioDmaMapFlags)4));
        Assert.Throws<ArgumentOutOfRangeException>(() => c.UnmapDma(0, 0));
        Assert.Throws<ArgumentException>(() => c.UnmapDma(3, Page));

        // Valid arguments, but no IOMMU type yet.
        var e = Assert.Throws<InvalidOperationException>(() => c.MapDma(va, 0, Page, VfioDmaMapFlags.Read));
        Assert.Contains("SetIommu", e.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidOperationException>(() => c.UnmapDma(0, Page));
        Assert.Throws<InvalidOperationException>(() => c.GetIommuInfo());
    }

    [Fact]
    public void Mapping_a_memory_mapping_uses_its_address_and_checks_state()
    {
        using var c = new VfioContainer(VfioSyscallsForTests.OpenNull(), "/dev/null");
        using var t = new TempTree();
        string file = Path.Combine(t.Root, "mem");
        File.WriteAllBytes(file, new byte[Page]);
        using var fd = PciVirtio.Mmio.Vfio.Interop.VfioSyscalls.Open(file);
        using MemoryMapping m = MemoryMapping.Map(fd, 0, 100);
        Assert.Throws<InvalidOperationException>(() => c.MapDma(m, 0));
        m.Dispose();
        Assert.Throws<ObjectDisposedException>(() => c.MapDma(m, 0));
    }

    [Fact]
    public void The_smallest_iommu_page_size_is_the_lowest_bit()
    {
        Assert.Equal(0x1000UL, new VfioIommuInfo(VfioIommuInfoFlags.PageSizes, 0x40201000).MinimumPageSize);
        Assert.Equal(0UL, new VfioIommuInfo(VfioIommuInfoFlags.None, 0).MinimumPageSize);
    }

    [Fact]
    public void Open_for_a_device_without_vfio_modules_says_what_to_load()
    {
        using var t = new TempTree();
        t.PciDevice("0000:00:03.0", group: 7, driver: "vfio-pci");
        var options = new VfioOpenOptions { SysfsRoot = t.Root, ContainerPath = Path.Combine(t.Root, "vfio"), VfioDirectory = t.Root };
        var e = Assert.Throws<VfioException>(() => VfioPciDevice.Open("0000:00:03.0", options));
        Assert.Contains("modprobe vfio-pci", e.Message, StringComparison.Ordinal);
        Assert.IsType<NativeCallException>(e.InnerException);
    }

    [Fact]
    public void Open_propagates_a_failed_api_check_and_closes_what_it_opened()
    {
        using var t = new TempTree();
        t.PciDevice("0000:00:03.0", group: 7, driver: "vfio-pci");
        var options = new VfioOpenOptions { SysfsRoot = t.Root, ContainerPath = "/dev/null", VfioDirectory = t.Root };
        var e = Assert.Throws<NativeCallException>(() => VfioPciDevice.Open("00:03.0", options));
        Assert.Equal("ioctl(VFIO_GET_API_VERSION)", e.Call);
    }

    [Fact]
    public void Open_rejects_bad_addresses_and_reports_unknown_devices()
    {
        Assert.Throws<ArgumentException>(() => VfioPciDevice.Open("eth0"));
        Assert.Throws<ArgumentNullException>(() => VfioPciDevice.Open((string)null!));
        var e = Assert.Throws<VfioException>(() => VfioPciDevice.Open("ffff:ff:1f.7"));
        Assert.Contains("does not exist", e.Message, StringComparison.Ordinal);
    }
}
