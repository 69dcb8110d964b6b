using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;
using static PciVirtio.VhostCore.Tests.Notifications.RingProbe;

namespace PciVirtio.VhostCore.Tests.Notifications;

/// <summary>The suppression protocols the interleavings run under.</summary>
public static class LostWakeupModes
{
    public static TheoryData<VirtioFeatures> Modes => new()
    {
        VirtioFeatures.Version1,
        VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx,
    };

    /// <summary>Both suppression protocols, with sequentially consistent memory and with a
    /// per-side store buffer (TSO, see <see cref="HookedAccessor"/>).</summary>
    public static TheoryData<VirtioFeatures, bool> HandshakeModes => new()
    {
        { VirtioFeatures.Version1, false },
        { VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx, false },
        { VirtioFeatures.Version1, true },
        { VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx, true },
    };
}

/// <summary>
/// The lost-wakeup races of notification suppression, executed as explicit interleavings on
/// one thread. A side may sleep only after Enable*() returned false; the peer's check
/// (NeedsKick / NeedsInterrupt) may be suppressed only if that Enable*() then sees its work.
/// Runs over every memory; the exhaustive interleavings below need the RAM-only
/// <see cref="HookedAccessor"/>.
/// </summary>
public abstract class LostWakeupInterleavingTests<TAccess, TMemory> : RingMemoryTests<TAccess, TMemory>
    where TAccess : struct, IMemoryAccessor
    where TMemory : IRingMemory<TAccess>, new()
{

    [Theory]
    [MemberData(nameof(LostWakeupModes.Modes), MemberType = typeof(LostWakeupModes))]
    public void Device_re_enabling_after_a_suppressed_kick_sees_the_new_entry(VirtioFeatures features)
    {
        using var h = NewHarness(queueSize: 8, features: features);
        var driver = h.Driver;
        var device = h.Device;

        // The device is asleep, waiting for a kick.
        Assert.False(device.EnableNotifications());

        // 1. Driver adds A, publishes, and kicks.
        Assert.True(AddPublishKick(driver, 0xA));

        // 2. Device wakes, stops notifications while it polls, and drains the ring.
        device.DisableNotifications();
        Assert.Equal(1, ServeAll(device));
        Assert.Empty(PopAll(device));

        // 3. Driver adds B and publishes; the device is polling, so the kick is suppressed.
        Assert.False(AddPublishKick(driver, 0xB));

        // 4. Device re-enables before sleeping: it must see B (the kick it will not get).
        Assert.True(device.EnableNotifications());
        device.DisableNotifications();
        var chains = PopAll(device);
        Assert.Single(chains);

        // 5. Nothing else: now it may sleep, and the next entry kicks.
        Assert.False(device.EnableNotifications());
        Assert.True(AddPublishKick(driver, 0xC));
        Assert.Single(PopAll(device));
    }

    [Theory]
    [MemberData(nameof(LostWakeupModes.Modes), MemberType = typeof(LostWakeupModes))]
    public void Driver_publishing_after_the_device_re_enabled_kicks(VirtioFeatures features)
    {
        using var h = NewHarness(queueSize: 8, features: features);
        Assert.False(h.Device.EnableNotifications());
        Assert.True(AddPublishKick(h.Driver, 1));
        h.Device.DisableNotifications();
        Assert.Equal(1, ServeAll(h.Device));

        // The device re-enables first and finds nothing: it sleeps.
        Assert.False(h.Device.EnableNotifications());

        // Then the driver publishes: the kick is due.
        Assert.True(AddPublishKick(h.Driver, 2));
    }

    [Theory]
    [MemberData(nameof(LostWakeupModes.Modes), MemberType = typeof(LostWakeupModes))]
    public void Driver_re_enabling_after_a_suppressed_interrupt_sees_the_new_used_entry(VirtioFeatures features)
    {
        using var h = NewHarness(queueSize: 8, features: features);
        var driver = h.Driver;
        var device = h.Device;
        AddSingle(driver, 0xA);
        AddSingle(driver, 0xB);
        driver.Publish();
        var chains = PopAll(device);
        Assert.Equal(2, chains.Count);

        // 1. Device completes A, publishes it, and interrupts.
        device.PushUsed(chains[0].Head, 7);
        device.FlushUsed();
        Assert.True(device.NeedsInterrupt());

        // 2. Driver wakes, stops interrupts while it polls, and reaps everything there.
        driver.DisableInterrupts();
        var used = new UsedBuffer[8];
        Assert.Equal(1, driver.Reap(used));
        Assert.Equal(new UsedBuffer(0xA, 7), used[0]);
        Assert.Equal(0, driver.Reap(used));

        // 3. Device completes B; the driver is polling, so the interrupt is suppressed.
        device.PushUsed(chains[1].Head, 9);
        device.FlushUsed();
        Assert.False(device.NeedsInterrupt());

        // 4. Driver re-enables before sleeping: it must see B.
        Assert.True(driver.EnableInterrupts());
        Assert.Equal(1, driver.Reap(used));
        Assert.Equal(new UsedBuffer(0xB, 9), used[0]);

        // 5. Nothing else: it may sleep, and the next used entry interrupts.
        Assert.False(driver.EnableInterrupts());
        Assert.Equal(1, CompleteOne(driver, device, 0xC));
        Assert.True(device.NeedsInterrupt());
    }

    [Theory]
    [MemberData(nameof(LostWakeupModes.Modes), MemberType = typeof(LostWakeupModes))]
    public void Device_publishing_after_the_driver_re_enabled_interrupts(VirtioFeatures features)
    {
        using var h = NewHarness(queueSize: 8, features: features);
        Assert.Equal(1, CompleteOne(h.Driver, h.Device, 1));
        Assert.True(h.Device.NeedsInterrupt());
        h.Driver.DisableInterrupts();
        Assert.Equal(1, ReapAll(h.Driver));
        Assert.False(h.Driver.EnableInterrupts());
        Assert.Equal(1, CompleteOne(h.Driver, h.Device, 2));
        Assert.True(h.Device.NeedsInterrupt());
    }

    private static int CompleteOne(SplitQueueDriver<TAccess> driver, SplitQueueDevice<TAccess> device, ulong token)
    {
        AddSingle(driver, token);
        driver.Publish();
        return ServeAll(device);
    }
}

