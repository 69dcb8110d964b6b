using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;
using static PciVirtio.VhostCore.Tests.Validation.HostileRing;

namespace PciVirtio.VhostCore.Tests.Validation;

/// <summary>
/// Hostile descriptor chains written straight into the ring (bypassing our driver). Each
/// must break the queue with the exact error and a reason naming the problem, and PopAvail
/// must return 0 without throwing or hanging.
/// </summary>
public abstract class DescriptorChainValidationTests<TAccess, TMemory> : RingMemoryTests<TAccess, TMemory>
    where TAccess : struct, IMemoryAccessor
    where TMemory : IRingMemory<TAccess>, new()
{
    private const ulong MemorySize = 4 << 20;

    // ---- sanity: the hand-built rings work when they are well formed ----

    [Fact]
    public void Hand_built_direct_chain_is_accepted()
    {
        using var h = NewHarness();
        h.WriteDesc(7, Buf(0), 100, VirtqDescFlags.Next, 9);
        h.WriteDesc(9, Buf(1), 200, VirtqDescFlags.Write, 0);
        h.PublishRawAvail(0, 7);

        var chains = new DescriptorChain[4];
        var segs = new IoSegment[8];
        Assert.Equal(1, Pop(h.Device, chains, segs));
        Assert.Equal(7, chains[0].Head);
        Assert.Equal(100u, chains[0].ReadableBytes);
        Assert.Equal(200u, chains[0].WritableBytes);
        Assert.Equal(Buf(0), chains[0].Readable(segs)[0].Guest);
        Assert.Equal(Buf(1), chains[0].Writable(segs)[0].Guest);
        Assert.False(h.Device.IsBroken);
    }

    [Fact]
    public void Hand_built_indirect_chain_is_accepted()
    {
        using var h = NewHarness(features: WithIndirect);
        WriteIndirect(h, Table, 0, Buf(0), 10, VirtqDescFlags.Next, 1);
        WriteIndirect(h, Table, 1, Buf(1), 20, VirtqDescFlags.Write, 0);
        h.WriteDesc(0, Table, 32, VirtqDescFlags.Indirect, 0);
        h.PublishRawAvail(0, 0);

        var chains = new DescriptorChain[4];
        var segs = new IoSegment[8];
        Assert.Equal(1, Pop(h.Device, chains, segs));
        Assert.Equal(10u, chains[0].ReadableBytes);
        Assert.Equal(20u, chains[0].WritableBytes);
    }

    // ---- loops and length ----

    [Fact]
    public void Two_descriptor_loop_breaks_the_queue()
    {
        using var h = NewHarness();
        h.WriteDesc(0, Buf(0), 16, VirtqDescFlags.Next, 5);
        h.WriteDesc(5, Buf(1), 16, VirtqDescFlags.Next, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.ChainTooLong, "descriptor chain 0", "longer than the queue size 256", "loop");
    }

    [Fact]
    public void Self_loop_breaks_the_queue()
    {
        using var h = NewHarness();
        h.WriteDesc(3, Buf(0), 16, VirtqDescFlags.Next, 3);
        h.PublishRawAvail(0, 3);
        AssertPopBreaks(h, QueueError.ChainTooLong, "descriptor chain 3", "loop");
    }

    [Fact]
    public void Loop_with_a_small_segment_buffer_stops_at_the_segment_limit()
    {
        // A caller with a small segment buffer hits its limit before the chain-length check:
        // still a bad chain, still a broken queue, still no hang.
        using var h = NewHarness();
        h.WriteDesc(0, Buf(0), 16, VirtqDescFlags.Next, 1);
        h.WriteDesc(1, Buf(1), 16, VirtqDescFlags.Next, 0);
        h.PublishRawAvail(0, 0);
        Assert.Equal(0, Pop(h.Device, new DescriptorChain[4], new IoSegment[64]));
        Assert.Equal(QueueError.TooManySegments, h.Device.Error);
    }

    [Fact]
    public void Self_loop_of_zero_length_descriptors_breaks_the_queue()
    {
        // Zero-length descriptors produce no segment, so a segment limit cannot stop this walk.
        using var h = NewHarness();
        h.WriteDesc(0, 0, 0, VirtqDescFlags.Next | VirtqDescFlags.Write, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.ChainTooLong, "loop");
    }

    [Fact]
    public void Chain_longer_than_the_queue_breaks_it_but_one_exactly_as_long_is_fine()
    {
        using var h = NewHarness(queueSize: 4);
        for (int i = 0; i < 4; i++)
        {
            h.WriteDesc(i, Buf(i), 8, i < 3 ? VirtqDescFlags.Next : VirtqDescFlags.None, (ushort)(i + 1));
        }

        h.PublishRawAvail(0, 0);
        var chains = new DescriptorChain[1];
        var segs = new IoSegment[8];
        Assert.Equal(1, Pop(h.Device, chains, segs));
        Assert.Equal(4, chains[0].ReadableSegments);
        Assert.Equal(32u, chains[0].ReadableBytes);

        // Now close the ring: 0 -> 1 -> 2 -> 3 -> 0, five or more descriptors in a queue of four.
        h.WriteDesc(3, Buf(3), 8, VirtqDescFlags.Next, 0);
        h.PublishRawAvail(1, 1);
        AssertPopBreaks(h, QueueError.ChainTooLong, "descriptor chain 1", "longer than the queue size 4");
    }

    [Theory]
    [InlineData(256)]
    [InlineData(1000)]
    [InlineData(0xffff)]
    public void Next_index_out_of_range_breaks_the_queue(int next)
    {
        using var h = NewHarness();
        h.WriteDesc(0, Buf(0), 16, VirtqDescFlags.Next, (ushort)next);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.NextOutOfRange, $"next index {next}", "descriptor table of 256 entries");
    }

    // ---- addresses ----

    [Fact]
    public void Address_plus_length_overflowing_2_pow_64_breaks_the_queue()
    {
        using var h = NewHarness();
        h.WriteDesc(0, ulong.MaxValue - 7, 16, VirtqDescFlags.None, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.AddressOverflow, "descriptor 0", "0xfffffffffffffff8", "overflows");
    }

    [Fact]
    public void Buffer_ending_exactly_at_2_pow_64_is_not_an_overflow_but_is_outside_memory()
    {
        using var h = NewHarness();
        h.WriteDesc(0, ulong.MaxValue - 15, 16, VirtqDescFlags.None, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.BufferOutOfMemory, "not inside guest memory");
    }

    [Theory]
    [InlineData(0x1000UL)]                                        // below guest memory
    [InlineData(HarnessLayout.GuestBase - 16)]                      // just below, touching the first byte
    [InlineData(HarnessLayout.GuestBase + MemorySize)]              // just past the end
    [InlineData(0x7fff_0000_0000UL)]
    public void Buffer_outside_every_region_breaks_the_queue(ulong addr)
    {
        using var h = NewHarness(memorySize: MemorySize);
        h.WriteDesc(0, Buf(0), 16, VirtqDescFlags.Next, 1);
        h.WriteDesc(1, addr, 32, VirtqDescFlags.Write, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.BufferOutOfMemory, "descriptor 1", $"0x{addr:x}+0x20", "not inside guest memory");
    }

    [Theory]
    [InlineData(0UL)]          // one region
    [InlineData(0x10000UL)]    // the last of 64 regions
    public void Buffer_crossing_the_end_of_memory_breaks_the_queue(ulong regionSize)
    {
        using var h = NewHarness(memorySize: MemorySize, regionSize: regionSize);
        h.WriteDesc(0, HarnessLayout.GuestBase + MemorySize - 32, 64, VirtqDescFlags.None, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.BufferOutOfMemory, "not inside guest memory");
    }

    [Fact]
    public void Buffer_crossing_a_region_end_into_a_hole_breaks_the_queue()
    {
        using var h = NewHarness(memorySize: MemorySize);

        // Re-start the device over a table with a hole after the first 1 MiB of guest memory.
        var whole = h.Table.Regions[0];
        var holed = MemoryTable.Create(
            whole with { Size = 0x100000 },
            whole with { GuestPhysAddr = whole.GuestPhysAddr + 0x200000, Size = 0x100000, UserAddr = whole.UserAddr + 0x200000, HostAddr = whole.HostAddr + 0x200000 });
        Assert.True(h.Device.Start(h.State, new GuestMemory<TAccess>(holed, h.Memory.Access)));

        h.WriteDesc(0, HarnessLayout.GuestBase + 0x100000 - 16, 32, VirtqDescFlags.None, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.BufferOutOfMemory, "0x1000ffff0+0x20");
    }

    [Fact]
    public void Buffer_spanning_adjacent_regions_becomes_one_segment_per_region()
    {
        using var h = NewHarness(memorySize: MemorySize, regionSize: 0x10000);
        ulong two = HarnessLayout.GuestBase + 0x30000 - 100;              // 100 B + 200 B
        ulong three = HarnessLayout.GuestBase + 0x50000 - 10;             // 10 B + 64 KiB + 30 B
        h.WriteDesc(0, two, 300, VirtqDescFlags.Next, 1);
        h.WriteDesc(1, three, 0x10000 + 40, VirtqDescFlags.Write, 0);
        h.PublishRawAvail(0, 0);

        var chains = new DescriptorChain[1];
        var segs = new IoSegment[8];
        Assert.Equal(1, Pop(h.Device, chains, segs));
        Assert.False(h.Device.IsBroken);
        var c = chains[0];
        Assert.Equal(2, c.ReadableSegments);
        Assert.Equal(3, c.WritableSegments);
        Assert.Equal(300u, c.ReadableBytes);
        Assert.Equal(0x10000u + 40, c.WritableBytes);

        AssertSegment(h, segs[0], two, 100);
        AssertSegment(h, segs[1], two + 100, 200);
        AssertSegment(h, segs[2], three, 10);
        AssertSegment(h, segs[3], three + 10, 0x10000);
        AssertSegment(h, segs[4], three + 10 + 0x10000, 30);

        // The regions are host-scrambled: the pieces are not contiguous in our mapping.
        Assert.NotEqual(segs[0].Host + 100, segs[1].Host);
    }

    private static void AssertSegment(RingHarness<TAccess> h, IoSegment s, ulong guest, uint length)
    {
        Assert.Equal(guest, s.Guest);
        Assert.Equal(length, s.Length);
        Assert.True(h.Table.TryTranslate(guest, length, out nint host));
        Assert.Equal(host, s.Host);
    }

    // ---- indirect tables ----

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void Indirect_entry_inside_an_indirect_table_breaks_the_queue(int nestedAt)
    {
        using var h = NewHarness(features: WithIndirect);
        ulong inner = Table + 0x1000;
        WriteIndirect(h, inner, 0, Buf(0), 16, VirtqDescFlags.None, 0);
        if (nestedAt == 1)
        {
            WriteIndirect(h, Table, 0, Buf(1), 16, VirtqDescFlags.Next, 1);
        }

        WriteIndirect(h, Table, nestedAt, inner, 16, VirtqDescFlags.Indirect, 0);
        h.WriteDesc(0, Table, 32, VirtqDescFlags.Indirect, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.IndirectNested, $"indirect table entry {nestedAt} is itself indirect");
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(8u)]
    [InlineData(24u)]
    [InlineData(33u)]
    [InlineData(16u * (SplitRingLayout.MaxQueueSize + 1))]                 // MaxIndirectEntries is the largest queue size
    public void Indirect_length_not_a_non_zero_multiple_of_16_within_the_cap_breaks_the_queue(uint len)
    {
        Assert.Equal(SplitRingLayout.MaxQueueSize, SplitQueueDevice<TAccess>.MaxIndirectEntries);
        using var h = NewHarness(features: WithIndirect);
        WriteIndirect(h, Table, 0, Buf(0), 16, VirtqDescFlags.None, 0);
        WriteIndirect(h, Table, 1, Buf(1), 16, VirtqDescFlags.None, 0);
        WriteIndirect(h, Table, 2, Buf(2), 16, VirtqDescFlags.None, 0);
        h.WriteDesc(0, Table, len, VirtqDescFlags.Indirect, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.IndirectBadLength, $"has length {len}", "multiple of 16");
    }

    [Fact]
    public void Indirect_table_of_exactly_the_cap_is_accepted()
    {
        using var h = NewHarness(features: WithIndirect);
        ulong big = HarnessLayout.GuestBase + HarnessLayout.DataOffset;
        uint len = 16u * SplitQueueDevice<TAccess>.MaxIndirectEntries; // 512 KiB, inside memory
        WriteIndirect(h, big, 0, Buf(100), 16, VirtqDescFlags.None, 0);
        h.WriteDesc(0, big, len, VirtqDescFlags.Indirect, 0);
        h.PublishRawAvail(0, 0);
        Assert.Equal(1, Pop(h));
        Assert.False(h.Device.IsBroken);
    }

    [Theory]
    [InlineData(0x2000UL, 32u)]                                  // outside every region
    [InlineData(HarnessLayout.GuestBase + MemorySize - 16, 32u)] // crosses the end of memory
    public void Indirect_table_outside_memory_breaks_the_queue(ulong table, uint len)
    {
        using var h = NewHarness(features: WithIndirect, memorySize: MemorySize, regionSize: 0x10000);
        if (h.Memory.IsMapped(table, 16))
        {
            // Make the entry that is in memory valid, so only the placement is wrong.
            WriteIndirect(h, table, 0, Buf(0), 16, VirtqDescFlags.None, 0);
        }

        h.WriteDesc(0, table, len, VirtqDescFlags.Indirect, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.IndirectOutOfMemory, $"indirect table 0x{table:x}+0x{len:x}", "not inside guest memory");
    }

    [Fact]
    public void Indirect_table_across_two_regions_is_read_entry_by_entry()
    {
        // Regions are contiguous in guest-physical memory but host-reversed, so reading the
        // second half at the first half's host address would read other bytes.
        using var h = NewHarness(features: WithIndirect, memorySize: MemorySize, regionSize: 0x10000);
        ulong table = HarnessLayout.GuestBase + HarnessLayout.IndirectAreaOffset + 0x10000 - 32; // two entries each side
        Assert.False(h.Memory.Table.TryTranslate(table, 64, out _));
        for (int i = 0; i < 4; i++)
        {
            WriteIndirect(h, table, i, Buf(i), (uint)(10 * (i + 1)), i < 3 ? VirtqDescFlags.Next : VirtqDescFlags.None, (ushort)(i + 1));
        }

        h.WriteDesc(0, table, 64, VirtqDescFlags.Indirect, 0);
        h.PublishRawAvail(0, 0);

        var chains = new DescriptorChain[4];
        var segs = new IoSegment[8];
        Assert.Equal(1, Pop(h.Device, chains, segs));
        Assert.False(h.Device.IsBroken);
        Assert.Equal(100u, chains[0].ReadableBytes);
        var readable = chains[0].Readable(segs);
        Assert.Equal(4, readable.Length);
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(Buf(i), readable[i].Guest);
            Assert.Equal((uint)(10 * (i + 1)), readable[i].Length);
        }
    }

    [Fact]
    public void Indirect_entry_straddling_two_regions_breaks_the_queue()
    {
        using var h = NewHarness(features: WithIndirect, memorySize: MemorySize, regionSize: 0x10000);
        ulong table = HarnessLayout.GuestBase + HarnessLayout.IndirectAreaOffset + 0x10000 - 24; // entry 1 straddles
        WriteIndirect(h, table, 0, Buf(0), 16, VirtqDescFlags.Next, 1);
        h.WriteDesc(0, table, 48, VirtqDescFlags.Indirect, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.IndirectOutOfMemory, "indirect table entry 1", $"0x{table + 16:x}", "straddles two memory regions");
    }

    [Fact]
    public void Indirect_without_the_feature_breaks_the_queue()
    {
        using var h = NewHarness(features: VirtioFeatures.Version1);
        WriteIndirect(h, Table, 0, Buf(0), 16, VirtqDescFlags.None, 0);
        h.WriteDesc(2, Table, 16, VirtqDescFlags.Indirect, 0);
        h.PublishRawAvail(0, 2);
        AssertPopBreaks(h, QueueError.IndirectNotNegotiated, "descriptor 2 is indirect", "VIRTIO_F_INDIRECT_DESC was not negotiated");
    }

    [Fact]
    public void Indirect_together_with_next_breaks_the_queue()
    {
        using var h = NewHarness(features: WithIndirect);
        WriteIndirect(h, Table, 0, Buf(0), 16, VirtqDescFlags.None, 0);
        h.WriteDesc(0, Table, 16, VirtqDescFlags.Indirect | VirtqDescFlags.Next, 1);
        h.WriteDesc(1, Buf(1), 16, VirtqDescFlags.Write, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.IndirectWithNext, "descriptor 0 has both INDIRECT and NEXT");
    }

    [Fact]
    public void Loop_inside_an_indirect_table_breaks_the_queue()
    {
        using var h = NewHarness(features: WithIndirect);
        WriteIndirect(h, Table, 0, Buf(0), 16, VirtqDescFlags.Next, 1);
        WriteIndirect(h, Table, 1, Buf(1), 16, VirtqDescFlags.Next, 0);
        h.WriteDesc(0, Table, 32, VirtqDescFlags.Indirect, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.ChainTooLong, "indirect chain is longer than its table of 2 entries", "loop");
    }

    [Fact]
    public void Self_loop_inside_an_indirect_table_breaks_the_queue()
    {
        using var h = NewHarness(features: WithIndirect);
        WriteIndirect(h, Table, 0, Buf(0), 0, VirtqDescFlags.Next, 0);
        h.WriteDesc(0, Table, 16, VirtqDescFlags.Indirect, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.ChainTooLong, "indirect chain is longer than its table of 1 entries");
    }

    [Fact]
    public void Next_out_of_range_inside_an_indirect_table_breaks_the_queue()
    {
        using var h = NewHarness(features: WithIndirect);
        WriteIndirect(h, Table, 0, Buf(0), 16, VirtqDescFlags.Next, 2);  // table has entries 0 and 1
        WriteIndirect(h, Table, 1, Buf(1), 16, VirtqDescFlags.None, 0);
        WriteIndirect(h, Table, 2, Buf(2), 16, VirtqDescFlags.None, 0);  // in memory, but not in the table
        h.WriteDesc(0, Table, 32, VirtqDescFlags.Indirect, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.NextOutOfRange, "next index 2", "indirect table of 2 entries");
    }

    [Fact]
    public void Bad_buffer_inside_an_indirect_table_breaks_the_queue()
    {
        using var h = NewHarness(features: WithIndirect);
        WriteIndirect(h, Table, 0, Buf(0), 16, VirtqDescFlags.Next, 1);
        WriteIndirect(h, Table, 1, 0x1000, 16, VirtqDescFlags.Write, 0);
        h.WriteDesc(0, Table, 32, VirtqDescFlags.Indirect, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.BufferOutOfMemory, "descriptor 1", "not inside guest memory");
    }

    // ---- direction ----

    [Fact]
    public void Readable_after_writable_in_a_direct_chain_breaks_the_queue()
    {
        using var h = NewHarness();
        h.WriteDesc(0, Buf(0), 16, VirtqDescFlags.Next, 1);
        h.WriteDesc(1, Buf(1), 16, VirtqDescFlags.Write | VirtqDescFlags.Next, 2);
        h.WriteDesc(2, Buf(2), 16, VirtqDescFlags.None, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.ReadableAfterWritable, "descriptor 2", "device-readable descriptor follows a device-writable one");
    }

    [Fact]
    public void Readable_after_writable_in_an_indirect_chain_breaks_the_queue()
    {
        using var h = NewHarness(features: WithIndirect);
        WriteIndirect(h, Table, 0, Buf(0), 16, VirtqDescFlags.Write | VirtqDescFlags.Next, 1);
        WriteIndirect(h, Table, 1, Buf(1), 16, VirtqDescFlags.None, 0);
        h.WriteDesc(0, Table, 32, VirtqDescFlags.Indirect, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.ReadableAfterWritable, "descriptor 1", "device-readable descriptor follows a device-writable one");
    }

    [Fact]
    public void Readable_indirect_entry_after_a_writable_direct_descriptor_breaks_the_queue()
    {
        using var h = NewHarness(features: WithIndirect);
        WriteIndirect(h, Table, 0, Buf(1), 16, VirtqDescFlags.None, 0);
        h.WriteDesc(0, Buf(0), 16, VirtqDescFlags.Write | VirtqDescFlags.Next, 1);
        h.WriteDesc(1, Table, 16, VirtqDescFlags.Indirect, 0);
        h.PublishRawAvail(0, 0);
        AssertPopBreaks(h, QueueError.ReadableAfterWritable, "device-readable descriptor follows a device-writable one");
    }

    // ---- the avail ring ----

    [Fact]
    public void Avail_index_moving_by_more_than_the_queue_size_breaks_the_queue()
    {
        using var h = NewHarness(queueSize: 16);
        h.WriteU16(h.State.AvailRing + 2, 17);
        AssertPopBreaks(h, QueueError.AvailIndexJump, "avail index moved from 0 to 17", "queue size 16");
    }

    [Fact]
    public void Avail_index_moving_backwards_breaks_the_queue()
    {
        using var h = NewHarness(queueSize: 16);
        h.WriteU16(h.State.AvailRing + 2, 0xffff);
        AssertPopBreaks(h, QueueError.AvailIndexJump, "avail index moved from 0 to 65535");
    }

    [Fact]
    public void Avail_index_moving_by_exactly_the_queue_size_is_a_full_ring()
    {
        using var h = NewHarness(queueSize: 16);
        var heads = new ushort[16];
        for (int i = 0; i < 16; i++)
        {
            h.WriteDesc(i, Buf(i), 8, VirtqDescFlags.None, 0);
            heads[i] = (ushort)(15 - i);
        }

        h.PublishRawAvail(0, heads);
        var chains = new DescriptorChain[32];
        var segs = new IoSegment[32];
        Assert.Equal(16, Pop(h.Device, chains, segs));
        Assert.Equal(heads, chains.Take(16).Select(c => c.Head).ToArray());
        Assert.False(h.Device.IsBroken);
    }

    [Fact]
    public void Avail_index_jump_across_the_16_bit_wrap_breaks_the_queue()
    {
        using var h = NewHarness(queueSize: 16);
        var state = h.State with { NextAvail = 65530, NextUsed = 65530 };
        Assert.True(h.Device.Start(state, h.Memory));
        h.WriteU16(h.State.AvailRing + 2, unchecked((ushort)(65530 + 17)));
        AssertPopBreaks(h, QueueError.AvailIndexJump, "avail index moved from 65530 to 11");
    }

    [Theory]
    [InlineData(256)]
    [InlineData(257)]
    [InlineData(0xffff)]
    public void Head_index_outside_the_queue_breaks_the_queue(int head)
    {
        using var h = NewHarness();
        h.PublishRawAvail(0, (ushort)head);
        AssertPopBreaks(h, QueueError.HeadOutOfRange, $"names head {head}", "queue size 256");
    }

    [Fact]
    public void Bad_head_after_good_ones_in_the_same_batch_breaks_the_queue()
    {
        using var h = NewHarness();
        h.WriteDesc(0, Buf(0), 8, VirtqDescFlags.None, 0);
        h.WriteDesc(1, Buf(1), 8, VirtqDescFlags.None, 0);
        h.PublishRawAvail(0, 0, 1, 300);
        AssertPopBreaks(h, QueueError.HeadOutOfRange, "avail entry 2 names head 300");
    }

    // ---- sizes ----

    [Fact]
    public void Chain_longer_than_4_GiB_in_total_breaks_the_queue()
    {
        using var h = NewHarness(queueSize: 8);

        // A second, 4 GiB region far above the real one. Descriptors are only translated,
        // never dereferenced, while popping, so its host side can alias the small block.
        const ulong big = 0x100_0000_0000;
        var huge = new MemoryRegion(big, 1UL << 32, big, h.Backing.Address);
        var memory = new GuestMemory<TAccess>(MemoryTable.Create(h.Table.Regions[0], huge), h.Memory.Access);

        // Readable: exactly 4 GiB - 1 is fine.
        Assert.True(h.Device.Start(h.State, memory));
        h.WriteDesc(0, big, uint.MaxValue - 1, VirtqDescFlags.Next, 1);
        h.WriteDesc(1, big + 16, 1, VirtqDescFlags.Next, 2);
        h.WriteDesc(2, big, uint.MaxValue, VirtqDescFlags.Write, 0);
        h.PublishRawAvail(0, 0);
        var chains = new DescriptorChain[1];
        var segs = new IoSegment[8];
        Assert.Equal(1, Pop(h.Device, chains, segs));
        Assert.Equal(uint.MaxValue, chains[0].ReadableBytes);
        Assert.Equal(uint.MaxValue, chains[0].WritableBytes);

        // One byte more readable.
        h.WriteDesc(1, big + 16, 2, VirtqDescFlags.Next, 2);
        h.PublishRawAvail(1, 0);
        AssertPopBreaks(h, QueueError.LengthOverflow, "descriptor chain 0", "writable length of the chain exceeds 4 GiB");

        // Writable past 4 GiB.
        Assert.True(h.Device.Start(h.State with { NextAvail = 2, NextUsed = 0 }, memory));
        h.WriteDesc(3, Buf(0), 16, VirtqDescFlags.Next, 4);
        h.WriteDesc(4, big, uint.MaxValue, VirtqDescFlags.Write | VirtqDescFlags.Next, 5);
        h.WriteDesc(5, big, 1, VirtqDescFlags.Write, 0);
        h.PublishRawAvail(2, 3);
        AssertPopBreaks(h, QueueError.LengthOverflow, "descriptor chain 3", "4 GiB");
    }

    [Fact]
    public void Chain_that_does_not_fit_the_segment_buffer_is_left_for_the_next_call_unless_it_comes_first()
    {
        using var h = NewHarness();
        h.WriteDesc(0, Buf(0), 16, VirtqDescFlags.Next, 1);        // chain 0: two segments
        h.WriteDesc(1, Buf(1), 16, VirtqDescFlags.Write, 0);
        h.WriteDesc(2, Buf(2), 16, VirtqDescFlags.Next, 3);        // chain 2: three segments
        h.WriteDesc(3, Buf(3), 16, VirtqDescFlags.Next, 4);
        h.WriteDesc(4, Buf(4), 16, VirtqDescFlags.Write, 0);
        h.PublishRawAvail(0, 0, 2);

        var chains = new DescriptorChain[4];
        var segs = new IoSegment[4];
        Assert.Equal(1, Pop(h.Device, chains, segs));
        Assert.Equal(0, chains[0].Head);
        Assert.False(h.Device.IsBroken);
        Assert.Equal(1, h.Device.State.NextAvail);     // chain 2 not consumed
        Assert.Equal(1, h.Device.AvailPending());

        Assert.Equal(1, Pop(h.Device, chains, segs));    // a fresh buffer holds it
        Assert.Equal(2, chains[0].Head);
        Assert.Equal(0, chains[0].SegmentStart);
        Assert.Equal(3, chains[0].ReadableSegments + chains[0].WritableSegments);
        Assert.Equal(Buf(4), chains[0].Writable(segs)[0].Guest);
        Assert.Equal(2, h.Device.State.NextAvail);

        // First in the batch and still too big: a bad chain.
        h.PublishRawAvail(2, 2);
        Assert.Equal(0, Pop(h.Device, chains, new IoSegment[2]));
        Assert.True(h.Device.IsBroken);
        Assert.Equal(QueueError.TooManySegments, h.Device.Error);
        Assert.Contains("descriptor chain 2", h.Device.BrokenReason, StringComparison.Ordinal);
        Assert.Contains("more segments than the caller's segment buffer", h.Device.BrokenReason, StringComparison.Ordinal);
    }

    [Fact]
    public void One_descriptor_split_by_a_region_boundary_counts_its_pieces_against_the_segment_buffer()
    {
        using var h = NewHarness(memorySize: MemorySize, regionSize: 0x10000);
        h.WriteDesc(0, HarnessLayout.GuestBase + 0x30000 - 8, 16, VirtqDescFlags.None, 0);
        h.PublishRawAvail(0, 0);
        Assert.Equal(0, Pop(h.Device, new DescriptorChain[1], new IoSegment[1]));
        Assert.Equal(QueueError.TooManySegments, h.Device.Error);
    }

    [Fact]
    public void Zero_length_descriptors_need_no_segments()
    {
        using var h = NewHarness();
        h.WriteDesc(0, 0xdead_0000, 0, VirtqDescFlags.Next, 1);       // address never looked at
        h.WriteDesc(1, Buf(1), 0, VirtqDescFlags.Write, 0);
        h.PublishRawAvail(0, 0);
        var chains = new DescriptorChain[1];
        Assert.Equal(1, Pop(h.Device, chains, []));
        Assert.Equal(0u, chains[0].ReadableBytes + chains[0].WritableBytes);
        Assert.Equal(0, chains[0].ReadableSegments + chains[0].WritableSegments);
    }
}

/// <summary>DescriptorChainValidationTests over ordinary RAM (<see cref="RamAccessor"/>).</summary>
public sealed class DescriptorChainValidationTests_Ram : DescriptorChainValidationTests<RamAccessor, RamRingMemory>;

/// <summary>DescriptorChainValidationTests over a PCI BAR stand-in through <see cref="IoMemoryAccessor"/> (accesses counted).</summary>
public sealed class DescriptorChainValidationTests_Io : DescriptorChainValidationTests<IoMemoryAccessor, IoRingMemory>;
