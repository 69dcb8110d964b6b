using System.Runtime.InteropServices;
using PciVirtio.Mmio.EventLoop;
using PciVirtio.Mmio.Signals;
using PciVirtio.VhostCore.VhostUser;

namespace PciVirtio.Mmio.VhostUser;

/// <summary>
/// Runs a device's data path on an <see cref="EpollEventLoop"/>: kick eventfds are watched
/// there, calls are eventfd writes, deferred work is posted to it. Give the same loop to the
/// <see cref="VhostUserBackend"/> of the device, so control messages and the queues share
/// one thread and need no locks. With <see cref="Polling"/> the loop spins over the queues
/// instead of waiting for kicks.
/// </summary>
public sealed class EpollDataPlaneEvents(EpollEventLoop loop, bool polling = false) : IDataPlaneEvents
{
    public EpollEventLoop Loop { get; } = loop;

    /// <summary>Busy-poll the queues (the loop thread then spins on its core).</summary>
    public bool Polling { get; } = polling;

    public IDisposable WatchKick(SafeHandle kick, Action onKick) =>
        Loop.Add(kick, EpollEvents.In, _ =>
        {
            // Consume first: a kick that comes while we serve the ring wakes us again.
            if (EventFd.Consume(kick) != 0)
            {
                onKick();
            }
        });

    public void Signal(SafeHandle call) => EventFd.Signal(call);

    public void Defer(Action action) => Loop.Post(action);

    public IDisposable AddPoller(Func<bool> poll) => Loop.AddPoller(poll);
}
