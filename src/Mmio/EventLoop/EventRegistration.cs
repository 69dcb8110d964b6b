using System.Runtime.InteropServices;

namespace PciVirtio.Mmio.EventLoop;

/// <summary>
/// One fd watched by an <see cref="EpollEventLoop"/>. Disposing it removes the fd from the loop;
/// once <see cref="Dispose"/> returns (on any thread) the handler is not running and will never
/// be called again, even for events already fetched in the batch being dispatched.
/// </summary>
public sealed class EventRegistration : IDisposable
{
    private readonly EpollEventLoop _loop;
    private volatile bool _removed;
    private long _failures;

    internal EventRegistration(EpollEventLoop loop, SafeHandle handle, int fd, EpollEvents events, Action<EpollEvents> handler,
        int slot, ulong token)
    {
        _loop = loop;
        Handle = handle;
        Fd = fd;
        Events = events;
        Handler = handler;
        Slot = slot;
        Token = token;
    }

    /// <summary>The watched fd. A SafeHandle reference is held while registered, so closing it
    /// before removing the registration only defers the close.</summary>
    public SafeHandle Handle { get; }

    /// <summary>The fd number (for messages).</summary>
    public int Fd { get; }

    /// <summary>The events currently requested (see <see cref="Modify"/>).</summary>
    public EpollEvents Events { get; internal set; }

    /// <summary>False once removed (disposed, or the loop stopped).</summary>
    public bool IsActive => !_removed;

    internal Action<EpollEvents> Handler { get; }

    internal EpollEventLoop Loop => _loop;

    internal int Slot { get; }

    /// <summary>epoll data: generation in the high half, slot in the low half, so an event
    /// fetched for a registration removed meanwhile can never reach one that re-used its slot.</summary>
    internal ulong Token { get; }

    internal bool Removed
    {
        get => _removed;
        set => _removed = value;
    }

    /// <summary>Handler failures in a row; logging is rate-limited on it, and the
    /// registration removed at <see cref="EpollEventLoop.MaxConsecutiveFailures"/>.</summary>
    internal long Failures
    {
        get => _failures;
        set => _failures = value;
    }

    /// <summary>Changes the requested events (EPOLL_CTL_MOD); re-arms a
    /// <see cref="EpollEvents.OneShot"/> registration.</summary>
    public void Modify(EpollEvents events) => _loop.Modify(this, events);

    public void Dispose() => _loop.Remove(this);

    public override string ToString() => $"fd {Fd} ({Events})";
}
