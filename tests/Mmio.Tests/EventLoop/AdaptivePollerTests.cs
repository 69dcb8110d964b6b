using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using PciVirtio.Mmio.EventLoop;
using PciVirtio.Mmio.Signals;

namespace PciVirtio.Mmio.Tests.EventLoop;

public class AdaptivePollerTests
{
    [Fact]
    public void Polls_while_work_comes_never_exceeding_the_budget()
    {
        using var kick = new EventFd();
        var target = new ScriptedTarget { Kick = kick };
        target.AddWork(1000);
        using var poller = new AdaptivePoller(target, kick, new AdaptivePollerOptions { Budget = 16, SpinPolls = 4 });
        poller.Start();
        Bounded.Until(() => poller.Sleeps >= 1, "the poller to go idle");
        Assert.True(poller.Stop(Bounded.Ms));

        Assert.Equal(1000, target.Processed);
        Assert.Equal(1000, poller.ItemsProcessed);
        Assert.Equal(16, target.MaxBudgetSeen);
        Assert.Equal(62, poller.BudgetExhausted);       // 62 full passes of 16, then 8
        Assert.Equal(63 + 4, poller.Polls);             // 63 with work, 4 empty
        Assert.Equal(4, poller.EmptyPolls);
        Assert.Equal(0, poller.Wakeups);
        Assert.Equal(0, target.Kicks);                  // busy: the driver never had to kick
    }

    [Fact]
    public void Goes_poll_empty_enable_sleep_wake_consume_disable_poll()
    {
        using var kick = new EventFd();
        var trace = new ConcurrentQueue<string>();
        var target = new ScriptedTarget { Kick = kick, Trace = trace };
        using var poller = new AdaptivePoller(target, new RecordingSource(kick, trace), new AdaptivePollerOptions { SpinPolls = 3 });
        poller.Start();

        Bounded.Until(() => poller.Sleeps == 1, "the first sleep");
        Assert.True(target.AddWork(5), "the poller slept with notifications off");
        Bounded.Until(() => poller.Sleeps == 2, "the second sleep");
        Assert.True(poller.Stop(Bounded.Ms));

        Assert.Equal(
            new[] { "D", "P0", "P0", "P0", "E0", "C1", "D", "P5", "P0", "P0", "P0", "E0", "E0" },
            trace);
        Assert.Equal(2, poller.Sleeps);
        Assert.Equal(1, poller.Wakeups);
        Assert.Equal(0, poller.Rechecks);
        Assert.Equal(6, poller.EmptyPolls);
        Assert.Equal(7, poller.Polls);
        Assert.Equal(5, poller.ItemsProcessed);
        Assert.True(target.NotificationsOn, "notifications are left on at exit");
    }

    [Fact]
    public void Many_sleep_wake_cycles_each_take_one_kick()
    {
        using var kick = new EventFd();
        var target = new ScriptedTarget { Kick = kick };
        using var poller = new AdaptivePoller(target, kick, new AdaptivePollerOptions { SpinPolls = 2 });
        poller.Start();
        for (int cycle = 1; cycle <= 100; cycle++)
        {
            Bounded.Until(() => poller.Sleeps == cycle, $"sleep {cycle}");
            Assert.True(target.AddWork(cycle));
            Bounded.Until(() => target.Processed == cycle * (cycle + 1) / 2, $"cycle {cycle} processed");
        }

        Assert.True(poller.Stop(Bounded.Ms));
        Assert.Equal(100, poller.Wakeups);
        Assert.Equal(100, target.Kicks);
    }

    [Fact]
    public void Work_arriving_between_the_last_empty_poll_and_enable_is_served_without_a_signal()
    {
        using var kick = new EventFd();
        var trace = new ConcurrentQueue<string>();
        var target = new ScriptedTarget { Kick = kick, Trace = trace };
        bool kickedInWindow = true;
        int enables = 0;
        target.BeforeEnable = () =>
        {
            if (++enables == 1)
            {
                kickedInWindow = target.AddWork(7); // notifications still off: no kick
            }
        };
        using var poller = new AdaptivePoller(target, new RecordingSource(kick, trace), new AdaptivePollerOptions { SpinPolls = 2 });
        poller.Start();

        Bounded.Until(() => target.Processed == 7, "the work that arrived without a signal");
        Bounded.Until(() => poller.Sleeps == 1, "the sleep after it");
        Assert.True(poller.Stop(Bounded.Ms));

        Assert.False(kickedInWindow);
        Assert.Equal(0UL, kick.Consume());
        Assert.Equal(1, poller.Rechecks);
        Assert.Equal(0, poller.Wakeups);
        Assert.Equal(new[] { "D", "P0", "P0", "E1", "D", "P7", "P0", "P0", "E0", "E0" }, trace);
    }

    [Fact]
    public void Stop_from_another_thread_wakes_a_sleeping_poller()
    {
        using var kick = new EventFd();
        var target = new ScriptedTarget { Kick = kick };
        var poller = new AdaptivePoller(target, kick, new AdaptivePollerOptions { SpinPolls = 1 }, "sleepy");
        Thread? thread = null;
        target.OnPoll = _ => thread = Thread.CurrentThread;
        poller.Start();
        Bounded.Until(() => poller.Sleeps == 1, "the sleep");
        Assert.True(poller.IsRunning);
        Assert.True(poller.Stop(Bounded.Ms));
        Assert.False(poller.IsRunning);
        Assert.False(thread!.IsAlive);
        Assert.Equal("sleepy", thread.Name);
        Assert.Equal(0, poller.Wakeups);
        poller.Dispose();
    }

