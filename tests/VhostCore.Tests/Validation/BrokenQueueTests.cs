using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;
using static PciVirtio.VhostCore.Tests.Validation.HostileRing;

namespace PciVirtio.VhostCore.Tests.Validation;

/// <summary>A broken queue (DEVICE_NEEDS_RESET) touches nothing until it is restarted.</summary>
public abstract class BrokenQueueTests<TAccess, TMemory> : RingMemoryTests<TAccess, TMemory>
    where TAccess : struct, IMemoryAccessor
    where TMemory : IRingMemory<TAccess>, new()
{
    private RingHarness<TAccess> BrokenHarness(VirtioFeatures features)
    {
        var h = NewHarness(queueSize: 16, features: features);
        h.PublishRawAvail(0, 99);
        Assert.Equal(0, Pop(h));
        Assert.Equal(QueueError.HeadOutOfRange, h.Device.Error);

        // Make the ring look perfectly good again: a valid chain waiting at the same slot.
        h.WriteDesc(3, Buf(3), 64, VirtqDescFlags.Write, 0);
        h.PublishRawAvail(0, 3);
        return h;
    }

    [Theory]
    [InlineData(VirtioFeatures.Version1)]
    [InlineData(VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx)]
    public void Broken_queue_ignores_every_data_path_call(VirtioFeatures features)
    {
        using var h = BrokenHarness(features);
        var before = h.Backing.Span.ToArray();
        var counters = h.Counters;   // I/O memory: every access is counted
        long reads = counters?.Reads ?? 0, writes = counters?.Writes ?? 0;

        Assert.Equal(0, Pop(h));
        Assert.Equal(0, h.Device.AvailPending());
        Assert.False(h.Device.TryPopAvail(out _, new IoSegment[4]));

        h.Device.PushUsed(3, 64);
        h.Device.PushUsed([new UsedElement(3, 1), new UsedElement(4, 2)]);
        h.Device.FlushUsed();
        Assert.False(h.Device.NeedsInterrupt());
        Assert.Equal(0, h.Device.InterruptsRequested);
        Assert.Equal(0, h.Device.InterruptsSuppressed);

        h.Device.DisableNotifications();
        Assert.False(h.Device.EnableNotifications());   // even though an entry is waiting

        // Not one byte of guest memory changed: no used entry, index, flag or avail_event.
        Assert.True(before.AsSpan().SequenceEqual(h.Backing.Span));

        // Over I/O memory: not even a read reached the bus.
        if (counters is not null)
        {
            Assert.Equal(reads, counters.Reads);
            Assert.Equal(writes, counters.Writes);
        }

        Assert.Equal(0, h.ReadU16(h.State.UsedRing + 2));

        Assert.Equal(0, h.Device.ChainsPopped);
        Assert.Equal(0, h.Device.UsedPublished);
        Assert.True(h.Device.IsBroken);
        Assert.Equal(QueueError.HeadOutOfRange, h.Device.Error);
    }

    [Fact]
    public void First_reason_stays_and_stop_does_not_publish()
    {
        using var h = BrokenHarness(VirtioFeatures.Version1);
        string? reason = h.Device.BrokenReason;
        h.Device.Break(QueueError.ChainTooLong, "something else");
        Assert.Equal(QueueError.HeadOutOfRange, h.Device.Error);
        Assert.Equal(reason, h.Device.BrokenReason);

        var state = h.Device.Stop();
        Assert.Equal(0, h.ReadU16(h.State.UsedRing + 2));
        Assert.Equal(h.State.DescTable, state.DescTable);
        Assert.True(h.Device.IsBroken);
        Assert.False(h.Device.UpdateMemory(h.Memory));
    }

    [Fact]
    public void Break_from_outside_stops_a_running_queue()
    {
        using var h = NewHarness(queueSize: 16);
        h.WriteDesc(0, Buf(0), 8, VirtqDescFlags.None, 0);
        h.PublishRawAvail(0, 0);
        h.Device.Break(QueueError.UsedLengthTooLong, "header shorter than the virtio-net header");
        Assert.False(h.Device.IsRunning);
        Assert.Equal(QueueError.UsedLengthTooLong, h.Device.Error);
        Assert.Equal("header shorter than the virtio-net header", h.Device.BrokenReason);
        Assert.Equal(0, Pop(h));
    }

    [Fact]
    public void Start_with_a_good_state_resets_a_broken_queue()
    {
        using var h = BrokenHarness(VirtioFeatures.Version1);

        // A bad restart keeps it broken, with the new reason.
        Assert.False(h.Device.Start(h.State with { Size = 3 }, h.Memory));
        Assert.Equal(QueueError.BadQueueSize, h.Device.Error);

        Assert.True(h.Device.Start(h.State, h.Memory));
        Assert.False(h.Device.IsBroken);
        Assert.True(h.Device.IsRunning);
        Assert.Equal(QueueError.None, h.Device.Error);
        Assert.Null(h.Device.BrokenReason);

        var chains = new DescriptorChain[2];
        var segs = new IoSegment[4];
        Assert.Equal(1, Pop(h.Device, chains, segs));
        Assert.Equal(3, chains[0].Head);
        h.Device.PushUsed(3, 64);
        h.Device.FlushUsed();
        Assert.Equal(1, UsedIdx(h));
        Assert.Equal((3u, 64u), ReadUsed(h, 0));
        Assert.True(h.Device.NeedsInterrupt());
    }
}

/// <summary>BrokenQueueTests over ordinary RAM (<see cref="RamAccessor"/>).</summary>
public sealed class BrokenQueueTests_Ram : BrokenQueueTests<RamAccessor, RamRingMemory>;

/// <summary>BrokenQueueTests over a PCI BAR stand-in through <see cref="IoMemoryAccessor"/> (accesses counted).</summary>
public sealed class BrokenQueueTests_Io : BrokenQueueTests<IoMemoryAccessor, IoRingMemory>;
