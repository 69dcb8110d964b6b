using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using PciVirtio.Mmio.EventLoop;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Signals;
using Tmds.Linux;

namespace PciVirtio.Mmio.Tests.EventLoop;

public class EpollEventLoopTests
{
    [Fact]
    public unsafe void Epoll_event_has_the_kernel_layout()
    {
        epoll_event e = default;
        long dataOffset = (byte*)&e.data - (byte*)&e;
        if (RuntimeInformation.ProcessArchitecture == Architecture.X64)
        {
            // x86-64 declares struct epoll_event __attribute__((packed)).
            Assert.Equal(12, sizeof(epoll_event));
            Assert.Equal(4, dataOffset);
        }
        else
        {
            Assert.Equal(16, sizeof(epoll_event));
            Assert.Equal(8, dataOffset);
        }
    }

    [Fact]
    public void Event_flags_have_the_kernel_values()
    {
        Assert.Equal(0x1u, (uint)EpollEvents.In);
        Assert.Equal(0x2u, (uint)EpollEvents.Priority);
        Assert.Equal(0x4u, (uint)EpollEvents.Out);
        Assert.Equal(0x8u, (uint)EpollEvents.Error);
        Assert.Equal(0x10u, (uint)EpollEvents.HangUp);
        Assert.Equal(0x2000u, (uint)EpollEvents.ReadHangUp);
        Assert.Equal(1u << 30, (uint)EpollEvents.OneShot);
        Assert.Equal(1u << 31, (uint)EpollEvents.EdgeTriggered);
        Assert.Equal((int)EpollEvents.In, LibC.EPOLLIN);
        Assert.Equal((int)EpollEvents.ReadHangUp, LibC.EPOLLRDHUP);
        Assert.Equal(unchecked((int)EpollEvents.EdgeTriggered), LibC.EPOLLET);
    }

    [Fact]
    public void A_signalled_eventfd_wakes_the_loop_and_only_its_handler_runs_on_the_loop_thread()
    {
        using var loop = new EpollEventLoop("t-signal");
        using var a = new EventFd();
        using var b = new EventFd();
        var ran = new ManualResetEventSlim();
        int aCalls = 0;
        int bCalls = 0;
        EpollEvents seen = default;
        bool onLoopThread = false;
        string? threadName = null;
        loop.Add(a.Handle, EpollEvents.In, ev =>
        {
            seen = ev;
            onLoopThread = loop.IsOnLoopThread;
            threadName = Thread.CurrentThread.Name;
            a.Consume();
            Interlocked.Increment(ref aCalls);
            ran.Set();
        });
        loop.Add(b.Handle, EpollEvents.In, _ => Interlocked.Increment(ref bCalls));
        loop.Start("loop-thread");

        a.Signal();
        Bounded.Wait(ran, "the handler of a");
        Assert.True(loop.Stop(Bounded.Ms));
        Assert.Equal(1, aCalls);
        Assert.Equal(0, bCalls);
        Assert.Equal(EpollEvents.In, seen);
        Assert.True(onLoopThread);
        Assert.Equal("loop-thread", threadName);
        Assert.False(loop.IsOnLoopThread);
    }

    [Fact]
    public void Two_hundred_eventfds_in_one_loop_are_all_delivered()
    {
        const int count = 200;
        using var loop = new EpollEventLoop("t-200");
        var fds = Enumerable.Range(0, count).Select(_ => new EventFd()).ToArray();
        try
        {
            var received = new ulong[count];
            int done = 0;
            var all = new ManualResetEventSlim();
            for (int i = 0; i < count; i++)
            {
                int index = i;
                loop.Add(fds[i], n =>
                {
                    received[index] += n;
                    if (Interlocked.Increment(ref done) == count)
                    {
                        all.Set();
                    }
                });
            }

            Assert.Equal(count, loop.Registrations);
            loop.Start();
            for (int i = 0; i < count; i++)
            {
                fds[i].Signal((ulong)i + 1);
            }

            Bounded.Wait(all, "all 200 handlers");
            Assert.True(loop.Stop(Bounded.Ms));
            for (int i = 0; i < count; i++)
            {
                Assert.Equal((ulong)i + 1, received[i]);
            }

            Assert.Equal(count, done);
        }
        finally
        {
            foreach (var fd in fds)
            {
                fd.Dispose();
            }
        }
    }

