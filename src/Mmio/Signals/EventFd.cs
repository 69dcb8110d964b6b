using System.Runtime.InteropServices;
using PciVirtio.Mmio.Interop;
using Tmds.Linux;

namespace PciVirtio.Mmio.Signals;

/// <summary>
/// A Linux eventfd: the kick and call fds of vhost-user, the interrupt fds VFIO signals for
/// MSI-X vectors, and the peer doorbells of the ivshmem protocol. Non-blocking, so it can sit
/// in an epoll loop; a write adds to the counter, a read returns and clears it. As an
/// <see cref="INotificationSource"/> it is what the event loop and the adaptive poller wait on.
/// </summary>
public sealed class EventFd : INotificationSource, IDisposable
{
    private const int EFD_CLOEXEC = 0x80000;
    private const int EFD_NONBLOCK = 0x800;

    public EventFd()
        : this(FileDescriptor.FromResult(LibC.eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd"))
    {
    }

    /// <summary>Wraps an eventfd received from elsewhere (SCM_RIGHTS); takes ownership.</summary>
    public EventFd(FileDescriptor handle)
    {
        Handle = handle;
    }

    public FileDescriptor Handle { get; }

    /// <summary>Adds <paramref name="value"/> to the counter, waking any waiter. A full
    /// counter (EAGAIN) already means "signalled", so it is not an error.</summary>
    public void Signal(ulong value = 1) => Signal(Handle, value);

    /// <summary>Reads and clears the counter; 0 when nothing was signalled.</summary>
    public ulong Consume() => Consume(Handle);

    /// <summary><see cref="Signal(ulong)"/> on an eventfd we hold only as a handle (one a
    /// frontend passed us).</summary>
    public static unsafe void Signal(SafeHandle eventFd, ulong value = 1)
    {
        ArgumentNullException.ThrowIfNull(eventFd);
        bool added = false;
        try
        {
            eventFd.DangerousAddRef(ref added);
            int fd = (int)eventFd.DangerousGetHandle();
            while (true)
            {
                long rc = LibC.write(fd, &value, 8);
                if (rc == 8)
                {
                    return;
                }

                int errno = LibC.errno;
                if (errno == Errno.EAGAIN)
                {
                    return;
                }

                if (errno != Errno.EINTR)
                {
                    throw new NativeCallException("write(eventfd)", errno);
                }
            }
        }
        finally
        {
            if (added)
            {
                eventFd.DangerousRelease();
            }
        }
    }

    /// <summary><see cref="Consume()"/> on an eventfd we hold only as a handle. On a
    /// blocking eventfd call it only when it is readable (epoll said so).</summary>
    public static unsafe ulong Consume(SafeHandle eventFd)
    {
        ArgumentNullException.ThrowIfNull(eventFd);
        bool added = false;
        try
        {
            eventFd.DangerousAddRef(ref added);
            int fd = (int)eventFd.DangerousGetHandle();
            while (true)
            {
                ulong value;
                long rc = LibC.read(fd, &value, 8);
                if (rc == 8)
                {
                    return value;
                }

                int errno = LibC.errno;
                if (errno == Errno.EAGAIN)
                {
                    return 0;
                }

                if (errno != Errno.EINTR)
                {
                    throw new NativeCallException("read(eventfd)", errno);
                }
            }
        }
        finally
        {
            if (added)
            {
                eventFd.DangerousRelease();
            }
        }
    }

    public void Dispose() => Handle.Dispose();
}
