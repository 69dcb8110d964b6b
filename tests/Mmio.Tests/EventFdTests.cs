using PciVirtio.Mmio.Signals;

namespace PciVirtio.Mmio.Tests;

public class EventFdTests
{
    [Fact]
    public void Signals_add_up_and_a_read_clears_them()
    {
        using var e = new EventFd();
        Assert.Equal(0UL, e.Consume());
        e.Signal();
        e.Signal(2);
        Assert.Equal(3UL, e.Consume());
        Assert.Equal(0UL, e.Consume());
    }

    [Fact]
    public void Notifier_counts_and_signals()
    {
        using var e = new EventFd();
        var n = new EventFdNotifier(e);
        n.Notify();
        n.Notify();
        Assert.Equal(2, n.Notifications);
        Assert.Equal(2UL, e.Consume());
    }
}
