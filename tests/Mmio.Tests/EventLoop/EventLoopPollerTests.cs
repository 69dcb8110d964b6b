using PciVirtio.Mmio.EventLoop;
using PciVirtio.Mmio.Signals;

namespace PciVirtio.Mmio.Tests.EventLoop;

public class EventLoopPollerTests
{
    [Fact]
    public void Pollers_run_every_turn_while_fd_events_and_posts_are_still_served_and_removal_stops_them()
    {
        using var loop = new EpollEventLoop("poll-test");
        using var fd = new EventFd();
        int signals = 0;
        long turns = 0;
        using var signalled = new ManualResetEventSlim();
        using var registration = loop.Add(fd, _ =>
        {
            Interlocked.Increment(ref signals);
            signalled.Set();
        });
        loop.Start("poll-test");
        var poller = loop.AddPoller(() =>
        {
            Interlocked.Increment(ref turns);
            return true; // always busy: the loop must still look at its fds every few turns
        });

        Assert.True(SpinWait.SpinUntil(() => Interlocked.Read(ref turns) > 1000, TimeSpan.FromSeconds(10)));
        fd.Signal();
        Assert.True(signalled.Wait(TimeSpan.FromSeconds(10)), "an fd event was served while polling");
        using var posted = new ManualResetEventSlim();
        loop.Post(posted.Set);
        Assert.True(posted.Wait(TimeSpan.FromSeconds(10)), "posted work ran while polling");

        poller.Dispose();
        Thread.Sleep(50);
        long after = Interlocked.Read(ref turns);
        Thread.Sleep(100);
        Assert.Equal(after, Interlocked.Read(ref turns));
        Assert.Equal(1, Volatile.Read(ref signals));
        loop.Stop();
    }
}
