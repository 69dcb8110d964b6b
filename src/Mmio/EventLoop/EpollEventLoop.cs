using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Signals;
using Tmds.Linux;

namespace PciVirtio.Mmio.EventLoop;

/// <summary>
/// One thread waiting on many fds — kick eventfds, vhost-user sockets, TAP fds, VFIO interrupt
/// eventfds — through one epoll set, instead of a thread per queue. Handlers run on the loop
/// thread, one at a time; other threads hand it work with <see cref="Post"/>.
/// </summary>
/// <remarks>
/// <para><b>Dispatch</b> allocates nothing: the epoll data of each fd is a token (slot index in
/// the low half, a generation in the high half) into a table of registrations, not a GCHandle.
/// A registration removed while events for it sit in the current batch is skipped: it is
/// marked removed at once, and the generation keeps a stale event from reaching a new
/// registration that re-used the slot.</para>
/// <para><b>Removal from another thread</b> waits until the handler is not running, so when
/// <see cref="EventRegistration.Dispose"/> returns the handler can be neither running nor
/// called again and the fd may be closed. A handler must therefore not block waiting for a
/// thread that is removing its registration.</para>
/// <para><b>Failures</b>: an exception from a handler or a posted action is logged (rate-limited
/// per registration) and the loop goes on; only epoll_wait itself failing stops the loop
/// (<see cref="Fault"/>). System-call errors are <see cref="NativeCallException"/>s naming the
/// call and errno.</para>
/// <para><b>Lifetime</b>: single use. <see cref="Run"/> on the calling thread or
/// <see cref="Start"/> on a dedicated thread; <see cref="Stop()"/> (from any thread, or from a
/// handler) wakes the loop through its internal eventfd, after which the loop runs the actions
/// already posted, removes every registration, and closes its epoll fd and eventfd; from
/// another thread Stop also waits for that and joins the thread.</para>
/// </remarks>
public sealed unsafe class EpollEventLoop : IDisposable
{
    public const int DefaultMaxEventsPerWait = 64;

    private const ulong WakeToken = ulong.MaxValue;
    private const int StateCreated = 0;
    private const int StateRunning = 1;
    private const int StateClosing = 2;
    private const int StateClosed = 3;

    private readonly object _gate = new();
    private readonly ILogger _logger;
    private readonly FileDescriptor _epoll;
    private readonly int _epfd;
    private readonly EventFd _wake;
    private readonly ConcurrentQueue<Action> _posted = new();
    private readonly int _maxEvents;
    private const int BusyTurnsPerWait = 16;

    /// <summary>Failures in a row after which a handler's registration is removed.</summary>
    public const int MaxConsecutiveFailures = 64;
    private Func<bool>[] _pollers = [];
    private EventRegistration?[] _slots = new EventRegistration?[16];
    private int[] _freeSlots = new int[16];
    private int _freeCount;
    private int _slotHigh;
    private int _registrations;
    private uint _generation;
    private EventRegistration? _dispatching;
    private int _state;
    private volatile bool _stopRequested;
    private volatile int _loopThreadId;
    private bool _postedHere; // loop thread only: an action was posted on the loop thread, unsignalled
    private Thread? _thread;
    private long _waits;
    private long _events;
    private long _handlerFailures;

