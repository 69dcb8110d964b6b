using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;

namespace PciVirtio.VhostCore.Tests.IoMemory;

/// <summary>
/// What each basic ring operation costs on the bus: the exact number of read and write
/// transactions (aligned loads and stores of 1, 2, 4 or 8 bytes, and the 16- or 32-byte
/// vector stores of a copy into I/O memory), bytes and barriers
/// <see cref="IoMemoryAccessor"/> issues, counted by <see cref="AccessCounters"/>. Across a
/// PCIe link a read is a non-posted round trip, so these numbers are the data path's cost.
/// </summary>
/// <remarks>
/// <para>The numbers follow from src/VhostCore/Ring/SplitQueueDevice.cs and
/// SplitQueueDriver.cs; each test spells out the accesses behind its count:</para>
/// <list type="bullet">
/// <item>a descriptor is read and written as two 8-byte words (addr; len|flags|next);</item>
/// <item>avail.idx, used.idx, ring entries, flags and event indices are single 2-byte accesses;</item>
/// <item>a used element (id, len) is one 8-byte access when it is 8-byte aligned, that is when
/// the used ring sits at 4 mod 8. In the legacy layout (<see cref="QueueState.AtBase"/>:
/// used ring page aligned) every element is at 4 mod 8, and the I/O accessor splits it into two
/// aligned 4-byte accesses;</item>
/// <item>a release store of an index (Publish, FlushUsed) is a barrier then one write; an
/// acquire load of an index is a plain read (no barrier);</item>
/// <item>notification checks (NeedsKick, NeedsInterrupt) are a barrier then one 2-byte read.</item>
/// </list>
/// <para>The harness's ring: queue size 8 at guest 0x1_0001_0000 — descriptor table at +0,
/// avail ring at +0x80 and used ring at +0x1000, all in one mapping whose host address is page
/// aligned, so host alignment equals guest alignment.</para>
/// </remarks>
public sealed class AccessCountTests
{
    private const int QueueSize = 8;
    private const VirtioFeatures Plain = VirtioFeatures.Version1;
    private const VirtioFeatures EventIdx = VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx;
    private const VirtioFeatures Indirect = VirtioFeatures.Version1 | VirtioFeatures.RingIndirectDesc;

    /// <summary>A second ring in the same memory whose used ring is at 4 mod 8, so used
    /// elements are 8-byte aligned.</summary>
    private const ulong AlignedRingBase = HarnessLayout.GuestBase + 0x40000;

    /// <summary>What one operation cost.</summary>
    private readonly record struct Cost(long Reads, long ReadBytes, long Writes, long WrittenBytes, long Barriers)
    {
        public static Cost Of(AccessCounters c) => new(c.Reads, c.ReadBytes, c.Writes, c.WrittenBytes, c.Barriers);
    }

    private static RingHarness<IoMemoryAccessor> Harness(VirtioFeatures features = Plain, int indirectEntries = 0)
    {
        var h = new RingHarness<IoMemoryAccessor>(new IoRingMemory(), queueSize: QueueSize, features: features, indirectEntries: indirectEntries);
        Assert.NotNull(h.Counters);

        // The layout the counts below assume.
        var ring = h.Ring;
        Assert.Equal(0, ring.Desc % 16);
        Assert.Equal(h.Ring.Desc + 0x80, ring.Avail);
        Assert.Equal(0, ring.Used % 4096);
        return h;
    }

    /// <summary>Runs <paramref name="operation"/> and returns exactly what it cost.</summary>
    private static Cost Measure(RingHarness<IoMemoryAccessor> h, Action operation)
    {
        var counters = h.Counters!;
        counters.Reset();
        operation();
        return Cost.Of(counters);
    }

    private static GuestBuffer Buf(int i, uint length = 64) => new(HarnessLayout.Buffer(i), length);

    // ---- driver ----

