using PciVirtio.Mmio.EventLoop;
using PciVirtio.Mmio.Interop;
using Tmds.Linux;

namespace PciVirtio.Mmio.Signals;

/// <summary>How a <see cref="SignalWaiter.Wait"/> ended.</summary>
public enum SignalWaitResult
{
    /// <summary>The source is readable: a signal is pending (consume it).</summary>
    Signalled,

    /// <summary><see cref="SignalWaiter.Cancel"/> was called (now or earlier).</summary>
    Cancelled,

    /// <summary>The timeout passed with neither.</summary>
    TimedOut,
}

/// <summary>
/// Blocks one thread until a <see cref="INotificationSource"/> is signalled or the wait is
/// cancelled from another thread — what a polling thread does when it falls back to
/// interrupts. A plain blocking <c>read</c> could not be cancelled, so the waiter keeps its own
/// small epoll set holding the source and a private cancel eventfd. <c>poll(2)</c> would need no
/// extra fd, but Tmds.LibC declares it without SetLastError, so its errno (EINTR) cannot be
/// read reliably. Waiting allocates nothing.
/// </summary>
public sealed unsafe class SignalWaiter : IDisposable
{
    private const ulong SourceToken = 0;
    private const ulong CancelToken = 1;

    private readonly FileDescriptor _epoll;
    private readonly EventFd _cancel;
    private readonly FileDescriptor _sourceHandle;
    private int _disposed;

    /// <summary>Watches <paramref name="source"/>. Its fd is kept open (a SafeHandle reference)
    /// until this waiter is disposed, so its number cannot be reused under the wait.</summary>
    public SignalWaiter(INotificationSource source)
    {
        ArgumentNullException.ThrowIfNull(source);
        Source = source;
        _sourceHandle = source.Handle;
        _epoll = Epoll.Create("signal waiter");
        _cancel = new EventFd();
        bool sourceRef = false;
        bool cancelRef = false;
        try
        {
            _sourceHandle.DangerousAddRef(ref sourceRef);
            _cancel.Handle.DangerousAddRef(ref cancelRef);
            Epoll.Control(_epoll.Value, Epoll.CtlAdd, _sourceHandle.Value, EpollEvents.In, SourceToken, "signal waiter source");
            Epoll.Control(_epoll.Value, Epoll.CtlAdd, _cancel.Handle.Value, EpollEvents.In, CancelToken, "signal waiter cancel");
        }
        catch
        {
            if (sourceRef)
            {
                _sourceHandle.DangerousRelease();
            }

            if (cancelRef)
            {
                _cancel.Handle.DangerousRelease();
            }

            _epoll.Dispose();
            _cancel.Dispose();
            throw;
        }
    }

    public INotificationSource Source { get; }

    /// <summary>True once <see cref="Cancel"/> was called.</summary>
    public bool IsCancelled { get; private set; }

    /// <summary>
    /// Waits until the source is readable, the waiter is cancelled, or
    /// <paramref name="millisecondsTimeout"/> passes (<see cref="Timeout.Infinite"/> = no limit,
    /// 0 = just look). Does not consume the source: the caller decides when to clear it.
    /// Cancellation wins when both are pending, so a stop request is never starved by a busy
    /// source. One waiting thread at a time.
    /// </summary>
    public SignalWaitResult Wait(int millisecondsTimeout = Timeout.Infinite)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(millisecondsTimeout, Timeout.Infinite);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        epoll_event* events = stackalloc epoll_event[2];
        int n = Epoll.Wait(_epoll.Value, events, 2, millisecondsTimeout, "signal waiter");
        if (n == 0)
        {
            return SignalWaitResult.TimedOut;
        }

        for (int i = 0; i < n; i++)
        {
            if (events[i].data.u64 == CancelToken)
            {
                return SignalWaitResult.Cancelled;
            }
        }

        return SignalWaitResult.Signalled;
    }

    /// <summary>Wakes the current wait, and makes every later one return
    /// <see cref="SignalWaitResult.Cancelled"/> at once (the cancel eventfd is never cleared).
    /// Safe from any thread; a no-op after dispose.</summary>
    public void Cancel()
    {
        if (Volatile.Read(ref _disposed) != 0)
        {
            return;
        }

        IsCancelled = true;
        try
        {
            _cancel.Signal();
        }
        catch (ObjectDisposedException)
        {
            // Disposed concurrently: nobody is left to wake.
        }
    }

    /// <summary>Closes the epoll set and the cancel eventfd and lets go of the source's fd.
    /// Must not race a <see cref="Wait"/> on another thread (cancel and let it return first).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _epoll.Dispose();
        _sourceHandle.DangerousRelease();
        _cancel.Handle.DangerousRelease();
        _cancel.Dispose();
    }
}
