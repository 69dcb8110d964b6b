using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;

namespace PciVirtio.VhostCore.Tests.Support;

/// <summary>Where things sit in a harness's guest memory.</summary>
public static class HarnessLayout
{
    public const ulong GuestBase = 0x1_0000_0000;
    public const ulong RingArea = 0x10000;       // offset of the ring inside guest memory
    public const ulong IndirectAreaOffset = 0x80000;
    public const ulong DataOffset = 0x100000;     // payload buffers start here

    /// <summary>Guest address of payload buffer <paramref name="i"/> of <paramref name="stride"/> bytes.</summary>
    public static ulong Buffer(int i, ulong stride = 2048) => GuestBase + DataOffset + ((ulong)i * stride);
}

/// <summary>
/// A split ring in test memory with our driver on one side and our device on the other.
/// The memory comes from an <see cref="IRingMemory{TAccess}"/> (ordinary RAM, or a PCI BAR
/// stand-in reached through the I/O accessor), so every ring test can run over each kind.
/// Guest memory starts at a non-zero guest-physical base (so an address mix-up between
/// guest and host offsets shows) and can be cut into many regions whose host mappings are
/// deliberately out of order, so a buffer contiguous in guest memory is not contiguous in
/// ours and must be split into segments.
/// </summary>
public class RingHarness<TAccess> : IDisposable
    where TAccess : struct, IMemoryAccessor
{
    public RingHarness(IRingMemory<TAccess> memory, int queueSize = 256, VirtioFeatures features = VirtioFeatures.Version1,
        ulong memorySize = 4 << 20, ulong regionSize = 0, ChainErrorPolicy policy = ChainErrorPolicy.BreakQueue,
        int indirectEntries = 0)
    {
        ArgumentNullException.ThrowIfNull(memory);
        MemoryKind = memory.Name;
        Backing = memory.Allocate("ring-harness", memorySize);
        try
        {
            Table = regionSize == 0
                ? MemoryTable.Create(Region(HarnessLayout.GuestBase, 0, memorySize))
                : Scrambled(memorySize, regionSize);
            Memory = new GuestMemory<TAccess>(Table, Backing.Access);
            State = QueueState.AtBase(queueSize, HarnessLayout.GuestBase + HarnessLayout.RingArea, features);
            Device = new SplitQueueDevice<TAccess>("test-device", policy);
            Driver = new SplitQueueDriver<TAccess>("test-driver");
            Indirect = indirectEntries > 0 ? new IndirectArea(HarnessLayout.GuestBase + HarnessLayout.IndirectAreaOffset, indirectEntries) : null;
            Assert.True(Driver.Start(State, Memory, Indirect), Driver.BrokenReason);
            Assert.True(Device.Start(State, Memory), Device.BrokenReason);
        }
        catch
        {
            Backing.Dispose();
            throw;
        }
    }

    /// <summary>Which memory the ring lives in ("RAM", "I/O (counted)", ...).</summary>
    public string MemoryKind { get; }

    /// <summary>The memory behind the whole guest address range.</summary>
    public RingBacking<TAccess> Backing { get; }

    /// <summary>The access counters of I/O memory (every access to <see cref="Backing"/>), or
    /// null for RAM and uncounted I/O memory.</summary>
    public AccessCounters? Counters => Backing.Access is IoMemoryAccessor io ? io.Counters : null;

    public MemoryTable Table { get; }

    public GuestMemory<TAccess> Memory { get; }

    public QueueState State { get; }

    public SplitQueueDevice<TAccess> Device { get; }

    public SplitQueueDriver<TAccess> Driver { get; }

    public IndirectArea? Indirect { get; }

    public RingPointers Ring
    {
        get
        {
            Assert.Equal(QueueError.None, State.Validate(Table, out _, out var ring));
            return ring;
        }
    }

    /// <summary>Writes a raw descriptor into the descriptor table (for hostile-input tests).</summary>
    public void WriteDesc(int index, ulong addr, uint len, VirtqDescFlags flags, ushort next)
    {
        ulong at = State.DescTable + ((ulong)index * 16);
        WriteDescAt(at, addr, len, flags, next);
    }

    /// <summary>Writes a raw descriptor at any guest address (an indirect table entry).</summary>
    public void WriteDescAt(ulong guestAddr, ulong addr, uint len, VirtqDescFlags flags, ushort next)
    {
        Span<byte> d = stackalloc byte[16];
        BitConverter.TryWriteBytes(d, addr);
        BitConverter.TryWriteBytes(d[8..], len);
        BitConverter.TryWriteBytes(d[12..], (ushort)flags);
        BitConverter.TryWriteBytes(d[14..], next);
        Assert.True(Memory.TryWrite(guestAddr, d));
    }

    /// <summary>Puts <paramref name="heads"/> on the avail ring behind the driver's back and
    /// publishes them (for hostile-input tests that bypass our driver).</summary>
    public void PublishRawAvail(ushort startIdx, params ushort[] heads)
    {
        for (int i = 0; i < heads.Length; i++)
        {
            WriteU16(State.AvailRing + 4 + (2 * (ulong)((startIdx + i) & (State.Size - 1))), heads[i]);
        }

        WriteU16(State.AvailRing + 2, (ushort)(startIdx + heads.Length));
    }

    public void WriteU16(ulong guestAddr, ushort value)
    {
        Assert.True(Memory.TryWrite(guestAddr, BitConverter.GetBytes(value)));
    }

    public ushort ReadU16(ulong guestAddr)
    {
        Span<byte> b = stackalloc byte[2];
        Assert.True(Memory.TryRead(guestAddr, b));
        return BitConverter.ToUInt16(b);
    }

    public void Dispose()
    {
        Backing.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary><paramref name="length"/> bytes of the backing from <paramref name="offset"/>
    /// at guest-physical <paramref name="guestPhysAddr"/>.</summary>
    private MemoryRegion Region(ulong guestPhysAddr, ulong offset, ulong length)
    {
        nint host = Backing.Address + (nint)offset;
        return new MemoryRegion(guestPhysAddr, length, (ulong)host, host);
    }

    private MemoryTable Scrambled(ulong memorySize, ulong regionSize)
    {
        // Region k of guest memory is backed by host chunk (n-1-k): guest-contiguous,
        // host-reversed. The ring area must stay inside one region, so regionSize must be
        // at least the ring's size.
        int n = checked((int)(memorySize / regionSize));
        var regions = new MemoryRegion[n];
        for (int k = 0; k < n; k++)
        {
            regions[k] = Region(HarnessLayout.GuestBase + ((ulong)k * regionSize), (ulong)(n - 1 - k) * regionSize, regionSize);
        }

        return MemoryTable.Create(regions);
    }
}

/// <summary>
/// The harness over ordinary RAM (a <see cref="NativeMemoryBlock"/> through
/// <see cref="RamAccessor"/>), for tests that are RAM-only on purpose (they use a special
/// test accessor, or test the memory model itself).
/// </summary>
public sealed class RingHarness : RingHarness<RamAccessor>
{
    public const ulong GuestBase = HarnessLayout.GuestBase;
    public const ulong RingArea = HarnessLayout.RingArea;
    public const ulong IndirectAreaOffset = HarnessLayout.IndirectAreaOffset;
    public const ulong DataOffset = HarnessLayout.DataOffset;

    public RingHarness(int queueSize = 256, VirtioFeatures features = VirtioFeatures.Version1,
        ulong memorySize = 4 << 20, ulong regionSize = 0, ChainErrorPolicy policy = ChainErrorPolicy.BreakQueue,
        int indirectEntries = 0)
        : base(new RamRingMemory(), queueSize, features, memorySize, regionSize, policy, indirectEntries)
    {
    }

    public NativeMemoryBlock Block => (NativeMemoryBlock)Backing.Owner;

    /// <summary>Guest address of payload buffer <paramref name="i"/> of <paramref name="stride"/> bytes.</summary>
    public static ulong Buffer(int i, ulong stride = 2048) => HarnessLayout.Buffer(i, stride);
}

/// <summary>
/// Base of the test classes that run over every kind of memory: each is an abstract generic
/// class with one sealed subclass per memory (<c>XTests_Ram</c>, <c>XTests_Io</c>).
/// </summary>
public abstract class RingMemoryTests<TAccess, TMemory>
    where TAccess : struct, IMemoryAccessor
    where TMemory : IRingMemory<TAccess>, new()
{
    /// <summary>The memory this instantiation runs over.</summary>
    protected TMemory RingMemory { get; } = new();

    /// <summary>A harness over <typeparamref name="TMemory"/> (see <see cref="RingHarness{TAccess}"/>).</summary>
    protected RingHarness<TAccess> NewHarness(int queueSize = 256, VirtioFeatures features = VirtioFeatures.Version1,
        ulong memorySize = 4 << 20, ulong regionSize = 0, ChainErrorPolicy policy = ChainErrorPolicy.BreakQueue,
        int indirectEntries = 0) =>
        new(RingMemory, queueSize, features, memorySize, regionSize, policy, indirectEntries);
}
