using System.Buffers.Binary;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Signals;
using PciVirtio.Mmio.Vfio;
using PciVirtio.Mmio.Vfio.Interop;

namespace PciVirtio.Mmio.Tests.Vfio;

/// <summary>
/// A <see cref="VfioDevice"/> over a plain file whose region table is seeded, standing in for a
/// vfio-pci fd: pread/pwrite/mmap work as they would on a device, and every ioctl fails with
/// ENOTTY, which shows what a real kernel would have been asked.
/// </summary>
public sealed class VfioDeviceTests : IDisposable
{
    private const string Name = "0000:00:03.0";
    private static readonly ulong Page = (ulong)Environment.SystemPageSize;

    private readonly TempTree _tree = new();
    private readonly string _file;
    private readonly VfioDevice _device;

    public VfioDeviceTests()
    {
        _file = Path.Combine(_tree.Root, "device");
        File.WriteAllBytes(_file, new byte[4 * Page]);
        _device = new VfioDevice(VfioSyscalls.Open(_file), Name);
        _device.CacheRegionInfo(new VfioRegionInfo(VfioRegionIndex.Bar0, VfioRegionFlags.Read | VfioRegionFlags.Write | VfioRegionFlags.Mmap, 256, 0));
        _device.CacheRegionInfo(new VfioRegionInfo(VfioRegionIndex.Bar1, VfioRegionFlags.Read | VfioRegionFlags.Write, 0x100, Page));
        _device.CacheRegionInfo(new VfioRegionInfo(VfioRegionIndex.Bar3, VfioRegionFlags.None, 0, 0));
        _device.CacheRegionInfo(new VfioRegionInfo(VfioRegionIndex.Config, VfioRegionFlags.Read | VfioRegionFlags.Write, 256, 2 * Page));
        _device.CacheRegionInfo(new VfioRegionInfo(VfioRegionIndex.Rom, VfioRegionFlags.Read, 0x100, 3 * Page));
        _device.CacheIrqInfo(new VfioIrqInfo(VfioIrqIndex.MsiX, VfioIrqInfoFlags.EventFd | VfioIrqInfoFlags.NoResize, 2));
        _device.CacheIrqInfo(new VfioIrqInfo(VfioIrqIndex.Err, VfioIrqInfoFlags.None, 1));
    }

    public void Dispose()
    {
        _device.Dispose();
        _tree.Dispose();
    }

    private byte[] FileBytes() => File.ReadAllBytes(_file);

    [Fact]
    public void Config_space_is_read_and_written_little_endian_at_the_region_offset()
    {
        _device.WriteConfig32(0, 0x11101af4);
        _device.WriteConfig16(0x10, 0xbeef);
        _device.WriteConfig8(0x3c, 0x0b);
        byte[] raw = FileBytes();
        Assert.Equal(0x11101af4u, BinaryPrimitives.ReadUInt32LittleEndian(raw.AsSpan((int)(2 * Page))));
        Assert.Equal(0xbeef, BinaryPrimitives.ReadUInt16LittleEndian(raw.AsSpan((int)(2 * Page) + 0x10)));
        Assert.Equal(0x1af4, _device.ReadConfig16(0));
        Assert.Equal(0x1110, _device.ReadConfig16(2));
        Assert.Equal(0x11101af4u, _device.ReadConfig32(0));
        Assert.Equal(0x0b, _device.ReadConfig8(0x3c));
    }

    [Fact]
    public void Enabling_memory_and_bus_master_keeps_the_other_command_bits()
    {
        _device.WriteConfig16(VfioDevice.PciCommandOffset, (ushort)(PciCommand.IoSpace | PciCommand.InterruptDisable));
        _device.WriteConfig16(6, 0x0010); // STATUS must not be touched
        PciCommand result = _device.EnableMemoryAndBusMaster();
        Assert.Equal(PciCommand.IoSpace | PciCommand.MemorySpace | PciCommand.BusMaster | PciCommand.InterruptDisable, result);
        Assert.Equal((ushort)result, _device.ReadConfig16(VfioDevice.PciCommandOffset));
        Assert.Equal(0x0010, _device.ReadConfig16(6));
        Assert.Equal(result, _device.EnableMemoryAndBusMaster());
    }

