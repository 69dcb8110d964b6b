using PciVirtio.Mmio.EventLoop;
using PciVirtio.Mmio.Signals;

namespace PciVirtio.Mmio.Tests.EventLoop;

/// <summary>Stopping releases everything: the thread is joined, every registration removed,
/// the epoll fd and the internal eventfd closed (counted in /proc/self/fd).</summary>
[Collection(FdCountingCollection.Name)]
public class EventLoopLifetimeTests
{
    [Fact]
    public void Stop_from_another_thread_joins_the_thread_and_closes_the_fds()
    {
        int epollBefore = ProcFd.Epoll;
        int eventFdsBefore = ProcFd.EventFds;
        using var a = new EventFd();
        using var b = new EventFd();
        Thread? loopThread = null;
        var loop = new EpollEventLoop("t-stop-outside");
        var ra = loop.Add(a, _ => { });
        var rb = loop.Add(b.Handle, EpollEvents.In, _ => { });
        loop.Start();
        var seen = new ManualResetEventSlim();
        loop.Post(() =>
        {
            loopThread = Thread.CurrentThread;
            seen.Set();
        });
        Bounded.Wait(seen, "the loop thread");
        Assert.Equal(epollBefore + 1, ProcFd.Epoll);

        Assert.True(loop.Stop(Bounded.Ms));
        Assert.False(loopThread!.IsAlive);
        Assert.True(loop.IsClosed);
        Assert.False(ra.IsActive);
        Assert.False(rb.IsActive);
        Assert.Equal(0, loop.Registrations);
        Assert.Equal(epollBefore, ProcFd.Epoll);
        Assert.Equal(eventFdsBefore + 2, ProcFd.EventFds); // a and b are the test's own
        ra.Dispose(); // removing after the stop is harmless
        loop.Dispose();
        a.Dispose();
        b.Dispose();
        Assert.Equal(eventFdsBefore, ProcFd.EventFds);
    }

    [Fact]
    public void Stop_from_inside_a_handler_closes_the_fds_and_Dispose_joins_the_thread()
    {
        int epollBefore = ProcFd.Epoll;
        int eventFdsBefore = ProcFd.EventFds;
        Thread? loopThread = null;
        using (var a = new EventFd())
        {
            var loop = new EpollEventLoop("t-stop-inside-fds");
            loop.Add(a, _ =>
            {
                loopThread = Thread.CurrentThread;
                loop.Stop();
            });
            loop.Start();
            a.Signal();
            Bounded.Until(() => loop.IsClosed, "the loop to close itself");
            loop.Dispose();
            Assert.False(loopThread!.IsAlive);
        }

        Assert.Equal(epollBefore, ProcFd.Epoll);
        Assert.Equal(eventFdsBefore, ProcFd.EventFds);
    }

    [Fact]
    public void Disposing_a_loop_that_never_ran_closes_its_fds()
    {
        int epollBefore = ProcFd.Epoll;
        int eventFdsBefore = ProcFd.EventFds;
        var loop = new EpollEventLoop("t-never-ran");
        Assert.Equal(epollBefore + 1, ProcFd.Epoll);
        Assert.Equal(eventFdsBefore + 1, ProcFd.EventFds);
        bool posted = false;
        loop.Post(() => posted = true);
        loop.Dispose();
        Assert.False(posted);
        Assert.Equal(epollBefore, ProcFd.Epoll);
        Assert.Equal(eventFdsBefore, ProcFd.EventFds);
    }

    [Fact]
    public void Disposing_a_poller_closes_its_waiter_fds()
    {
        int epollBefore = ProcFd.Epoll;
        int eventFdsBefore = ProcFd.EventFds;
        using (var kick = new EventFd())
        {
            var target = new ScriptedTarget();
            var poller = new AdaptivePoller(target, kick, new AdaptivePollerOptions { SpinPolls = 2 });
            poller.Start();
            Bounded.Until(() => poller.Sleeps >= 1, "the poller to sleep");
            Assert.Equal(epollBefore + 1, ProcFd.Epoll);
            poller.Dispose();
            Assert.False(poller.IsRunning);
        }

        Assert.Equal(epollBefore, ProcFd.Epoll);
        Assert.Equal(eventFdsBefore, ProcFd.EventFds);
    }
}
