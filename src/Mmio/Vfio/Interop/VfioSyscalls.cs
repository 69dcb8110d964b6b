using System.Runtime.InteropServices;
using System.Text;
using PciVirtio.Mmio.Interop;
using Tmds.Linux;

namespace PciVirtio.Mmio.Vfio.Interop;

/// <summary>
/// The handful of system calls VFIO needs (all from Tmds.LibC), with the project's error
/// convention: errno is read right after the call, before anything else can overwrite it, and
/// every failure becomes a <see cref="NativeCallException"/> naming the call and its subject.
/// Each call holds a reference on the SafeHandle so a concurrent Dispose cannot close (and the
/// process reuse) the descriptor mid-call.
/// </summary>
internal static unsafe class VfioSyscalls
{
    private const int MaxPathBytes = 4096;

    /// <summary>open(path, O_RDWR | O_CLOEXEC), retried on EINTR.</summary>
    public static FileDescriptor Open(string path)
    {
        Span<byte> buffer = stackalloc byte[MaxPathBytes];
        int length = EncodeNulTerminated(path, buffer, nameof(path));
        fixed (byte* p = buffer[..(length + 1)])
        {
            while (true)
            {
                int fd = LibC.open(p, LibC.O_RDWR | LibC.O_CLOEXEC, 0);
                if (fd >= 0)
                {
                    return new FileDescriptor(fd);
                }

                int errno = LibC.errno;
                if (errno != Errno.EINTR)
                {
                    throw new NativeCallException("open", errno, path);
                }
            }
        }
    }

    /// <summary>readlink(path): the link target, or a NativeCallException("readlink").</summary>
    public static string ReadLink(string path)
    {
        Span<byte> name = stackalloc byte[MaxPathBytes];
        int length = EncodeNulTerminated(path, name, nameof(path));
        byte[] target = new byte[MaxPathBytes];
        long rc;
        fixed (byte* p = name[..(length + 1)])
        fixed (byte* t = target)
        {
            rc = LibC.readlink(p, t, (size_t)target.Length);
            if (rc < 0)
            {
                throw new NativeCallException("readlink", LibC.errno, path);
            }
        }

        return Encoding.UTF8.GetString(target, 0, (int)rc);
    }

    /// <summary>ioctl(fd, request, arg); returns the non-negative result.</summary>
    public static int Ioctl(SafeHandle fd, int request, void* arg, string call, string subject)
    {
        bool added = false;
        int rc;
        int errno = 0;
        try
        {
            fd.DangerousAddRef(ref added);
            rc = LibC.ioctl((int)fd.DangerousGetHandle(), request, arg);
            if (rc < 0)
            {
                errno = LibC.errno;
            }
        }
        finally
        {
            if (added)
            {
                fd.DangerousRelease();
            }
        }

        return rc >= 0 ? rc : throw new NativeCallException(call, errno, subject);
    }

    /// <summary>ioctl(fd, request, value) for requests whose argument is an integer passed by
    /// value (the kernel reads it as an unsigned long, so it is widened to pointer size here).</summary>
    public static int IoctlValue(SafeHandle fd, int request, nint value, string call, string subject) =>
        Ioctl(fd, request, (void*)value, call, subject);

    /// <summary>pread until <paramref name="buffer"/> is full (retrying EINTR and short reads).</summary>
    public static void ReadExactly(SafeHandle fd, Span<byte> buffer, ulong offset, string subject)
    {
        ThrowIfOffsetTooLarge(offset, (ulong)buffer.Length);
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            int raw = (int)fd.DangerousGetHandle();
            int done = 0;
            fixed (byte* p = buffer)
            {
                while (done < buffer.Length)
                {
                    long rc = LibC.pread(raw, p + done, (size_t)(buffer.Length - done), (off_t)(long)(offset + (ulong)done));
                    if (rc > 0)
                    {
                        done += (int)rc;
                        continue;
                    }

                    if (rc == 0)
                    {
                        throw new VfioException(
                            $"pread on {subject} reached the end of the region after {done} of {buffer.Length} bytes at device offset 0x{offset:x}");
                    }

                    int errno = LibC.errno;
                    if (errno != Errno.EINTR)
                    {
                        throw new NativeCallException("pread", errno, subject);
                    }
                }
            }
        }
        finally
        {
            if (added)
            {
                fd.DangerousRelease();
            }
        }
    }

    /// <summary>pwrite all of <paramref name="data"/> (retrying EINTR and short writes).</summary>
    public static void WriteExactly(SafeHandle fd, ReadOnlySpan<byte> data, ulong offset, string subject)
    {
        ThrowIfOffsetTooLarge(offset, (ulong)data.Length);
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            int raw = (int)fd.DangerousGetHandle();
            int done = 0;
            fixed (byte* p = data)
            {
                while (done < data.Length)
                {
                    long rc = LibC.pwrite(raw, p + done, (size_t)(data.Length - done), (off_t)(long)(offset + (ulong)done));
                    if (rc > 0)
                    {
                        done += (int)rc;
                        continue;
                    }

                    if (rc == 0)
                    {
                        throw new VfioException(
                            $"pwrite on {subject} wrote nothing after {done} of {data.Length} bytes at device offset 0x{offset:x}");
                    }

                    int errno = LibC.errno;
                    if (errno != Errno.EINTR)
                    {
                        throw new NativeCallException("pwrite", errno, subject);
                    }
                }
            }
        }
        finally
        {
            if (added)
            {
                fd.DangerousRelease();
            }
        }
    }

    /// <summary>Writes <paramref name="text"/> as UTF-8 plus a NUL into <paramref name="destination"/>;
    /// returns the length without the NUL. Embedded NULs would silently truncate what the kernel
    /// sees, so they are rejected.</summary>
    public static int EncodeNulTerminated(string text, Span<byte> destination, string paramName)
    {
        ArgumentException.ThrowIfNullOrEmpty(text, paramName);
        if (text.Contains('\0', StringComparison.Ordinal))
        {
            throw new ArgumentException("the string contains a NUL character", paramName);
        }

        int length = Encoding.UTF8.GetByteCount(text);
        if (length >= destination.Length)
        {
            throw new ArgumentException($"the string is {length} bytes long; at most {destination.Length - 1} are allowed", paramName);
        }

        Encoding.UTF8.GetBytes(text, destination);
        destination[length] = 0;
        return length;
    }

    private static void ThrowIfOffsetTooLarge(ulong offset, ulong length)
    {
        if (offset > long.MaxValue || length > long.MaxValue - offset)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"device offset 0x{offset:x}+0x{length:x} exceeds the file offset range");
        }
    }
}
