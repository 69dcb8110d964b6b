using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;

namespace PciVirtio.VhostCore.Tests.Support;

/// <summary>
/// Zeroed memory a test ring lives in, with the accessor every ring and buffer access to it
/// must use. Disposing it releases the memory.
/// </summary>
public sealed class RingBacking<TAccess>(nint address, ulong size, TAccess access, IDisposable owner) : IDisposable
    where TAccess : struct, IMemoryAccessor
{
    /// <summary>Where the memory starts in our address space.</summary>
    public nint Address { get; } = address;

    public ulong Size { get; } = size;

    public TAccess Access { get; } = access;

    /// <summary>What holds the memory (a <see cref="NativeMemoryBlock"/> or a <see cref="PciBarMemory"/>).</summary>
    public IDisposable Owner { get; } = owner;

    /// <summary>The raw bytes, bypassing the accessor (for tests that compare whole memories).</summary>
    public unsafe Span<byte> Span => new((void*)Address, checked((int)Size));

    /// <summary>The whole memory as one region at <paramref name="guestPhysAddr"/>.</summary>
    public MemoryRegion Region(ulong guestPhysAddr) => new(guestPhysAddr, Size, (ulong)Address, Address);

    public void Dispose() => Owner.Dispose();
}

/// <summary>
/// A kind of memory the split-ring tests run over: how to get <c>N</c> zeroed bytes of it and
/// the accessor that touches it. Generic test classes take one of these as a type argument,
/// so the same test proves the ring code over every memory the engine supports.
/// </summary>
public interface IRingMemory<TAccess>
    where TAccess : struct, IMemoryAccessor
{
    /// <summary>"RAM", "I/O": for messages.</summary>
    string Name { get; }

    RingBacking<TAccess> Allocate(string name, ulong size);
}

/// <summary>Ordinary memory: a <see cref="NativeMemoryBlock"/> through <see cref="RamAccessor"/>.</summary>
public sealed class RamRingMemory : IRingMemory<RamAccessor>
{
    public string Name => "RAM";

    public RingBacking<RamAccessor> Allocate(string name, ulong size)
    {
        var block = new NativeMemoryBlock(size);
        return new RingBacking<RamAccessor>(block.Address, size, default, block);
    }
}

/// <summary>
/// PCI BAR (I/O) memory: a memfd-backed stand-in for a BAR
/// (<see cref="PciBarMemory.CreateStandIn"/>) through <see cref="IoMemoryAccessor"/>, with
/// an <see cref="AccessCounters"/> attached that counts every access to it.
/// </summary>
public class IoRingMemory : IRingMemory<IoMemoryAccessor>
{
    public IoRingMemory()
        : this(countAccesses: true)
    {
    }

    protected IoRingMemory(bool countAccesses) => CountAccesses = countAccesses;

    public bool CountAccesses { get; }

    public string Name => CountAccesses ? "I/O (counted)" : "I/O";

    public RingBacking<IoMemoryAccessor> Allocate(string name, ulong size)
    {
        var bar = PciBarMemory.CreateStandIn(name, size, CountAccesses);
        Assert.Equal(CountAccesses, bar.Counters is not null);
        return new RingBacking<IoMemoryAccessor>(bar.Mapping.Address, size, bar.Accessor, bar);
    }
}

/// <summary><see cref="IoRingMemory"/> without access counters (the accessor as the data
/// path uses it when nobody measures).</summary>
public sealed class UncountedIoRingMemory : IoRingMemory
{
    public UncountedIoRingMemory()
        : base(countAccesses: false)
    {
    }
}