    [Fact]
    public void Config_accesses_are_checked_for_alignment_and_bounds()
    {
        Assert.Throws<ArgumentException>(() => _device.ReadConfig16(1));
        Assert.Throws<ArgumentException>(() => _device.ReadConfig32(2));
        Assert.Throws<ArgumentException>(() => _device.WriteConfig32(6, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => _device.ReadConfig8(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => _device.ReadConfig32(256));
        Assert.Throws<ArgumentOutOfRangeException>(() => _device.WriteConfig16(256, 0));
    }

    [Fact]
    public void Regions_are_read_and_written_within_bounds_and_permissions()
    {
        _device.WriteRegion(VfioRegionIndex.Bar1, 0xf0, [1, 2, 3, 4]);
        var back = new byte[4];
        _device.ReadRegion(VfioRegionIndex.Bar1, 0xf0, back);
        Assert.Equal([1, 2, 3, 4], back);
        Assert.Equal(3, FileBytes()[(int)Page + 0xf2]);

        Assert.Throws<ArgumentOutOfRangeException>(() => _device.ReadRegion(VfioRegionIndex.Bar1, 0xfd, new byte[4]));
        Assert.Throws<ArgumentOutOfRangeException>(() => _device.WriteRegion(VfioRegionIndex.Bar1, ulong.MaxValue, new byte[1]));
        var e = Assert.Throws<InvalidOperationException>(() => _device.WriteRegion(VfioRegionIndex.Rom, 0, new byte[1]));
        Assert.Contains("Rom", e.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidOperationException>(() => _device.ReadRegion(VfioRegionIndex.Bar3, 0, new byte[1]));
    }

    [Fact]
    public void A_mappable_region_maps_at_its_offset()
    {
        _device.WriteRegion(VfioRegionIndex.Bar0, 8, [0xaa]);
        using MemoryMapping bar0 = _device.MapRegion(VfioRegionIndex.Bar0);
        Assert.Equal(256UL, bar0.Length);
        Assert.Equal(0xaa, bar0.Span[8]);
        bar0.Span[12] = 0x55;
        var b = new byte[1];
        _device.ReadRegion(VfioRegionIndex.Bar0, 12, b);
        Assert.Equal(0x55, b[0]);
    }

    [Fact]
    public void Regions_that_cannot_be_mapped_say_why()
    {
        var e = Assert.Throws<InvalidOperationException>(() => _device.MapRegion(VfioRegionIndex.Config));
        Assert.Contains("ReadRegion", e.Message, StringComparison.Ordinal);
        Assert.Contains(Name, e.Message, StringComparison.Ordinal);
        e = Assert.Throws<InvalidOperationException>(() => _device.MapRegion(VfioRegionIndex.Bar3));
        Assert.Contains("not implemented", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Sparse_regions_are_mapped_area_by_area()
    {
        _device.CacheRegionInfo(new VfioRegionInfo(VfioRegionIndex.Bar2, VfioRegionFlags.Read | VfioRegionFlags.Write | VfioRegionFlags.Mmap | VfioRegionFlags.Caps, 4 * Page, 0)
        {
            SparseMmapAreas = [new VfioSparseMmapArea(0, Page), new VfioSparseMmapArea(2 * Page, 2 * Page)],
        });
        var e = Assert.Throws<InvalidOperationException>(() => _device.MapRegion(VfioRegionIndex.Bar2));
        Assert.Contains("in parts", e.Message, StringComparison.Ordinal);
        using (MemoryMapping m = _device.MapRegion(VfioRegionIndex.Bar2, 2 * Page, 2 * Page))
        {
            Assert.Equal(2 * Page, m.Length);
        }

        Assert.Throws<ArgumentOutOfRangeException>(() => _device.MapRegion(VfioRegionIndex.Bar2, 0, 2 * Page));
        Assert.Throws<ArgumentException>(() => _device.MapRegion(VfioRegionIndex.Bar2, 8, Page));
        Assert.Throws<ArgumentOutOfRangeException>(() => _device.MapRegion(VfioRegionIndex.Bar2, 4 * Page, Page));
    }

    [Fact]
    public void Device_ioctls_name_the_call_the_device_and_the_errno()
    {
        var e = Assert.Throws<NativeCallException>(() => _device.GetInfo());
        Assert.Equal("ioctl(VFIO_DEVICE_GET_INFO)", e.Call);
        Assert.Equal(Errno.ENOTTY, e.Errno);
        Assert.Contains($"ioctl(VFIO_DEVICE_GET_INFO) on {Name} failed: ENOTTY", e.Message, StringComparison.Ordinal);

        e = Assert.Throws<NativeCallException>(() => _device.GetRegionInfo(VfioRegionIndex.Bar4));
        Assert.Equal("ioctl(VFIO_DEVICE_GET_REGION_INFO)", e.Call);
        Assert.Contains("Bar4", e.Message, StringComparison.Ordinal);

        e = Assert.Throws<NativeCallException>(() => _device.GetIrqInfo(VfioIrqIndex.Msi));
        Assert.Equal("ioctl(VFIO_DEVICE_GET_IRQ_INFO)", e.Call);

        e = Assert.Throws<NativeCallException>(() => _device.Reset());
        Assert.Equal("ioctl(VFIO_DEVICE_RESET)", e.Call);

        e = Assert.Throws<NativeCallException>(() => _device.DisableIrqs(VfioIrqIndex.MsiX));
        Assert.Equal("ioctl(VFIO_DEVICE_SET_IRQS)", e.Call);
        e = Assert.Throws<NativeCallException>(() => _device.MaskIrq());
        Assert.Equal("ioctl(VFIO_DEVICE_SET_IRQS)", e.Call);
        e = Assert.Throws<NativeCallException>(() => _device.UnmaskIrq());
        Assert.Equal("ioctl(VFIO_DEVICE_SET_IRQS)", e.Call);
        e = Assert.Throws<NativeCallException>(() => _device.TriggerIrq(VfioIrqIndex.MsiX, 1));
        Assert.Equal("ioctl(VFIO_DEVICE_SET_IRQS)", e.Call);
    }

    [Fact]
    public void Irq_eventfds_are_checked_against_the_vector_count()
    {
        using var a = new EventFd();
        using var b = new EventFd();
        Assert.Throws<ArgumentException>(() => _device.SetIrqEventFds(VfioIrqIndex.MsiX, 0, []));
        Assert.Throws<ArgumentOutOfRangeException>(() => _device.SetIrqEventFds(VfioIrqIndex.MsiX, 1, [a, b]));
        Assert.Throws<ArgumentOutOfRangeException>(() => _device.SetIrqEventFds(VfioIrqIndex.MsiX, 2, [a]));
        Assert.Throws<ArgumentOutOfRangeException>(() => _device.SetIrqEventFds(VfioIrqIndex.MsiX, uint.MaxValue, [a]));
        var e = Assert.Throws<InvalidOperationException>(() => _device.SetIrqEventFds(VfioIrqIndex.Err, 0, [a]));
        Assert.Contains("eventfd", e.Message, StringComparison.Ordinal);

        // Valid: the request reaches the kernel (ENOTTY here) and the eventfds are released again.
        var n = Assert.Throws<NativeCallException>(() => _device.SetIrqEventFds(VfioIrqIndex.MsiX, 0, [a, null]));
        Assert.Equal("ioctl(VFIO_DEVICE_SET_IRQS)", n.Call);
        Assert.Contains("MsiX", n.Message, StringComparison.Ordinal);
        a.Signal();
        Assert.Equal(1UL, a.Consume());

        b.Dispose();
        Assert.Throws<ObjectDisposedException>(() => _device.SetIrqEventFds(VfioIrqIndex.MsiX, 0, [a, b]));
        a.Signal(); // a's reference was released despite the failure
        Assert.Equal(1UL, a.Consume());
    }

    [Fact]
    public void The_irq_set_argument_is_laid_out_as_the_kernel_reads_it()
    {
        var buffer = new byte[VfioDevice.IrqSetSize(2)];
        VfioDevice.BuildIrqSet(buffer, VfioIrqSetFlags.DataEventFd | VfioIrqSetFlags.ActionTrigger, VfioIrqIndex.MsiX, 1, [7, -1]);
        Assert.Equal(
            [
                28, 0, 0, 0, // argsz
                0x24, 0, 0, 0, // DATA_EVENTFD | ACTION_TRIGGER
                2, 0, 0, 0, // MSI-X
                1, 0, 0, 0, // start
                2, 0, 0, 0, // count
                7, 0, 0, 0,
                0xff, 0xff, 0xff, 0xff,
            ],
            buffer);

        var disable = new byte[VfioDevice.IrqSetSize(0)];
        VfioDevice.BuildIrqSet(disable, VfioIrqSetFlags.DataNone | VfioIrqSetFlags.ActionTrigger, VfioIrqIndex.MsiX, 0, count: 0);
        Assert.Equal([20, 0, 0, 0, 0x21, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], disable);
    }

    [Fact]
    public void Ioeventfd_requests_are_validated_and_addressed_at_the_region_offset()
    {
        VfioIoEventFdArg arg = _device.PrepareIoEventFd(VfioRegionIndex.Bar1, 0x0c, 4, 0x10001);
        Assert.Equal(32u, arg.Argsz);
        Assert.Equal(4u, arg.Flags);
        Assert.Equal(Page + 0x0c, arg.Offset);
        Assert.Equal(0x10001UL, arg.Data);
        Assert.Equal(8u, _device.PrepareIoEventFd(VfioRegionIndex.Bar1, 0x08, 8, ulong.MaxValue).Flags);
        Assert.Equal(1u, _device.PrepareIoEventFd(VfioRegionIndex.Bar1, 0xff, 1, 0xff).Flags);

        using var e = new EventFd();
        Assert.Throws<ArgumentOutOfRangeException>(() => _device.AddIoEventFd(VfioRegionIndex.Config, 0, 4, 0, e));
        Assert.Throws<ArgumentOutOfRangeException>(() => _device.AddIoEventFd(VfioRegionIndex.Bar1, 0, 3, 0, e));
        Assert.Throws<ArgumentException>(() => _device.AddIoEventFd(VfioRegionIndex.Bar1, 2, 4, 0, e));
        Assert.Throws<ArgumentOutOfRangeException>(() => _device.AddIoEventFd(VfioRegionIndex.Bar1, 0, 2, 0x10000, e));
        Assert.Throws<ArgumentOutOfRangeException>(() => _device.AddIoEventFd(VfioRegionIndex.Bar1, 0x100, 4, 0, e));
        Assert.Throws<ArgumentNullException>(() => _device.AddIoEventFd(VfioRegionIndex.Bar1, 0, 4, 0, null!));

        var n = Assert.Throws<NativeCallException>(() => _device.AddIoEventFd(VfioRegionIndex.Bar1, 0x0c, 4, 1, e));
        Assert.Equal("ioctl(VFIO_DEVICE_IOEVENTFD)", n.Call);
        Assert.Equal(Errno.ENOTTY, n.Errno);
        Assert.Contains($"{Name} Bar1+0xc", n.Message, StringComparison.Ordinal);
        n = Assert.Throws<NativeCallException>(() => _device.RemoveIoEventFd(VfioRegionIndex.Bar1, 0x0c, 4, 1));
        Assert.Equal("ioctl(VFIO_DEVICE_IOEVENTFD)", n.Call);
    }

    [Fact]
    public void A_disposed_device_refuses_every_call()
    {
        var d = new VfioDevice(VfioSyscalls.Open(_file), Name);
        d.CacheRegionInfo(new VfioRegionInfo(VfioRegionIndex.Config, VfioRegionFlags.Read | VfioRegionFlags.Write, 256, 0));
        d.Dispose();
        Assert.Throws<ObjectDisposedException>(() => d.ReadConfig16(0));
        Assert.Throws<ObjectDisposedException>(() => d.GetInfo());
        Assert.Throws<ObjectDisposedException>(() => d.Reset());
    }

    [Fact]
    public void Constructor_arguments_are_validated()
    {
        Assert.Throws<ArgumentNullException>(() => new VfioDevice(null!, Name));
        using FileDescriptor fd = VfioSyscallsForTests.OpenNull();
        Assert.Throws<ArgumentException>(() => new VfioDevice(fd, string.Empty));
    }
}
