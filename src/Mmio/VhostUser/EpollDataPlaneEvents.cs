using System.Runtime.InteropServices;
using PciVirtio.Mmio.EventLoop;
using PciVirtio.Mmio.Signals;
using PciVirtio.VhostCore.VhostUser;

namespace PciVirtio.Mmio.VhostUser;

/// <summary>
/// Runs a device's data path on an <see cref="EpollEventLoop"/>: kick eventfds are watched
/// there, calls are eventfd writes, deferred work is posted to it. Give the same loop to the
/// <see cref="VhostUserBackend"/> of the device, so control messages and the queues share
/// one thread and need no locks.
/// </summary>
public sealed class EpollDataPlaneEvents(EpollEventLoop loop) : IDataPlaneEvents
{
    public EpollEventLoop Loop { get; } = loop;

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
}
