using PciVirtio.Mmio.Interop;
using PciVirtio.VhostCore.Memory;

namespace PciVirtio.Mmio.Memory;

/// <summary>
/// One region of shared guest memory: a mapping of a file descriptor a frontend handed us
/// (SET_MEM_TABLE / ADD_MEM_REG) at its mmap offset, plus where it sits in guest-physical and
/// frontend-virtual address space. Owns the mapping; disposing unmaps it exactly once.
/// </summary>
public sealed class SharedMemoryRegion : IDisposable
{
    private SharedMemoryRegion(MemoryMapping mapping, MemoryRegion region)
    {
        Mapping = mapping;
        Region = region;
    }

    public MemoryMapping Mapping { get; }

    /// <summary>The entry for the memory table.</summary>
    public MemoryRegion Region { get; }

    /// <summary>
    /// Maps <paramref name="size"/> bytes of <paramref name="fd"/> from
    /// <paramref name="mmapOffset"/>. The offset need not be page aligned (vhost-user allows
    /// any): the mapping starts at the page below it and the region at the exact byte.
    /// </summary>
    public static SharedMemoryRegion Map(FileDescriptor fd, ulong guestPhysAddr, ulong size, ulong userAddr, ulong mmapOffset,
        bool lockInMemory = false)
    {
        ulong page = (ulong)Environment.SystemPageSize;
        ulong aligned = mmapOffset & ~(page - 1);
        ulong lead = mmapOffset - aligned;
        if (size == 0 || size + lead < size)
        {
            throw new ArgumentOutOfRangeException(nameof(size), $"region size 0x{size:x} with mmap offset 0x{mmapOffset:x} is invalid");
        }

        var mapping = MemoryMapping.Map(fd, aligned, size + lead, MappingProtection.ReadWrite, lockInMemory, $"memory region gpa 0x{guestPhysAddr:x}");
        return new SharedMemoryRegion(mapping, mapping.Region(guestPhysAddr, userAddr, lead, size));
    }

    public void Dispose() => Mapping.Dispose();
}
