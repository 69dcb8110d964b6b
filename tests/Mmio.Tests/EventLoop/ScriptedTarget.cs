using System.Collections.Concurrent;
using PciVirtio.Mmio.EventLoop;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Signals;

namespace PciVirtio.Mmio.Tests.EventLoop;

/// <summary>
/// A fake queue: a counter of pending items, a notifications-on flag, and a "driver" side
/// (<see cref="AddWork"/>) that publishes work and then signals the kick only when it sees
/// notifications on — the same store→barrier→load handshake as a virtqueue, so a poller that
/// ignores the re-check really does lose the wake-up.
/// </summary>
internal sealed class ScriptedTarget : IPollTarget
{
    private long _pending;
    private int _notificationsOn;
    private long _processed;
    private int _maxBudget;

    public EventFd? Kick { get; init; }

    /// <summary>Optional call trace: "D", "P{n}", "E{0|1}".</summary>
    public ConcurrentQueue<string>? Trace { get; init; }

    /// <summary>Runs inside <see cref="EnableNotifications"/> before notifications turn on:
    /// work added here arrives in the window between the last empty poll and the re-check.</summary>
    public Action? BeforeEnable { get; set; }

    /// <summary>Runs inside <see cref="Poll"/> (on the polling thread) with the pass number.</summary>
    public Action<long>? OnPoll { get; set; }

    public long Processed => Volatile.Read(ref _processed);

    public int MaxBudgetSeen => _maxBudget;

    public bool NotificationsOn => Volatile.Read(ref _notificationsOn) == 1;

    public long Kicks { get; private set; }

    public long Passes { get; private set; }

    /// <summary>Publishes <paramref name="n"/> items and kicks if notifications are on.
    /// Returns whether it kicked.</summary>
    public bool AddWork(long n)
    {
        Interlocked.Add(ref _pending, n);
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref _notificationsOn) == 1 && Kick is not null)
        {
            Kicks++;
            Kick.Signal();
            return true;
        }

        return false;
    }

    public int Poll(int budget)
    {
        _maxBudget = Math.Max(_maxBudget, budget);
        OnPoll?.Invoke(++Passes);
        long pending = Volatile.Read(ref _pending);
        int take = (int)Math.Min(pending, budget);
        if (take > 0)
        {
            Interlocked.Add(ref _pending, -take);
            Interlocked.Add(ref _processed, take);
        }

        Trace?.Enqueue($"P{take}");
        return take;
    }

    public bool EnableNotifications()
    {
        BeforeEnable?.Invoke();
        Volatile.Write(ref _notificationsOn, 1);
        Interlocked.MemoryBarrier();
        bool more = Volatile.Read(ref _pending) > 0;
        Trace?.Enqueue(more ? "E1" : "E0");
        return more;
    }

    public void DisableNotifications()
    {
        Volatile.Write(ref _notificationsOn, 0);
        Trace?.Enqueue("D");
    }
}

/// <summary>An eventfd source that records each consume in a trace ("C{n}").</summary>
internal sealed class RecordingSource(EventFd inner, ConcurrentQueue<string> trace) : INotificationSource
{
    public FileDescriptor Handle => inner.Handle;

    public ulong Consume()
    {
        ulong n = inner.Consume();
        trace.Enqueue($"C{n}");
        return n;
    }
}
