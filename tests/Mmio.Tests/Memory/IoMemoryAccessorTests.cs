using PciVirtio.Mmio.Memory;

namespace PciVirtio.Mmio.Tests.Memory;

public class IoMemoryAccessorTests
{
    [Fact]
    public void Aligned_loads_and_stores_are_single_transactions_of_their_width()
    {
        using var bar = PciBarMemory.CreateStandIn("acc", 4096, countAccesses: true);
        var a = bar.Accessor;
        nint p = bar.Mapping.Address;
        a.StoreU64(p, 0x1122334455667788);
        a.StoreU32(p + 8, 0xAABBCCDD);
        a.StoreU16(p + 12, 0xEEFF);
        Assert.Equal(3, bar.Counters!.Writes);
        Assert.Equal(14, bar.Counters.WrittenBytes);

        Assert.Equal(0x1122334455667788UL, a.LoadU64(p));
        Assert.Equal(0xAABBCCDDu, a.LoadU32(p + 8));
        Assert.Equal((ushort)0xEEFF, a.LoadU16(p + 12));
        Assert.Equal((ushort)0xEEFF, a.LoadAcquireU16(p + 12));
        Assert.Equal(4, bar.Counters.Reads);
        Assert.Equal(16, bar.Counters.ReadBytes);

        // Little-endian in memory, whatever the host.
        Assert.Equal(new byte[] { 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xDD, 0xCC, 0xBB, 0xAA, 0xFF, 0xEE }, bar.Mapping.Span[..14].ToArray());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    public void Unaligned_values_are_split_into_aligned_accesses_never_straddling(int offset)
    {
        using var bar = PciBarMemory.CreateStandIn("unaligned", 4096, countAccesses: true);
        var a = bar.Accessor;
        nint p = bar.Mapping.Address + offset;
        a.StoreU64(p, 0x0102030405060708);
        a.StoreU32(p + 16, 0x0A0B0C0D);
        a.StoreU16(p + 24, 0x0E0F);
        Assert.Equal(0x0102030405060708UL, a.LoadU64(p));
        Assert.Equal(0x0A0B0C0Du, a.LoadU32(p + 16));
        Assert.Equal((ushort)0x0E0F, a.LoadU16(p + 24));

        // More transactions than the aligned case: the value was split.
        Assert.True(bar.Counters!.Writes > 3);
        Assert.True(bar.Counters.Reads > 3);
        Assert.Equal(14, bar.Counters.WrittenBytes);
        Assert.Equal(14, bar.Counters.ReadBytes);
    }

    [Theory]
    [InlineData(0, 4096)]
    [InlineData(1, 4000)]
    [InlineData(3, 13)]
    [InlineData(6, 2)]
    [InlineData(7, 1)]
    [InlineData(5, 0)]
    public void Bulk_copies_move_aligned_words_and_round_trip(int offset, int length)
    {
        using var bar = PciBarMemory.CreateStandIn("copy", 8192, countAccesses: true);
        var a = bar.Accessor;
        var data = new byte[length];
        new Random(offset * 7919 + length).NextBytes(data);
        a.CopyTo(bar.Mapping.Address + offset, data);
        Assert.Equal(data, bar.Mapping.Span.Slice(offset, length).ToArray());
        long writes = bar.Counters!.Writes;
        Assert.Equal(length, bar.Counters.WrittenBytes);

        // Word copies: about length/8 transactions plus at most 3 on each unaligned end.
        Assert.True(writes <= (length / 8) + 6, $"{writes} writes for {length} bytes");

        var back = new byte[length];
        a.CopyFrom(bar.Mapping.Address + offset, back);
        Assert.Equal(data, back);
        Assert.Equal(length, bar.Counters.ReadBytes);
        Assert.True(bar.Counters.Reads <= (length / 8) + 6);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(7)]
    public void Wide_copies_into_io_memory_write_exactly_the_range_at_every_alignment(int sourceOffset)
    {
        // Destination offsets cover every residue modulo 64 (the widest store's alignment)
        // and then some; lengths cover the scalar-only sizes, the first vector stores and
        // the heads and tails around them. The source is misaligned too.
        const byte Guard = 0xA5;
        using var bar = PciBarMemory.CreateStandIn("wide", 8192);
        var a = bar.Accessor;
        var random = new Random(sourceOffset);
        var buffer = new byte[sourceOffset + 4096];
        foreach (int length in Enumerable.Range(0, 101).Concat([127, 128, 129, 191, 192, 193, 255, 256, 257, 319, 320, 1512, 4000]))
        {
            for (int offset = 0; offset < 73; offset++)
            {
                var page = bar.Mapping.Span[..8192];
                page.Fill(Guard);
                var data = buffer.AsSpan(sourceOffset, length);
                random.NextBytes(data);
                data.Replace(Guard, (byte)(Guard + 1)); // so a guard byte in the range means "not written"
                a.CopyTo(bar.Mapping.Address + offset, data);
                page = bar.Mapping.Span[..8192];
                Assert.True(page.Slice(offset, length).SequenceEqual(data), $"contents differ: {length} bytes at offset {offset}");
                Assert.True(page[..offset].IndexOfAnyExcept(Guard) < 0, $"written before the range: {length} bytes at offset {offset}");
                Assert.True(page[(offset + length)..].IndexOfAnyExcept(Guard) < 0, $"written past the range: {length} bytes at offset {offset}");
            }
        }
    }

    [Fact]
    public void A_long_aligned_copy_into_io_memory_is_wide_stores_counted_by_their_bytes()
    {
        using var bar = PciBarMemory.CreateStandIn("wide-count", 8192, countAccesses: true);
        var data = new byte[4096];
        new Random(5).NextBytes(data);
        bar.Accessor.CopyTo(bar.Mapping.Address, data);
        Assert.Equal(data, bar.Mapping.Span[..4096].ToArray());
        Assert.Equal(4096, bar.Counters!.WrittenBytes);

        // Posted writes: as few transactions as the widest accelerated store allows.
        int width = WidestStore();
        Assert.Equal(4096 / width, bar.Counters.Writes);
    }

    [Fact]
    public void A_descriptor_is_one_16_byte_store_when_aligned_and_two_8_byte_stores_when_not()
    {
        using var bar = PciBarMemory.CreateStandIn("pair", 4096, countAccesses: true);
        var back = new byte[16];
        foreach (int offset in new[] { 0, 16, 8, 24, 4 })
        {
            bar.Counters!.Reset();
            bar.Accessor.StoreU64Pair(bar.Mapping.Address + offset, 0x1122_3344_5566_7788, 0x99AA_BBCC_DDEE_FF00);
            bool one = offset % 16 == 0 && System.Runtime.Intrinsics.Vector128.IsHardwareAccelerated;
            Assert.Equal(16, bar.Counters.WrittenBytes);
            Assert.Equal(one ? 1 : offset % 8 == 0 ? 2 : 4, bar.Counters.Writes);
            bar.Accessor.CopyFrom(bar.Mapping.Address + offset, back);
            Assert.Equal(0x1122_3344_5566_7788UL, System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(back));
            Assert.Equal(0x99AA_BBCC_DDEE_FF00UL, System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(back.AsSpan(8)));
        }
    }

    [Fact]
    public void Every_store_of_a_copy_is_counted_once_at_every_alignment_and_length()
    {
        using var bar = PciBarMemory.CreateStandIn("store-count", 8192, countAccesses: true);
        var data = new byte[1600];
        var back = new byte[1600];
        new Random(9).NextBytes(data);
        int width = WidestStore();
        foreach (int length in new[] { 1, 7, 8, 63, 64, 65, 95, 96, 100, 127, 129, 200, 1500, 1514, 1600 })
        {
            for (int offset = 0; offset < 72; offset++)
            {
                bar.Counters!.Reset();
                bar.Accessor.CopyTo(bar.Mapping.Address + offset, data.AsSpan(0, length));
                Assert.Equal(length, bar.Counters.WrittenBytes);
                Assert.Equal(StoresOf(offset, length, width), bar.Counters.Writes);

                // And every byte landed where it belongs (the body is copied several vectors a turn).
                bar.Accessor.CopyFrom(bar.Mapping.Address + offset, back.AsSpan(0, length));
                Assert.True(back.AsSpan(0, length).SequenceEqual(data.AsSpan(0, length)), $"{length} bytes at +{offset}");
            }
        }
    }

    /// <summary>The widest vector the runtime accelerates, in bytes (8: none).</summary>
    private static int WidestStore() =>
        System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? 64
        : System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated ? 32
        : System.Runtime.Intrinsics.Vector128.IsHardwareAccelerated ? 16 : 8;

    /// <summary>The stores a copy to <paramref name="offset"/> (from a page boundary) makes:
    /// naturally aligned 1/2/4-byte ones to 8-byte alignment; when at least 64 bytes are left,
    /// one 8-, 16- and 32-byte store each where the address needs it to reach the vector
    /// alignment, vectors, then one 32- and 16-byte store each where they fit; 8-byte ones,
    /// then 4/2/1.</summary>
    private static long StoresOf(int offset, int length, int width)
    {
        long stores = 0;
        int at = offset;
        int end = offset + length;
        while (at < end && at % 8 != 0)
        {
            at += at % 2 != 0 || end - at < 2 ? 1 : at % 4 != 0 || end - at < 4 ? 2 : 4;
            stores++;
        }

        if (width > 8 && end - at >= 64)
        {
            for (int step = 8; step < width; step *= 2)
            {
                if (at % (2 * step) != 0)
                {
                    at += step;
                    stores++;
                }
            }

            stores += (end - at) / width;
            at += (end - at) / width * width;
            for (int step = width / 2; step >= 16; step /= 2)
            {
                if (end - at >= step)
                {
                    at += step;
                    stores++;
                }
            }
        }

        stores += (end - at) / 8;
        at += (end - at) / 8 * 8;

        for (; at < end; stores++)
        {
            at += end - at >= 4 ? 4 : end - at >= 2 ? 2 : 1;
        }

        return stores;
    }

    [Fact]
    public void Publishing_an_index_issues_a_barrier_first()
    {
        using var bar = PciBarMemory.CreateStandIn("barrier", 4096, countAccesses: true);
        bar.Accessor.StoreReleaseU16(bar.Mapping.Address + 2, 7);
        Assert.Equal(1, bar.Counters!.Barriers);
        Assert.Equal(1, bar.Counters.Writes);
        Assert.Equal(7, bar.Accessor.LoadU16(bar.Mapping.Address + 2));
    }

    [Fact]
    public void A_windowed_counter_only_counts_accesses_inside_its_window()
    {
        using var bar = PciBarMemory.CreateStandIn("window", 8192);
        var counters = new AccessCounters(bar.Mapping.Address + 4096, 4096);
        var a = new IoMemoryAccessor(counters);
        a.StoreU64(bar.Mapping.Address, 1);          // local half: not counted
        a.StoreU64(bar.Mapping.Address + 4096, 2);   // remote half: counted
        _ = a.LoadU64(bar.Mapping.Address + 8);
        _ = a.LoadU64(bar.Mapping.Address + 4104);
        Assert.Equal(1, counters.Writes);
        Assert.Equal(1, counters.Reads);
        counters.Reset();
        Assert.Equal(0, counters.Reads + counters.Writes);
    }

    [Fact]
    public void Two_mappings_of_one_memfd_see_each_others_writes()
    {
        using var fd = MemFd.Create("shared", 4096);
        using var a = PciBarMemory.FromFd(fd, 4096, "a");
        using var b = PciBarMemory.FromFd(fd, 4096, "b");
        Assert.NotEqual(a.Mapping.Address, b.Mapping.Address);
        a.Accessor.StoreU64(a.Mapping.Address + 64, 0xFEEDFACECAFEBEEF);
        Assert.Equal(0xFEEDFACECAFEBEEFUL, b.Accessor.LoadU64(b.Mapping.Address + 64));
        var region = b.Region(0x4000_0000);
        Assert.Equal(0x4000_0000UL, region.GuestPhysAddr);
        Assert.Equal(4096UL, region.Size);
        Assert.Equal(b.Mapping.Address, region.HostAddr);
    }
}
