using PciVirtio.Mmio.Interop;
using Tmds.Linux;

namespace PciVirtio.Mmio.EventLoop;

/// <summary>
/// The three epoll calls (Tmds.LibC declarations, which carry the per-architecture layout of
/// <c>struct epoll_event</c>: packed 12 bytes on x86-64, 16 elsewhere), with errors turned
/// into <see cref="NativeCallException"/> naming the call and EINTR retried.
/// </summary>
internal static unsafe class Epoll
{
    public const int CtlAdd = 1;
    public const int CtlDel = 2;
    public const int CtlMod = 3;

    private const int EPOLL_CLOEXEC = 0x80000;

    public static FileDescriptor Create(string? subject) =>
        FileDescriptor.FromResult(LibC.epoll_create1(EPOLL_CLOEXEC), "epoll_create1", subject);

    /// <summary>epoll_ctl with <paramref name="token"/> as the event data the kernel hands back.</summary>
    public static void Control(int epfd, int op, int fd, EpollEvents events, ulong token, string? subject)
    {
        epoll_event ev = default;
        ev.events = unchecked((int)events);
        ev.data.u64 = token;
        if (LibC.epoll_ctl(epfd, op, fd, &ev) != 0)
        {
            throw new NativeCallException(CallName(op), LibC.errno, subject);
        }
    }

    /// <summary>epoll_ctl(EPOLL_CTL_DEL); returns the errno (0 on success) so callers tearing
    /// down can log rather than throw.</summary>
    public static int TryDelete(int epfd, int fd)
    {
        epoll_event ev = default;
        return LibC.epoll_ctl(epfd, CtlDel, fd, &ev) == 0 ? 0 : LibC.errno;
    }

    /// <summary>
    /// epoll_wait, retried on EINTR (a signal handler ran; epoll_wait is never restarted by
    /// the kernel) with what is left of <paramref name="timeoutMs"/>. Returns the number of
    /// events, 0 on timeout.
    /// </summary>
    public static int Wait(int epfd, epoll_event* events, int maxEvents, int timeoutMs, string? subject)
    {
        long deadline = timeoutMs > 0 ? Environment.TickCount64 + timeoutMs : 0;
        while (true)
        {
            int n = LibC.epoll_wait(epfd, events, maxEvents, timeoutMs);
            if (n >= 0)
            {
                return n;
            }

            int errno = LibC.errno;
            if (errno != Errno.EINTR)
            {
                throw new NativeCallException("epoll_wait", errno, subject);
            }

            if (timeoutMs > 0)
            {
                timeoutMs = (int)Math.Max(0, deadline - Environment.TickCount64);
            }
        }
    }

    public static string CallName(int op) => op switch
    {
        CtlAdd => "epoll_ctl(EPOLL_CTL_ADD)",
        CtlDel => "epoll_ctl(EPOLL_CTL_DEL)",
        CtlMod => "epoll_ctl(EPOLL_CTL_MOD)",
        _ => "epoll_ctl",
    };
}
