using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using PciVirtio.VhostCore.Logging;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.VhostUser;

namespace PciVirtio.VhostCore.Net;

/// <summary>
/// What the receive and transmit queues of a virtio-net device share: the split ring over
/// the frontend's memory, the kick it watches, the call it signals, and the counters.
/// </summary>
public abstract class NetQueue
{
    private readonly IDataPlaneEvents _events;
    private readonly Action _onKick;
    private readonly Action _serve;
    private readonly Func<bool> _poll;
    private IDisposable? _kickWatch;
    private IDisposable? _poller;
    private SafeHandle? _call;

    private protected NetQueue(string name, IDataPlaneEvents events, ILogger? logger)
    {
        Name = name;
        _events = events;
        // Every message of this queue (and of its ring) carries Queue=name.
        logger = logger.WithScope("Queue", name);
        Logger = logger;
        Ring = new SplitQueueDevice<RamAccessor>(name, ChainErrorPolicy.BreakQueue, logger);
        _onKick = OnKickCore;
        _serve = OnKick;
        _poll = Poll;
    }

    public string Name { get; }

    public NetQueueStats Stats { get; } = new();

    public bool IsRunning => Ring.IsRunning;

    public SplitQueueDevice<RamAccessor> Ring { get; }

    private protected ILogger? Logger { get; }

    private protected IDataPlaneEvents Events => _events;

    /// <summary>Busy-polling: no kicks are asked for, a poller serves the ring.</summary>
    private protected bool Polling => _events.Polling;

    /// <summary>Features the driver negotiated (ring and net bits).</summary>
    private protected ulong Features { get; private set; }

    /// <summary>Starts over <paramref name="memory"/>; false (queue broken, reason logged) on a bad state.</summary>
    public bool Start(in QueueState state, GuestMemory<RamAccessor> memory, SafeHandle? kick, SafeHandle? call)
    {
        Features = (ulong)state.Features;
        if (!Ring.Start(state, memory))
        {
            return false;
        }

        _call = call;
        OnStarted();

        // A NOFD kick means the frontend expects us to poll; we serve what is there on start
        // and whenever the peer side wakes us.
        _kickWatch = kick is null ? null : _events.WatchKick(kick, _onKick);
        if (_events.Polling)
        {
            Ring.DisableNotifications();
            _poller = _events.AddPoller(_poll);
        }

        _events.Defer(_serve);
        return true;
    }

    /// <summary>Stops and returns the state GET_VRING_BASE reports (buffers popped but not
    /// used are given back, so the driver's view stays exact).</summary>
    public QueueState Stop()
    {
        _kickWatch?.Dispose();
        _kickWatch = null;
        _poller?.Dispose();
        _poller = null;
        ReleaseHeld();
        var state = Ring.Stop();
        _call = null;
        return state;
    }

    public bool UpdateMemory(GuestMemory<RamAccessor> memory)
    {
        // Held chains point into the old mappings: give them back, they are walked again.
        ReleaseHeld();
        return Ring.UpdateMemory(memory);
    }

    /// <summary>Publishes pushed used entries and interrupts the driver if it wants it.</summary>
    private protected void Publish()
    {
        Ring.FlushUsed();
        if (Ring.NeedsInterrupt() && _call is { } call)
        {
            Stats.InterruptsField++;
            _events.Signal(call);
        }
    }

    private void OnKickCore()
    {
        Stats.KicksField++;
        OnKick();
    }

    private protected abstract void OnStarted();

    private protected abstract void OnKick();

    /// <summary>One look at the ring when polling; true when there was work.</summary>
    private protected virtual bool Poll() => false;

    /// <summary>Gives popped but unused chains back to the ring.</summary>
    private protected abstract void ReleaseHeld();
}
