using System.Runtime.InteropServices;
using Tmds.Linux;

namespace PciVirtio.Mmio.Net.Interop;

/// <summary>
/// readv and writev, which Tmds.LibC 0.5 does not declare. Errno comes back through
/// <see cref="Marshal.GetLastPInvokeError"/>, read by the caller right after the call.
/// </summary>
internal static unsafe partial class VectoredIo
{
    /// <summary>IOV_MAX (UIO_MAXIOV): the most iovecs one readv or writev accepts.</summary>
    public const int MaxVectors = 1024;

    [LibraryImport("libc", EntryPoint = "readv", SetLastError = true)]
    public static partial nint ReadV(int fd, iovec* vectors, int count);

    [LibraryImport("libc", EntryPoint = "writev", SetLastError = true)]
    public static partial nint WriteV(int fd, iovec* vectors, int count);
}