    [Fact]
    public void A_registration_removed_by_a_handler_is_not_called_for_events_in_the_same_batch()
    {
        // Both fds are ready before the loop starts, so its first epoll_wait returns both;
        // whichever handler runs first removes the other, whose event is then already in the
        // batch. It also registers a new fd, which re-uses the freed slot: the stale event must
        // not reach that one either (it is never signalled, so it has no event of its own).
        using var loop = new EpollEventLoop("t-remove");
        using var a = new EventFd();
        using var b = new EventFd();
        using var fresh = new EventFd();
        var calls = new ConcurrentQueue<string>();
        EventRegistration? ra = null;
        EventRegistration? rb = null;
        EventRegistration? rFresh = null;
        int removedSlot = -1;
        bool removedWasActive = true;
        void Handle(string me, EventFd mine, Func<EventRegistration> other)
        {
            calls.Enqueue(me);
            mine.Consume();
            var o = other();
            if (o.IsActive)
            {
                removedSlot = o.Slot;
                o.Dispose();
                removedWasActive = o.IsActive;
                rFresh = loop.Add(fresh.Handle, EpollEvents.In, _ => calls.Enqueue("fresh"));
            }
        }

        ra = loop.Add(a.Handle, EpollEvents.In, _ => Handle("a", a, () => rb!));
        rb = loop.Add(b.Handle, EpollEvents.In, _ => Handle("b", b, () => ra!));
        a.Signal();
        b.Signal();
        loop.Start();
        Bounded.Until(() => !calls.IsEmpty, "the first handler");
        var flushed = new ManualResetEventSlim();
        loop.Post(flushed.Set);
        Bounded.Wait(flushed, "a posted action after the batch");
        Assert.True(loop.Stop(Bounded.Ms));

        Assert.Single(calls);
        Assert.False(removedWasActive);
        Assert.NotNull(rFresh);
        Assert.Equal(removedSlot, rFresh.Slot);
        Assert.Equal(1, loop.EventsDispatched);
    }

    [Fact]
    public void A_handler_can_remove_its_own_registration()
    {
        using var loop = new EpollEventLoop("t-self");
        using var a = new EventFd();
        int calls = 0;
        EventRegistration? reg = null;
        var ran = new ManualResetEventSlim();
        reg = loop.Add(a.Handle, EpollEvents.In, _ =>
        {
            // Not consumed: level-triggered, it would fire forever if the removal failed.
            Interlocked.Increment(ref calls);
            reg!.Dispose();
            ran.Set();
        });
        a.Signal();
        loop.Start();
        Bounded.Wait(ran, "the handler");
        var flushed = new ManualResetEventSlim();
        loop.Post(flushed.Set);
        Bounded.Wait(flushed, "a posted action after the handler");
        Assert.True(loop.Stop(Bounded.Ms));
        Assert.Equal(1, calls);
        Assert.Equal(0, loop.Registrations);
        Assert.Equal(1UL, a.Consume());
    }

    [Fact]
    public async Task Removing_from_another_thread_waits_for_the_running_handler()
    {
        using var loop = new EpollEventLoop("t-remove-wait");
        using var a = new EventFd();
        var entered = new ManualResetEventSlim();
        var release = new ManualResetEventSlim();
        int calls = 0;
        var reg = loop.Add(a.Handle, EpollEvents.In, _ =>
        {
            Interlocked.Increment(ref calls);
            entered.Set();
            release.Wait(Bounded.Timeout);
        });
        loop.Start();
        a.Signal();
        Bounded.Wait(entered, "the handler to start");

        var removal = Task.Run(reg.Dispose);
        await Task.Delay(200);
        Assert.False(removal.IsCompleted, "Dispose returned while the handler was still running");
        release.Set();
        await removal.WaitAsync(Bounded.Timeout);
        Assert.False(reg.IsActive);

        // The fd stays signalled (never consumed) but the handler is gone.
        var flushed = new ManualResetEventSlim();
        loop.Post(flushed.Set);
        Bounded.Wait(flushed, "a posted action");
        Assert.True(loop.Stop(Bounded.Ms));
        Assert.Equal(1, calls);
    }

