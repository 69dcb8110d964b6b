using System.Diagnostics;
using PciVirtio.Mmio.Signals;

namespace PciVirtio.Mmio.Tests.Signals;

public class SignalWaiterTests
{
    [Fact]
    public void An_eventfd_is_a_notification_source()
    {
        using var e = new EventFd();
        Assert.Same(e.Handle, Source(e).Handle);
        e.Signal(3);
        Assert.Equal(3UL, Source(e).Consume());
        Assert.Equal(0UL, Source(e).Consume());
    }

    [Fact]
    public void Wait_reports_a_pending_signal_without_consuming_it()
    {
        using var e = new EventFd();
        using var waiter = new SignalWaiter(e);
        e.Signal();
        Assert.Equal(SignalWaitResult.Signalled, waiter.Wait(5_000));
        Assert.Equal(SignalWaitResult.Signalled, waiter.Wait(0));
        Assert.Equal(1UL, e.Consume());
        Assert.Equal(SignalWaitResult.TimedOut, waiter.Wait(0));
    }

    [Fact]
    public void Wait_times_out_after_roughly_the_timeout()
    {
        using var e = new EventFd();
        using var waiter = new SignalWaiter(e);
        var sw = Stopwatch.StartNew();
        Assert.Equal(SignalWaitResult.TimedOut, waiter.Wait(50));
        Assert.InRange(sw.ElapsedMilliseconds, 40, 5_000);
    }

    [Fact]
    public async Task A_signal_from_another_thread_wakes_a_blocked_wait()
    {
        using var e = new EventFd();
        using var waiter = new SignalWaiter(e);
        var wait = Task.Run(() => waiter.Wait(10_000));
        await Task.Delay(50);
        Assert.False(wait.IsCompleted);
        e.Signal();
        Assert.Equal(SignalWaitResult.Signalled, await wait.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task Cancel_wakes_a_blocked_wait_wins_over_a_signal_and_sticks()
    {
        using var e = new EventFd();
        using var waiter = new SignalWaiter(e);
        var wait = Task.Run(() => waiter.Wait(10_000));
        await Task.Delay(50);
        Assert.False(wait.IsCompleted);
        waiter.Cancel();
        Assert.Equal(SignalWaitResult.Cancelled, await wait.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.True(waiter.IsCancelled);
        e.Signal();
        Assert.Equal(SignalWaitResult.Cancelled, waiter.Wait(0));
        Assert.Equal(1UL, e.Consume());
    }

    [Fact]
    public void A_disposed_waiter_refuses_to_wait()
    {
        using var e = new EventFd();
        var waiter = new SignalWaiter(e);
        waiter.Dispose();
        waiter.Dispose();
        waiter.Cancel();
        Assert.Throws<ObjectDisposedException>(() => waiter.Wait(0));
        e.Signal();
        Assert.Equal(1UL, e.Consume());
    }

    private static INotificationSource Source(INotificationSource s) => s;
}
