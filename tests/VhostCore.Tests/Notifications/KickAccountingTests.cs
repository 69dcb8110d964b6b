using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;

namespace PciVirtio.VhostCore.Tests.Notifications;

public abstract class KickAccountingTests<TAccess, TMemory> : RingMemoryTests<TAccess, TMemory>
    where TAccess : struct, IMemoryAccessor
    where TMemory : IRingMemory<TAccess>, new()
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Asking_for_a_kick_before_publishing_does_not_swallow_the_kick(bool eventIdx)
    {
        var features = VirtioFeatures.Version1 | (eventIdx ? VirtioFeatures.RingEventIdx : 0);
        using var h = NewHarness(queueSize: 16, features: features);
        Assert.True(h.Device.EnableNotifications() is false);
        Assert.True(h.Driver.TryAdd([new GuestBuffer(HarnessLayout.Buffer(0), 64)], [], 1));

        // Too early: nothing is published yet, so no kick is due and none is consumed.
        Assert.False(h.Driver.NeedsKick());
        h.Driver.Publish();
        Assert.True(h.Driver.NeedsKick());
        Assert.False(h.Driver.NeedsKick());
    }

    [Fact]
    public void A_started_device_arms_avail_event_so_the_first_buffer_is_kicked()
    {
        using var h = NewHarness(queueSize: 16, features: VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx);

        // Leave a stale avail_event behind, as an earlier run of the ring would.
        ulong availEvent = h.State.UsedRing + 4 + (8UL * 16);
        h.WriteU16(availEvent, 9);
        var state = h.Device.Stop();
        Assert.True(h.Device.Start(state, h.Memory));
        Assert.Equal(state.NextAvail, h.ReadU16(availEvent));

        Assert.True(h.Driver.TryAdd([new GuestBuffer(HarnessLayout.Buffer(0), 64)], [], 1));
        h.Driver.Publish();
        Assert.True(h.Driver.NeedsKick());
    }
}

/// <summary>KickAccountingTests over ordinary RAM (<see cref="RamAccessor"/>).</summary>
public sealed class KickAccountingTests_Ram : KickAccountingTests<RamAccessor, RamRingMemory>;

/// <summary>KickAccountingTests over a PCI BAR stand-in through <see cref="IoMemoryAccessor"/> (accesses counted).</summary>
public sealed class KickAccountingTests_Io : KickAccountingTests<IoMemoryAccessor, IoRingMemory>;
