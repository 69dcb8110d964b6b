using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Vfio.Interop;

namespace PciVirtio.Mmio.Tests.Vfio;

/// <summary>Descriptors on which every VFIO ioctl fails with ENOTTY.</summary>
internal static class VfioSyscallsForTests
{
    public static FileDescriptor OpenNull() => VfioSyscalls.Open("/dev/null");
}
