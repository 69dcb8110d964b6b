namespace PciVirtio.Mmio.EventLoop;

/// <summary>
/// The <c>epoll_event.events</c> bits, with the kernel's values so they pass to and from
/// <c>epoll_ctl</c>/<c>epoll_wait</c> unchanged. Requested in a registration and reported to
/// its handler; <see cref="Error"/> and <see cref="HangUp"/> are always reported, whether
/// requested or not.
/// </summary>
[Flags]
public enum EpollEvents : uint
{
    None = 0,

    /// <summary>EPOLLIN: readable (an eventfd was signalled, a socket or TAP fd has data).</summary>
    In = 0x001,

    /// <summary>EPOLLPRI: an exceptional condition (out-of-band data, a sysfs attribute changed).</summary>
    Priority = 0x002,

    /// <summary>EPOLLOUT: writable.</summary>
    Out = 0x004,

    /// <summary>EPOLLERR: an error on the fd (always reported).</summary>
    Error = 0x008,

    /// <summary>EPOLLHUP: hang-up, e.g. the peer of a pipe or socket closed (always reported).</summary>
    HangUp = 0x010,

    /// <summary>EPOLLRDHUP: the stream socket peer shut down its writing half.</summary>
    ReadHangUp = 0x2000,

    /// <summary>EPOLLONESHOT: report once, then disarm until the registration is modified.</summary>
    OneShot = 1u << 30,

    /// <summary>EPOLLET: edge-triggered; report only changes of readiness.</summary>
    EdgeTriggered = 1u << 31,
}
