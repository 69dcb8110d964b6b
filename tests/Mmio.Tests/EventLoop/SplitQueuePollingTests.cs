using PciVirtio.Mmio.EventLoop;
using PciVirtio.Mmio.Signals;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;

namespace PciVirtio.Mmio.Tests.EventLoop;

/// <summary>
/// The adaptive poller serving a real split ring: our driver on the test thread publishes
/// buffers and kicks an eventfd when <c>NeedsKick</c> says so; our device, wrapped as an
/// <see cref="IPollTarget"/>, is polled on the poller's thread.
/// </summary>
public class SplitQueuePollingTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Each_idle_period_ends_with_exactly_one_kick_and_one_wake_up(bool eventIdx)
    {
        using var ring = new PolledRing(eventIdx);
        using var poller = new AdaptivePoller(ring.Target, ring.Kick, new AdaptivePollerOptions { SpinPolls = 4, Budget = 8 });
        poller.Start();
        int total = 0;
        for (int cycle = 1; cycle <= 50; cycle++)
        {
            Bounded.Until(() => poller.Sleeps == cycle, $"sleep {cycle}");

            // The poller is asleep with notifications on: the driver must be asked to kick.
            int n = 1 + (cycle % 3);
            Assert.True(ring.AddAndPublish(n), $"cycle {cycle}: NeedsKick said no while the device slept");
            total += n;
            Bounded.Until(() => ring.Target.Processed == total, $"cycle {cycle} processed");
            ring.ReapAll();
        }

        Assert.True(poller.Stop(Bounded.Ms));
        Assert.Equal(50, poller.Wakeups);
        Assert.Equal(50, ring.Kicks);
        Assert.Equal(0, poller.Rechecks);
        Assert.Equal(total, poller.ItemsProcessed);
        Assert.False(ring.Device.IsBroken, ring.Device.BrokenReason);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_buffer_published_just_before_EnableNotifications_is_served_without_a_kick(bool eventIdx)
    {
        // Cycle 1 is an ordinary kick. Then, inside the poller's second EnableNotifications and
        // before the device's store, the driver publishes one more buffer: it still sees
        // notifications off (NO_NOTIFY, or with EVENT_IDX an avail_event left behind), so it
        // does not kick. Only the device's re-check can find that buffer.
        using var ring = new PolledRing(eventIdx);
        bool? kickedInWindow = null;
        int enables = 0;
        ring.Target.BeforeEnable = () =>
        {
            if (++enables == 2)
            {
                kickedInWindow = ring.AddAndPublish(1);
            }
        };
        using var poller = new AdaptivePoller(ring.Target, ring.Kick, new AdaptivePollerOptions { SpinPolls = 3 });
        poller.Start();

        Bounded.Until(() => poller.Sleeps == 1, "the first sleep");
        Assert.True(ring.AddAndPublish(1));
        Bounded.Until(() => ring.Target.Processed == 2, "both buffers, the second without a kick");
        Bounded.Until(() => poller.Sleeps == 2, "the sleep after the re-check");
        Assert.True(poller.Stop(Bounded.Ms));

        Assert.False(kickedInWindow);
        Assert.Equal(1, ring.Kicks);
        Assert.Equal(1, poller.Wakeups);
        Assert.Equal(1, poller.Rechecks);
        Assert.False(ring.Device.IsBroken, ring.Device.BrokenReason);
    }

    /// <summary>A 64-entry split ring in native memory, set up as VhostCore's RingHarness does.</summary>
    private sealed class PolledRing : IDisposable
    {
        private const ulong GuestBase = 0x1_0000_0000;
        private readonly NativeMemoryBlock _block = new(2 << 20);
        private readonly SplitQueueDriver<RamAccessor> _driver = new("test-driver");
        private readonly UsedBuffer[] _reaped = new UsedBuffer[64];
        private int _next;

        public PolledRing(bool eventIdx)
        {
            var memory = new GuestMemory<RamAccessor>(MemoryTable.Create(_block.Region(GuestBase)), default);
            var features = VirtioFeatures.Version1 | (eventIdx ? VirtioFeatures.RingEventIdx : 0);
            var state = QueueState.AtBase(64, GuestBase + 0x10000, features);
            Device = new SplitQueueDevice<RamAccessor>("test-device");
            Assert.True(_driver.Start(state, memory), _driver.BrokenReason);
            Assert.True(Device.Start(state, memory), Device.BrokenReason);
            Target = new DeviceTarget(Device);
        }

        public EventFd Kick { get; } = new();

        public SplitQueueDevice<RamAccessor> Device { get; }

        public DeviceTarget Target { get; }

        public int Kicks { get; private set; }

        /// <summary>Adds <paramref name="n"/> one-buffer requests, publishes, and kicks when
        /// the device asked for it; returns whether it kicked.</summary>
        public bool AddAndPublish(int n)
        {
            for (int i = 0; i < n; i++)
            {
                ulong addr = GuestBase + 0x100000 + ((ulong)(_next++ % 64) * 256);
                Assert.True(_driver.TryAdd([new GuestBuffer(addr, 64)], [], (ulong)_next));
            }

            _driver.Publish();
            if (_driver.NeedsKick())
            {
                Kicks++;
                Kick.Signal();
                return true;
            }

            return false;
        }

        public void ReapAll()
        {
            while (_driver.Reap(_reaped) > 0)
            {
            }
        }

        public void Dispose()
        {
            Kick.Dispose();
            _block.Dispose();
        }
    }

    /// <summary>The device side as a poll target: pop, complete, flush.</summary>
    private sealed class DeviceTarget(SplitQueueDevice<RamAccessor> device) : IPollTarget
    {
        private readonly DescriptorChain[] _chains = new DescriptorChain[64];
        private readonly IoSegment[] _segments = new IoSegment[256];
        private long _processed;

        public Action? BeforeEnable { get; set; }

        public long Processed => Volatile.Read(ref _processed);

        public int Poll(int budget)
        {
            int n = device.PopAvail(_chains.AsSpan(0, Math.Min(budget, _chains.Length)), _segments);
            for (int i = 0; i < n; i++)
            {
                device.PushUsed(_chains[i].Head, 0);
            }

            device.FlushUsed();
            Interlocked.Add(ref _processed, n);
            return n;
        }

        public bool EnableNotifications()
        {
            BeforeEnable?.Invoke();
            return device.EnableNotifications();
        }

        public void DisableNotifications() => device.DisableNotifications();
    }
}
