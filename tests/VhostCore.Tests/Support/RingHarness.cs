using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;

namespace PciVirtio.VhostCore.Tests.Support;

/// <summary>
/// A split ring in native memory with our driver on one side and our device on the other.
/// Guest memory starts at a non-zero guest-physical base (so an address mix-up between
/// guest and host offsets shows) and can be cut into many regions whose host mappings are
/// deliberately out of order, so a buffer contiguous in guest memory is not contiguous in
/// ours and must be split into segments.
/// </summary>
public sealed class RingHarness : IDisposable
{
    public const ulong GuestBase = 0x1_0000_0000;
    public const ulong RingArea = 0x10000;       // offset of the ring inside guest memory
    public const ulong IndirectAreaOffset = 0x80000;
    public const ulong DataOffset = 0x100000;     // payload buffers start here

    private readonly NativeMemoryBlock _block;

    public RingHarness(int queueSize = 256, VirtioFeatures features = VirtioFeatures.Version1,
        ulong memorySize = 4 << 20, ulong regionSize = 0, ChainErrorPolicy policy = ChainErrorPolicy.BreakQueue,
        int indirectEntries = 0)
    {
        _block = new NativeMemoryBlock(memorySize);
        Table = regionSize == 0 ? MemoryTable.Create(_block.Region(GuestBase)) : Scrambled(_block, memorySize, regionSize);
        Memory = new GuestMemory<RamAccessor>(Table, default);
        State = QueueState.AtBase(queueSize, GuestBase + RingArea, features);
        Device = new SplitQueueDevice<RamAccessor>("test-device", policy);
        Driver = new SplitQueueDriver<RamAccessor>("test-driver");
        Indirect = indirectEntries > 0 ? new IndirectArea(GuestBase + IndirectAreaOffset, indirectEntries) : null;
        Assert.True(Driver.Start(State, Memory, Indirect), Driver.BrokenReason);
        Assert.True(Device.Start(State, Memory), Device.BrokenReason);
    }

    public MemoryTable Table { get; }

    public GuestMemory<RamAccessor> Memory { get; }

    public QueueState State { get; }

    public SplitQueueDevice<RamAccessor> Device { get; }

    public SplitQueueDriver<RamAccessor> Driver { get; }

    public IndirectArea? Indirect { get; }

    public NativeMemoryBlock Block => _block;

    public RingPointers Ring
    {
        get
        {
            Assert.Equal(QueueError.None, State.Validate(Table, out _, out var ring));
            return ring;
        }
    }

    /// <summary>Guest address of payload buffer <paramref name="i"/> of <paramref name="stride"/> bytes.</summary>
    public static ulong Buffer(int i, ulong stride = 2048) => GuestBase + DataOffset + ((ulong)i * stride);

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

    public void Dispose() => _block.Dispose();

    private static MemoryTable Scrambled(NativeMemoryBlock block, ulong memorySize, ulong regionSize)
    {
        // Region k of guest memory is backed by host chunk (n-1-k): guest-contiguous,
        // host-reversed. The ring area must stay inside one region, so regionSize must be
        // at least the ring's size.
        int n = checked((int)(memorySize / regionSize));
        var regions = new MemoryRegion[n];
        for (int k = 0; k < n; k++)
        {
            regions[k] = block.Region(GuestBase + ((ulong)k * regionSize), (ulong)(n - 1 - k) * regionSize, regionSize);
        }

        return MemoryTable.Create(regions);
    }
}
