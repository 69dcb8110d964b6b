using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Vfio;

namespace PciVirtio.Mmio.Tests.Vfio;

public class VfioGroupTests
{
    [Fact]
    public void Opening_a_nonexistent_group_names_the_call_the_path_and_ENOENT()
    {
        var e = Assert.Throws<NativeCallException>(() => VfioGroup.Open(99999));
        Assert.Equal("open", e.Call);
        Assert.Equal(Errno.ENOENT, e.Errno);
        Assert.Contains("/dev/vfio/99999", e.Message, StringComparison.Ordinal);
        Assert.Contains("ENOENT", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Group_numbers_and_paths_are_validated()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => VfioGroup.Open(-1));
        Assert.Throws<ArgumentException>(() => VfioGroup.Open(string.Empty));
        Assert.Throws<ArgumentException>(() => VfioGroup.Open("/dev/vfio/7\0x"));
        Assert.Throws<ArgumentException>(() => VfioGroup.Open(3, string.Empty));
    }

    [Fact]
    public void The_group_number_is_taken_from_the_path()
    {
        using var t = new TempTree();
        File.WriteAllBytes(Path.Combine(t.Root, "7"), []);
        File.WriteAllBytes(Path.Combine(t.Root, "noiommu-12"), []);
        File.WriteAllBytes(Path.Combine(t.Root, "vfio"), []);
        using (VfioGroup g = VfioGroup.Open(7, t.Root))
        {
            Assert.Equal(7, g.Id);
            Assert.Equal(Path.Combine(t.Root, "7"), g.Path);
        }

        using (VfioGroup g = VfioGroup.Open(Path.Combine(t.Root, "noiommu-12")))
        {
            Assert.Equal(12, g.Id);
        }

        using (VfioGroup g = VfioGroup.Open(Path.Combine(t.Root, "vfio")))
        {
            Assert.Null(g.Id);
        }
    }

    [Fact]
    public void Ioctls_on_a_non_vfio_fd_name_the_ioctl_the_path_and_the_errno()
    {
        using VfioGroup g = VfioGroup.Open("/dev/null");
        var e = Assert.Throws<NativeCallException>(() => g.GetStatus());
        Assert.Equal("ioctl(VFIO_GROUP_GET_STATUS)", e.Call);
        Assert.Equal(Errno.ENOTTY, e.Errno);
        Assert.Contains("ioctl(VFIO_GROUP_GET_STATUS) on /dev/null failed: ENOTTY", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Set_container_checks_the_status_first_and_leaves_the_container_untouched_on_failure()
    {
        using VfioGroup g = VfioGroup.Open("/dev/null");
        using var c = new VfioContainer(VfioSyscallsForTests.OpenNull(), "/dev/null");
        var e = Assert.Throws<NativeCallException>(() => g.SetContainer(c));
        Assert.Equal("ioctl(VFIO_GROUP_GET_STATUS)", e.Call);
        Assert.Null(g.Container);
        Assert.Equal(0, c.AttachedGroups);
    }

    [Fact]
    public void Devices_cannot_be_opened_before_the_container_and_iommu_are_set()
    {
        using VfioGroup g = VfioGroup.Open("/dev/null");
        var e = Assert.Throws<InvalidOperationException>(() => g.GetDeviceFd("0000:00:03.0"));
        Assert.Contains("SetContainer", e.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidOperationException>(() => g.OpenDevice("00:03.0"));
        Assert.Throws<InvalidOperationException>(() => g.UnsetContainer());
    }

    [Theory]
    [InlineData("00:03.0", "0000:00:03.0")]
    [InlineData("0000:00:1F.7", "0000:00:1f.7")]
    [InlineData("83b8f4f2-509f-382f-3c1e-e6bfe0fa1001", "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001")] // an mdev UUID
    public void Device_names_are_normalised(string name, string expected) =>
        Assert.Equal(expected, VfioGroup.NormalizeDeviceName(name));

    [Theory]
    [InlineData("")]
    [InlineData("  ")]
    [InlineData("../0000:00:03.0")]
    [InlineData("a\0b")]
    public void Bad_device_names_are_rejected(string name) =>
        Assert.Throws<ArgumentException>(() => VfioGroup.NormalizeDeviceName(name));

    [Fact]
    public void A_non_viable_group_says_which_devices_to_rebind()
    {
        using var t = new TempTree();
        t.PciDevice("0000:00:03.0", group: 7, driver: "vfio-pci");
        t.PciDevice("0000:00:03.1", group: 7, driver: "e1000e");
        var e = Assert.Throws<VfioException>(() => VfioGroup.ThrowIfNotViable(VfioGroupFlags.None, "/dev/vfio/7", 7, t.Root));
        Assert.StartsWith("group not viable: all devices in the group must be bound to vfio-pci", e.Message, StringComparison.Ordinal);
        Assert.Contains("0000:00:03.1 (e1000e)", e.Message, StringComparison.Ordinal);
        Assert.Contains("driver_override", e.Message, StringComparison.Ordinal);

        VfioGroup.ThrowIfNotViable(VfioGroupFlags.Viable, "/dev/vfio/7", 7, t.Root);
        VfioGroup.ThrowIfNotViable(VfioGroupFlags.Viable | VfioGroupFlags.ContainerSet, "/dev/vfio/7", 7, t.Root);
    }

    [Fact]
    public void A_disposed_group_refuses_ioctls()
    {
        VfioGroup g = VfioGroup.Open("/dev/null");
        g.Dispose();
        g.Dispose();
        Assert.Throws<ObjectDisposedException>(() => g.GetStatus());
    }
}
