using System.Runtime.InteropServices;
using PciVirtio.Mmio.Interop;
using PciVirtio.VhostCore.Memory;
using Tmds.Linux;

namespace PciVirtio.Mmio.Memory;

/// <summary>How a mapping may be accessed.</summary>
[Flags]
public enum MappingProtection
{
    None = 0,
    Read = 1,
    Write = 2,
    ReadWrite = Read | Write,
}

/// <summary>
/// A <c>mmap(MAP_SHARED)</c> of a file descriptor (a memfd, a file, or a VFIO device region),
/// unmapped exactly once when released. The mapping keeps no reference to the fd: closing
/// the fd after mapping is allowed, as with any mmap.
/// </summary>
public sealed unsafe class MemoryMapping : SafeHandle
{
    private MemoryMapping(nint address, ulong length)
        : base(0, ownsHandle: true)
    {
        SetHandle(address);
        Length = length;
    }

    public override bool IsInvalid => handle == 0;

    /// <summary>Where the mapping starts in our address space.</summary>
    public nint Address => IsClosed ? throw new ObjectDisposedException(nameof(MemoryMapping)) : handle;

    public ulong Length { get; }

    public bool Locked { get; private set; }

    /// <summary>The mapping as a span (for tests and setup; data paths use an accessor).</summary>
    public Span<byte> Span => new((void*)Address, checked((int)Length));

    /// <summary>
    /// Maps <paramref name="length"/> bytes of <paramref name="fd"/> from
    /// <paramref name="offset"/> (page aligned), shared. With <paramref name="lockInMemory"/>
    /// the pages are faulted in and locked (mlock), so the data path never takes a page fault.
    /// </summary>
    public static MemoryMapping Map(SafeHandle fd, ulong offset, ulong length, MappingProtection protection = MappingProtection.ReadWrite,
        bool lockInMemory = false, string? subject = null)
    {
        ArgumentOutOfRangeException.ThrowIfZero(length);
        if (offset % (ulong)Environment.SystemPageSize != 0)
        {
            throw new ArgumentException($"mmap offset 0x{offset:x} is not page aligned", nameof(offset));
        }

        if (offset + length < offset || length > long.MaxValue)
        {
            throw new ArgumentException($"mmap range 0x{offset:x}+0x{length:x} overflows", nameof(length));
        }

        int prot = ((protection & MappingProtection.Read) != 0 ? LibC.PROT_READ : 0)
                 | ((protection & MappingProtection.Write) != 0 ? LibC.PROT_WRITE : 0);
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            void* p = LibC.mmap(null, (size_t)length, prot, LibC.MAP_SHARED, (int)fd.DangerousGetHandle(), (off_t)(long)offset);
            if (p == LibC.MAP_FAILED)
            {
                throw new NativeCallException("mmap", LibC.errno, subject);
            }

            var mapping = new MemoryMapping((nint)p, length);
            if (lockInMemory)
            {
                if (LibC.mlock(p, (size_t)length) != 0)
                {
                    int errno = LibC.errno;
                    mapping.Dispose();
                    throw new NativeCallException("mlock", errno, subject);
                }

                mapping.Locked = true;
            }

            return mapping;
        }
        finally
        {
            if (added)
            {
                fd.DangerousRelease();
            }
        }
    }

    /// <summary>A memory-table region for <paramref name="length"/> bytes of this mapping
    /// from <paramref name="offset"/> (0 = to the end), at guest-physical
    /// <paramref name="guestPhysAddr"/>, seen by the frontend at <paramref name="userAddr"/>.</summary>
    public MemoryRegion Region(ulong guestPhysAddr, ulong userAddr, ulong offset = 0, ulong length = 0)
    {
        if (length == 0)
        {
            length = Length - Math.Min(offset, Length);
        }

        if (offset > Length || length > Length - offset || length == 0)
        {
            throw new ArgumentOutOfRangeException(nameof(length), $"0x{offset:x}+0x{length:x} exceeds the mapping of 0x{Length:x} bytes");
        }

        return new MemoryRegion(guestPhysAddr, length, userAddr, Address + (nint)offset);
    }

    protected override bool ReleaseHandle() => LibC.munmap((void*)handle, (size_t)Length) == 0;
}
