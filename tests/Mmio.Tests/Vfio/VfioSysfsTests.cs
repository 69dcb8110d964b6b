using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Vfio;

namespace PciVirtio.Mmio.Tests.Vfio;

public class VfioSysfsTests
{
    [Fact]
    public void Resolves_the_group_from_the_iommu_group_link()
    {
        using var t = new TempTree();
        t.PciDevice("0000:00:03.0", group: 7, driver: "vfio-pci");
        Assert.Equal(7, VfioPciDevice.ResolveIommuGroup("0000:00:03.0", t.Root));
        Assert.Equal(7, VfioPciDevice.ResolveIommuGroup("00:03.0", t.Root));
    }

    [Fact]
    public void A_nonexistent_device_gives_a_clear_error()
    {
        using var t = new TempTree();
        var e = Assert.Throws<VfioException>(() => VfioPciDevice.ResolveIommuGroup("0000:00:04.0", t.Root));
        Assert.Contains("PCI device 0000:00:04.0 does not exist", e.Message, StringComparison.Ordinal);
        var inner = Assert.IsType<NativeCallException>(e.InnerException);
        Assert.Equal("readlink", inner.Call);
        Assert.Equal(Errno.ENOENT, inner.Errno);
    }

    [Fact]
    public void A_nonexistent_device_on_the_real_sysfs_gives_a_clear_error()
    {
        var e = Assert.Throws<VfioException>(() => VfioPciDevice.ResolveIommuGroup("ffff:ff:1f.7"));
        Assert.Contains("PCI device ffff:ff:1f.7 does not exist", e.Message, StringComparison.Ordinal);
        Assert.Contains("/sys/bus/pci/devices/ffff:ff:1f.7", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_device_without_iommu_group_says_the_iommu_is_missing()
    {
        using var t = new TempTree();
        t.PciDevice("0000:00:03.0", group: null, driver: "e1000e");
        var e = Assert.Throws<VfioException>(() => VfioPciDevice.ResolveIommuGroup("0000:00:03.0", t.Root));
        Assert.Contains("has no IOMMU group", e.Message, StringComparison.Ordinal);
        Assert.Contains("intel_iommu=on", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_link_that_does_not_name_a_group_number_is_reported()
    {
        using var t = new TempTree();
        t.Dir("bus/pci/devices/0000:00:03.0");
        t.Link("bus/pci/devices/0000:00:03.0/iommu_group", "../../../kernel/iommu_groups/abc");
        var e = Assert.Throws<VfioException>(() => VfioPciDevice.ResolveIommuGroup("0000:00:03.0", t.Root));
        Assert.Contains("abc", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("")]
    [InlineData("not-a-bdf")]
    [InlineData("../../../../etc/passwd")]
    public void Malformed_addresses_are_rejected_before_touching_sysfs(string address) =>
        Assert.Throws<ArgumentException>(() => VfioPciDevice.ResolveIommuGroup(address));

    [Fact]
    public void Group_members_are_listed_with_their_drivers()
    {
        using var t = new TempTree();
        t.PciDevice("0000:00:03.0", group: 7, driver: "vfio-pci");
        t.PciDevice("0000:00:03.1", group: 7, driver: "e1000e");
        t.PciDevice("0000:00:03.2", group: 7, driver: null);
        Assert.Equal(
            ["0000:00:03.0 (vfio-pci)", "0000:00:03.1 (e1000e)", "0000:00:03.2 (no driver)"],
            VfioSysfs.DescribeGroupMembers(7, t.Root));
        Assert.Empty(VfioSysfs.DescribeGroupMembers(8, t.Root));
    }
}
