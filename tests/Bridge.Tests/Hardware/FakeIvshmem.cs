using PciVirtio.Bridge.Hardware;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Signals;

namespace PciVirtio.Bridge.Tests.Hardware;

/// <summary>
/// What an ivshmem server and QEMU do between two guests, in one process: one memfd is BAR2
/// for every device, and a doorbell write on one device raises the named vector of the
/// named device (to whatever eventfd that vector is routed to), or nothing when no device
/// has that id — as QEMU ignores a doorbell to an absent peer.
/// </summary>
public sealed class FakeIvshmemFabric : IDisposable
{
    private readonly FileDescriptor _shared;
    private readonly Dictionary<uint, FakeIvshmemDevice> _devices = [];
    private readonly Lock _lock = new();

    public FakeIvshmemFabric(ulong sharedSize = 128 * 1024, int vectors = 9)
    {
        SharedSize = sharedSize;
        Vectors = vectors;
        _shared = MemFd.Create("fake-ivshmem", sharedSize);
    }

    public ulong SharedSize { get; }

    public int Vectors { get; }

    /// <summary>A device with IVPosition <paramref name="id"/> (a guest's device after it
    /// connected to the server).</summary>
    public FakeIvshmemDevice Connect(uint id, int? vectors = null)
    {
        var device = new FakeIvshmemDevice(this, id, vectors ?? Vectors, MemoryMapping.Map(_shared, 0, SharedSize));
        lock (_lock)
        {
            _devices[id] = device;
        }

        return device;
    }

    /// <summary>A mapping of the shared memory of our own, as a test's view of BAR2.</summary>
    public MemoryMapping MapShared() => MemoryMapping.Map(_shared, 0, SharedSize);

    public void Dispose() => _shared.Dispose();

    internal void Deliver(uint peer, int vector)
    {
        FakeIvshmemDevice? target;
        lock (_lock)
        {
            _devices.TryGetValue(peer, out target);
        }

        target?.Raise(vector);
    }

    internal void Disconnect(FakeIvshmemDevice device)
    {
        lock (_lock)
        {
            if (_devices.TryGetValue(device.Id, out FakeIvshmemDevice? current) && current == device)
            {
                _devices.Remove(device.Id);
            }
        }
    }
}

/// <summary>
/// One ivshmem device over plain memory: BAR0 is a memfd page holding the registers (IVPosition
/// preset), BAR2 the fabric's memfd. Register writes are stored like any memory; a Doorbell
/// write also goes to the fabric. Vectors are eventfds with a route each, as vfio-pci's
/// SET_IRQS gives.
/// </summary>
public sealed class FakeIvshmemDevice : IIvshmemDevice
{
    private readonly FakeIvshmemFabric _fabric;
    private readonly MemoryMapping _bar0;
    private readonly EventFd[] _vectors;
    private readonly EventFd?[] _routes;
    private readonly IoMemoryAccessor _io = new(null);
    private readonly Lock _lock = new();
    private long _doorbells;

    internal FakeIvshmemDevice(FakeIvshmemFabric fabric, uint id, int vectors, MemoryMapping bar2)
    {
        _fabric = fabric;
        Id = id;
        SharedMemory = bar2;
        using FileDescriptor registers = MemFd.Create($"fake-ivshmem-bar0-{id}", 4096);
        _bar0 = MemoryMapping.Map(registers, 0, 4096);
        _io.StoreU32(_bar0.Address + (int)IvshmemRegister.IvPosition, id);
        _vectors = new EventFd[vectors];
        _routes = new EventFd?[vectors];
        for (int v = 0; v < vectors; v++)
        {
            _vectors[v] = new EventFd();
        }
    }

    public uint Id { get; }

    public string Name => $"fake ivshmem {Id}";

    public MemoryMapping SharedMemory { get; }

    public int VectorCount => _vectors.Length;

    public bool IsDisposed { get; private set; }

    /// <summary>Doorbell register writes made.</summary>
    public long Doorbells => Interlocked.Read(ref _doorbells);

    /// <summary>The last value written to the Doorbell register.</summary>
    public uint LastDoorbell => _io.LoadU32(_bar0.Address + (int)IvshmemRegister.Doorbell);

    /// <summary>Where vector <paramref name="vector"/> goes now: null is its own eventfd.</summary>
    public EventFd? RouteOf(int vector)
    {
        lock (_lock)
        {
            return _routes[vector];
        }
    }

    public uint ReadRegister(IvshmemRegister register) => _io.LoadU32(_bar0.Address + (int)register);

    public void WriteRegister(IvshmemRegister register, uint value)
    {
        _io.FullBarrier();
        _io.StoreU32(_bar0.Address + (int)register, value);
        if (register == IvshmemRegister.Doorbell)
        {
            Interlocked.Increment(ref _doorbells);
            _fabric.Deliver(value >> 16, (int)(value & 0xFFFF));
        }
    }

    public EventFd Vector(int vector) => _vectors[vector];

    public void RouteVector(int vector, EventFd? target)
    {
        lock (_lock)
        {
            _routes[vector] = target;
        }
    }

    public void Dispose()
    {
        if (IsDisposed)
        {
            return;
        }

        IsDisposed = true;
        _fabric.Disconnect(this);
        lock (_lock)
        {
            Array.Clear(_routes);
            foreach (EventFd e in _vectors)
            {
                e.Dispose();
            }
        }

        SharedMemory.Dispose();
        _bar0.Dispose();
    }

    internal void Raise(int vector)
    {
        lock (_lock)
        {
            // QEMU drops a vector the device does not have; so do we.
            if (IsDisposed || vector >= _vectors.Length)
            {
                return;
            }

            (_routes[vector] ?? _vectors[vector]).Signal();
        }
    }
}