    [Fact]
    public void Post_runs_actions_on_the_loop_thread_in_order()
    {
        using var loop = new EpollEventLoop("t-post");
        loop.Start("post-loop");
        var order = new ConcurrentQueue<int>();
        var threads = new ConcurrentQueue<(bool OnLoop, string? Name)>();
        var done = new ManualResetEventSlim();
        int caller = Environment.CurrentManagedThreadId;
        for (int i = 0; i < 100; i++)
        {
            int k = i;
            loop.Post(() =>
            {
                order.Enqueue(k);
                threads.Enqueue((loop.IsOnLoopThread && Environment.CurrentManagedThreadId != caller, Thread.CurrentThread.Name));
                if (k == 99)
                {
                    done.Set();
                }
            });
        }

        Bounded.Wait(done, "the posted actions");
        Assert.True(loop.Stop(Bounded.Ms));
        Assert.Equal(Enumerable.Range(0, 100), order);
        Assert.All(threads, t =>
        {
            Assert.True(t.OnLoop);
            Assert.Equal("post-loop", t.Name);
        });
    }

    [Fact]
    public void An_action_reposting_itself_on_the_loop_thread_keeps_running_and_fds_are_still_served()
    {
        // Posts made on the loop thread signal nothing: the loop must look at its queue before
        // it blocks (no poller here, so it would otherwise wait forever), and a chain of such
        // posts must not starve the fds.
        using var loop = new EpollEventLoop("t-repost");
        using var fd = new EventFd();
        var order = new ConcurrentQueue<string>();
        var fdSeen = new ManualResetEventSlim();
        var done = new ManualResetEventSlim();
        int turns = 0;
        bool fdDuringChain = false;
        loop.Add(fd.Handle, EpollEvents.In, _ =>
        {
            fd.Consume();
            fdDuringChain = !done.IsSet;
            fdSeen.Set();
        });
        Action? step = null;
        step = () =>
        {
            if (++turns == 1)
            {
                order.Enqueue("first");
                loop.Post(() => order.Enqueue("posted on the loop"));
                order.Enqueue("first returns");
            }

            if (turns < 20_000 && !(fdSeen.IsSet && turns > 1000))
            {
                loop.Post(step!);
            }
            else
            {
                done.Set();
            }
        };
        loop.Start();
        loop.Post(step);
        fd.Signal();
        Bounded.Wait(done, "the reposting chain");
        Bounded.Wait(fdSeen, "the eventfd handler");
        Assert.True(loop.Stop(Bounded.Ms));
        Assert.True(fdDuringChain, "the eventfd was served only after the chain ended");
        Assert.Equal(["first", "first returns", "posted on the loop"], order);
    }

    [Fact]
    public void Run_on_the_calling_thread_returns_after_Stop_from_another_thread()
    {
        using var loop = new EpollEventLoop("t-run");
        using var a = new EventFd();
        int runner = 0;
        int handlerThread = -1;
        var ran = new ManualResetEventSlim();
        loop.Add(a, _ =>
        {
            handlerThread = Environment.CurrentManagedThreadId;
            ran.Set();
        });
        var thread = new Thread(() =>
        {
            runner = Environment.CurrentManagedThreadId;
            loop.Run();
        });
        thread.Start();
        a.Signal();
        Bounded.Wait(ran, "the handler");
        Assert.True(loop.Stop(Bounded.Ms));
        Assert.True(thread.Join(Bounded.Timeout));
        Assert.Equal(runner, handlerThread);
        Assert.True(loop.IsClosed);
    }

