using PciVirtio.Mmio.Signals;

namespace PciVirtio.Mmio.Vfio;

/// <summary>
/// Interrupt vectors of a VFIO device (MSI-X, MSI or INTx) delivered as eventfds: the
/// user-space stand-in for irqfd. Each vector is an <see cref="INotificationSource"/> that the
/// event loop or a poller waits on. Disposing unbinds the vectors from the device first, then
/// closes the eventfds, so the kernel never signals a closed fd.
/// </summary>
public sealed class VfioInterrupts : IDisposable
{
    private readonly VfioDevice _device;
    private readonly EventFd[] _vectors;
    private bool _disposed;

    private VfioInterrupts(VfioDevice device, VfioIrqIndex index, EventFd[] vectors)
    {
        _device = device;
        Index = index;
        _vectors = vectors;
    }

    public VfioIrqIndex Index { get; }

    public int Count => _vectors.Length;

    /// <summary>The eventfd VFIO signals for vector <paramref name="vector"/>.</summary>
    public EventFd this[int vector] => _vectors[vector];

    /// <summary>
    /// Wires vectors 0..<paramref name="count"/>-1 of <paramref name="index"/> to new eventfds.
    /// Fails with a message naming the device when it has fewer vectors or none that accept
    /// eventfds (vfio-pci enables MSI-X on the device as a side effect).
    /// </summary>
    public static VfioInterrupts Enable(VfioDevice device, VfioIrqIndex index, int count)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        var info = device.GetIrqInfo(index);
        if (!info.SupportsEventFd || info.Count < (uint)count)
        {
            throw new VfioException($"{device.Name}: {index} has {info.Count} vectors (flags {info.Flags}); {count} with eventfds are needed");
        }

        var vectors = new EventFd[count];
        try
        {
            for (int i = 0; i < count; i++)
            {
                vectors[i] = new EventFd();
            }

            device.SetIrqEventFds(index, 0, vectors);
        }
        catch
        {
            foreach (var v in vectors)
            {
                v?.Dispose();
            }

            throw;
        }

        return new VfioInterrupts(device, index, vectors);
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        try
        {
            _device.DisableIrqs(Index);
        }
        finally
        {
            foreach (var v in _vectors)
            {
                v.Dispose();
            }
        }
    }
}