    [Fact]
    public void Driver_TryAdd_of_one_buffer_is_one_descriptor_write_and_one_avail_entry_write()
    {
        using var h = Harness();

        // desc[0] as one 16-byte store (addr, then len|flags|next) + avail.ring[0] (2 B); no read.
        Assert.Equal(new Cost(0, 0, DescWrites + 1, 18, 0), Measure(h, () => Assert.True(h.Driver.TryAdd([Buf(0)], [], 1))));
    }

    [Fact]
    public void Driver_TryAdd_of_a_three_buffer_chain_writes_each_descriptor_once()
    {
        using var h = Harness();

        // 3 descriptors + 1 avail entry. The free list and chain links are shadowed: nothing
        // is read back.
        Assert.Equal(new Cost(0, 0, (3 * DescWrites) + 1, 50, 0), Measure(h, () => Assert.True(h.Driver.TryAdd([Buf(0)], [Buf(1), Buf(2)], 1))));
    }

    [Fact]
    public void Driver_TryAdd_of_an_indirect_chain_writes_the_table_then_one_ring_descriptor()
    {
        using var h = Harness(Indirect, indirectEntries: 4);

        // 2 indirect-table entries + 1 ring descriptor + 1 avail entry.
        Assert.Equal(new Cost(0, 0, (3 * DescWrites) + 1, 50, 0), Measure(h, () => Assert.True(h.Driver.TryAdd([Buf(0)], [Buf(1)], 1))));
        Assert.Equal(QueueSize - 1, h.Driver.FreeDescriptors);
    }

    [Fact]
    public void Driver_Publish_is_one_barrier_and_one_avail_idx_write()
    {
        using var h = Harness();
        Assert.True(h.Driver.TryAdd([Buf(0)], [], 1));
        Assert.True(h.Driver.TryAdd([Buf(1)], [], 2));

        // However many entries it publishes.
        Assert.Equal(new Cost(0, 0, 1, 2, 1), Measure(h, h.Driver.Publish));
    }

    [Theory]
    [InlineData(Plain)]      // reads used.flags
    [InlineData(EventIdx)]   // reads avail_event
    public void Driver_NeedsKick_is_one_barrier_and_one_read(VirtioFeatures features)
    {
        using var h = Harness(features);
        Assert.True(h.Driver.TryAdd([Buf(0)], [], 1));
        h.Driver.Publish();
        Assert.Equal(new Cost(1, 2, 0, 0, 1), Measure(h, () => Assert.True(h.Driver.NeedsKick())));

        // Nothing new published: decided from the shadow, no access at all.
        Assert.Equal(default, Measure(h, () => Assert.False(h.Driver.NeedsKick())));
    }

    [Theory]
    [InlineData(Plain, 0)]
    [InlineData(EventIdx, 1)]   // + the used_event store asking for the next interrupt
    public void Driver_Reap_of_one_is_a_used_idx_read_and_a_used_element_read_in_two_halves(VirtioFeatures features, int usedEventWrites)
    {
        using var h = Harness(features);
        CompleteOne(h);

        // used.idx (2 B) + used.ring[0] (8 B at 4 mod 8: two aligned 4-byte reads).
        var used = new UsedBuffer[4];
        Assert.Equal(new Cost(3, 10, usedEventWrites, 2 * usedEventWrites, 0), Measure(h, () => Assert.Equal(1, h.Driver.Reap(used))));

        // Nothing more: one used.idx read, no store.
        Assert.Equal(new Cost(1, 2, 0, 0, 0), Measure(h, () => Assert.Equal(0, h.Driver.Reap(used))));
    }

