using System.Runtime.InteropServices;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.VhostUser;
using Tmds.Linux;

namespace PciVirtio.Mmio.VhostUser;

/// <summary>Maps vhost-user memory regions with <see cref="SharedMemoryRegion"/> (mmap of
/// the frontend's memfd at the region's offset, shared, read-write). A region reaching
/// beyond the end of its file is refused: touching such a mapping would raise SIGBUS and kill
/// the process, so a hostile frontend must not get one.</summary>
public sealed unsafe class SharedMemoryRegionMapper : IRegionMapper
{
    public static SharedMemoryRegionMapper Instance { get; } = new();

    public IMappedRegion Map(SafeHandle fd, in VhostUserMemoryRegion region)
    {
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            int raw = (int)fd.DangerousGetHandle();
            stat st;
            Syscall.Check(Tmds.Linux.LibC.fstat(raw, &st), "fstat", "memory region fd");
            ulong fileSize = (ulong)(long)st.st_size;
            const uint S_IFMT = 0xf000, S_IFREG = 0x8000;
            if (((uint)st.st_mode & S_IFMT) == S_IFREG && (region.MmapOffset > fileSize || region.Size > fileSize - region.MmapOffset))
            {
                throw new ArgumentException(
                    $"region {region} reaches beyond the end of its file ({fileSize} bytes)", nameof(region));
            }

            using var borrowed = new FileDescriptor(raw, ownsHandle: false);
            return new Mapped(SharedMemoryRegion.Map(borrowed, region.GuestPhysAddr, region.Size, region.UserAddr, region.MmapOffset));
        }
        finally
        {
            if (added)
            {
                fd.DangerousRelease();
            }
        }
    }

    private sealed class Mapped(SharedMemoryRegion shared) : IMappedRegion
    {
        public MemoryRegion Region => shared.Region;

        public void Dispose() => shared.Dispose();
    }
}
