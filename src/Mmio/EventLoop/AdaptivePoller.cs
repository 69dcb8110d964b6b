using System.Runtime.ExceptionServices;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using PciVirtio.Mmio.Signals;

namespace PciVirtio.Mmio.EventLoop;

/// <summary>
/// NAPI-style busy polling of one <see cref="IPollTarget"/> with an adaptive fall-back to
/// notifications: it polls while work comes, and only after
/// <see cref="AdaptivePollerOptions.SpinPolls"/> empty polls in a row re-enables notifications
/// and sleeps on the target's <see cref="INotificationSource"/> (its kick eventfd, a VFIO MSI-X
/// eventfd...). Under load no signal is ever sent or taken; when idle no CPU is burnt.
/// </summary>
/// <remarks>
/// <para>One pass: <c>Poll(budget)</c>. Work → poll again. Empty → count it; after the spin
/// budget: <c>EnableNotifications()</c>, which re-checks the ring after a full barrier. If work
/// arrived between the last empty poll and that call, the other side may have skipped the
/// signal (it still saw notifications off), so the poller disables notifications again and
/// keeps polling instead of sleeping: no lost wake-up. Otherwise it sleeps until the source is
/// signalled or a stop is requested, consumes the signal, disables notifications and polls.</para>
/// <para>The loop allocates nothing per pass. Counters are written by the polling thread only
/// and may be read from any thread.</para>
/// <para>Single use: <see cref="Run"/> on the calling thread or <see cref="Start"/> on a
/// dedicated thread, once; <see cref="Stop"/> from any thread (a stop is seen within one pass,
/// or at once by a sleeping poller). On a normal exit notifications are left enabled, so
/// whoever serves the target next is signalled for new work.</para>
/// </remarks>
public sealed class AdaptivePoller : IDisposable
{
    private const int StateCreated = 0;
    private const int StateRunning = 1;
    private const int StateDone = 2;

    private readonly object _gate = new();
    private readonly IPollTarget _target;
    private readonly INotificationSource _source;
    private readonly SignalWaiter _waiter;
    private readonly ILogger _logger;
    private readonly int _budget;
    private readonly int _spinPolls;
    private readonly int _pause;
    private readonly int _maxSleep;
    private volatile bool _stopRequested;
    private volatile int _threadId;
    private int _state;
    private bool _disposed;
    private bool _disposeWhenDone;
    private Thread? _thread;
    private long _polls;
    private long _emptyPolls;
    private long _items;
    private long _budgetExhausted;
    private long _rechecks;
    private long _sleeps;
    private long _wakeups;
    private long _timeouts;

    /// <param name="target">What to poll.</param>
    /// <param name="source">What signals the target has work while notifications are on;
    /// only read here (waited on and consumed), never closed.</param>
    /// <param name="options">Budget and spin tuning; defaults when null.</param>
    /// <param name="name">Names the poller in logs and (by default) its thread.</param>
    /// <param name="logger">Where start, stop and failure go.</param>
    public AdaptivePoller(IPollTarget target, INotificationSource source, AdaptivePollerOptions? options = null, string name = "poller",
        ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(source);
        options ??= new AdaptivePollerOptions();
        options.Validate();
        _target = target;
        _source = source;
        _budget = options.Budget;
        _spinPolls = options.SpinPolls;
        _pause = options.PauseIterations;
        _maxSleep = options.MaxSleepMilliseconds;
        _logger = logger ?? NullLogger.Instance;
        Name = name;
        _waiter = new SignalWaiter(source);
    }

    public string Name { get; }

    /// <summary>Calls to <see cref="IPollTarget.Poll"/>.</summary>
    public long Polls => Volatile.Read(ref _polls);

    /// <summary>Polls that found nothing.</summary>
    public long EmptyPolls => Volatile.Read(ref _emptyPolls);

    /// <summary>Items the target reported processed.</summary>
    public long ItemsProcessed => Volatile.Read(ref _items);

    /// <summary>Polls that used the whole budget (the target likely had more).</summary>
    public long BudgetExhausted => Volatile.Read(ref _budgetExhausted);

    /// <summary>Times <see cref="IPollTarget.EnableNotifications"/> found work that arrived
    /// meanwhile, so the poller went on polling instead of sleeping (lost wake-ups avoided).</summary>
    public long Rechecks => Volatile.Read(ref _rechecks);

    /// <summary>Times the poller went to sleep on the source.</summary>
    public long Sleeps => Volatile.Read(ref _sleeps);

    /// <summary>Sleeps ended by a signal from the source.</summary>
    public long Wakeups => Volatile.Read(ref _wakeups);

    /// <summary>Sleeps ended by <see cref="AdaptivePollerOptions.MaxSleepMilliseconds"/>.</summary>
    public long Timeouts => Volatile.Read(ref _timeouts);

    /// <summary>True while <see cref="Run"/> executes (on whichever thread).</summary>
    public bool IsRunning => Volatile.Read(ref _state) == StateRunning;

    /// <summary>What ended a poller started with <see cref="Start"/>, when the target threw.</summary>
    public Exception? Fault { get; private set; }

    /// <summary>Polls on the calling thread until <see cref="Stop"/>; an exception from the
    /// target ends the loop and is rethrown here.</summary>
    /// <exception cref="InvalidOperationException">The poller already ran or runs.</exception>
    public void Run()
    {
        lock (_gate)
        {
            Enter();
        }

        RunLoop(rethrow: true);
    }

