using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Signals;
using PciVirtio.Mmio.Vfio;

namespace PciVirtio.Bridge.Hardware;

/// <summary>
/// An ivshmem-doorbell PCI device (vendor 0x1af4, device 0x1110) bound to vfio-pci and
/// opened through Vfio.Net: memory decoding and bus mastering on, BAR0 (registers) and BAR2
/// (shared memory) mapped, MSI-X vectors wired to eventfds. Disposal unbinds the vectors
/// before their eventfds close, then unmaps and closes the device.
/// </summary>
public sealed class VfioIvshmemDevice : IIvshmemDevice
{
    public const ushort VendorId = 0x1af4;
    public const ushort DeviceId = 0x1110;

    private readonly VfioPciDevice _pci;
    private readonly MemoryMapping _bar0;
    private readonly VfioInterrupts _vectors;
    private readonly IoMemoryAccessor _registers = new(null);

    private VfioIvshmemDevice(VfioPciDevice pci, MemoryMapping bar0, MemoryMapping bar2, VfioInterrupts vectors)
    {
        _pci = pci;
        _bar0 = bar0;
        SharedMemory = bar2;
        _vectors = vectors;
        Name = $"ivshmem {pci.Address}";
    }

    public string Name { get; }

    public MemoryMapping SharedMemory { get; }

    public int VectorCount => _vectors.Count;

    /// <summary>
    /// Opens the ivshmem device at <paramref name="bdf"/> ("0000:00:04.0") and wires up to
    /// <paramref name="maxVectors"/> of its MSI-X vectors.
    /// </summary>
    /// <exception cref="VfioException">The device is not an ivshmem-doorbell device, or has
    /// fewer than two MSI-X vectors (one for the link, at least one doorbell).</exception>
    public static VfioIvshmemDevice Open(string bdf, int maxVectors, VfioOpenOptions? options = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxVectors, 2);
        VfioPciDevice pci = VfioPciDevice.Open(bdf, options);
        MemoryMapping? bar0 = null;
        MemoryMapping? bar2 = null;
        VfioInterrupts? vectors = null;
        try
        {
            VfioDevice device = pci.Device;
            ushort vendor = device.ReadConfig16(0);
            ushort id = device.ReadConfig16(2);
            if (vendor != VendorId || id != DeviceId)
            {
                throw new VfioException($"{pci.Address} is {vendor:x4}:{id:x4}, not an ivshmem device ({VendorId:x4}:{DeviceId:x4})");
            }

            device.EnableMemoryAndBusMaster();
            bar0 = device.MapRegion(VfioRegionIndex.Bar0);
            bar2 = device.MapRegion(VfioRegionIndex.Bar2);
            VfioIrqInfo msix = device.GetIrqInfo(VfioIrqIndex.MsiX);
            if (msix.Count < 2 || !msix.SupportsEventFd)
            {
                throw new VfioException(
                    $"{pci.Address}: MSI-X has {msix.Count} vectors (flags {msix.Flags}); the link needs at least 2 " +
                    "(start QEMU's ivshmem-doorbell with vectors=N, N >= 2, and the ivshmem server with as many)");
            }

            vectors = VfioInterrupts.Enable(device, VfioIrqIndex.MsiX, (int)Math.Min(msix.Count, (uint)maxVectors));
            return new VfioIvshmemDevice(pci, bar0, bar2, vectors);
        }
        catch
        {
            vectors?.Dispose();
            bar2?.Dispose();
            bar0?.Dispose();
            pci.Dispose();
            throw;
        }
    }

    public uint ReadRegister(IvshmemRegister register) => _registers.LoadU32(Address(register));

    public void WriteRegister(IvshmemRegister register, uint value)
    {
        nint address = Address(register);
        _registers.FullBarrier();
        _registers.StoreU32(address, value);
    }

    public EventFd Vector(int vector) => _vectors[vector];

    public void RouteVector(int vector, EventFd? target) =>
        _pci.Device.SetIrqEventFds(VfioIrqIndex.MsiX, (uint)vector, [target ?? _vectors[vector]]);

    public void Dispose()
    {
        _vectors.Dispose();
        SharedMemory.Dispose();
        _bar0.Dispose();
        _pci.Dispose();
    }

    public override string ToString() => Name;

    private nint Address(IvshmemRegister register)
    {
        int offset = (int)register;
        if (offset < 0 || (offset & 3) != 0 || (ulong)offset + 4 > _bar0.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(register), register, "not a 32-bit register of BAR0");
        }

        return _bar0.Address + offset;
    }
}