/// <summary>LostWakeupInterleavingTests over ordinary RAM (<see cref="RamAccessor"/>).</summary>
public sealed class LostWakeupInterleavingTests_Ram : LostWakeupInterleavingTests<RamAccessor, RamRingMemory>;

/// <summary>LostWakeupInterleavingTests over a PCI BAR stand-in through <see cref="IoMemoryAccessor"/> (accesses counted).</summary>
public sealed class LostWakeupInterleavingTests_Io : LostWakeupInterleavingTests<IoMemoryAccessor, IoRingMemory>;

/// <summary>
/// Every insertion point of the peer's step inside ours, enumerated with
/// <see cref="HookedAccessor"/> (a RAM accessor with hooks and optional store buffers), so
/// these stay RAM-only.
/// </summary>
public class HookedLostWakeupInterleavingTests
{
    private sealed class HookedPair : IDisposable
    {
        public HookedPair(VirtioFeatures features, bool storeBuffers)
        {
            StoreBuffers = storeBuffers;
            Harness = new RingHarness(queueSize: 8, features: features);
            Driver = new SplitQueueDriver<HookedAccessor>("hooked-driver");
            Device = new SplitQueueDevice<HookedAccessor>("hooked-device");
            Assert.True(Driver.Start(Harness.State, new GuestMemory<HookedAccessor>(Harness.Table, new HookedAccessor(1))), Driver.BrokenReason);
            Assert.True(Device.Start(Harness.State, new GuestMemory<HookedAccessor>(Harness.Table, new HookedAccessor(0))), Device.BrokenReason);
        }

        public bool StoreBuffers { get; }

        public RingHarness Harness { get; }

        public SplitQueueDriver<HookedAccessor> Driver { get; }

        public SplitQueueDevice<HookedAccessor> Device { get; }

        public void Dispose() => Harness.Dispose();
    }

    /// <summary>Runs <paramref name="scenario"/> for every insertion point of the peer step
    /// (k = 1 .. accesses + 1) on a fresh ring; returns how many points were checked.</summary>
    private static int ForEveryInsertionPoint(VirtioFeatures features, bool storeBuffers, Func<HookedPair, int, int> scenario)
    {
        int accesses;
        using (var probe = new HookedPair(features, storeBuffers))
        {
            accesses = scenario(probe, int.MaxValue);
        }

        Assert.True(accesses >= 3, $"the operation made only {accesses} memory accesses");
        for (int k = 1; k <= accesses + 1; k++)
        {
            using var pair = new HookedPair(features, storeBuffers);
            scenario(pair, k);
        }

        return accesses + 1;
    }

