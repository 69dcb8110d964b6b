using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;
using static PciVirtio.VhostCore.Tests.Notifications.RingProbe;

namespace PciVirtio.VhostCore.Tests.Notifications;

/// <summary>
/// Driver → device notification suppression (the device's interrupts):
/// VIRTQ_AVAIL_F_NO_INTERRUPT without EVENT_IDX, used_event with it.
/// </summary>
public abstract class InterruptSuppressionTests<TAccess, TMemory> : RingMemoryTests<TAccess, TMemory>
    where TAccess : struct, IMemoryAccessor
    where TMemory : IRingMemory<TAccess>, new()
{
    private const VirtioFeatures Plain = VirtioFeatures.Version1;
    private const VirtioFeatures EventIdx = VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx;

    /// <summary>Driver adds <paramref name="n"/> buffers; the device pops them and returns them
    /// (published), then asks whether to interrupt.</summary>
    private static bool CompleteAndAsk(RingHarness<TAccess> h, int n, ulong firstToken = 0)
    {
        for (int i = 0; i < n; i++)
        {
            AddSingle(h.Driver, firstToken + (ulong)i);
        }

        h.Driver.Publish();
        Assert.Equal(n, ServeAll(h.Device));
        return h.Device.NeedsInterrupt();
    }

    [Fact]
    public void Disable_sets_NO_INTERRUPT_in_avail_flags_and_Enable_clears_it()
    {
        using var h = NewHarness(queueSize: 8, features: Plain);
        Assert.Equal(0, AvailFlags(h));
        h.Driver.DisableInterrupts();
        Assert.Equal((ushort)VirtqAvailFlags.NoInterrupt, AvailFlags(h));
        h.Driver.DisableInterrupts();
        Assert.Equal((ushort)VirtqAvailFlags.NoInterrupt, AvailFlags(h));
        Assert.False(h.Driver.EnableInterrupts());
        Assert.Equal(0, AvailFlags(h));
    }

    [Fact]
    public void Without_event_idx_the_device_interrupts_only_while_interrupts_are_enabled()
    {
        using var h = NewHarness(queueSize: 8, features: Plain);
        Assert.True(CompleteAndAsk(h, 1, 0));
        Assert.Equal(1, ReapAll(h.Driver));

        h.Driver.DisableInterrupts();
        Assert.False(CompleteAndAsk(h, 1, 1));
        Assert.False(CompleteAndAsk(h, 2, 2));
        Assert.Equal(1, h.Device.InterruptsRequested);
        Assert.Equal(2, h.Device.InterruptsSuppressed);

        // Used entries are waiting: Enable reports them, so the driver reaps instead of sleeping.
        Assert.True(h.Driver.EnableInterrupts());
        Assert.Equal(3, ReapAll(h.Driver));
        Assert.False(h.Driver.EnableInterrupts());
        Assert.True(CompleteAndAsk(h, 1, 4));
    }

    [Fact]
    public void Without_event_idx_the_device_ignores_used_event()
    {
        using var h = NewHarness(queueSize: 8, features: Plain);
        SetUsedEvent(h, 0x4000);
        Assert.True(CompleteAndAsk(h, 1));
    }

    [Theory]
    [InlineData(Plain)]
    [InlineData(EventIdx)]
    public void NeedsInterrupt_is_false_when_nothing_new_was_published(VirtioFeatures features)
    {
        using var h = NewHarness(queueSize: 8, features: features);

        // Fresh queue: nothing published yet.
        Assert.False(h.Device.NeedsInterrupt());
        h.Device.FlushUsed();
        Assert.False(h.Device.NeedsInterrupt());

        Assert.True(CompleteAndAsk(h, 1));
        Assert.False(h.Device.NeedsInterrupt());
        Assert.Equal(1, ReapAll(h.Driver)); // with EVENT_IDX: used_event = 1, the next entry is due

        // Pushed but not flushed is not published either.
        AddSingle(h.Driver, 9);
        h.Driver.Publish();
        var chains = PopAll(h.Device);
        Assert.Single(chains);
        h.Device.PushUsed(chains[0].Head, 1);
        Assert.False(h.Device.NeedsInterrupt());
        h.Device.FlushUsed();
        Assert.True(h.Device.NeedsInterrupt());
        Assert.False(h.Device.NeedsInterrupt());
        Assert.Equal(2, h.Device.InterruptsRequested);
    }

    [Fact]
    public void With_event_idx_Disable_leaves_avail_flags_clear_and_used_event_still()
    {
        using var h = NewHarness(queueSize: 8, features: EventIdx);

        // Driver.Start writes used_event = next used (0).
        Assert.Equal(0, UsedEvent(h));
        h.Driver.DisableInterrupts();
        Assert.Equal(0, AvailFlags(h));

        // While disabled, reaping does not move used_event.
        Assert.True(CompleteAndAsk(h, 3));
        Assert.Equal(3, ReapAll(h.Driver));
        Assert.Equal(0, UsedEvent(h));
        Assert.Equal(0, AvailFlags(h));

        // Enable asks for an interrupt at the next used entry.
        Assert.False(h.Driver.EnableInterrupts());
        Assert.Equal(3, UsedEvent(h));

        // While enabled, each reap moves used_event to what has been consumed.
        Assert.True(CompleteAndAsk(h, 2, 10));
        Assert.Equal(2, ReapAll(h.Driver));
        Assert.Equal(5, UsedEvent(h));
    }

    [Fact]
    public void With_event_idx_an_interrupt_is_due_exactly_when_used_idx_crosses_used_event()
    {
        using var h = NewHarness(queueSize: 16, features: EventIdx);

        // The first interrupt after start is always sent (the device cannot trust an old
        // used_event), then the rule applies.
        Assert.True(CompleteAndAsk(h, 1, 0));

        // Driver has not reaped: used_event stays 0, so further used entries do not interrupt.
        Assert.False(CompleteAndAsk(h, 1, 1));
        Assert.False(CompleteAndAsk(h, 2, 2));

        // Driver reaps (interrupts enabled): used_event = 4; the next one crosses it.
        Assert.Equal(4, ReapAll(h.Driver));
        Assert.Equal(4, UsedEvent(h));
        Assert.True(CompleteAndAsk(h, 1, 4));

        // used_event ahead of the index: no interrupt until a batch passes it.
        SetUsedEvent(h, 8);
        Assert.False(CompleteAndAsk(h, 2, 5)); // 5 -> 7
        Assert.False(CompleteAndAsk(h, 1, 7)); // 7 -> 8: entry 8 not yet published
        Assert.True(CompleteAndAsk(h, 3, 8));  // 8 -> 11 passes 8
        Assert.Equal(3, h.Device.InterruptsRequested);
        Assert.Equal(4, h.Device.InterruptsSuppressed);
    }

    [Fact]
    public void With_event_idx_the_device_ignores_NO_INTERRUPT()
    {
        using var h = NewHarness(queueSize: 8, features: EventIdx);
        Assert.True(CompleteAndAsk(h, 1, 0));
        Assert.Equal(1, ReapAll(h.Driver));
        SetAvailFlags(h, (ushort)VirtqAvailFlags.NoInterrupt);
        Assert.True(CompleteAndAsk(h, 1, 1));
    }

    [Fact]
    public void With_event_idx_a_batch_that_laps_the_last_signalled_index_forces_an_interrupt()
    {
        // used_event left far behind and a whole 16-bit lap of used entries published
        // between two checks: the comparison would be ambiguous, so the device must signal.
        using var h = NewHarness(queueSize: 256, features: EventIdx);
        Assert.True(CompleteAndAsk(h, 1, 0));
        Assert.Equal(1, ReapAll(h.Driver));
        h.Driver.DisableInterrupts();

        // Park used_event where a plain comparison over the last step would say "not due".
        int published = 1;
        while (published < 65536 + 1)
        {
            int n = Math.Min(256, 65536 + 1 - published);
            for (int i = 0; i < n; i++)
            {
                AddSingle(h.Driver, (ulong)i);
            }

            h.Driver.Publish();
            Assert.Equal(n, ServeAll(h.Device));
            Assert.Equal(n, ReapAll(h.Driver));
            published += n;
        }

        // used_event is still 1 and used.idx went 1 -> 1 (a full lap): the interrupt must not be lost.
        Assert.Equal(1, UsedEvent(h));
        Assert.Equal(1, UsedIdx(h));
        Assert.True(h.Device.NeedsInterrupt());
    }

    [Fact]
    public void With_event_idx_interrupts_follow_used_event_across_the_16_bit_wrap()
    {
        using var h = NewHarness(queueSize: 8, features: EventIdx);
        var state = h.State with { NextAvail = 0xFFFC, NextUsed = 0xFFFC };
        var driver = new SplitQueueDriver<TAccess>("wrap-driver");
        var device = new SplitQueueDevice<TAccess>("wrap-device");
        Assert.True(driver.Start(state, h.Memory), driver.BrokenReason);
        Assert.True(device.Start(state, h.Memory), device.BrokenReason);
        Assert.Equal(0xFFFC, UsedEvent(h));

        int interrupts = 0;
        for (ulong t = 0; t < 6; t++)
        {
            // Two used entries published one at a time: only the first crosses used_event.
            AddSingle(driver, t);
            AddSingle(driver, t + 100);
            driver.Publish();
            var chains = PopAll(device);
            Assert.Equal(2, chains.Count);
            device.PushUsed(chains[0].Head, 0);
            device.FlushUsed();
            if (device.NeedsInterrupt())
            {
                interrupts++;
            }

            device.PushUsed(chains[1].Head, 0);
            device.FlushUsed();
            Assert.False(device.NeedsInterrupt());
            Assert.Equal(2, ReapAll(driver));
            Assert.Equal((ushort)(0xFFFC + (2 * (t + 1))), UsedEvent(h));
        }

        Assert.Equal(6, interrupts);
        Assert.Equal(6, device.InterruptsSuppressed);
    }
}

/// <summary>InterruptSuppressionTests over ordinary RAM (<see cref="RamAccessor"/>).</summary>
public sealed class InterruptSuppressionTests_Ram : InterruptSuppressionTests<RamAccessor, RamRingMemory>;

/// <summary>InterruptSuppressionTests over a PCI BAR stand-in through <see cref="IoMemoryAccessor"/> (accesses counted).</summary>
public sealed class InterruptSuppressionTests_Io : InterruptSuppressionTests<IoMemoryAccessor, IoRingMemory>;