    /// <summary>Polls on a new background thread named <paramref name="threadName"/>
    /// (default: <see cref="Name"/>).</summary>
    public void Start(string? threadName = null)
    {
        lock (_gate)
        {
            Enter();
            _thread = new Thread(() => RunLoop(rethrow: false)) { IsBackground = true, Name = threadName ?? Name };
            _thread.Start();
        }
    }

    /// <summary>Asks the loop to end (within one pass, or at once when asleep); returns
    /// immediately. Safe from any thread, the polling one included.</summary>
    public void RequestStop()
    {
        _stopRequested = true;
        _waiter.Cancel();
    }

    /// <summary>
    /// <see cref="RequestStop"/>, then — unless called on the polling thread — waits up to
    /// <paramref name="millisecondsTimeout"/> for the loop to end and its thread to be joined.
    /// Returns false when that wait timed out (a target stuck inside <c>Poll</c>).
    /// </summary>
    public bool Stop(int millisecondsTimeout = Timeout.Infinite)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(millisecondsTimeout, Timeout.Infinite);
        RequestStop();
        if (Environment.CurrentManagedThreadId == _threadId)
        {
            return false;
        }

        long deadline = millisecondsTimeout == Timeout.Infinite ? long.MaxValue : Environment.TickCount64 + millisecondsTimeout;
        Thread? thread;
        lock (_gate)
        {
            while (_state == StateRunning)
            {
                if (!Monitor.Wait(_gate, Remaining(deadline)))
                {
                    return false;
                }
            }

            thread = _thread;
        }

        return thread is null || thread == Thread.CurrentThread || thread.Join(Remaining(deadline));
    }

    /// <summary>Stops (waiting for the loop unless on its thread) and closes the waiter's fds.</summary>
    public void Dispose()
    {
        RequestStop();
        bool onPollingThread = Environment.CurrentManagedThreadId == _threadId;
        if (!onPollingThread)
        {
            Stop();
        }

        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            if (_state == StateRunning)
            {
                // Called from the target inside Run: the loop closes the waiter on its way out.
                _disposeWhenDone = true;
                return;
            }

            _disposed = true;
            _state = StateDone;
        }

        _waiter.Dispose();
    }

    private static int Remaining(long deadline) =>
        deadline == long.MaxValue ? Timeout.Infinite : (int)Math.Clamp(deadline - Environment.TickCount64, 0, int.MaxValue);

    private void Enter()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_state != StateCreated)
        {
            throw new InvalidOperationException($"poller {Name} already ran; create a new one");
        }

        _state = StateRunning;
    }

    private void RunLoop(bool rethrow)
    {
        _threadId = Environment.CurrentManagedThreadId;
        EventLoopLog.PollerStarted(_logger, Name, _budget, _spinPolls);
        Exception? fault = null;
        try
        {
            Loop();

            // Leave the other side signalling, so nothing published from now on goes unnoticed
            // by whoever serves the target next (it polls once at start for what is there).
            _target.EnableNotifications();
        }
        catch (Exception ex)
        {
            fault = ex;
            Fault = ex;
            EventLoopLog.PollerFailed(_logger, ex, Name);
        }
        finally
        {
            bool dispose;
            lock (_gate)
            {
                _state = StateDone;
                dispose = _disposeWhenDone && !_disposed;
                _disposed |= dispose;
                Monitor.PulseAll(_gate);
            }

            if (dispose)
            {
                _waiter.Dispose();
            }

            EventLoopLog.PollerStopped(_logger, Name, Polls, EmptyPolls, ItemsProcessed, Sleeps, Wakeups, Rechecks);
        }

        if (fault is not null && rethrow)
        {
            ExceptionDispatchInfo.Throw(fault);
        }
    }

    private void Loop()
    {
        var target = _target;
        int budget = _budget;
        int empty = 0;

        // Start in polling mode: work already queued is served without waiting for a signal.
        target.DisableNotifications();
        while (!_stopRequested)
        {
            int n = target.Poll(budget);
            Volatile.Write(ref _polls, _polls + 1);
            if (n > 0)
            {
                Volatile.Write(ref _items, _items + n);
                if (n >= budget)
                {
                    Volatile.Write(ref _budgetExhausted, _budgetExhausted + 1);
                }

                empty = 0;
                continue;
            }

            Volatile.Write(ref _emptyPolls, _emptyPolls + 1);
            if (++empty < _spinPolls)
            {
                if (_pause > 0)
                {
                    Thread.SpinWait(_pause);
                }

                continue;
            }

            empty = 0;
            if (target.EnableNotifications())
            {
                // Work slipped in before the other side could see notifications on; it may
                // never signal for it. Serve it now.
                Volatile.Write(ref _rechecks, _rechecks + 1);
                target.DisableNotifications();
                continue;
            }

            Volatile.Write(ref _sleeps, _sleeps + 1);
            var outcome = _waiter.Wait(_maxSleep);
            if (outcome == SignalWaitResult.Cancelled)
            {
                break;
            }

            if (outcome == SignalWaitResult.Signalled)
            {
                _source.Consume();
                Volatile.Write(ref _wakeups, _wakeups + 1);
            }
            else
            {
                Volatile.Write(ref _timeouts, _timeouts + 1);
            }

            target.DisableNotifications();
        }
    }
}