    [Fact]
    public void Driver_Reap_of_a_batch_writes_used_event_once()
    {
        using var h = Harness(EventIdx);
        for (int i = 0; i < 3; i++)
        {
            Assert.True(h.Driver.TryAdd([Buf(i)], [], (ulong)i));
        }

        h.Driver.Publish();
        var chains = new DescriptorChain[4];
        Assert.Equal(3, h.Device.PopAvail(chains, new IoSegment[8]));
        foreach (var c in chains.AsSpan(0, 3))
        {
            h.Device.PushUsed(c.Head, 0);
        }

        h.Device.FlushUsed();

        // used.idx + 3 elements × 2 halves; one used_event store for the whole batch.
        Assert.Equal(new Cost(7, 26, 1, 2, 0), Measure(h, () => Assert.Equal(3, h.Driver.Reap(new UsedBuffer[4]))));
    }

    [Theory]
    [InlineData(Plain, 2, 4)]      // avail.flags, then avail.idx
    [InlineData(EventIdx, 3, 6)]   // avail.flags, used_event, then avail.idx
    public void Driver_Start_only_writes(VirtioFeatures features, int writes, int bytes)
    {
        using var h = Harness(features);
        var driver = new SplitQueueDriver<IoMemoryAccessor>("restarted");
        Assert.Equal(new Cost(0, 0, writes, bytes, 1), Measure(h, () => Assert.True(driver.Start(h.State, h.Memory))));
    }

    [Theory]
    [InlineData(Plain, 1)]   // avail.flags = NO_INTERRUPT
    [InlineData(EventIdx, 0)] // nothing: used_event simply stops moving
    public void Driver_interrupt_suppression_costs_one_write_and_re_enabling_one_write_and_one_read(VirtioFeatures features, int disableWrites)
    {
        using var h = Harness(features);
        Assert.Equal(new Cost(0, 0, disableWrites, 2 * disableWrites, 0), Measure(h, h.Driver.DisableInterrupts));

        // avail.flags = 0 or used_event = last used, barrier, then used.idx to re-check.
        Assert.Equal(new Cost(1, 2, 1, 2, 1), Measure(h, () => Assert.False(h.Driver.EnableInterrupts())));
    }

    // ---- device ----

    [Fact]
    public void Device_PopAvail_of_one_single_descriptor_chain_is_four_reads()
    {
        using var h = Harness();
        Assert.True(h.Driver.TryAdd([Buf(0)], [], 1));
        h.Driver.Publish();

        // avail.idx (2 B) + avail.ring[0] (2 B) + the descriptor as two 8-byte words; no write,
        // no barrier (an acquire load is a plain read on I/O memory).
        var chains = new DescriptorChain[4];
        var segs = new IoSegment[8];
        Assert.Equal(new Cost(4, 20, 0, 0, 0), Measure(h, () => Assert.Equal(1, h.Device.PopAvail(chains, segs))));

        // The ring is empty now: one avail.idx read to find out.
        Assert.Equal(new Cost(1, 2, 0, 0, 0), Measure(h, () => Assert.Equal(0, h.Device.PopAvail(chains, segs))));
    }

    [Fact]
    public void Device_PopAvail_reads_each_descriptor_of_a_chain_exactly_once()
    {
        using var h = Harness();
        Assert.True(h.Driver.TryAdd([Buf(0)], [Buf(1), Buf(2)], 1));
        h.Driver.Publish();

        // avail.idx + avail.ring[0] + 3 descriptors × 2 words.
        Assert.Equal(new Cost(8, 52, 0, 0, 0), Measure(h, () => Assert.Equal(1, h.Device.PopAvail(new DescriptorChain[4], new IoSegment[8]))));
    }

    [Fact]
    public void Device_PopAvail_of_an_indirect_chain_reads_the_ring_descriptor_and_each_table_entry_once()
    {
        using var h = Harness(Indirect, indirectEntries: 4);
        Assert.True(h.Driver.TryAdd([Buf(0)], [Buf(1)], 1));
        h.Driver.Publish();

        // avail.idx + avail.ring[0] + ring descriptor (2 words) + 2 table entries (2 words each).
        Assert.Equal(new Cost(8, 52, 0, 0, 0), Measure(h, () => Assert.Equal(1, h.Device.PopAvail(new DescriptorChain[4], new IoSegment[8]))));
    }

