using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;
using static PciVirtio.VhostCore.Tests.Notifications.RingProbe;

namespace PciVirtio.VhostCore.Tests.Notifications;

/// <summary>
/// How many kicks and interrupts a deterministic schedule produces: EVENT_IDX must cut them
/// to one per wake-up of the peer, and batching must cost at most one per batch. The rings
/// start just below the 16-bit wrap so every schedule crosses it.
/// </summary>
public abstract class NotificationCountTests<TAccess, TMemory> : RingMemoryTests<TAccess, TMemory>
    where TAccess : struct, IMemoryAccessor
    where TMemory : IRingMemory<TAccess>, new()
{
    private const VirtioFeatures Plain = VirtioFeatures.Version1;
    private const VirtioFeatures EventIdx = VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx;

    private (RingHarness<TAccess> H, SplitQueueDriver<TAccess> Driver, SplitQueueDevice<TAccess> Device) NearWrap(int queueSize, VirtioFeatures features, ushort start)
    {
        var h = NewHarness(queueSize: queueSize, features: features);
        var state = h.State with { NextAvail = start, NextUsed = start };
        var driver = new SplitQueueDriver<TAccess>("count-driver");
        var device = new SplitQueueDevice<TAccess>("count-device");
        Assert.True(driver.Start(state, h.Memory), driver.BrokenReason);
        Assert.True(device.Start(state, h.Memory), device.BrokenReason);
        return (h, driver, device);
    }

    /// <summary>
    /// The driver adds single buffers, each followed by Publish and NeedsKick; the device
    /// sleeps (notifications enabled) until it has been given <paramref name="run"/> of them,
    /// then wakes, disables notifications, drains, and re-enables.
    /// </summary>
    private long KicksFor(VirtioFeatures features, int total, int run)
    {
        var (h, driver, device) = NearWrap(64, features, 0xFFA0);
        using (h)
        {
            Assert.False(device.EnableNotifications());
            long kicks = 0;
            int sent = 0;
            while (sent < total)
            {
                int thisRun = Math.Min(run, total - sent);
                for (int i = 0; i < thisRun; i++)
                {
                    if (AddPublishKick(driver, (ulong)sent++))
                    {
                        kicks++;
                    }
                }

                device.DisableNotifications();
                Assert.Equal(thisRun, ServeAll(device));
                Assert.False(device.EnableNotifications());
                Assert.Equal(thisRun, ReapAll(driver));
            }

            Assert.Equal(kicks, driver.KicksRequested);
            Assert.Equal(total - kicks, driver.KicksSuppressed);
            Assert.Equal((ushort)(0xFFA0 + total), device.State.NextAvail);
            return kicks;
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(5)]
    [InlineData(7)]
    [InlineData(32)]
    public void With_event_idx_a_device_that_re_enables_after_each_drain_gets_one_kick_per_wake_up(int run)
    {
        const int total = 200;
        Assert.Equal((total + run - 1) / run, KicksFor(EventIdx, total, run));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    public void Without_event_idx_every_buffer_published_while_the_device_sleeps_kicks(int run)
    {
        // NO_NOTIFY is only set once the device is awake, so a sleeping device gets a kick per buffer.
        const int total = 100;
        Assert.Equal(total, KicksFor(Plain, total, run));
    }

    [Theory]
    [InlineData(EventIdx, 1, 20)]
    [InlineData(EventIdx, 2, 10)]
    [InlineData(EventIdx, 0, 1)]
    [InlineData(Plain, 1, 20)]
    [InlineData(Plain, 2, 10)]
    [InlineData(Plain, 0, 1)]
    public void Batching_32_buffers_per_publish_costs_at_most_one_kick_per_batch(VirtioFeatures features, int reEnableEvery, int expectedKicks)
    {
        const int batches = 20;
        var (h, driver, device) = NearWrap(256, features, 0xFFE0);
        using (h)
        {
            Assert.False(device.EnableNotifications());
            long kicks = 0;
            for (int b = 0; b < batches; b++)
            {
                for (int i = 0; i < 32; i++)
                {
                    AddSingle(driver, (ulong)((b * 32) + i));
                }

                driver.Publish();
                if (driver.NeedsKick())
                {
                    kicks++;
                }

                // The device wakes (or keeps polling), drains, and re-enables only every
                // reEnableEvery batches (0: never; it keeps polling).
                device.DisableNotifications();
                Assert.Equal(32, ServeAll(device));
                Assert.Equal(32, ReapAll(driver));
                if (reEnableEvery != 0 && (b + 1) % reEnableEvery == 0)
                {
                    Assert.False(device.EnableNotifications());
                }
            }

            Assert.Equal(expectedKicks, kicks);
            Assert.True(kicks <= batches);
        }
    }

    /// <summary>
    /// The device completes single buffers, each followed by FlushUsed and NeedsInterrupt;
    /// the driver (interrupts enabled) reaps after every <paramref name="run"/> of them.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(8)]
    [InlineData(32)]
    public void With_event_idx_a_driver_that_reaps_every_run_gets_one_interrupt_per_run(int run)
    {
        const int total = 200;
        var (h, driver, device) = NearWrap(64, EventIdx, 0xFFC0);
        using (h)
        {
            long interrupts = 0;
            int done = 0;
            while (done < total)
            {
                int thisRun = Math.Min(run, total - done);
                for (int i = 0; i < thisRun; i++)
                {
                    AddSingle(driver, (ulong)(done + i));
                }

                driver.Publish();
                var chains = PopAll(device);
                Assert.Equal(thisRun, chains.Count);
                foreach (var c in chains)
                {
                    device.PushUsed(c.Head, 0);
                    device.FlushUsed();
                    if (device.NeedsInterrupt())
                    {
                        interrupts++;
                    }
                }

                Assert.Equal(thisRun, ReapAll(driver));
                done += thisRun;
            }

            Assert.Equal((total + run - 1) / run, interrupts);
            Assert.Equal(interrupts, device.InterruptsRequested);
            Assert.Equal(total - interrupts, device.InterruptsSuppressed);
        }
    }

    [Fact]
    public void Without_event_idx_every_flush_interrupts_while_interrupts_are_enabled()
    {
        var (h, driver, device) = NearWrap(64, Plain, 0xFFC0);
        using (h)
        {
            long interrupts = 0;
            for (int i = 0; i < 50; i++)
            {
                AddSingle(driver, (ulong)i);
                driver.Publish();
                Assert.Equal(1, ServeAll(device));
                if (device.NeedsInterrupt())
                {
                    interrupts++;
                }
            }

            Assert.Equal(50, interrupts);

            driver.DisableInterrupts();
            for (int i = 0; i < 10; i++)
            {
                AddSingle(driver, (ulong)i);
                driver.Publish();
                Assert.Equal(1, ServeAll(device));
                Assert.False(device.NeedsInterrupt());
            }

            Assert.Equal(60, ReapAll(driver));
        }
    }
}

/// <summary>NotificationCountTests over ordinary RAM (<see cref="RamAccessor"/>).</summary>
public sealed class NotificationCountTests_Ram : NotificationCountTests<RamAccessor, RamRingMemory>;

/// <summary>NotificationCountTests over a PCI BAR stand-in through <see cref="IoMemoryAccessor"/> (accesses counted).</summary>
public sealed class NotificationCountTests_Io : NotificationCountTests<IoMemoryAccessor, IoRingMemory>;
