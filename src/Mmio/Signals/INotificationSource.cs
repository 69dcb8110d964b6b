using PciVirtio.Mmio.Interop;

namespace PciVirtio.Mmio.Signals;

/// <summary>
/// Something a consumer waits on to learn there is work: the receiving end of a kick or a
/// call. In this project that is always an eventfd — a vhost-user kick fd, the eventfd VFIO
/// signals for an MSI-X vector, hw-sim's interrupt eventfd — so the source is just an fd that
/// becomes readable when signalled (to put in epoll or <see cref="SignalWaiter"/>) and a way to
/// clear it. Kept this small so the event loop and the poller need nothing else.
/// </summary>
public interface INotificationSource
{
    /// <summary>The fd that polls readable (EPOLLIN) while a signal is pending.</summary>
    FileDescriptor Handle { get; }

    /// <summary>Clears the pending signal and returns how many were coalesced into it;
    /// 0 when none was pending (a spurious or already-consumed wake-up). Never blocks.</summary>
    ulong Consume();
}