    [Fact]
    public void Device_PopAvail_reads_avail_idx_once_per_batch_and_not_while_entries_it_saw_remain()
    {
        using var h = Harness();
        for (int i = 0; i < 3; i++)
        {
            Assert.True(h.Driver.TryAdd([Buf(i)], [], (ulong)i));
        }

        h.Driver.Publish();
        var segs = new IoSegment[8];

        // One chain of three: avail.idx + (entry + 2 descriptor words).
        Assert.Equal(new Cost(4, 20, 0, 0, 0), Measure(h, () => Assert.Equal(1, h.Device.PopAvail(new DescriptorChain[1], segs))));

        // The other two from the index already read: 2 × (entry + 2 words), no avail.idx.
        Assert.Equal(new Cost(6, 36, 0, 0, 0), Measure(h, () => Assert.Equal(2, h.Device.PopAvail(new DescriptorChain[4], segs))));
    }

    [Fact]
    public void Device_PushUsed_is_one_used_element_store_split_in_two_by_the_legacy_layout()
    {
        using var h = Harness();
        var chain = PopOne(h);

        // (id, len) is one 8-byte store at used.ring[0] = used + 4: 4 mod 8, so two aligned
        // 4-byte writes. Not visible yet: no barrier, no index.
        Assert.Equal(4, h.Ring.UsedEntries % 8);
        Assert.Equal(new Cost(0, 0, 2, 8, 0), Measure(h, () => h.Device.PushUsed(chain.Head, 64)));
    }

    [Fact]
    public void Device_FlushUsed_is_one_barrier_and_one_used_idx_write()
    {
        using var h = Harness();
        var chain = PopOne(h);
        h.Device.PushUsed(chain.Head, 0);
        Assert.Equal(new Cost(0, 0, 1, 2, 1), Measure(h, h.Device.FlushUsed));

        // Nothing new pushed: decided from the shadow, no access.
        Assert.Equal(default, Measure(h, h.Device.FlushUsed));
    }

    [Theory]
    [InlineData(Plain, 1)]      // reads avail.flags
    [InlineData(EventIdx, 0)]   // the first interrupt after start is always due: used_event is not even read
    public void Device_NeedsInterrupt_is_one_barrier_and_one_read(VirtioFeatures features, int firstReads)
    {
        using var h = Harness(features);
        var chain = PopOne(h, writable: true);
        h.Device.PushUsed(chain.Head, 0);
        h.Device.FlushUsed();
        Assert.Equal(new Cost(firstReads, 2 * firstReads, 0, 0, 1), Measure(h, () => Assert.True(h.Device.NeedsInterrupt())));

        // Nothing published since: no access.
        Assert.Equal(default, Measure(h, () => Assert.False(h.Device.NeedsInterrupt())));

        // The next completion: barrier, then avail.flags or used_event (the driver reaped with
        // interrupts enabled, so used_event asks for this one).
        Assert.Equal(1, h.Driver.Reap(new UsedBuffer[1]));
        chain = PopOne(h, writable: true);
        h.Device.PushUsed(chain.Head, 0);
        h.Device.FlushUsed();
        Assert.Equal(new Cost(1, 2, 0, 0, 1), Measure(h, () => Assert.True(h.Device.NeedsInterrupt())));
    }

    [Theory]
    [InlineData(Plain, 1)]    // used.flags
    [InlineData(EventIdx, 2)] // used.flags, avail_event
    public void Device_Start_only_writes(VirtioFeatures features, int writes)
    {
        using var h = Harness(features);
        var device = new SplitQueueDevice<IoMemoryAccessor>("restarted");
        Assert.Equal(new Cost(0, 0, writes, 2 * writes, 0), Measure(h, () => Assert.True(device.Start(h.State, h.Memory))));
    }