    [Theory]
    [MemberData(nameof(LostWakeupModes.HandshakeModes), MemberType = typeof(LostWakeupModes))]
    public void A_publish_anywhere_inside_EnableNotifications_is_either_seen_or_kicked(VirtioFeatures features, bool storeBuffers)
    {
        int points = ForEveryInsertionPoint(features, storeBuffers, (p, k) =>
        {
            // The device served A and is about to go to sleep.
            Assert.False(p.Device.EnableNotifications());
            Assert.True(AddPublishKick(p.Driver, 1));
            p.Device.DisableNotifications();
            Assert.Equal(1, ServeAll(p.Device));

            bool sawWork = false, kicked = false;
            int n = HookedAccessor.Run(() => sawWork = p.Device.EnableNotifications(), k, () => kicked = AddPublishKick(p.Driver, 2), p.StoreBuffers);
            Assert.True(sawWork || kicked, $"lost kick with the publish before access {k}: Enable saw nothing and the driver did not kick");
            Assert.Single(PopAll(p.Device));
            return n;
        });
        Assert.True(points > 3);
    }

    [Theory]
    [MemberData(nameof(LostWakeupModes.HandshakeModes), MemberType = typeof(LostWakeupModes))]
    public void EnableNotifications_anywhere_inside_a_publish_is_either_seen_or_kicked(VirtioFeatures features, bool storeBuffers)
    {
        ForEveryInsertionPoint(features, storeBuffers, (p, k) =>
        {
            Assert.False(p.Device.EnableNotifications());
            Assert.True(AddPublishKick(p.Driver, 1));
            p.Device.DisableNotifications();
            Assert.Equal(1, ServeAll(p.Device));

            bool sawWork = false, kicked = false;
            int n = HookedAccessor.Run(() => kicked = AddPublishKick(p.Driver, 2), k, () => sawWork = p.Device.EnableNotifications(), p.StoreBuffers);
            Assert.True(sawWork || kicked, $"lost kick with Enable before access {k} of the publish");
            Assert.Single(PopAll(p.Device));
            return n;
        });
    }

    [Theory]
    [MemberData(nameof(LostWakeupModes.HandshakeModes), MemberType = typeof(LostWakeupModes))]
    public void A_completion_anywhere_inside_EnableInterrupts_is_either_seen_or_interrupted(VirtioFeatures features, bool storeBuffers)
    {
        ForEveryInsertionPoint(features, storeBuffers, (p, k) =>
        {
            var pending = PrepareOneCompletedOnePending(p);
            bool sawWork = false, interrupted = false;
            int n = HookedAccessor.Run(() => sawWork = p.Driver.EnableInterrupts(), k, () =>
            {
                p.Device.PushUsed(pending.Head, 3);
                p.Device.FlushUsed();
                interrupted = p.Device.NeedsInterrupt();
            }, p.StoreBuffers);
            Assert.True(sawWork || interrupted, $"lost interrupt with the completion before access {k} of EnableInterrupts");
            Assert.Equal(1, ReapAll(p.Driver));
            return n;
        });
    }

    [Theory]
    [MemberData(nameof(LostWakeupModes.HandshakeModes), MemberType = typeof(LostWakeupModes))]
    public void EnableInterrupts_anywhere_inside_a_completion_is_either_seen_or_interrupted(VirtioFeatures features, bool storeBuffers)
    {
        ForEveryInsertionPoint(features, storeBuffers, (p, k) =>
        {
            var pending = PrepareOneCompletedOnePending(p);
            bool sawWork = false, interrupted = false;
            int n = HookedAccessor.Run(() =>
            {
                p.Device.PushUsed(pending.Head, 3);
                p.Device.FlushUsed();
                interrupted = p.Device.NeedsInterrupt();
            }, k, () => sawWork = p.Driver.EnableInterrupts(), p.StoreBuffers);
            Assert.True(sawWork || interrupted, $"lost interrupt with EnableInterrupts before access {k} of the completion");
            Assert.Equal(1, ReapAll(p.Driver));
            return n;
        });
    }

    /// <summary>Two buffers popped by the device; the first completed, signalled and reaped
    /// by a driver that then disabled interrupts (it is polling). Returns the second chain.</summary>
    private static DescriptorChain PrepareOneCompletedOnePending(HookedPair p)
    {
        AddSingle(p.Driver, 1);
        AddSingle(p.Driver, 2);
        p.Driver.Publish();
        var chains = PopAll(p.Device);
        Assert.Equal(2, chains.Count);
        p.Device.PushUsed(chains[0].Head, 1);
        p.Device.FlushUsed();
        Assert.True(p.Device.NeedsInterrupt());
        p.Driver.DisableInterrupts();
        Assert.Equal(1, ReapAll(p.Driver));
        return chains[1];
    }
}
