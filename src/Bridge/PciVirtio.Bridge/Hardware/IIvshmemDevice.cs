using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Signals;

namespace PciVirtio.Bridge.Hardware;

/// <summary>The 32-bit registers of ivshmem's BAR0 (QEMU docs/specs/ivshmem-spec.rst), by offset.</summary>
public enum IvshmemRegister
{
    /// <summary>INTx interrupt mask (unused with MSI-X).</summary>
    InterruptMask = 0,

    /// <summary>INTx interrupt status (unused with MSI-X).</summary>
    InterruptStatus = 4,

    /// <summary>Read-only: this peer's id.</summary>
    IvPosition = 8,

    /// <summary>Write <c>(peerId &lt;&lt; 16) | vector</c> to raise that vector on that peer.</summary>
    Doorbell = 12,
}

/// <summary>
/// What <see cref="IvshmemVfioHardware"/> needs from an ivshmem-doorbell device: its BAR0
/// registers, its BAR2 shared memory, and its MSI-X vectors as eventfds with a way to route
/// a vector to another eventfd. <see cref="VfioIvshmemDevice"/> is the real one (vfio-pci);
/// a test puts two of its own over two plain memory blocks for BAR0 and one shared block for
/// BAR2, so the link logic runs without an IOMMU or a guest.
/// </summary>
public interface IIvshmemDevice : IDisposable
{
    /// <summary>For messages ("ivshmem 0000:00:04.0").</summary>
    string Name { get; }

    /// <summary>BAR2: the memory every peer maps.</summary>
    MemoryMapping SharedMemory { get; }

    /// <summary>One aligned 32-bit load of a BAR0 register.</summary>
    uint ReadRegister(IvshmemRegister register);

    /// <summary>One aligned 32-bit store to a BAR0 register, after a full barrier (so a
    /// doorbell never overtakes what it announces).</summary>
    void WriteRegister(IvshmemRegister register, uint value);

    /// <summary>MSI-X vectors wired to eventfds.</summary>
    int VectorCount { get; }

    /// <summary>The eventfd vector <paramref name="vector"/> signals while routed to its own (the default).</summary>
    EventFd Vector(int vector);

    /// <summary>Makes vector <paramref name="vector"/> signal <paramref name="target"/>
    /// instead, or its own eventfd again when null (VFIO_DEVICE_SET_IRQS for one vector).</summary>
    void RouteVector(int vector, EventFd? target);
}