    [Theory]
    [InlineData(Plain, 1)]    // used.flags = NO_NOTIFY
    [InlineData(EventIdx, 0)] // nothing: avail_event simply stays behind
    public void Device_kick_suppression_costs_one_write_and_re_enabling_one_write_and_one_read(VirtioFeatures features, int disableWrites)
    {
        using var h = Harness(features);
        Assert.Equal(new Cost(0, 0, disableWrites, 2 * disableWrites, 0), Measure(h, h.Device.DisableNotifications));

        // used.flags = 0 or avail_event = next avail, barrier, then avail.idx to re-check.
        Assert.Equal(new Cost(1, 2, 1, 2, 1), Measure(h, () => Assert.False(h.Device.EnableNotifications())));

        // Already enabled (without EVENT_IDX): the flag is shadowed, only the re-check remains.
        if (features == Plain)
        {
            Assert.Equal(new Cost(1, 2, 0, 0, 1), Measure(h, () => Assert.False(h.Device.EnableNotifications())));
        }
    }

    // ---- a used ring at 4 mod 8: the used element is one transaction ----

    [Theory]
    [InlineData(Plain, 0)]
    [InlineData(EventIdx, 1)]
    public void With_the_used_ring_at_4_mod_8_a_used_element_is_one_write_and_one_read(VirtioFeatures features, int usedEventWrites)
    {
        using var h = Harness(features);
        var state = new QueueState
        {
            Size = QueueSize,
            DescTable = AlignedRingBase,
            AvailRing = AlignedRingBase + (16 * QueueSize),
            UsedRing = AlignedRingBase + 0x1004,   // 4-byte aligned as the spec requires, elements 8-byte aligned
            Features = features,
        };
        var driver = new SplitQueueDriver<IoMemoryAccessor>("aligned-driver");
        var device = new SplitQueueDevice<IoMemoryAccessor>("aligned-device");
        Assert.True(driver.Start(state, h.Memory), driver.BrokenReason);
        Assert.True(device.Start(state, h.Memory), device.BrokenReason);
        Assert.Equal(QueueError.None, state.Validate(h.Table, out _, out var ring));
        Assert.Equal(0, ring.UsedEntries % 8);

        Assert.True(driver.TryAdd([Buf(0)], [], 1));
        driver.Publish();
        var chains = new DescriptorChain[1];
        Assert.Equal(1, device.PopAvail(chains, new IoSegment[4]));

        // PushUsed: one 8-byte store; FlushUsed unchanged.
        Assert.Equal(new Cost(0, 0, 1, 8, 0), Measure(h, () => device.PushUsed(chains[0].Head, 0)));
        Assert.Equal(new Cost(0, 0, 1, 2, 1), Measure(h, device.FlushUsed));

        // Reap of one: used.idx + one 8-byte element read (+ used_event with EVENT_IDX).
        Assert.Equal(new Cost(2, 10, usedEventWrites, 2 * usedEventWrites, 0), Measure(h, () => Assert.Equal(1, driver.Reap(new UsedBuffer[2]))));
    }

    // ---- payload ----

