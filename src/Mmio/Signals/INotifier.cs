namespace PciVirtio.Mmio.Signals;

/// <summary>
/// Tells the other side of a ring that there is work: a kick (driver → device) or a call
/// (device → driver). Implementations: an eventfd write (vhost-user), a doorbell register
/// write on a BAR (the MMIO stand-in for ioeventfd), an ivshmem peer eventfd.
/// Called on the data path after the ring index is published; must not allocate.
/// </summary>
public interface INotifier
{
    void Notify();
}
