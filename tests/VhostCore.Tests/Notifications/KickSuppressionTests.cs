using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;
using static PciVirtio.VhostCore.Tests.Notifications.RingProbe;

namespace PciVirtio.VhostCore.Tests.Notifications;

/// <summary>
/// Device → driver notification suppression (the driver's kicks): VIRTQ_USED_F_NO_NOTIFY
/// without EVENT_IDX, avail_event with it. Everything the device asks for is read back
/// from ring memory, not from the queue objects.
/// </summary>
public abstract class KickSuppressionTests<TAccess, TMemory> : RingMemoryTests<TAccess, TMemory>
    where TAccess : struct, IMemoryAccessor
    where TMemory : IRingMemory<TAccess>, new()
{
    private const VirtioFeatures Plain = VirtioFeatures.Version1;
    private const VirtioFeatures EventIdx = VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx;

    [Fact]
    public void Disable_sets_NO_NOTIFY_in_used_flags_and_Enable_clears_it()
    {
        using var h = NewHarness(queueSize: 8, features: Plain);
        Assert.Equal(0, UsedFlags(h));

        h.Device.DisableNotifications();
        Assert.Equal((ushort)VirtqUsedFlags.NoNotify, UsedFlags(h));

        // Idempotent.
        h.Device.DisableNotifications();
        Assert.Equal((ushort)VirtqUsedFlags.NoNotify, UsedFlags(h));

        Assert.False(h.Device.EnableNotifications());
        Assert.Equal(0, UsedFlags(h));

        // Enabling when already enabled leaves it clear.
        Assert.False(h.Device.EnableNotifications());
        Assert.Equal(0, UsedFlags(h));
    }

    [Fact]
    public void Without_event_idx_the_driver_kicks_only_while_notifications_are_enabled()
    {
        using var h = NewHarness(queueSize: 8, features: Plain);
        Assert.True(AddPublishKick(h.Driver, 1));

        h.Device.DisableNotifications();
        Assert.False(AddPublishKick(h.Driver, 2));
        Assert.False(AddPublishKick(h.Driver, 3));
        Assert.Equal(1, h.Driver.KicksRequested);
        Assert.Equal(2, h.Driver.KicksSuppressed);

        // Entries are waiting, so Enable tells the device to process them itself.
        Assert.True(h.Device.EnableNotifications());
        Assert.Equal(3, ServeAll(h.Device));
        Assert.False(h.Device.EnableNotifications());

        Assert.True(AddPublishKick(h.Driver, 4));
        Assert.Equal(2, h.Driver.KicksRequested);
    }

    [Fact]
    public void Without_event_idx_the_driver_ignores_avail_event()
    {
        using var h = NewHarness(queueSize: 8, features: Plain);

        // avail_event far ahead would suppress the kick under EVENT_IDX; here it means nothing.
        SetAvailEvent(h, 0x4000);
        Assert.True(AddPublishKick(h.Driver, 1));

        // And NO_NOTIFY written by the device suppresses even when avail_event says "now".
        SetAvailEvent(h, 1);
        SetUsedFlags(h, (ushort)VirtqUsedFlags.NoNotify);
        Assert.False(AddPublishKick(h.Driver, 2));
    }

    [Fact]
    public void NeedsKick_is_false_when_nothing_was_added_since_the_last_check()
    {
        using var h = NewHarness(queueSize: 8, features: Plain);
        Assert.False(h.Driver.NeedsKick());
        Assert.True(AddPublishKick(h.Driver, 1));
        Assert.False(h.Driver.NeedsKick());
        h.Driver.Publish();
        Assert.False(h.Driver.NeedsKick());
    }

    [Fact]
    public void With_event_idx_Disable_writes_nothing_and_Enable_writes_avail_event_at_the_next_avail_index()
    {
        using var h = NewHarness(queueSize: 8, features: EventIdx);
        SetAvailEvent(h, 0xBEEF);
        h.Device.DisableNotifications();

        // The spec keeps used.flags for the non-EVENT_IDX protocol; avail_event is untouched.
        Assert.Equal(0, UsedFlags(h));
        Assert.Equal(0xBEEF, AvailEvent(h));

        for (ulong t = 0; t < 3; t++)
        {
            AddSingle(h.Driver, t);
        }

        h.Driver.Publish();
        Assert.Equal(3, ServeAll(h.Device));
        Assert.False(h.Device.EnableNotifications());
        Assert.Equal(3, AvailEvent(h));
        Assert.Equal(0, UsedFlags(h));
    }

    [Fact]
    public void With_event_idx_a_kick_is_due_exactly_when_avail_idx_crosses_avail_event()
    {
        using var h = NewHarness(queueSize: 8, features: EventIdx);

        // Device asleep at avail index 0.
        Assert.False(h.Device.EnableNotifications());
        Assert.Equal(0, AvailEvent(h));

        Assert.True(AddPublishKick(h.Driver, 1));  // 0 -> 1 crosses 0

        // The device is now "polling" (it has not re-enabled): avail_event stays at 0.
        h.Device.DisableNotifications();
        Assert.False(AddPublishKick(h.Driver, 2)); // 1 -> 2 does not cross 0
        Assert.False(AddPublishKick(h.Driver, 3));
        Assert.Equal(1, h.Driver.KicksRequested);
        Assert.Equal(2, h.Driver.KicksSuppressed);

        // Re-enable after draining: the next entry crosses the new avail_event.
        Assert.True(h.Device.EnableNotifications()); // entries arrived while polling
        Assert.Equal(3, ServeAll(h.Device));
        Assert.False(h.Device.EnableNotifications());
        Assert.Equal(3, AvailEvent(h));
        Assert.True(AddPublishKick(h.Driver, 4));
    }

    [Fact]
    public void With_event_idx_no_kick_while_avail_event_is_ahead_and_one_when_a_batch_passes_it()
    {
        using var h = NewHarness(queueSize: 16, features: EventIdx);
        SetAvailEvent(h, 5);

        // 0 -> 1 ... 4 -> 5: avail_event 5 not yet crossed (the entry at index 5 is not published).
        for (ulong t = 0; t < 5; t++)
        {
            Assert.False(AddPublishKick(h.Driver, t));
        }

        // 5 -> 6 crosses it.
        Assert.True(AddPublishKick(h.Driver, 5));

        // A batch 6 -> 10 over an avail_event of 8 crosses it once.
        SetAvailEvent(h, 8);
        for (ulong t = 6; t < 10; t++)
        {
            AddSingle(h.Driver, t);
        }

        h.Driver.Publish();
        Assert.True(h.Driver.NeedsKick());

        // A batch 10 -> 13 over an avail_event of 13 (ahead, exactly at new) does not.
        SetAvailEvent(h, 13);
        for (ulong t = 10; t < 13; t++)
        {
            AddSingle(h.Driver, t);
        }

        h.Driver.Publish();
        Assert.False(h.Driver.NeedsKick());
    }

    [Fact]
    public void With_event_idx_the_driver_ignores_NO_NOTIFY()
    {
        using var h = NewHarness(queueSize: 8, features: EventIdx);
        SetUsedFlags(h, (ushort)VirtqUsedFlags.NoNotify);
        SetAvailEvent(h, 0);
        Assert.True(AddPublishKick(h.Driver, 1));
    }

    [Fact]
    public void With_event_idx_kicks_follow_avail_event_across_the_16_bit_wrap()
    {
        using var h = NewHarness(queueSize: 8, features: EventIdx);
        var state = h.State with { NextAvail = 0xFFFD, NextUsed = 0xFFFD };
        var driver = new SplitQueueDriver<TAccess>("wrap-driver");
        var device = new SplitQueueDevice<TAccess>("wrap-device");
        Assert.True(driver.Start(state, h.Memory), driver.BrokenReason);
        Assert.True(device.Start(state, h.Memory), device.BrokenReason);

        int kicks = 0;
        for (ulong t = 0; t < 6; t++)
        {
            Assert.False(device.EnableNotifications());
            Assert.Equal((ushort)(0xFFFD + (2 * t)), AvailEvent(h));
            if (AddPublishKick(driver, t))
            {
                kicks++;
            }

            // A second entry before the device runs does not kick again.
            Assert.False(AddPublishKick(driver, t + 100));
            device.DisableNotifications();
            Assert.Equal(2, ServeAll(device));
            Assert.Equal(2, ReapAll(driver));
        }

        Assert.Equal(6, kicks);
        Assert.Equal(6, driver.KicksSuppressed);
        Assert.Equal(unchecked((ushort)(0xFFFD + 12)), device.State.NextAvail);
    }

    [Fact]
    public void A_device_restarted_on_a_ring_left_with_NO_NOTIFY_is_kicked_again_once_it_re_enables()
    {
        // GET_VRING_BASE while the device was polling leaves NO_NOTIFY in used.flags; the
        // queue is then started again on the same ring (SET_VRING_BASE, backend restart).
        using var h = NewHarness(queueSize: 8, features: Plain);
        Assert.True(AddPublishKick(h.Driver, 1));
        h.Device.DisableNotifications();
        Assert.Equal(1, ServeAll(h.Device));
        Assert.Equal((ushort)VirtqUsedFlags.NoNotify, UsedFlags(h));
        var saved = h.Device.Stop();

        Assert.True(h.Device.Start(saved, h.Memory), h.Device.BrokenReason);
        Assert.Empty(PopAll(h.Device));
        Assert.False(h.Device.EnableNotifications());

        // The device now sleeps waiting for a kick: the driver must see that it wants one.
        Assert.Equal(0, UsedFlags(h));
        Assert.True(AddPublishKick(h.Driver, 2));
    }
}

/// <summary>KickSuppressionTests over ordinary RAM (<see cref="RamAccessor"/>).</summary>
public sealed class KickSuppressionTests_Ram : KickSuppressionTests<RamAccessor, RamRingMemory>;

/// <summary>KickSuppressionTests over a PCI BAR stand-in through <see cref="IoMemoryAccessor"/> (accesses counted).</summary>
public sealed class KickSuppressionTests_Io : KickSuppressionTests<IoMemoryAccessor, IoRingMemory>;
