using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Vfio;
using PciVirtio.VhostCore.Memory;

namespace PciVirtio.Mmio.Memory;

/// <summary>
/// A PCI BAR mapped into our address space — through VFIO on real hardware, or from a memfd
/// that stands in for it in tests and in hw-sim — presented as memory the ring engine can
/// use. All access goes through <see cref="IoMemoryAccessor"/> (aligned volatile accesses of
/// at most 64 bits, barriers before index stores), optionally counted, so a test can assert
/// what a ring operation costs on the bus.
/// </summary>
public sealed class PciBarMemory : IDisposable
{
    private PciBarMemory(MemoryMapping mapping, string name, AccessCounters? counters)
    {
        Mapping = mapping;
        Name = name;
        Counters = counters;
    }

    public MemoryMapping Mapping { get; }

    /// <summary>What the BAR is, for messages ("0000:00:03.0 Bar2", "memfd ntb-window").</summary>
    public string Name { get; }

    public ulong Size => Mapping.Length;

    /// <summary>Counts accesses when not null.</summary>
    public AccessCounters? Counters { get; }

    /// <summary>The accessor every ring and buffer access to this BAR must use.</summary>
    public IoMemoryAccessor Accessor => new(Counters);

    /// <summary>Maps BAR <paramref name="bar"/> of a VFIO device (it must be mmappable).</summary>
    public static PciBarMemory FromVfio(VfioDevice device, VfioRegionIndex bar, bool countAccesses = false)
    {
        ArgumentNullException.ThrowIfNull(device);
        var mapping = device.MapRegion(bar);
        return new PciBarMemory(mapping, $"{device.Name} {bar}", countAccesses ? new AccessCounters(mapping.Address, mapping.Length) : null);
    }

    /// <summary>Maps <paramref name="size"/> bytes of <paramref name="fd"/> (a memfd standing
    /// in for a BAR, or an NTB window handed over by hw-sim).</summary>
    public static PciBarMemory FromFd(FileDescriptor fd, ulong size, string name, ulong offset = 0, bool countAccesses = false)
    {
        var mapping = MemoryMapping.Map(fd, offset, size, MappingProtection.ReadWrite, lockInMemory: false, subject: name);
        return new PciBarMemory(mapping, name, countAccesses ? new AccessCounters(mapping.Address, mapping.Length) : null);
    }

    /// <summary>A fresh zeroed memfd-backed BAR of <paramref name="size"/> bytes.</summary>
    public static PciBarMemory CreateStandIn(string name, ulong size, bool countAccesses = false)
    {
        using var fd = MemFd.Create(name, size);
        return FromFd(fd, size, $"memfd {name}", countAccesses: countAccesses);
    }

    /// <summary>The BAR (or <paramref name="length"/> bytes of it from
    /// <paramref name="offset"/>) as a memory-table region at <paramref name="guestPhysAddr"/>.</summary>
    public MemoryRegion Region(ulong guestPhysAddr, ulong offset = 0, ulong length = 0) =>
        Mapping.Region(guestPhysAddr, userAddr: guestPhysAddr, offset, length);

    /// <summary>The BAR alone as guest memory at <paramref name="guestPhysAddr"/>.</summary>
    public GuestMemory<IoMemoryAccessor> AsGuestMemory(ulong guestPhysAddr = 0) =>
        new(MemoryTable.Create(Region(guestPhysAddr)), Accessor);

    public void Dispose() => Mapping.Dispose();
}
