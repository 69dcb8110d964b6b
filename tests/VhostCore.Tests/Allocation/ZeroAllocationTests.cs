using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;

namespace PciVirtio.VhostCore.Tests.Allocation;

/// <summary>
/// The steady-state data path allocates nothing: after warm-up, bursts of 32 driver → device
/// → driver round trips (the same loop as tests/Benchmarks SplitRingBenchmarks.RoundTrip)
/// leave <see cref="GC.GetAllocatedBytesForCurrentThread"/> exactly where it was. This is an
/// allocation assertion only; nothing here depends on timing. It runs over RAM and over I/O
/// memory, the latter with and without <see cref="AccessCounters"/> attached.
/// </summary>
public abstract class ZeroAllocationTests<TAccess, TMemory> : RingMemoryTests<TAccess, TMemory>
    where TAccess : struct, IMemoryAccessor
    where TMemory : IRingMemory<TAccess>, new()
{
    private const int Burst = 32;
    private const int HeaderSize = 12;
    private const int PayloadSize = 1500;

    /// <summary>Bursts run before measuring (JIT tiers, OSR, first-call paths).</summary>
    protected virtual int WarmupBursts => 2_000;

    /// <summary>Bursts measured. Over I/O memory every payload byte is an uninlined volatile
    /// load (and, counted, two interlocked adds per 8 bytes), so the I/O classes measure fewer.</summary>
    protected virtual int MeasuredBursts => 10_000;

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void Steady_state_round_trips_allocate_nothing(bool eventIdx, bool indirect)
    {
        var features = VirtioFeatures.Version1
            | (eventIdx ? VirtioFeatures.RingEventIdx : VirtioFeatures.None)
            | (indirect ? VirtioFeatures.RingIndirectDesc : VirtioFeatures.None);
        using var h = NewHarness(queueSize: 256, features: features, indirectEntries: indirect ? 2 : 0);
        var rig = new BurstRig(h);

        // Warm-up: JIT (every tier, OSR), static constructors and first-call paths run here.
        var warm = rig.Run(WarmupBursts);
        Assert.Equal(0, warm.Failures);

        long before = GC.GetAllocatedBytesForCurrentThread();
        var result = rig.Run(MeasuredBursts);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(0L, allocated);

        // The loop really did the work it was measured doing.
        Assert.Equal(0, result.Failures);
        Assert.Equal((long)MeasuredBursts * Burst * PayloadSize, result.BytesCopied);
        Assert.Equal((long)MeasuredBursts * (Burst * (Burst - 1) / 2), result.TokenSum);
        Assert.Equal(MeasuredBursts, result.Interrupts);
        if (!eventIdx)
        {
            Assert.Equal(MeasuredBursts, result.Kicks);
        }

        Assert.False(h.Driver.IsBroken, h.Driver.BrokenReason);
        Assert.False(h.Device.IsBroken, h.Device.BrokenReason);
        Assert.Equal(0, h.Driver.InFlight);
        Assert.Equal(256, h.Driver.FreeDescriptors);
        Assert.Equal(rig.ExpectedLastPayload, rig.LastCopied);

        // Over I/O memory the loop really went through the accessor it claims to measure:
        // counted (every gathered payload byte was a counted read) or not counted at all.
        if (RingMemory is IoRingMemory io)
        {
            Assert.Equal(io.CountAccesses, h.Counters is not null);
        }

        if (h.Counters is { } counters)
        {
            Assert.True(counters.ReadBytes >= result.BytesCopied, counters.ToString());
        }
    }

    /// <summary>What a run of bursts did; plain counters so the measured loop never calls
    /// into the assertion library (which may allocate).</summary>
    private readonly record struct BurstResult(int Failures, long BytesCopied, long TokenSum, int Kicks, int Interrupts);

    /// <summary>Every buffer the loop touches, allocated up front.</summary>
    private sealed class BurstRig
    {
        private readonly SplitQueueDriver<TAccess> _driver;
        private readonly SplitQueueDevice<TAccess> _device;
        private readonly GuestMemory<TAccess> _memory;
        private readonly GuestBuffer[] _requests = new GuestBuffer[2 * Burst];
        private readonly DescriptorChain[] _chains = new DescriptorChain[Burst];
        private readonly IoSegment[] _segments = new IoSegment[4 * Burst];
        private readonly UsedBuffer[] _used = new UsedBuffer[Burst];
        private readonly byte[] _copy = new byte[PayloadSize];

        public BurstRig(RingHarness<TAccess> h)
        {
            _driver = h.Driver;
            _device = h.Device;
            _memory = h.Memory;
            var header = new byte[HeaderSize];
            var payload = new byte[PayloadSize];
            for (int i = 0; i < Burst; i++)
            {
                ulong at = HarnessLayout.Buffer(i);
                _requests[2 * i] = new GuestBuffer(at, HeaderSize);
                _requests[(2 * i) + 1] = new GuestBuffer(at + 64, PayloadSize);
                Array.Fill(header, (byte)0xEE);
                for (int b = 0; b < payload.Length; b++)
                {
                    payload[b] = unchecked((byte)((i * 31) + b));
                }

                Assert.True(_memory.TryWrite(at, header));
                Assert.True(_memory.TryWrite(at + 64, payload));
                if (i == Burst - 1)
                {
                    ExpectedLastPayload = payload;
                }
            }
        }

        public byte[] ExpectedLastPayload { get; } = [];

        public byte[] LastCopied => _copy;

        public BurstResult Run(int bursts)
        {
            int failures = 0, kicks = 0, interrupts = 0;
            long copied = 0, tokens = 0;
            for (int n = 0; n < bursts; n++)
            {
                for (int i = 0; i < Burst; i++)
                {
                    failures += _driver.TryAdd(_requests.AsSpan(2 * i, 2), default, (ulong)i) ? 0 : 1;
                }

                _driver.Publish();
                kicks += _driver.NeedsKick() ? 1 : 0;

                int popped = _device.PopAvail(_chains, _segments);
                failures += popped == Burst ? 0 : 1;
                foreach (ref readonly var chain in _chains.AsSpan(0, popped))
                {
                    copied += _memory.Gather(chain.Readable(_segments), HeaderSize, _copy);
                    _device.PushUsed(chain.Head, 0);
                }

                _device.FlushUsed();
                interrupts += _device.NeedsInterrupt() ? 1 : 0;

                int reaped = _driver.Reap(_used);
                failures += reaped == Burst ? 0 : 1;
                foreach (ref readonly var u in _used.AsSpan(0, reaped))
                {
                    tokens += (long)u.Token;
                    failures += u.Length == 0 ? 0 : 1;
                }
            }

            return new BurstResult(failures, copied, tokens, kicks, interrupts);
        }
    }
}

/// <summary>ZeroAllocationTests over ordinary RAM (<see cref="RamAccessor"/>).</summary>
public sealed class ZeroAllocationTests_Ram : ZeroAllocationTests<RamAccessor, RamRingMemory>;

/// <summary>ZeroAllocationTests over a PCI BAR stand-in through <see cref="IoMemoryAccessor"/> (accesses counted).</summary>
public sealed class ZeroAllocationTests_Io : ZeroAllocationTests<IoMemoryAccessor, IoRingMemory>
{
    protected override int WarmupBursts => 1_000;

    protected override int MeasuredBursts => 2_000;
}

/// <summary>ZeroAllocationTests over a PCI BAR stand-in through <see cref="IoMemoryAccessor"/> with no counters attached.</summary>
public sealed class ZeroAllocationTests_IoUncounted : ZeroAllocationTests<IoMemoryAccessor, UncountedIoRingMemory>
{
    protected override int WarmupBursts => 1_000;

    protected override int MeasuredBursts => 2_000;
}
