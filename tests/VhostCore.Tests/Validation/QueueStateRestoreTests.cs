using System.Buffers.Binary;
using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;
using static PciVirtio.VhostCore.Tests.Validation.HostileRing;

namespace PciVirtio.VhostCore.Tests.Validation;

/// <summary>
/// GET_VRING_BASE / SET_VRING_BASE: stopping a queue reports where it is, and a device
/// started from that state carries on with no buffer replayed or dropped, across the
/// 16-bit index wrap too.
/// </summary>
public abstract class QueueStateRestoreTests<TAccess, TMemory> : RingMemoryTests<TAccess, TMemory>
    where TAccess : struct, IMemoryAccessor
    where TMemory : IRingMemory<TAccess>, new()
{
    /// <summary>Adds one request whose readable buffer carries <paramref name="seq"/>.</summary>
    private static void AddNumbered(RingHarness<TAccess> h, int seq)
    {
        ulong buf = HarnessLayout.Buffer(seq % 64);
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(b, seq);
        Assert.True(h.Memory.TryWrite(buf, b));
        Assert.True(h.Driver.TryAdd([new GuestBuffer(buf, 4)], [new GuestBuffer(buf + 1024, 16)], (ulong)seq));
    }

    private static int SeqOf(RingHarness<TAccess> h, in DescriptorChain chain, IoSegment[] segs)
    {
        Span<byte> b = stackalloc byte[4];
        Assert.Equal(4, h.Memory.Gather(chain.Readable(segs), 0, b));
        return BinaryPrimitives.ReadInt32LittleEndian(b);
    }

    [Fact]
    public void Stop_reports_the_next_avail_index_to_serve_and_the_next_used_index()
    {
        using var h = NewHarness(queueSize: 16);
        for (int i = 0; i < 5; i++)
        {
            AddNumbered(h, i);
        }

        h.Driver.Publish();
        var chains = new DescriptorChain[3];
        var segs = new IoSegment[16];
        Assert.Equal(3, h.Device.PopAvail(chains, segs));
        h.Device.PushUsed(chains[0].Head, 1);
        h.Device.PushUsed(chains[1].Head, 2);   // pushed, not flushed

        var saved = h.Device.Stop();
        Assert.Equal(3, saved.NextAvail);
        Assert.Equal(2, saved.NextUsed);
        Assert.Equal(h.State with { NextAvail = 3, NextUsed = 2 }, saved);
        Assert.Equal(saved, h.Device.State);
        Assert.Equal(2, UsedIdx(h));            // Stop published what was pushed
        Assert.False(h.Device.IsRunning);
        Assert.False(h.Device.IsBroken);
        Assert.Equal(0, h.Device.PopAvail(chains, segs));
        Assert.Equal(saved, h.Device.Stop());   // stopping again changes nothing

        // A new device (a restarted backend) finishes the in-flight chain and serves the rest.
        var next = new SplitQueueDevice<TAccess>("restarted");
        Assert.True(next.Start(saved, h.Memory));
        next.PushUsed(chains[2].Head, 3);
        Assert.Equal(2, next.PopAvail(chains, segs));
        Assert.Equal(3, SeqOf(h, chains[0], segs));
        Assert.Equal(4, SeqOf(h, chains[1], segs));
        next.PushUsed(chains[0].Head, 4);
        next.PushUsed(chains[1].Head, 5);
        next.FlushUsed();
        Assert.Equal(0, next.PopAvail(chains, segs));

        var used = new UsedBuffer[8];
        Assert.Equal(5, h.Driver.Reap(used));
        Assert.Equal([new(0, 1), new(1, 2), new(2, 3), new(3, 4), new(4, 5)], used[..5]);
        Assert.Equal(new QueueState { Size = 16, DescTable = saved.DescTable, AvailRing = saved.AvailRing, UsedRing = saved.UsedRing, NextAvail = 5, NextUsed = 5, Features = saved.Features }, next.Stop());
    }

    [Theory]
    [InlineData(VirtioFeatures.Version1, (ushort)65531)]
    [InlineData(VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx, (ushort)65520)]
    [InlineData(VirtioFeatures.Version1 | VirtioFeatures.RingIndirectDesc, (ushort)65535)]
    public void Restarts_across_the_16_bit_wrap_neither_replay_nor_drop_buffers(VirtioFeatures features, ushort start)
    {
        using var h = NewHarness(queueSize: 8, features: features, indirectEntries: 4);
        var state = h.State with { NextAvail = start, NextUsed = start };

        // A ring already in use at these indices: the driver and the used index agree.
        h.WriteU16(state.UsedRing + 2, start);
        Assert.True(h.Driver.Start(state, h.Memory, h.Indirect));
        var device = new SplitQueueDevice<TAccess>("gen-0");
        Assert.True(device.Start(state, h.Memory));

        const int total = 40;
        int added = 0, served = 0, reaped = 0, generation = 0;
        var chains = new DescriptorChain[3];
        var segs = new IoSegment[16];
        var used = new UsedBuffer[8];
        var held = new List<ushort>();   // popped by one generation, completed by the next
        while (reaped < total)
        {
            while (added < total && h.Driver.FreeDescriptors >= 2 && added - reaped < 5)
            {
                AddNumbered(h, added++);
            }

            h.Driver.Publish();
            int n = device.PopAvail(chains, segs);
            for (int i = 0; i < n; i++)
            {
                Assert.Equal(served++, SeqOf(h, chains[i], segs));
            }

            // Complete all but the last popped chain now; the last one survives the restart.
            foreach (var head in held)
            {
                device.PushUsed(head, 16);
            }

            held.Clear();
            for (int i = 0; i < n; i++)
            {
                if (i == n - 1)
                {
                    held.Add(chains[i].Head);
                }
                else
                {
                    device.PushUsed(chains[i].Head, 16);
                }
            }

            var saved = device.Stop();
            Assert.Equal(unchecked((ushort)(start + served)), saved.NextAvail);
            device = new SplitQueueDevice<TAccess>($"gen-{++generation}");
            Assert.True(device.Start(saved, h.Memory), device.BrokenReason);

            int r = h.Driver.Reap(used);
            for (int i = 0; i < r; i++)
            {
                Assert.Equal((ulong)reaped++, used[i].Token);
                Assert.Equal(16u, used[i].Length);
            }

            Assert.False(h.Driver.IsBroken, h.Driver.BrokenReason);
            Assert.True(generation < 200, "no progress");
        }

        Assert.Equal(total, served);
        var final = device.Stop();
        Assert.Equal(unchecked((ushort)(start + total)), final.NextAvail);
        Assert.Equal(unchecked((ushort)(start + total)), final.NextUsed);
        Assert.True(final.NextAvail < start);   // the indices did wrap
        Assert.Equal(final.NextUsed, UsedIdx(h));
        Assert.Equal(8, h.Driver.FreeDescriptors);
    }

    [Fact]
    public void Device_started_on_a_ring_that_already_holds_buffers_serves_them_without_a_kick()
    {
        using var h = NewHarness(queueSize: 16);
        for (int i = 0; i < 3; i++)
        {
            AddNumbered(h, i);
        }

        h.Driver.Publish();
        Assert.True(h.Driver.NeedsKick()); // the kick goes nowhere: no device is listening yet

        var device = new SplitQueueDevice<TAccess>("late");
        Assert.True(device.Start(h.State, h.Memory));
        Assert.Equal(3, device.AvailPending());
        var chains = new DescriptorChain[8];
        var segs = new IoSegment[16];
        Assert.Equal(3, device.PopAvail(chains, segs));
        Assert.Equal([0, 1, 2], chains.Take(3).Select(c => SeqOf(h, c, segs)).ToArray());
    }

    [Fact]
    public void Device_restored_mid_ring_serves_only_what_is_left()
    {
        using var h = NewHarness(queueSize: 16);
        for (int i = 0; i < 5; i++)
        {
            AddNumbered(h, i);
        }

        h.Driver.Publish();
        var device = new SplitQueueDevice<TAccess>("restored");
        Assert.True(device.Start(h.State with { NextAvail = 2, NextUsed = 0 }, h.Memory));
        Assert.True(device.EnableNotifications()); // the re-check sees the waiting entries
        var chains = new DescriptorChain[8];
        var segs = new IoSegment[16];
        Assert.Equal(3, device.PopAvail(chains, segs));
        Assert.Equal([2, 3, 4], chains.Take(3).Select(c => SeqOf(h, c, segs)).ToArray());
    }

    [Fact]
    public void Restored_next_avail_ahead_of_the_ring_breaks_the_queue()
    {
        // SET_VRING_BASE from an untrusted frontend claiming more was served than was ever added.
        using var h = NewHarness(queueSize: 16);
        AddNumbered(h, 0);
        h.Driver.Publish();
        Assert.True(h.Device.Start(h.State with { NextAvail = 10 }, h.Memory));
        AssertPopBreaks(h, QueueError.AvailIndexJump, "avail index moved from 10 to 1");
    }
}

/// <summary>QueueStateRestoreTests over ordinary RAM (<see cref="RamAccessor"/>).</summary>
public sealed class QueueStateRestoreTests_Ram : QueueStateRestoreTests<RamAccessor, RamRingMemory>;

/// <summary>QueueStateRestoreTests over a PCI BAR stand-in through <see cref="IoMemoryAccessor"/> (accesses counted).</summary>
public sealed class QueueStateRestoreTests_Io : QueueStateRestoreTests<IoMemoryAccessor, IoRingMemory>;
