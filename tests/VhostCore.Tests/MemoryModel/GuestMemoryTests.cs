using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;

namespace PciVirtio.VhostCore.Tests.MemoryModel;

/// <summary>Reads and writes through a memory table: ranges spanning regions whose host
/// mappings are out of order, ranges touching unmapped memory, and gather/scatter.</summary>
public class GuestMemoryTests
{
    private const ulong RegionSize = 0x10000;
    private const ulong MemorySize = 4 << 20;
    private const int Regions = (int)(MemorySize / RegionSize);

    /// <summary>Offset in the harness block of guest offset <paramref name="guestOffset"/>
    /// (RingHarness maps guest region k to host chunk n-1-k).</summary>
    private static int HostOffset(ulong guestOffset) =>
        checked((int)(((ulong)(Regions - 1 - (int)(guestOffset / RegionSize)) * RegionSize) + (guestOffset % RegionSize)));

    private static byte[] Pattern(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    [Fact]
    public void Read_and_write_span_several_host_scrambled_regions()
    {
        using var h = new RingHarness(queueSize: 8, memorySize: MemorySize, regionSize: RegionSize);
        Assert.Equal(Regions, h.Table.Count);

        const ulong start = 0x18000 - 7;        // in region 1, runs through regions 2 and 3 into 4
        var data = Pattern((int)(3 * RegionSize) + 123, 1);
        Assert.True(h.Memory.IsMapped(RingHarness.GuestBase + start, (ulong)data.Length));
        Assert.True(h.Memory.TryWrite(RingHarness.GuestBase + start, data));

        // Every byte landed where the (reversed) host mapping puts it.
        var raw = h.Block.Span;
        var landed = new byte[data.Length];
        for (int i = 0; i < data.Length; i++)
        {
            landed[i] = raw[HostOffset(start + (ulong)i)];
        }

        Assert.Equal(data, landed);

        var back = new byte[data.Length];
        Assert.True(h.Memory.TryRead(RingHarness.GuestBase + start, back));
        Assert.Equal(data, back);

        // A sub-range crossing exactly one region boundary.
        var piece = new byte[64];
        Assert.True(h.Memory.TryRead(RingHarness.GuestBase + 0x20000 - 32, piece));
        Assert.Equal(data.AsSpan((int)(0x20000 - 32 - start), 64).ToArray(), piece);
    }

    [Fact]
    public void Write_running_off_the_end_of_memory_fails_and_writes_nothing()
    {
        using var h = new RingHarness(queueSize: 8, memorySize: MemorySize, regionSize: RegionSize);
        ulong at = RingHarness.GuestBase + MemorySize - 0x100;
        var data = Enumerable.Repeat((byte)0xab, 0x200).ToArray();

        Assert.False(h.Memory.IsMapped(at, 0x200));
        Assert.False(h.Memory.TryWrite(at, data));

        var back = new byte[0x100];
        Assert.True(h.Memory.TryRead(at, back));
        Assert.All(back, b => Assert.Equal(0, b));
        Assert.False(h.Memory.TryRead(at, new byte[0x200]));
        Assert.Equal(-1, h.Block.Span.IndexOf((byte)0xab));
    }

    [Fact]
    public void Write_across_a_hole_between_regions_fails_and_writes_nothing()
    {
        using var block = new NativeMemoryBlock(0x2000);
        const ulong g = 0x4000_0000;
        var table = MemoryTable.Create(block.Region(g, 0, 0x1000), block.Region(g + 0x2000, 0x1000, 0x1000));
        var memory = new GuestMemory<RamAccessor>(table, default);
        var data = Enumerable.Repeat((byte)0x5a, 0x2000).ToArray();

        Assert.False(memory.IsMapped(g + 0x800, 0x2000));
        Assert.False(memory.TryWrite(g + 0x800, data));
        Assert.DoesNotContain((byte)0x5a, block.Span.ToArray());
        Assert.False(memory.TryRead(g + 0x800, new byte[0x2000]));

        // Starting in the hole, or below all memory, fails too.
        Assert.False(memory.TryWrite(g + 0x1800, data.AsSpan(0, 0x1000)));
        Assert.False(memory.TryWrite(g - 1, data.AsSpan(0, 2)));
        Assert.DoesNotContain((byte)0x5a, block.Span.ToArray());

        // Inside each region it works.
        Assert.True(memory.IsMapped(g + 0x800, 0x800));
        Assert.True(memory.TryWrite(g + 0x800, data.AsSpan(0, 0x800)));
        Assert.True(memory.TryWrite(g + 0x2000, data.AsSpan(0, 0x10)));
        Assert.Equal(0x5a, block.Span[0x800]);
        Assert.Equal(0x5a, block.Span[0x1000]);
        Assert.Equal(0, block.Span[0x1010]);
    }

    [Fact]
    public void Ranges_wrapping_past_2_pow_64_fail_but_the_top_region_is_usable()
    {
        using var block = new NativeMemoryBlock(0x1000);
        var table = MemoryTable.Create(new MemoryRegion(ulong.MaxValue - 0xfff, 0x1000, 0x10_0000, block.Address));
        var memory = new GuestMemory<RamAccessor>(table, default);

        var data = Pattern(16, 3);
        Assert.True(memory.TryWrite(ulong.MaxValue - 15, data));
        Assert.Equal(data, block.Span[^16..].ToArray());
        var back = new byte[16];
        Assert.True(memory.TryRead(ulong.MaxValue - 15, back));
        Assert.Equal(data, back);
        Assert.True(memory.IsMapped(ulong.MaxValue, 1));

        Assert.False(memory.TryWrite(ulong.MaxValue - 15, new byte[17]));
        Assert.False(memory.TryRead(ulong.MaxValue - 1, new byte[4]));
        Assert.False(memory.IsMapped(ulong.MaxValue - 1, 4));
        Assert.Equal(data, block.Span[^16..].ToArray());
    }

    private static (NativeMemoryBlock Block, GuestMemory<RamAccessor> Memory, IoSegment[] Segments) ThreeSegments()
    {
        // Segments of 10, 20 and 30 bytes at unrelated, out-of-order host offsets.
        var block = new NativeMemoryBlock(0x1000);
        var memory = new GuestMemory<RamAccessor>(MemoryTable.Create(block.Region(0x1000)), default);
        IoSegment[] segs =
        [
            new(block.Address + 0x300, 10, 0x1300),
            new(block.Address + 0x100, 20, 0x1100),
            new(block.Address + 0x200, 30, 0x1200),
        ];
        return (block, memory, segs);
    }

    private static byte[] Concat(NativeMemoryBlock block, IoSegment[] segs) =>
        segs.SelectMany(s => block.Span.Slice((int)(s.Host - block.Address), (int)s.Length).ToArray()).ToArray();

    [Theory]
    [InlineData(0, 64)]
    [InlineData(3, 64)]
    [InlineData(10, 64)]   // skip exactly the first segment
    [InlineData(25, 64)]   // skip into the second
    [InlineData(30, 64)]
    [InlineData(59, 64)]   // last byte only
    [InlineData(60, 64)]   // everything skipped
    [InlineData(1000, 64)]
    [InlineData(8, 7)]     // short destination crossing the first boundary
    [InlineData(0, 0)]
    public void Gather_skips_then_copies_across_segments(int skip, int destLength)
    {
        var (block, memory, segs) = ThreeSegments();
        using (block)
        {
            var fill = Pattern(0x1000, 7);
            fill.CopyTo(block.Span);
            var all = Concat(block, segs);
            var expected = all.Skip(skip).Take(destLength).ToArray();

            var dest = new byte[destLength];
            Assert.Equal(expected.Length, memory.Gather(segs, skip, dest));
            Assert.Equal(expected, dest.AsSpan(0, expected.Length).ToArray());
        }
    }

    [Theory]
    [InlineData(0, 60)]
    [InlineData(4, 20)]
    [InlineData(10, 30)]
    [InlineData(25, 100)]   // short: only 35 bytes of room after the skip
    [InlineData(60, 10)]
    public void Scatter_skips_then_writes_across_segments_and_nothing_else(int skip, int sourceLength)
    {
        var (block, memory, segs) = ThreeSegments();
        using (block)
        {
            var source = Pattern(sourceLength, 9);
            int expectedCount = Math.Clamp(60 - skip, 0, sourceLength);
            Assert.Equal(expectedCount, memory.Scatter(segs, skip, source));

            var expectedAll = new byte[60];
            source.AsSpan(0, expectedCount).CopyTo(expectedAll.AsSpan(skip < 60 ? skip : 60));
            Assert.Equal(expectedAll, Concat(block, segs));

            // Bytes outside the segments stay zero.
            int outside = block.Span.ToArray().Where((_, i) => !segs.Any(s => i >= (int)(s.Host - block.Address) && i < (int)(s.Host - block.Address) + (int)s.Length)).Count(b => b != 0);
            Assert.Equal(0, outside);
        }
    }

    [Fact]
    public void Gather_and_scatter_handle_a_segment_larger_than_2_GiB()
    {
        // A guest may hand over a single descriptor of up to 4 GiB - 1 inside one big region;
        // touching only its first bytes must work (the host memory behind the first page is real).
        using var block = new NativeMemoryBlock(0x1000);
        var memory = new GuestMemory<RamAccessor>(MemoryTable.Create(block.Region(0x1000)), default);
        IoSegment[] huge = [new(block.Address, 0xC000_0000, 0x1000)];
        Pattern(0x1000, 11).CopyTo(block.Span);

        var dest = new byte[32];
        Assert.Equal(32, memory.Gather(huge, 0, dest));
        Assert.Equal(block.Span[..32].ToArray(), dest);
        Assert.Equal(32, memory.Gather(huge, 100, dest));
        Assert.Equal(block.Span[100..132].ToArray(), dest);

        var src = Pattern(32, 12);
        Assert.Equal(32, memory.Scatter(huge, 200, src));
        Assert.Equal(src, block.Span[200..232].ToArray());
    }

    [Fact]
    public void Gather_and_scatter_reject_a_negative_skip()
    {
        var (block, memory, segs) = ThreeSegments();
        using (block)
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => memory.Gather(segs, -1, new byte[8]));
            Assert.Throws<ArgumentOutOfRangeException>(() => memory.Scatter(segs, -1, new byte[8]));
        }
    }

    [Fact]
    public void Gather_with_skip_reads_a_popped_chain_that_spans_two_regions()
    {
        using var h = new RingHarness(queueSize: 8, memorySize: MemorySize, regionSize: RegionSize);
        ulong buf = RingHarness.GuestBase + 0x30000 - 100;
        var data = Pattern(300, 13);
        Assert.True(h.Memory.TryWrite(buf, data));
        Assert.True(h.Driver.TryAdd([new GuestBuffer(buf, 300)], [new GuestBuffer(buf + 1000, 300)], 1));
        h.Driver.Publish();

        var chains = new DescriptorChain[1];
        var segs = new IoSegment[8];
        Assert.Equal(1, h.Device.PopAvail(chains, segs));
        var readable = chains[0].Readable(segs);
        Assert.Equal(2, readable.Length);

        var got = new byte[150];
        Assert.Equal(150, h.Memory.Gather(readable, 50, got)); // starts in the first segment, ends in the second
        Assert.Equal(data.AsSpan(50, 150).ToArray(), got);

        Assert.Equal(150, h.Memory.Scatter(chains[0].Writable(segs), 150, got));
        var written = new byte[300];
        Assert.True(h.Memory.TryRead(buf + 1000, written));
        Assert.Equal(new byte[150], written[..150]);
        Assert.Equal(got, written[150..]);
    }
}