    [Fact]
    public void Gathering_and_scattering_payload_uses_the_widest_aligned_accesses()
    {
        using var h = Harness();
        ulong at = HarnessLayout.Buffer(0) + 3;   // 3 mod 8
        Assert.True(h.Driver.TryAdd([new GuestBuffer(at, 1500)], [new GuestBuffer(at, 1500)], 1));
        h.Driver.Publish();
        var chains = new DescriptorChain[1];
        var segs = new IoSegment[4];
        Assert.Equal(1, h.Device.PopAvail(chains, segs));
        var bytes = new byte[1500];

        // Reads (non-posted, never wider than 8 bytes), from 3 mod 8: 1 + 4 bytes to reach
        // 8-byte alignment (1-byte at 3, 4-byte at 4), then 186 words (1488 B), then a 4-,
        // 2- and 1-byte tail (7 B): 191 transactions.
        Assert.Equal(new Cost(191, 1500, 0, 0, 0), Measure(h, () => Assert.Equal(1500, h.Memory.Gather(chains[0].Readable(segs), 0, bytes))));

        // Writes (posted) use the widest aligned vector store the machine has. The buffer is
        // page aligned, so from +3: the same 1- and 4-byte head to +8, then one store of each
        // width up to the vector alignment, vector stores, one store of each width down
        // again, 8-byte words and the 4-, 2- and 1-byte tail (1503 is the end):
        // 64-byte stores: 2 + 3 (8, 16, 32 B to +64) + 22 (1408 B) + 1 (16 B) + 1 (8 B) + 3 = 32;
        // 32-byte stores: 2 + 2 (8, 16 B to +32) + 45 (1440 B) + 1 (16 B) + 1 + 3 = 54;
        // 16-byte stores: 2 + 1 (8 B to +16) + 92 (1472 B) + 1 + 3 = 99; none: the 191 above.
        long writes = System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? 32
            : System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated ? 54
            : System.Runtime.Intrinsics.Vector128.IsHardwareAccelerated ? 99 : 191;
        Assert.Equal(new Cost(0, 0, writes, 1500, 0), Measure(h, () => Assert.Equal(1500, h.Memory.Scatter(chains[0].Writable(segs), 0, bytes))));
    }

    // ---- a whole round trip ----

    [Fact]
    public void One_request_round_trip_costs_fourteen_transactions_and_two_barriers()
    {
        using var h = Harness(EventIdx);
        var driverSide = Measure(h, () =>
        {
            Assert.True(h.Driver.TryAdd([], [Buf(0)], 7));    // 2 writes (3 without 16-byte stores)
            h.Driver.Publish();                                // barrier + 1 write
        });
        var deviceSide = Measure(h, () =>
        {
            var chains = new DescriptorChain[1];
            Assert.Equal(1, h.Device.PopAvail(chains, new IoSegment[2])); // 4 reads
            h.Device.PushUsed(chains[0].Head, 64);                          // 2 writes
            h.Device.FlushUsed();                                           // barrier + 1 write
        });
        var reap = Measure(h, () => Assert.Equal(1, h.Driver.Reap(new UsedBuffer[1]))); // 3 reads + used_event

        Assert.Equal(new Cost(0, 0, DescWrites + 2, 20, 1), driverSide);
        Assert.Equal(new Cost(4, 20, 3, 10, 1), deviceSide);
        Assert.Equal(new Cost(3, 10, 1, 2, 0), reap);

        // 7 reads (4 by the device, 3 by the driver) and 7 writes (8 without 16-byte stores).
        // Asking whether to kick or interrupt adds a barrier and (except for the first
        // interrupt after start) one read each.
        Assert.Equal(7, driverSide.Reads + deviceSide.Reads + reap.Reads);
        Assert.Equal(DescWrites + 6, driverSide.Writes + deviceSide.Writes + reap.Writes);
    }

    /// <summary>Transactions of one descriptor write: one aligned 16-byte store where the
    /// CPU has them, two 8-byte stores where not.</summary>
    private static int DescWrites => System.Runtime.Intrinsics.Vector128.IsHardwareAccelerated ? 1 : 2;

    private static void CompleteOne(RingHarness<IoMemoryAccessor> h)
    {
        var chain = PopOne(h, writable: true);
        h.Device.PushUsed(chain.Head, 64);
        h.Device.FlushUsed();
    }

    private static DescriptorChain PopOne(RingHarness<IoMemoryAccessor> h, bool writable = false)
    {
        Assert.True(writable ? h.Driver.TryAdd([], [Buf(0)], 1) : h.Driver.TryAdd([Buf(0)], [], 1));
        h.Driver.Publish();
        var chains = new DescriptorChain[1];
        Assert.Equal(1, h.Device.PopAvail(chains, new IoSegment[4]));
        return chains[0];
    }
}