    /// <param name="name">Names the loop in logs, errors and (by default) its thread.</param>
    /// <param name="logger">Where handler failures go; none = dropped.</param>
    /// <param name="maxEventsPerWait">Events taken per epoll_wait (the batch size).</param>
    public EpollEventLoop(string name = "event-loop", ILogger? logger = null, int maxEventsPerWait = DefaultMaxEventsPerWait)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxEventsPerWait, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(maxEventsPerWait, 4096);
        Name = name;
        _logger = logger ?? NullLogger.Instance;
        _maxEvents = maxEventsPerWait;
        _epoll = Epoll.Create(name);
        _epfd = _epoll.Value;
        try
        {
            _wake = new EventFd();
            Epoll.Control(_epfd, Epoll.CtlAdd, _wake.Handle.Value, EpollEvents.In, WakeToken, name);
        }
        catch
        {
            _wake?.Dispose();
            _epoll.Dispose();
            throw;
        }
    }

    public string Name { get; }

    /// <summary>True while the loop runs (from <see cref="Run"/>/<see cref="Start"/> until closed).</summary>
    public bool IsRunning => Volatile.Read(ref _state) == StateRunning;

    /// <summary>True once the loop has released its fds.</summary>
    public bool IsClosed => Volatile.Read(ref _state) == StateClosed;

    /// <summary>True on the thread running the loop (inside handlers and posted actions).</summary>
    public bool IsOnLoopThread => Environment.CurrentManagedThreadId == _loopThreadId;

    /// <summary>Registrations currently active.</summary>
    public int Registrations => Volatile.Read(ref _registrations);

    /// <summary>epoll_wait calls that returned.</summary>
    public long Waits => Volatile.Read(ref _waits);

    /// <summary>Handler invocations.</summary>
    public long EventsDispatched => Volatile.Read(ref _events);

    /// <summary>Handler and posted-action exceptions caught and logged.</summary>
    public long HandlerFailures => Volatile.Read(ref _handlerFailures);

    /// <summary>What stopped the loop, if it did not stop on request (an epoll_wait failure).</summary>
    public Exception? Fault { get; private set; }

    /// <summary>
    /// Watches <paramref name="fd"/> for <paramref name="events"/> (level-triggered unless
    /// <see cref="EpollEvents.EdgeTriggered"/>); <paramref name="handler"/> runs on the loop
    /// thread with the events that occurred. Callable from any thread, before or while the loop
    /// runs. Dispose the returned registration to remove it.
    /// </summary>
    /// <exception cref="NativeCallException">epoll_ctl refused the fd, e.g. EEXIST (already
    /// in this loop) or EPERM (a regular file, which epoll cannot watch).</exception>
    /// <exception cref="ObjectDisposedException">The loop is stopping or stopped, or
    /// <paramref name="fd"/> is closed.</exception>
    public EventRegistration Add(SafeHandle fd, EpollEvents events, Action<EpollEvents> handler)
    {
        ArgumentNullException.ThrowIfNull(fd);
        ArgumentNullException.ThrowIfNull(handler);
        bool added = false;
        try
        {
            // Held while registered: the fd number cannot be closed and re-used under epoll.
            fd.DangerousAddRef(ref added);
            int raw = (int)fd.DangerousGetHandle();
            lock (_gate)
            {
                ThrowIfStopping();
                int slot = AllocateSlot();
                ulong token = ((ulong)++_generation << 32) | (uint)slot;
                var registration = new EventRegistration(this, fd, raw, events, handler, slot, token);

                // In the table before the kernel can report it, or an edge-triggered event
                // arriving at once would find no registration and be lost.
                Volatile.Write(ref _slots[slot], registration);
                try
                {
                    Epoll.Control(_epfd, Epoll.CtlAdd, raw, events, token, $"fd {raw} in {Name}");
                }
                catch
                {
                    _slots[slot] = null;
                    FreeSlot(slot);
                    throw;
                }

                _registrations++;
                return registration;
            }
        }
        catch
        {
            if (added)
            {
                fd.DangerousRelease();
            }

            throw;
        }
    }

    /// <summary>
    /// Watches <paramref name="source"/> (an eventfd: a kick, a VFIO MSI-X vector, hw-sim's
    /// interrupt) for signals: on each wake-up the loop consumes it and calls
    /// <paramref name="onSignal"/> with the number of signals coalesced (never 0).
    /// </summary>
    public EventRegistration Add(INotificationSource source, Action<ulong> onSignal)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(onSignal);
        return Add(source.Handle, EpollEvents.In, _ =>
        {
            ulong count = source.Consume();
            if (count != 0)
            {
                onSignal(count);
            }
        });
    }

    /// <summary>Changes what <paramref name="registration"/> waits for (EPOLL_CTL_MOD).</summary>
    public void Modify(EventRegistration registration, EpollEvents events)
    {
        ArgumentNullException.ThrowIfNull(registration);
        if (!ReferenceEquals(registration.Loop, this))
        {
            throw new ArgumentException("the registration belongs to another loop", nameof(registration));
        }

        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(registration.Removed, registration);
            Epoll.Control(_epfd, Epoll.CtlMod, registration.Fd, events, registration.Token, $"fd {registration.Fd} in {Name}");
            registration.Events = events;
        }
    }

    /// <summary>
    /// Runs <paramref name="action"/> on the loop thread, after the handlers of the current
    /// batch, in posting order. Actions accepted before <see cref="Stop()"/> still run (on the
    /// loop thread) before the loop closes, unless the loop never ran.
    /// </summary>
    /// <exception cref="ObjectDisposedException">Stop was already requested.</exception>
    public void Post(Action action)
    {
        ArgumentNullException.ThrowIfNull(action);
        lock (_gate)
        {
            ThrowIfStopping();
            _posted.Enqueue(action);
            if (IsOnLoopThread)
            {
                // The loop looks at its queue before its next wait: no eventfd write and read
                // (two system calls, microseconds each on a paravirtualised guest) for an
                // action that reschedules itself, as a sender's next burst does.
                _postedHere = true;
            }
            else
            {
                _wake.Signal();
            }
        }
    }

    /// <summary>
    /// Runs <paramref name="action"/> on the loop thread and waits for its result (at most
    /// <paramref name="timeout"/>, default 10 s); directly when called on the loop thread or
    /// while the loop is not running. For control-plane reads and changes, never the data path.
    /// </summary>
    /// <exception cref="TimeoutException">The loop did not run it in time.</exception>
    public T Invoke<T>(Func<T> action, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(action);
        if (!IsRunning || IsOnLoopThread)
        {
            return action();
        }

        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        Post(() =>
        {
            try
            {
                done.SetResult(action());
            }
            catch (Exception e)
            {
                done.SetException(e);
            }
        });
        return done.Task.WaitAsync(timeout ?? TimeSpan.FromSeconds(10)).GetAwaiter().GetResult();
    }

    /// <summary>
    /// Adds a poller: while any is registered the loop busy-polls, calling every poller once
    /// per turn and never blocking in epoll_wait (the thread spins on its core, as a DPDK
    /// lcore does; fd events and posted work are still served each turn). A poller returns
    /// whether it found work. Dispose the result to remove it.
    /// </summary>
    public IDisposable AddPoller(Func<bool> poller)
    {
        ArgumentNullException.ThrowIfNull(poller);
        lock (_gate)
        {
            ThrowIfStopping();
            _pollers = [.. _pollers, poller];
        }

        _wake.Signal(); // a loop blocked in epoll_wait starts polling now
        return new PollerRegistration(this, poller);
    }

    /// <summary>Runs the loop on the calling thread until <see cref="Stop()"/>; rethrows what
    /// stopped it otherwise.</summary>
    /// <exception cref="InvalidOperationException">The loop already runs.</exception>
    public void Run()
    {
        lock (_gate)
        {
            EnterRunning();
        }

        RunLoop(rethrow: true);
    }

    /// <summary>Runs the loop on a new background thread named <paramref name="threadName"/>
    /// (default: <see cref="Name"/>).</summary>
    public void Start(string? threadName = null)
    {
        lock (_gate)
        {
            EnterRunning();

            // Started under the lock, so a concurrent Stop always finds a started thread to join.
            _thread = new Thread(() => RunLoop(rethrow: false)) { IsBackground = true, Name = threadName ?? Name };
            _thread.Start();
        }
    }

    /// <summary>Stops the loop and, unless called on the loop thread, waits until it has closed
    /// and its thread has ended.</summary>
    public void Stop() => Stop(Timeout.Infinite);

    /// <summary>
    /// Requests the stop (the loop wakes through its eventfd and ends after the running
    /// handler), then — from another thread — waits up to <paramref name="millisecondsTimeout"/>
    /// for the loop to close and its thread to end. A loop that never ran is closed right here.
    /// Returns true once the loop is closed and joined; false when the wait timed out, or when
    /// called on the loop thread (a handler), where it only requests: the loop closes after the
    /// handler returns.
    /// </summary>
    public bool Stop(int millisecondsTimeout)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(millisecondsTimeout, Timeout.Infinite);
        bool closeHere = false;
        Thread? thread;
        lock (_gate)
        {
            _stopRequested = true;
            if (_state == StateCreated)
            {
                _state = StateClosing;
                closeHere = true;
            }
            else if (_state < StateClosed)
            {
                _wake.Signal();
            }

            thread = _thread;
        }

        if (closeHere)
        {
            FinishClose(runPosted: false);
            return true;
        }

        if (IsOnLoopThread)
        {
            return false;
        }

        long deadline = millisecondsTimeout == Timeout.Infinite ? long.MaxValue : Environment.TickCount64 + millisecondsTimeout;
        lock (_gate)
        {
            while (_state != StateClosed)
            {
                if (!Monitor.Wait(_gate, Remaining(deadline)))
                {
                    return false;
                }
            }
        }

        return thread is null || thread.Join(Remaining(deadline));
    }

    /// <summary>Same as <see cref="Stop()"/>.</summary>
    public void Dispose() => Stop();

    internal void Remove(EventRegistration registration)
    {
        lock (_gate)
        {
            if (registration.Removed)
            {
                return;
            }

            registration.Removed = true;
            if (_state != StateClosed)
            {
                int errno = Epoll.TryDelete(_epfd, registration.Fd);
                if (errno != 0)
                {
                    EventLoopLog.RemoveFailed(_logger, Name, registration.Fd, Errno.Name(errno));
                }
            }

            _slots[registration.Slot] = null;
            FreeSlot(registration.Slot);
            _registrations--;
        }

        // Dekker handshake with Dispatch: we store Removed then load _dispatching; it stores
        // _dispatching then loads Removed; a full fence on each side means at least one sees
        // the other. Either it skips the handler, or we wait here until the handler returns.
        Interlocked.MemoryBarrier();
        if (!IsOnLoopThread)
        {
            var spin = default(SpinWait);
            while (ReferenceEquals(Volatile.Read(ref _dispatching), registration))
            {
                spin.SpinOnce();
            }
        }

        registration.Handle.DangerousRelease();
    }

    private void RemovePoller(Func<bool> poller)
    {
        lock (_gate)
        {
            int i = Array.IndexOf(_pollers, poller);
            if (i >= 0)
            {
                _pollers = [.. _pollers[..i], .. _pollers[(i + 1)..]];
            }
        }
    }

    private static int Remaining(long deadline) =>
        deadline == long.MaxValue ? Timeout.Infinite : (int)Math.Clamp(deadline - Environment.TickCount64, 0, int.MaxValue);

    private void EnterRunning()
    {
        ObjectDisposedException.ThrowIf(_state >= StateClosing, this);
        if (_state == StateRunning)
        {
            throw new InvalidOperationException($"event loop {Name} is already running");
        }

        _state = StateRunning;
    }

    private void ThrowIfStopping()
    {
        if (_stopRequested || _state >= StateClosing)
        {
            throw new ObjectDisposedException(nameof(EpollEventLoop), $"event loop {Name} is stopping or stopped");
        }
    }

    private void RunLoop(bool rethrow)
    {
        _loopThreadId = Environment.CurrentManagedThreadId;
        EventLoopLog.Started(_logger, Name, _loopThreadId);
        Exception? fault = null;
        try
        {
            epoll_event* events = stackalloc epoll_event[_maxEvents];
            int busyTurns = 0;
            while (!_stopRequested)
            {
                if (_postedHere)
                {
                    _postedHere = false;
                    RunPosted(_posted.Count);
                }

                var pollers = Volatile.Read(ref _pollers);
                if (pollers.Length > 0)
                {
                    foreach (var poll in pollers)
                    {
                        poll();
                    }

                    // Look at the fds only every few turns, busy or idle: an epoll_wait costs a
                    // system call, as much as a burst of frames, and an idle poller that paid it
                    // every turn would answer a ring refilled in small steps that much later.
                    if (++busyTurns < BusyTurnsPerWait)
                    {
                        continue;
                    }

                    busyTurns = 0;
                }

                int n = Epoll.Wait(_epfd, events, _maxEvents, pollers.Length == 0 && !_postedHere ? Timeout.Infinite : 0, Name);
                Volatile.Write(ref _waits, _waits + 1);
                bool wake = false;
                for (int i = 0; i < n && !_stopRequested; i++)
                {
                    ulong token = events[i].data.u64;
                    if (token == WakeToken)
                    {
                        wake = true;
                        continue;
                    }

                    Dispatch(token, (EpollEvents)(uint)events[i].events);
                }

                if (wake && !_stopRequested)
                {
                    // Consume first: a Post racing with the drain signals again and is seen
                    // by the next epoll_wait.
                    _wake.Consume();
                    RunPosted(_posted.Count);
                }
            }
        }
        catch (Exception ex)
        {
            fault = ex;
            Fault = ex;
            EventLoopLog.LoopFailed(_logger, ex, Name);
        }
        finally
        {
            lock (_gate)
            {
                _stopRequested = true;
                _state = StateClosing;
            }

            FinishClose(runPosted: true);
        }

        if (fault is not null && rethrow)
        {
            ExceptionDispatchInfo.Throw(fault);
        }
    }

    private void Dispatch(ulong token, EpollEvents events)
    {
        var slots = Volatile.Read(ref _slots);
        uint slot = (uint)token;
        if (slot >= (uint)slots.Length)
        {
            return;
        }

        var registration = Volatile.Read(ref slots[slot]);
        if (registration is null || registration.Token != token)
        {
            // Removed (and perhaps the slot re-used) after epoll_wait fetched this event.
            return;
        }

        Interlocked.Exchange(ref _dispatching, registration);
        try
        {
            if (!registration.Removed)
            {
                Volatile.Write(ref _events, _events + 1);
                registration.Handler(events);
                registration.Failures = 0;
            }
        }
        catch (Exception ex)
        {
            Volatile.Write(ref _handlerFailures, _handlerFailures + 1);
            long failures = ++registration.Failures;
            if ((failures & (failures - 1)) == 0)
            {
                // 1st, 2nd, 4th, 8th...: a level-triggered fd whose handler keeps failing
                // must not flood the log.
                EventLoopLog.HandlerFailed(_logger, ex, Name, registration.Fd, events, failures);
            }

            if (failures >= MaxConsecutiveFailures)
            {
                // A level-triggered fd whose handler fails without consuming the event fires
                // on every wait: left in, it would spin this thread and starve every other
                // fd and device on it. Its owner still owns (and closes) the fd.
                EventLoopLog.HandlerRemoved(_logger, Name, registration.Fd, failures);
                Remove(registration);
            }
        }
        finally
        {
            Volatile.Write(ref _dispatching, null);
        }
    }

    private void RunPosted(int count)
    {
        while (count-- > 0 && _posted.TryDequeue(out var action))
        {
            try
            {
                action();
            }
            catch (Exception ex)
            {
                Volatile.Write(ref _handlerFailures, _handlerFailures + 1);
                EventLoopLog.PostedActionFailed(_logger, ex, Name);
            }
        }
    }

    /// <summary>Called once, with the state already Closing (so nothing new is accepted).</summary>
    private void FinishClose(bool runPosted)
    {
        if (runPosted)
        {
            RunPosted(int.MaxValue);
        }
        else
        {
            _posted.Clear();
        }

        int removed = 0;
        lock (_gate)
        {
            for (int i = 0; i < _slotHigh; i++)
            {
                var registration = _slots[i];
                if (registration is not null && !registration.Removed)
                {
                    // Closing the epoll fd drops its whole interest list; no EPOLL_CTL_DEL needed.
                    registration.Removed = true;
                    registration.Handle.DangerousRelease();
                    removed++;
                }

                _slots[i] = null;
            }

            _registrations = 0;
            _wake.Dispose();
            _epoll.Dispose();
            _state = StateClosed;
            Monitor.PulseAll(_gate);
        }

        EventLoopLog.Stopped(_logger, Name, Waits, EventsDispatched, removed);
    }

    private int AllocateSlot()
    {
        if (_freeCount > 0)
        {
            return _freeSlots[--_freeCount];
        }

        if (_slotHigh == _slots.Length)
        {
            var bigger = new EventRegistration?[_slots.Length * 2];
            Array.Copy(_slots, bigger, _slots.Length);
            Array.Resize(ref _freeSlots, bigger.Length);
            Volatile.Write(ref _slots, bigger);
        }

        return _slotHigh++;
    }

    private void FreeSlot(int slot) => _freeSlots[_freeCount++] = slot;

    private sealed class PollerRegistration(EpollEventLoop loop, Func<bool> poller) : IDisposable
    {
        public void Dispose() => loop.RemovePoller(poller);
    }
}
