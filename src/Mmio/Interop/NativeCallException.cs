using System.Runtime.InteropServices;

namespace PciVirtio.Mmio.Interop;

/// <summary>A system call failed. The message names the call and the errno, e.g.
/// "ioctl(VFIO_GROUP_SET_CONTAINER) on /dev/vfio/3 failed: EBUSY (Device or resource busy)".</summary>
public sealed class NativeCallException : IOException
{
    public NativeCallException(string call, int errno, string? subject = null)
        : base(Format(call, errno, subject))
    {
        Call = call;
        Errno = errno;
        HResult = errno;
    }

    public NativeCallException()
        : this("unknown", 0)
    {
    }

    public NativeCallException(string message)
        : base(message)
    {
        Call = "unknown";
    }

    public NativeCallException(string message, Exception innerException)
        : base(message, innerException)
    {
        Call = "unknown";
    }

    /// <summary>The failing call as written in messages, e.g. "ioctl(VFIO_DEVICE_SET_IRQS)".</summary>
    public string Call { get; }

    public int Errno { get; }

    private static string Format(string call, int errno, string? subject) =>
        $"{call}{(subject is null ? string.Empty : $" on {subject}")} failed: {Interop.Errno.Name(errno)} ({Marshal.GetPInvokeErrorMessage(errno)})";
}
