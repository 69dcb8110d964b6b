using System.Text;
using PciVirtio.Mmio.Interop;
using Tmds.Linux;

namespace PciVirtio.Mmio.Memory;

/// <summary>Anonymous shared memory (<c>memfd_create</c>): what QEMU's memory-backend-memfd
/// gives a VM, what hw-sim uses for NTB windows, and a stand-in for a BAR in tests.</summary>
public static class MemFd
{
    private const uint MFD_CLOEXEC = 1;

    /// <summary>Creates a memfd of <paramref name="size"/> bytes (zero-filled).</summary>
    public static unsafe FileDescriptor Create(string name, ulong size)
    {
        ArgumentOutOfRangeException.ThrowIfZero(size);
        byte[] utf8 = Encoding.UTF8.GetBytes(name + "\0");
        int fd;
        fixed (byte* p = utf8)
        {
            fd = LibC.memfd_create(p, MFD_CLOEXEC);
        }

        var handle = FileDescriptor.FromResult(fd, "memfd_create", name);
        if (LibC.ftruncate(handle.Value, (off_t)(long)size) != 0)
        {
            int errno = LibC.errno;
            handle.Dispose();
            throw new NativeCallException("ftruncate", errno, name);
        }

        return handle;
    }
}
