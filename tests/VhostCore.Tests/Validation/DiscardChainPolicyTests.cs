using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;
using static PciVirtio.VhostCore.Tests.Validation.HostileRing;

namespace PciVirtio.VhostCore.Tests.Validation;

/// <summary><see cref="ChainErrorPolicy.DiscardChain"/>: a bad chain goes back to the driver
/// with length 0 and the queue keeps going; a bad ring still breaks it.</summary>
public abstract class DiscardChainPolicyTests<TAccess, TMemory> : RingMemoryTests<TAccess, TMemory>
    where TAccess : struct, IMemoryAccessor
    where TMemory : IRingMemory<TAccess>, new()
{
    [Fact]
    public void Bad_chain_is_returned_with_length_0_and_the_next_good_chain_is_delivered()
    {
        using var h = NewHarness(policy: ChainErrorPolicy.DiscardChain);
        h.WriteDesc(0, Buf(0), 16, VirtqDescFlags.Next, 0);            // self-loop
        h.WriteDesc(1, Buf(1), 32, VirtqDescFlags.Write, 0);           // fine
        h.PublishRawAvail(0, 0, 1);

        var chains = new DescriptorChain[4];
        var segs = new IoSegment[8];
        Assert.Equal(1, Pop(h.Device, chains, segs));
        Assert.Equal(1, chains[0].Head);
        Assert.Equal(32u, chains[0].WritableBytes);
        Assert.False(h.Device.IsBroken);
        Assert.True(h.Device.IsRunning);
        Assert.Equal(1, h.Device.ChainsDiscarded);
        Assert.Equal(1, h.Device.ChainsPopped);

        // Published at once: the used index moved although the caller has pushed nothing.
        Assert.Equal(1, UsedIdx(h));
        Assert.Equal((0u, 0u), ReadUsed(h, 0));

        h.Device.PushUsed(chains[0].Head, 32);
        h.Device.FlushUsed();
        Assert.Equal(2, UsedIdx(h));
        Assert.Equal((1u, 32u), ReadUsed(h, 1));
        Assert.Equal(2, h.Device.State.NextAvail);
        Assert.Equal(2, h.Device.State.NextUsed);
    }

    [Fact]
    public void Every_kind_of_bad_chain_is_discarded_between_good_ones()
    {
        using var h = NewHarness(policy: ChainErrorPolicy.DiscardChain, features: VirtioFeatures.Version1);
        h.WriteDesc(0, Buf(0), 8, VirtqDescFlags.None, 0);                    // good
        h.WriteDesc(1, Buf(1), 8, VirtqDescFlags.Next, 200);                  // loop via 200 -> 1
        h.WriteDesc(200, Buf(2), 8, VirtqDescFlags.Next, 1);
        h.WriteDesc(2, 0x1000, 8, VirtqDescFlags.None, 0);                    // outside memory
        h.WriteDesc(3, Table, 16, VirtqDescFlags.Indirect, 0);                // indirect not negotiated
        h.WriteDesc(4, Buf(4), 8, VirtqDescFlags.Write | VirtqDescFlags.Next, 5);
        h.WriteDesc(5, Buf(5), 8, VirtqDescFlags.None, 0);                    // readable after writable
        h.WriteDesc(6, ulong.MaxValue, 2, VirtqDescFlags.None, 0);            // overflow
        h.WriteDesc(7, Buf(7), 8, VirtqDescFlags.Next, 999);                  // next out of range
        h.WriteDesc(8, Buf(8), 8, VirtqDescFlags.Write, 0);                   // good
        h.PublishRawAvail(0, 0, 1, 2, 3, 4, 6, 7, 8);

        var chains = new DescriptorChain[16];
        var segs = new IoSegment[1024];   // room for the looping chain until its length check fires
        Assert.Equal(2, Pop(h.Device, chains, segs));
        Assert.Equal(0, chains[0].Head);
        Assert.Equal(8, chains[1].Head);
        Assert.Equal(6, h.Device.ChainsDiscarded);
        Assert.False(h.Device.IsBroken);
        Assert.Equal(6, UsedIdx(h));
        ushort[] discarded = [1, 2, 3, 4, 6, 7];
        for (int i = 0; i < discarded.Length; i++)
        {
            Assert.Equal(((uint)discarded[i], 0u), ReadUsed(h, i));
        }
    }

    [Fact]
    public void Batch_of_only_bad_chains_returns_nothing_but_publishes_them()
    {
        using var h = NewHarness(policy: ChainErrorPolicy.DiscardChain);
        h.WriteDesc(0, 0x1000, 8, VirtqDescFlags.None, 0);
        h.WriteDesc(1, 0x2000, 8, VirtqDescFlags.None, 0);
        h.PublishRawAvail(0, 1, 0);
        Assert.Equal(0, Pop(h));
        Assert.Equal(2, h.Device.ChainsDiscarded);
        Assert.Equal(0, h.Device.ChainsPopped);
        Assert.Equal(2, UsedIdx(h));
        Assert.Equal((1u, 0u), ReadUsed(h, 0));
        Assert.Equal((0u, 0u), ReadUsed(h, 1));
        Assert.Equal(0, Pop(h));   // nothing replayed
        Assert.Equal(2, h.Device.ChainsDiscarded);
    }

    [Fact]
    public void Driver_gets_a_discarded_buffer_back_with_length_0()
    {
        using var h = NewHarness(queueSize: 8, policy: ChainErrorPolicy.DiscardChain);
        Assert.True(h.Driver.TryAdd([new GuestBuffer(Buf(0), 64)], [], token: 10));
        Assert.True(h.Driver.TryAdd([], [new GuestBuffer(Buf(1), 64)], token: 11));
        h.Driver.Publish();

        // Corrupt the first request behind the driver's back.
        h.WriteDesc(0, 0xdead_0000_0000, 64, VirtqDescFlags.None, 0);

        var chains = new DescriptorChain[4];
        var segs = new IoSegment[4];
        Assert.Equal(1, Pop(h.Device, chains, segs));
        h.Device.PushUsed(chains[0].Head, 40);
        h.Device.FlushUsed();

        var used = new UsedBuffer[4];
        Assert.Equal(2, h.Driver.Reap(used));
        Assert.Equal(new UsedBuffer(10, 0), used[0]);
        Assert.Equal(new UsedBuffer(11, 40), used[1]);
        Assert.False(h.Driver.IsBroken);
        Assert.Equal(8, h.Driver.FreeDescriptors);
    }

    [Fact]
    public void First_chain_too_big_for_the_segment_buffer_is_discarded()
    {
        using var h = NewHarness(policy: ChainErrorPolicy.DiscardChain);
        h.WriteDesc(0, Buf(0), 8, VirtqDescFlags.Next, 1);
        h.WriteDesc(1, Buf(1), 8, VirtqDescFlags.None, 0);
        h.WriteDesc(2, Buf(2), 8, VirtqDescFlags.None, 0);
        h.PublishRawAvail(0, 0, 2);
        var chains = new DescriptorChain[4];
        Assert.Equal(1, Pop(h.Device, chains, new IoSegment[1]));
        Assert.Equal(2, chains[0].Head);
        Assert.Equal(1, h.Device.ChainsDiscarded);
        Assert.Equal((0u, 0u), ReadUsed(h, 0));
    }

    [Fact]
    public void Avail_index_jump_still_breaks_the_queue()
    {
        using var h = NewHarness(queueSize: 16, policy: ChainErrorPolicy.DiscardChain);
        h.WriteU16(h.State.AvailRing + 2, 40);
        AssertPopBreaks(h, QueueError.AvailIndexJump, "avail index moved from 0 to 40");
        Assert.Equal(0, h.Device.ChainsDiscarded);
    }

    [Fact]
    public void Head_out_of_range_still_breaks_the_queue_after_discarding_earlier_bad_chains()
    {
        using var h = NewHarness(queueSize: 16, policy: ChainErrorPolicy.DiscardChain);
        h.WriteDesc(0, 0x1000, 8, VirtqDescFlags.None, 0);
        h.PublishRawAvail(0, 0, 16);
        Assert.Equal(0, Pop(h));
        Assert.True(h.Device.IsBroken);
        Assert.Equal(QueueError.HeadOutOfRange, h.Device.Error);
        Assert.Contains("names head 16", h.Device.BrokenReason, StringComparison.Ordinal);
        Assert.Equal(1, h.Device.ChainsDiscarded);
    }
}

/// <summary>DiscardChainPolicyTests over ordinary RAM (<see cref="RamAccessor"/>).</summary>
public sealed class DiscardChainPolicyTests_Ram : DiscardChainPolicyTests<RamAccessor, RamRingMemory>;

/// <summary>DiscardChainPolicyTests over a PCI BAR stand-in through <see cref="IoMemoryAccessor"/> (accesses counted).</summary>
public sealed class DiscardChainPolicyTests_Io : DiscardChainPolicyTests<IoMemoryAccessor, IoRingMemory>;
