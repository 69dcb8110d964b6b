namespace PciVirtio.Mmio.Signals;

/// <summary>Notifies by signalling an eventfd (vhost-user kick/call fds, ivshmem peer vectors).</summary>
public sealed class EventFdNotifier(EventFd eventFd) : INotifier
{
    public EventFd EventFd { get; } = eventFd;

    public long Notifications { get; private set; }

    public void Notify()
    {
        EventFd.Signal();
        Notifications++;
    }
}