    [Fact]
    public void A_throwing_handler_is_logged_and_the_loop_keeps_running()
    {
        var logger = new CapturingLogger();
        using var loop = new EpollEventLoop("t-throw", logger);
        using var bad = new EventFd();
        using var good = new EventFd();
        var goodRan = new ManualResetEventSlim();
        loop.Add(bad, _ => throw new InvalidOperationException("handler boom"));
        loop.Add(good, _ => goodRan.Set());
        loop.Start();
        bad.Signal();
        Bounded.Until(() => loop.HandlerFailures == 1, "the failure");
        good.Signal();
        Bounded.Wait(goodRan, "the good handler after the failure");

        var postRan = new ManualResetEventSlim();
        loop.Post(() => throw new InvalidOperationException("post boom"));
        loop.Post(postRan.Set);
        Bounded.Wait(postRan, "a posted action after a throwing one");
        Assert.True(loop.Stop(Bounded.Ms));

        Assert.Null(loop.Fault);
        Assert.Equal(2, loop.HandlerFailures);
        var errors = logger.Entries.Where(e => e.Level == LogLevel.Error).ToList();
        Assert.Contains(errors, e => e.Exception?.Message == "handler boom" && e.Message.Contains("t-throw", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Exception?.Message == "post boom");
    }

    [Fact]
    public void A_handler_failing_on_every_event_is_logged_rate_limited_and_removed_before_it_spins_the_loop()
    {
        var logger = new CapturingLogger();
        using var loop = new EpollEventLoop("t-flood", logger);
        using var bad = new EventFd();
        using var good = new EventFd();
        bad.Signal(); // never consumed: level-triggered, so it fires on every wait
        var registration = loop.Add(bad.Handle, EpollEvents.In, _ => throw new InvalidOperationException("again"));
        int goodEvents = 0;
        loop.Add(good.Handle, EpollEvents.In, _ =>
        {
            EventFd.Consume(good.Handle);
            Interlocked.Increment(ref goodEvents);
        });
        loop.Start();
        Bounded.Until(() => !registration.IsActive, "the failing registration removed");
        long waits = loop.Waits;
        Thread.Sleep(100);

        // No longer fired: the loop sleeps instead of spinning, and still serves other fds.
        Assert.InRange(loop.Waits - waits, 0, 2);
        good.Signal();
        Bounded.Until(() => Volatile.Read(ref goodEvents) == 1, "the other fd's event");
        Assert.True(loop.Stop(Bounded.Ms));
        Assert.Equal(EpollEventLoop.MaxConsecutiveFailures, loop.HandlerFailures);
        int logged = logger.Entries.Count(e => e.Exception?.Message == "again");
        Assert.Equal(1 + (int)Math.Log2(EpollEventLoop.MaxConsecutiveFailures), logged); // 1, 2, 4, ... 64
        Assert.Contains(logger.Entries, e => e.Message.Contains("failed 64 times in a row; the fd is no longer watched", StringComparison.Ordinal));
    }

    [Fact]
    public void A_handler_that_fails_now_and_then_stays_registered()
    {
        using var loop = new EpollEventLoop("t-flaky");
        using var fd = new EventFd();
        int calls = 0;
        int successes = 0;
        var registration = loop.Add(fd.Handle, EpollEvents.In, _ =>
        {
            // Fails on odd calls without consuming, succeeds on the next: never twice in a row.
            if (++calls % 2 == 1)
            {
                throw new InvalidOperationException("sometimes");
            }

            EventFd.Consume(fd.Handle);
            Interlocked.Increment(ref successes); // after the consume, so the next signal is not swallowed
        });
        loop.Start();
        for (int i = 1; i <= 2 * EpollEventLoop.MaxConsecutiveFailures; i++)
        {
            fd.Signal();
            int expected = i;
            Bounded.Until(() => Volatile.Read(ref successes) == expected, "a failure and a success");
        }

        Assert.Equal(2 * EpollEventLoop.MaxConsecutiveFailures, loop.HandlerFailures);
        Assert.True(registration.IsActive);
        Assert.True(loop.Stop(Bounded.Ms));
    }

    [Fact]
    public void Modify_changes_the_events_reported()
    {
        using var loop = new EpollEventLoop("t-modify");
        using var a = new EventFd();
        var seen = new ConcurrentQueue<EpollEvents>();
        var gotIn = new ManualResetEventSlim();
        EventRegistration? reg = null;

        // An eventfd is always writable: Out fires at once; the handler switches to In.
        reg = loop.Add(a.Handle, EpollEvents.Out, ev =>
        {
            seen.Enqueue(ev);
            if ((ev & EpollEvents.Out) != 0)
            {
                reg!.Modify(EpollEvents.In);
            }
            else
            {
                a.Consume();
                gotIn.Set();
            }
        });
        loop.Start();
        Bounded.Until(() => !seen.IsEmpty, "the Out event");
        a.Signal();
        Bounded.Wait(gotIn, "the In event after Modify");
        Assert.True(loop.Stop(Bounded.Ms));
        Assert.Equal(new[] { EpollEvents.Out, EpollEvents.In }, seen);
        Assert.Equal(EpollEvents.In, reg.Events);
        Assert.Throws<ObjectDisposedException>(() => reg.Modify(EpollEvents.Out));
    }

    [Fact]
    public unsafe void A_pipe_reports_data_then_hang_up()
    {
        int* p = stackalloc int[2];
        Assert.Equal(0, LibC.pipe2(p, 0x80000 | 0x800)); // O_CLOEXEC | O_NONBLOCK
        using var readEnd = new FileDescriptor(p[0]);
        var writeEnd = new FileDescriptor(p[1]);
        using var loop = new EpollEventLoop("t-pipe");
        var seen = new ConcurrentQueue<EpollEvents>();
        var hup = new ManualResetEventSlim();
        EventRegistration? reg = null;
        reg = loop.Add(readEnd, EpollEvents.In, ev =>
        {
            seen.Enqueue(ev);
            byte b;
            while (LibC.read(readEnd.Value, &b, 1) == 1)
            {
            }

            if ((ev & EpollEvents.HangUp) != 0)
            {
                reg!.Dispose();
                hup.Set();
            }
        });
        loop.Start();
        byte x = 42;
        Assert.Equal(1, (long)LibC.write(writeEnd.Value, &x, 1));
        Bounded.Until(() => !seen.IsEmpty, "the In event");
        writeEnd.Dispose();
        Bounded.Wait(hup, "the hang-up");
        Assert.True(loop.Stop(Bounded.Ms));
        Assert.Equal(EpollEvents.In, seen.First());
        Assert.True((seen.Last() & EpollEvents.HangUp) != 0);
    }

    [Fact]
    public void Adding_an_fd_twice_names_epoll_ctl_and_EEXIST()
    {
        using var loop = new EpollEventLoop("t-eexist");
        using var a = new EventFd();
        using var reg = loop.Add(a.Handle, EpollEvents.In, _ => { });
        var ex = Assert.Throws<NativeCallException>(() => loop.Add(a.Handle, EpollEvents.In, _ => { }));
        Assert.Equal("epoll_ctl(EPOLL_CTL_ADD)", ex.Call);
        Assert.Equal(Errno.EEXIST, ex.Errno);
        Assert.Contains("EEXIST", ex.Message, StringComparison.Ordinal);
        Assert.Equal(1, loop.Registrations);
    }

    [Fact]
    public void A_regular_file_is_refused_with_EPERM_and_a_closed_handle_with_ObjectDisposed()
    {
        using var loop = new EpollEventLoop("t-eperm");
        string path = Path.GetTempFileName();
        try
        {
            using var file = File.OpenHandle(path);
            var ex = Assert.Throws<NativeCallException>(() => loop.Add(file, EpollEvents.In, _ => { }));
            Assert.Equal(Errno.EPERM, ex.Errno);
            Assert.Equal(0, loop.Registrations);
        }
        finally
        {
            File.Delete(path);
        }

        var closed = new EventFd();
        closed.Dispose();
        Assert.Throws<ObjectDisposedException>(() => loop.Add(closed.Handle, EpollEvents.In, _ => { }));
    }

    [Fact]
    public void A_registered_fd_closed_by_its_owner_stays_open_until_removed()
    {
        using var loop = new EpollEventLoop("t-ref");
        var a = new EventFd();
        var reg = loop.Add(a.Handle, EpollEvents.In, _ => { });
        int fd = a.Handle.Value;
        a.Dispose();
        Assert.False(a.Handle.IsClosed); // disposed, but the close waits for the loop's reference
        Assert.Equal("anon_inode:[eventfd]", ProcFd.LinkOf(fd));
        reg.Dispose();
        Assert.True(a.Handle.IsClosed);
        Assert.NotEqual("anon_inode:[eventfd]", ProcFd.LinkOf(fd));
    }

    [Fact]
    public void Dispatch_allocates_nothing_per_event()
    {
        // The handler re-signals its own eventfd, so the loop goes round on its own; the
        // thread's allocation counter is read inside the handler, between event 100 and 10100.
        using var loop = new EpollEventLoop("t-alloc");
        using var a = new EventFd();
        long at100 = 0;
        long at10100 = 0;
        int n = 0;
        var done = new ManualResetEventSlim();
        loop.Add(a.Handle, EpollEvents.In, _ =>
        {
            a.Consume();
            n++;
            if (n == 100)
            {
                at100 = GC.GetAllocatedBytesForCurrentThread();
            }

            if (n == 10_100)
            {
                at10100 = GC.GetAllocatedBytesForCurrentThread();
                done.Set();
                return;
            }

            a.Signal();
        });
        loop.Start();
        a.Signal();
        Bounded.Wait(done, "10100 events");
        Assert.True(loop.Stop(Bounded.Ms));
        Assert.Equal(0, at10100 - at100);
    }

    [Fact]
    public void Stop_from_a_handler_ends_the_loop_and_later_calls_are_refused()
    {
        using var loop = new EpollEventLoop("t-stop-inside");
        using var a = new EventFd();
        bool stopReturned = false;
        loop.Add(a, _ => stopReturned = !loop.Stop(Bounded.Ms));
        loop.Start();
        a.Signal();
        Bounded.Until(() => loop.IsClosed, "the loop to close");
        Assert.True(stopReturned);
        Assert.True(loop.Stop(Bounded.Ms));
        Assert.Throws<ObjectDisposedException>(() => loop.Post(() => { }));
        Assert.Throws<ObjectDisposedException>(() => loop.Add(a.Handle, EpollEvents.In, _ => { }));
        Assert.Throws<ObjectDisposedException>(loop.Run);
        Assert.Equal(0, loop.Registrations);
    }

    [Fact]
    public async Task Actions_posted_before_Stop_still_run_on_the_loop_thread()
    {
        using var loop = new EpollEventLoop("t-drain");
        var gate = new ManualResetEventSlim();
        var ran = new ConcurrentQueue<bool>();
        loop.Start();
        loop.Post(() => gate.Wait(Bounded.Timeout));
        for (int i = 0; i < 10; i++)
        {
            loop.Post(() => ran.Enqueue(loop.IsOnLoopThread));
        }

        var stop = Task.Run(() => loop.Stop(Bounded.Ms));
        Bounded.Until(() => !loop.IsRunning || stop.IsCompleted || IsStopRequested(loop), "the stop request");
        gate.Set();
        Assert.True(await stop.WaitAsync(Bounded.Timeout));
        Assert.Equal(10, ran.Count);
        Assert.All(ran, Assert.True);
    }

    private static bool IsStopRequested(EpollEventLoop loop)
    {
        try
        {
            loop.Post(() => { });
            return false;
        }
        catch (ObjectDisposedException)
        {
            return true;
        }
    }
}
