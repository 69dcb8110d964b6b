using System.Runtime.InteropServices;
using Tmds.Linux;

namespace PciVirtio.Mmio.Interop;

/// <summary>
/// An owned Linux file descriptor, closed exactly once when released. fd 0 is a valid
/// descriptor, so only -1 is invalid.
/// </summary>
public sealed class FileDescriptor : SafeHandle
{
    public FileDescriptor()
        : base(-1, ownsHandle: true)
    {
    }

    public FileDescriptor(int fd, bool ownsHandle = true)
        : base(-1, ownsHandle)
    {
        SetHandle(fd);
    }

    public override bool IsInvalid => handle == -1;

    /// <summary>The raw descriptor. Hot paths take it once (inside
    /// <see cref="SafeHandle.DangerousAddRef"/> / Release) rather than per operation.</summary>
    public int Value => (int)handle;

    /// <summary>Takes ownership of <paramref name="fd"/> returned by <paramref name="call"/>,
    /// throwing a <see cref="NativeCallException"/> when it is negative.</summary>
    public static FileDescriptor FromResult(int fd, string call, string? subject = null) =>
        fd >= 0 ? new FileDescriptor(fd) : throw new NativeCallException(call, LibC.errno, subject);

    protected override bool ReleaseHandle() => LibC.close((int)handle) == 0;
}
