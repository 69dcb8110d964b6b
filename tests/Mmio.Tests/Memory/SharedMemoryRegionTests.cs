using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Memory;

namespace PciVirtio.Mmio.Tests.Memory;

public class SharedMemoryRegionTests
{
    [Fact]
    public void A_region_at_an_unaligned_mmap_offset_starts_at_the_exact_byte()
    {
        using var fd = MemFd.Create("guest-ram", 3 * 4096);
        using (var whole = MemoryMapping.Map(fd, 0, 3 * 4096))
        {
            whole.Span[4096 + 100] = 0x5A;
        }

        using var region = SharedMemoryRegion.Map(fd, guestPhysAddr: 0x10000, size: 4096, userAddr: 0x7f00_0000_0000, mmapOffset: 4096 + 100);
        Assert.Equal(0x10000UL, region.Region.GuestPhysAddr);
        Assert.Equal(4096UL, region.Region.Size);
        Assert.Equal(0x7f00_0000_0000UL, region.Region.UserAddr);
        unsafe
        {
            Assert.Equal(0x5A, *(byte*)region.Region.HostAddr);
        }
    }

    [Fact]
    public void Mapping_is_released_exactly_once()
    {
        using var fd = MemFd.Create("once", 4096);
        var mapping = MemoryMapping.Map(fd, 0, 4096);
        int before = CountMaps();
        mapping.Dispose();
        mapping.Dispose();
        Assert.Equal(before - 1, CountMaps());
        Assert.Throws<ObjectDisposedException>(() => mapping.Address);
    }

    [Fact]
    public void Locking_in_memory_works_or_names_mlock_and_the_errno()
    {
        using var fd = MemFd.Create("locked", 4096);
        try
        {
            using var m = MemoryMapping.Map(fd, 0, 4096, lockInMemory: true);
            Assert.True(m.Locked);
        }
        catch (NativeCallException e)
        {
            Assert.Equal("mlock", e.Call);
            Assert.Contains("mlock", e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Mapping_a_bad_fd_fails_naming_mmap_and_the_errno()
    {
        var bad = new FileDescriptor(-5, ownsHandle: false);
        var e = Assert.Throws<NativeCallException>(() => MemoryMapping.Map(bad, 0, 4096, subject: "test-region"));
        Assert.Equal("mmap", e.Call);
        Assert.Equal(Errno.EBADF, e.Errno);
        Assert.Contains("EBADF", e.Message, StringComparison.Ordinal);
        Assert.Contains("test-region", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Unaligned_mmap_offsets_and_overflowing_ranges_are_rejected()
    {
        using var fd = MemFd.Create("args", 4096);
        Assert.Throws<ArgumentException>(() => MemoryMapping.Map(fd, 100, 4096));
        Assert.Throws<ArgumentException>(() => MemoryMapping.Map(fd, ulong.MaxValue & ~4095UL, 8192));
        Assert.Throws<ArgumentOutOfRangeException>(() => MemoryMapping.Map(fd, 0, 0));
    }

    private static int CountMaps() => File.ReadAllLines("/proc/self/maps").Count(l => l.Contains("memfd:once", StringComparison.Ordinal));
}
