using System.Runtime.InteropServices;

namespace PciVirtio.VhostCore.VhostUser;

/// <summary>
/// The event source a device's data path runs on (an epoll loop in practice): kick
/// eventfds to watch, call eventfds to signal, work to defer. Keeps the devices free of
/// eventfd and epoll. Every callback runs on one thread, the same one that calls the
/// device's <see cref="IVhostUserDevice"/> methods, so queues need no locks.
/// </summary>
public interface IDataPlaneEvents
{
    /// <summary>Calls <paramref name="onKick"/> each time <paramref name="kick"/> (an eventfd)
    /// was signalled, after consuming its counter. Disposing the result stops watching.</summary>
    IDisposable WatchKick(SafeHandle kick, Action onKick);

    /// <summary>Signals <paramref name="call"/> (an eventfd): the driver's interrupt.</summary>
    void Signal(SafeHandle call);

    /// <summary>Runs <paramref name="action"/> on the data-plane thread after the events
    /// already pending: a queue that used up its budget yields this way.</summary>
    void Defer(Action action);

    /// <summary>True when the data plane busy-polls: queues register pollers and leave the
    /// driver's notifications off, as a DPDK lcore does.</summary>
    bool Polling { get; }

    /// <summary>Calls <paramref name="poll"/> on every turn of the polling thread (only when
    /// <see cref="Polling"/>); it returns whether it found work. Dispose to stop.</summary>
    IDisposable AddPoller(Func<bool> poll);
}