    [Fact]
    public void Stop_from_another_thread_ends_a_busy_poller()
    {
        using var kick = new EventFd();
        var target = new ScriptedTarget { Kick = kick };
        target.AddWork(long.MaxValue / 2);
        using var poller = new AdaptivePoller(target, kick, new AdaptivePollerOptions { Budget = 32 });
        poller.Start();
        Bounded.Until(() => poller.Polls > 1000, "some busy passes");
        Assert.True(poller.Stop(Bounded.Ms));
        Assert.Equal(0, poller.Sleeps);
        Assert.Equal(poller.Polls, poller.BudgetExhausted);
    }

    [Fact]
    public void Run_on_the_calling_thread_ends_on_a_stop_from_the_target_and_runs_once()
    {
        using var kick = new EventFd();
        var target = new ScriptedTarget { Kick = kick };
        target.AddWork(100);
        var poller = new AdaptivePoller(target, kick, new AdaptivePollerOptions { Budget = 10, SpinPolls = 1_000_000 });
        target.OnPoll = pass =>
        {
            if (pass == 50)
            {
                Assert.False(poller.Stop(Bounded.Ms)); // on the polling thread: request only
            }
        };
        var run = Task.Run(poller.Run);
        Bounded.Wait(run, "Run to return");
        Assert.Equal(50, poller.Polls);
        Assert.Equal(100, poller.ItemsProcessed);
        Assert.Throws<InvalidOperationException>(poller.Run);
        poller.Dispose();
        Assert.Throws<ObjectDisposedException>(poller.Run);
    }

    [Fact]
    public void A_finite_sleep_times_out_and_polls_again()
    {
        using var kick = new EventFd();
        var target = new ScriptedTarget { Kick = kick };
        using var poller = new AdaptivePoller(target, kick, new AdaptivePollerOptions { SpinPolls = 1, MaxSleepMilliseconds = 5 });
        poller.Start();
        Bounded.Until(() => poller.Timeouts >= 3, "three timed-out sleeps");
        Assert.True(poller.Stop(Bounded.Ms));
        Assert.Equal(0, poller.Wakeups);
        Assert.True(poller.Polls >= 3);
    }

    [Fact]
    public void A_throwing_target_ends_a_started_poller_with_a_logged_fault_and_Run_rethrows()
    {
        using var kick = new EventFd();
        var logger = new CapturingLogger();
        var target = new ScriptedTarget { Kick = kick };
        target.OnPoll = pass =>
        {
            if (pass == 3)
            {
                throw new InvalidOperationException("target boom");
            }
        };
        using var started = new AdaptivePoller(target, kick, new AdaptivePollerOptions { SpinPolls = 100 }, "faulty", logger);
        started.Start();
        Bounded.Until(() => !started.IsRunning, "the poller to end");
        Assert.Equal("target boom", started.Fault?.Message);
        Assert.Contains(logger.Entries, e => e.Level == LogLevel.Error && e.Exception?.Message == "target boom");
        Assert.True(started.Stop(Bounded.Ms));

        var target2 = new ScriptedTarget { Kick = kick, OnPoll = _ => throw new InvalidOperationException("run boom") };
        using var run = new AdaptivePoller(target2, kick);
        var ex = Assert.Throws<InvalidOperationException>(run.Run);
        Assert.Equal("run boom", ex.Message);
    }

    [Fact]
    public void The_poll_loop_allocates_nothing_per_pass()
    {
        // The target kicks itself whenever notifications are enabled, so the poller keeps going
        // round poll → empty → enable → sleep → wake → consume → disable on this one thread.
        using var kick = new EventFd();
        var target = new ScriptedTarget { Kick = kick };
        AdaptivePoller? poller = null;
        long start = 0;
        long end = 0;
        target.OnPoll = pass =>
        {
            if (pass % 3 == 0)
            {
                target.AddWork(1);
            }

            if (pass == 100)
            {
                start = GC.GetAllocatedBytesForCurrentThread();
            }
            else if (pass == 30_100)
            {
                end = GC.GetAllocatedBytesForCurrentThread();
                poller!.RequestStop();
            }
        };
        target.BeforeEnable = () => kick.Signal();
        poller = new AdaptivePoller(target, kick, new AdaptivePollerOptions { SpinPolls = 2, Budget = 8 });
        var run = Task.Run(poller.Run);
        Bounded.Wait(run, "30100 passes");
        Assert.True(poller.Sleeps > 1000, $"only {poller.Sleeps} sleeps");
        Assert.True(poller.Wakeups > 1000, $"only {poller.Wakeups} wake-ups");
        Assert.Equal(0, end - start);
        poller.Dispose();
    }

    [Theory]
    [InlineData(0, 1, 0, -1)]
    [InlineData(1, 0, 0, -1)]
    [InlineData(1, 1, -1, -1)]
    [InlineData(1, 1, 0, -2)]
    public void Invalid_options_are_refused(int budget, int spinPolls, int pause, int maxSleep)
    {
        using var kick = new EventFd();
        var options = new AdaptivePollerOptions { Budget = budget, SpinPolls = spinPolls, PauseIterations = pause, MaxSleepMilliseconds = maxSleep };
        Assert.Throws<ArgumentOutOfRangeException>(() => new AdaptivePoller(new ScriptedTarget(), kick, options));
    }
}
