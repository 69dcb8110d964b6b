using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;

namespace PciVirtio.VhostCore.Tests.Driver;

/// <summary>
/// Free-descriptor accounting, tokens and out-of-order completion of SplitQueueDriver,
/// driven against the real SplitQueueDevice.
/// </summary>
public abstract class DriverAccountingTests<TAccess, TMemory> : RingMemoryTests<TAccess, TMemory>
    where TAccess : struct, IMemoryAccessor
    where TMemory : IRingMemory<TAccess>, new()
{
    private static GuestBuffer Buf(int slot, uint length) => new(HarnessLayout.Buffer(slot), length);

    private static List<DescriptorChain> PopAll(RingHarness<TAccess> h, IoSegment[] segments)
    {
        var chains = new DescriptorChain[64];
        int n = h.Device.PopAvail(chains, segments);
        Assert.False(h.Device.IsBroken, h.Device.BrokenReason);
        return [.. chains.AsSpan(0, n).ToArray()];
    }

    [Fact]
    public void TryAdd_fails_when_descriptors_run_out_and_reaping_returns_them()
    {
        using var h = NewHarness(queueSize: 8);
        var d = h.Driver;
        Assert.Equal(8, d.FreeDescriptors);

        Assert.True(d.TryAdd([Buf(0, 10)], [Buf(1, 10), Buf(2, 10)], 1));
        Assert.Equal(5, d.FreeDescriptors);
        Assert.True(d.TryAdd([Buf(3, 10), Buf(4, 10)], [Buf(5, 10)], 2));
        Assert.Equal(2, d.FreeDescriptors);

        // Three more do not fit in two; nothing changes.
        ushort availBefore = d.State.NextAvail;
        Assert.False(d.TryAdd([Buf(6, 10)], [Buf(7, 10), Buf(8, 10)], 3));
        Assert.Equal(2, d.FreeDescriptors);
        Assert.Equal(2, d.InFlight);
        Assert.Equal(availBefore, d.State.NextAvail);

        Assert.True(d.TryAdd([Buf(9, 10)], [], 4));
        Assert.True(d.TryAdd([], [Buf(10, 10)], 5));
        Assert.Equal(0, d.FreeDescriptors);
        Assert.False(d.TryAdd([], [Buf(11, 10)], 6));
        Assert.Equal(4, d.InFlight);
        d.Publish();

        var segments = new IoSegment[64];
        var chains = PopAll(h, segments);
        Assert.Equal(4, chains.Count);
        Assert.Equal([3, 3, 1, 1], chains.Select(c => c.ReadableSegments + c.WritableSegments));

        // Return one at a time: each reap gives back exactly that chain's descriptors.
        int[] expectedFree = [3, 6, 7, 8];
        var used = new UsedBuffer[4];
        for (int i = 0; i < chains.Count; i++)
        {
            h.Device.PushUsed(chains[i].Head, 0);
            h.Device.FlushUsed();
            Assert.Equal(1, d.Reap(used));
            Assert.Equal((ulong)(i + 1 + (i >= 2 ? 1 : 0)), used[0].Token);
            Assert.Equal(expectedFree[i], d.FreeDescriptors);
        }

        Assert.Equal(0, d.InFlight);
        Assert.True(d.TryAdd([Buf(0, 10)], [Buf(1, 10), Buf(2, 10), Buf(3, 10), Buf(4, 10), Buf(5, 10), Buf(6, 10), Buf(7, 10)], 7));
        Assert.Equal(0, d.FreeDescriptors);
    }

    [Fact]
    public void TryAddReadable_adds_what_TryAdd_adds_for_one_readable_buffer()
    {
        using var h = NewHarness(queueSize: 4);
        var d = h.Driver;
        Assert.True(d.TryAddReadable(Buf(0, 100), 10));
        Assert.True(d.TryAdd([Buf(1, 200)], [], 11));
        Assert.True(d.TryAddReadable(Buf(2, 300), 12));
        Assert.True(d.TryAdd([Buf(3, 50)], [], 13));
        Assert.False(d.TryAddReadable(Buf(4, 10), 14)); // every descriptor is out
        Assert.Equal(0, d.FreeDescriptors);
        Assert.Equal(4, d.InFlight);
        d.Publish();

        var segments = new IoSegment[64];
        var chains = PopAll(h, segments);
        Assert.Equal([100u, 200u, 300u, 50u], chains.Select(c => c.ReadableBytes));
        Assert.All(chains, c => Assert.True(c.ReadableSegments == 1 && c.WritableSegments == 0 && c.WritableBytes == 0));
        Assert.Equal([HarnessLayout.Buffer(0), HarnessLayout.Buffer(1), HarnessLayout.Buffer(2), HarnessLayout.Buffer(3)],
            chains.Select(c => c.Readable(segments)[0].Guest));

        // Out of order back: each comes with its token and frees its one descriptor.
        var used = new UsedBuffer[4];
        foreach (int i in new[] { 2, 0, 3, 1 })
        {
            h.Device.PushUsed(chains[i].Head, 0);
            h.Device.FlushUsed();
            Assert.Equal(1, d.Reap(used));
            Assert.Equal((ulong)(10 + i), used[0].Token);
        }

        Assert.Equal(4, d.FreeDescriptors);
        Assert.True(d.TryAddReadable(Buf(5, 1), 15));
        d.Stop();
        Assert.False(d.TryAddReadable(Buf(6, 1), 16));
    }

    [Fact]
    public void Empty_requests_and_writable_totals_beyond_4_GiB_are_refused()
    {
        using var h = NewHarness(queueSize: 8);
        Assert.False(h.Driver.TryAdd([], [], 1));
        Assert.False(h.Driver.TryAdd([], [Buf(0, uint.MaxValue), Buf(1, 1)], 2));
        Assert.Equal(8, h.Driver.FreeDescriptors);
        Assert.Equal(0, h.Driver.InFlight);
        Assert.False(h.Driver.IsBroken);
    }

    [Fact]
    public void Indirect_chains_use_one_descriptor_each()
    {
        using var h = NewHarness(queueSize: 4, features: VirtioFeatures.Version1 | VirtioFeatures.RingIndirectDesc, indirectEntries: 8);
        var d = h.Driver;
        for (ulong t = 0; t < 4; t++)
        {
            Assert.True(d.TryAdd([Buf((int)t * 8, 100)], [Buf(((int)t * 8) + 1, 200), Buf(((int)t * 8) + 2, 300)], t));
            Assert.Equal(3 - (int)t, d.FreeDescriptors);
        }

        Assert.False(d.TryAdd([Buf(40, 1)], [Buf(41, 1)], 99));
        d.Publish();

        var segments = new IoSegment[64];
        var chains = PopAll(h, segments);
        Assert.Equal(4, chains.Count);
        foreach (var c in chains)
        {
            Assert.Equal(100u, c.ReadableBytes);
            Assert.Equal(500u, c.WritableBytes);
            h.Device.PushUsed(c.Head, 500);
        }

        h.Device.FlushUsed();
        var used = new UsedBuffer[8];
        Assert.Equal(4, d.Reap(used));
        Assert.Equal([0UL, 1, 2, 3], used.Take(4).Select(u => u.Token));
        Assert.All(used.Take(4), u => Assert.Equal(500u, u.Length));
        Assert.Equal(4, d.FreeDescriptors);
    }

    [Fact]
    public void With_indirect_a_single_buffer_and_a_chain_longer_than_the_table_use_direct_descriptors()
    {
        using var h = NewHarness(queueSize: 16, features: VirtioFeatures.Version1 | VirtioFeatures.RingIndirectDesc, indirectEntries: 4);
        var d = h.Driver;
        Assert.True(d.TryAdd([], [Buf(0, 64)], 1));
        Assert.Equal(15, d.FreeDescriptors);

        // Five buffers do not fit a 4-entry table: a direct chain of five.
        Assert.True(d.TryAdd([Buf(1, 8), Buf(2, 8)], [Buf(3, 8), Buf(4, 8), Buf(5, 8)], 2));
        Assert.Equal(10, d.FreeDescriptors);

        // Four do: one descriptor.
        Assert.True(d.TryAdd([Buf(6, 8)], [Buf(7, 8), Buf(8, 8), Buf(9, 8)], 3));
        Assert.Equal(9, d.FreeDescriptors);
        d.Publish();

        var segments = new IoSegment[64];
        var chains = PopAll(h, segments);
        Assert.Equal(3, chains.Count);
        Assert.Equal([0u, 16u, 8u], chains.Select(c => c.ReadableBytes));
        Assert.Equal([64u, 24u, 24u], chains.Select(c => c.WritableBytes));
        foreach (var c in chains)
        {
            h.Device.PushUsed(c.Head, c.WritableBytes);
        }

        h.Device.FlushUsed();
        var used = new UsedBuffer[8];
        Assert.Equal(3, d.Reap(used));
        Assert.Equal(16, d.FreeDescriptors);
    }

    [Fact]
    public void Tokens_come_back_unchanged()
    {
        ulong[] tokens = [0, 1, 0xFFFF, 0x1_0000, 0xDEAD_BEEF_CAFE_F00D, ulong.MaxValue, long.MaxValue];
        using var h = NewHarness(queueSize: 8);
        for (int i = 0; i < tokens.Length; i++)
        {
            Assert.True(h.Driver.TryAdd([], [Buf(i, 16)], tokens[i]));
        }

        h.Driver.Publish();
        var segments = new IoSegment[64];
        var chains = PopAll(h, segments);
        Assert.Equal(tokens.Length, chains.Count);
        for (int i = 0; i < chains.Count; i++)
        {
            h.Device.PushUsed(chains[i].Head, (uint)i);
        }

        h.Device.FlushUsed();
        var used = new UsedBuffer[16];
        Assert.Equal(tokens.Length, h.Driver.Reap(used));
        for (int i = 0; i < tokens.Length; i++)
        {
            Assert.Equal(new UsedBuffer(tokens[i], (uint)i), used[i]);
        }
    }

    [Fact]
    public void Out_of_order_completion_is_reaped_in_completion_order_and_frees_the_right_descriptors()
    {
        using var h = NewHarness(queueSize: 16);
        var d = h.Driver;

        // Chains of 1..5 descriptors: 15 in all.
        for (int t = 0; t < 5; t++)
        {
            var writable = Enumerable.Range(0, t + 1).Select(i => Buf((t * 8) + i, (uint)(100 * (t + 1)))).ToArray();
            Assert.True(d.TryAdd([], writable, (ulong)(1000 + t)));
        }

        Assert.Equal(1, d.FreeDescriptors);
        d.Publish();
        var segments = new IoSegment[64];
        var chains = PopAll(h, segments);
        Assert.Equal(5, chains.Count);

        int[] order = [3, 0, 4, 1, 2];
        foreach (int i in order)
        {
            h.Device.PushUsed(chains[i].Head, (uint)i);
        }

        h.Device.FlushUsed();

        // Reaped in two batches, in the device's order.
        var used = new UsedBuffer[5];
        Assert.Equal(2, d.Reap(used.AsSpan(0, 2)));
        Assert.Equal(new UsedBuffer(1003, 3), used[0]);
        Assert.Equal(new UsedBuffer(1000, 0), used[1]);
        Assert.Equal(1 + 4 + 1, d.FreeDescriptors);
        Assert.Equal(3, d.Reap(used));
        Assert.Equal(new UsedBuffer(1004, 4), used[0]);
        Assert.Equal(new UsedBuffer(1001, 1), used[1]);
        Assert.Equal(new UsedBuffer(1002, 2), used[2]);
        Assert.Equal(16, d.FreeDescriptors);
        Assert.Equal(0, d.InFlight);

        // The free list survived the out-of-order frees: fill the whole ring again with
        // chains of 3, 5, 8 descriptors and check the device sees each chain intact.
        int[] lengths = [3, 5, 8];
        for (int t = 0; t < lengths.Length; t++)
        {
            var writable = Enumerable.Range(0, lengths[t]).Select(i => Buf(100 + (t * 10) + i, (uint)(t + 1))).ToArray();
            Assert.True(d.TryAdd([], writable, (ulong)t));
        }

        Assert.Equal(0, d.FreeDescriptors);
        d.Publish();
        chains = PopAll(h, segments);
        Assert.Equal(3, chains.Count);
        var heads = new HashSet<ushort>();
        for (int t = 0; t < lengths.Length; t++)
        {
            var c = chains[t];
            Assert.True(heads.Add(c.Head));
            Assert.Equal(lengths[t], c.WritableSegments);
            var w = c.Writable(segments);
            for (int i = 0; i < lengths[t]; i++)
            {
                Assert.Equal(HarnessLayout.Buffer(100 + (t * 10) + i), w[i].Guest);
                Assert.Equal((uint)(t + 1), w[i].Length);
            }

            h.Device.PushUsed(c.Head, c.WritableBytes);
        }

        h.Device.FlushUsed();
        Assert.Equal(3, d.Reap(used));
        Assert.Equal(16, d.FreeDescriptors);
        Assert.False(d.IsBroken);
        Assert.False(h.Device.IsBroken);
    }

    [Fact]
    public void Reap_with_a_small_span_leaves_the_rest_for_the_next_call()
    {
        using var h = NewHarness(queueSize: 8);
        for (ulong t = 0; t < 6; t++)
        {
            Assert.True(h.Driver.TryAdd([], [Buf((int)t, 8)], t));
        }

        h.Driver.Publish();
        var segments = new IoSegment[64];
        foreach (var c in PopAll(h, segments))
        {
            h.Device.PushUsed(c.Head, 8);
        }

        h.Device.FlushUsed();
        var used = new UsedBuffer[4];
        var got = new List<ulong>();
        foreach (int batch in new[] { 0, 1, 4, 4 })
        {
            int n = h.Driver.Reap(used.AsSpan(0, batch));
            got.AddRange(used.Take(n).Select(u => u.Token));
        }

        Assert.Equal([0UL, 1, 2, 3, 4, 5], got);
        Assert.Equal(8, h.Driver.FreeDescriptors);
        Assert.Equal(0, h.Driver.Reap(used));
    }
}

/// <summary>DriverAccountingTests over ordinary RAM (<see cref="RamAccessor"/>).</summary>
public sealed class DriverAccountingTests_Ram : DriverAccountingTests<RamAccessor, RamRingMemory>;

/// <summary>DriverAccountingTests over a PCI BAR stand-in through <see cref="IoMemoryAccessor"/> (accesses counted).</summary>
public sealed class DriverAccountingTests_Io : DriverAccountingTests<IoMemoryAccessor, IoRingMemory>;
