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
/// instead of waiting for kicks, and deferred work runs on the next turn without a system
/// call (a post signals an eventfd, which costs as much as a burst of frames).
/// </summary>
public sealed class EpollDataPlaneEvents : IDataPlaneEvents, IDisposable
{
    private readonly Queue<Action> _deferred = new();
    private readonly IDisposable? _deferredPoller;

    public EpollDataPlaneEvents(EpollEventLoop loop, bool polling = false)
    {
        Loop = loop;
        Polling = polling;
        if (polling)
        {
            _deferredPoller = loop.AddPoller(RunDeferred);
        }
    }

    public EpollEventLoop Loop { get; }

    /// <summary>Busy-poll the queues (the loop thread then spins on its core).</summary>
    public bool Polling { get; }

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

    /// <summary>Runs <paramref name="action"/> later on the loop thread. Call it on the loop
    /// thread (devices do); when polling it is queued for the next turn.</summary>
    public void Defer(Action action)
    {
        if (Polling && Loop.IsOnLoopThread)
        {
            _deferred.Enqueue(action);
        }
        else
        {
            Loop.Post(action);
        }
    }

    public IDisposable AddPoller(Func<bool> poll) => Loop.AddPoller(poll);

    public void Dispose() => _deferredPoller?.Dispose();

    /// <summary>Runs what was deferred before this turn (work deferred meanwhile waits a turn).</summary>
    private bool RunDeferred()
    {
        int n = _deferred.Count;
        for (int i = 0; i < n; i++)
        {
            _deferred.Dequeue()();
        }

        return n > 0;
    }
}
