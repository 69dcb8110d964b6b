using CsCheck;
using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;
using Xunit.Abstractions;

namespace PciVirtio.VhostCore.Tests.Properties;

/// <summary>
/// Random operation sequences on the real driver and the real device over one ring,
/// compared step by step with a simple reference model: every buffer comes back exactly
/// once with its token and the length the device wrote, the bytes the device gathers are
/// the bytes the driver wrote (and back), completions are reaped in the device's order,
/// descriptors are all free again at the end, notifications are never lost, and the
/// queues never break on valid input.
/// </summary>
/// <remarks>
/// Runs over each memory (<c>_Ram</c>, <c>_Io</c>); to keep the suite's time, each memory
/// runs one half of the seed series (<paramref name="half"/> 0 or 1), so together they run
/// every seed once, and each half must reach the coverage bounds on its own.
/// </remarks>
public abstract class RingModelProperties<TAccess, TMemory>(ITestOutputHelper output, int half) : RingMemoryTests<TAccess, TMemory>
    where TAccess : struct, IMemoryAccessor
    where TMemory : IRingMemory<TAccess>, new()
{
    private const ulong MemorySize = 0x1F0000; // 496 regions of 4 KiB at most (the table limit is 509)
    private const int SlotSize = 3072;          // not a divisor of any region size: buffers straddle regions
    private const int Slots = (int)((MemorySize - HarnessLayout.DataOffset) / SlotSize);
    private const int ModelRuns = 125;          // per memory: half of the 250-seed series
    private const int LongRuns = 2;             // per memory and configuration: half of 4
    private static readonly ulong[] RegionSizes = [0, 0x1000, 0x2000, 0x10000];

    /// <summary>A ring configuration: queue size, features, indirect table size (0: none),
    /// region size of the scrambled memory map (0: one region), longest chain to add.</summary>
    private sealed record Config(int QueueSize, bool EventIdx, bool IndirectFeature, int IndirectEntries, ulong RegionSize, int MaxChain)
    {
        public VirtioFeatures Features =>
            VirtioFeatures.Version1
            | (EventIdx ? VirtioFeatures.RingEventIdx : VirtioFeatures.None)
            | (IndirectFeature ? VirtioFeatures.RingIndirectDesc : VirtioFeatures.None);

        public static Config Make(int sizeLog2, bool eventIdx, bool indirect, int entries, int regionChoice, int maxChain)
        {
            int size = 1 << sizeLog2;
            ulong region = RegionSizes[regionChoice];
            entries = indirect ? entries : 0;

            // The driver needs its whole indirect area inside one region.
            if (entries > 0 && region != 0 && (ulong)size * (ulong)entries * 16 > region)
            {
                region = 0x10000;
            }

            return new Config(size, eventIdx, indirect, entries, region, maxChain);
        }
    }

    /// <summary>One step: Kind selects the operation, A and B its choices, Lens the buffer
    /// lengths (and offsets) of an add.</summary>
    private readonly record struct Op(int Kind, int A, int B, int[] Lens)
    {
        public override string ToString() => $"{Kind}:{A}:{B}:[{string.Join(",", Lens)}]";
    }

    private static readonly Gen<Config> GenConfig =
        Gen.Select(Gen.Int[0, 8], Gen.Bool, Gen.Bool, Gen.Int[2, 8], Gen.Int[0, RegionSizes.Length - 1], Gen.Int[1, 6])
            .Select(t => Config.Make(t.Item1, t.Item2, t.Item3, t.Item4, t.Item5, t.Item6));

    private static readonly Gen<Op> GenOp =
        Gen.Select(Gen.Int[0, 11], Gen.Int[0, 1000], Gen.Int[0, 1000], Gen.Int[0, SlotSize].Array[8])
            .Select(t => new Op(t.Item1, t.Item2, t.Item3, t.Item4));

    private static readonly Gen<(Config, Op[])> GenCase = Gen.Select(GenConfig, GenOp.Array[1, 160]);

    /// <summary>What the random runs exercised, so the property cannot pass vacuously.</summary>
    private sealed class Coverage
    {
        public long Chains;
        public long SplitBuffers;
        public long IndirectChains;
        public long AddsRefused;
        public long SleepingDeviceKicked;
        public long SleepingDriverInterrupted;
        public long KicksSuppressed;
        public long InterruptsSuppressed;
        public long OutOfOrder;
    }

    [Fact]
    public void Driver_and_device_agree_with_the_reference_model()
    {
        var coverage = new Coverage();
        PropertyRunner.WithTimeout(TimeSpan.FromSeconds(60), () =>
            PropertyRunner.Run(GenCase, c => new Model(RingMemory, c.Item1, coverage).RunAll(c.Item2), iterations: ModelRuns, stream: 1,
                print: c => $"{c.Item1} ops [{string.Join(" ", c.Item2)}]", first: half * ModelRuns));

        output.WriteLine($"{RingMemory.Name}, seeds {half * ModelRuns}..{((half + 1) * ModelRuns) - 1}: {coverage.Chains} chains ({coverage.IndirectChains} indirect), {coverage.SplitBuffers} split segments, {coverage.AddsRefused} adds refused, " +
            $"{coverage.OutOfOrder} out-of-order completions; {coverage.SleepingDeviceKicked} publishes to a sleeping device, {coverage.SleepingDriverInterrupted} completions for a sleeping driver; " +
            $"{coverage.KicksSuppressed} kicks and {coverage.InterruptsSuppressed} interrupts suppressed");

        // The bounds are per half of the seed series (each about half of what 250 seeds reach).
        Assert.True(coverage.Chains >= 1000, $"{coverage.Chains} chains");
        Assert.True(coverage.SplitBuffers >= 50, $"{coverage.SplitBuffers} buffers split across regions");
        Assert.True(coverage.IndirectChains >= 50, $"{coverage.IndirectChains} indirect chains");
        Assert.True(coverage.AddsRefused >= 10, $"{coverage.AddsRefused} adds refused for lack of descriptors");
        Assert.True(coverage.SleepingDeviceKicked >= 10, $"{coverage.SleepingDeviceKicked} publishes to a sleeping device");
        Assert.True(coverage.SleepingDriverInterrupted >= 10, $"{coverage.SleepingDriverInterrupted} completions for a sleeping driver");
        Assert.True(coverage.KicksSuppressed >= 50, $"{coverage.KicksSuppressed} kicks suppressed");
        Assert.True(coverage.InterruptsSuppressed >= 50, $"{coverage.InterruptsSuppressed} interrupts suppressed");
        Assert.True(coverage.OutOfOrder >= 50, $"{coverage.OutOfOrder} completions out of order");
    }

    [Theory]
    [InlineData(1, false, false)]
    [InlineData(8, true, false)]
    [InlineData(256, true, true)]
    [InlineData(64, false, true)]
    public void A_long_random_run_on_a_fixed_configuration_agrees_with_the_model(int size, bool eventIdx, bool indirect)
    {
        int log2 = System.Numerics.BitOperations.Log2((uint)size);
        var gen = Gen.Select(Gen.Int[0, RegionSizes.Length - 1], GenOp.Array[1500, 2000]);
        PropertyRunner.WithTimeout(TimeSpan.FromSeconds(60), () =>
            PropertyRunner.Run(gen, c => new Model(RingMemory, Config.Make(log2, eventIdx, indirect, 4, c.Item1, 6), new Coverage()).RunAll(c.Item2),
                iterations: LongRuns, stream: (uint)(10 + size), first: half * LongRuns));
    }

    private sealed class Request
    {
        public required ulong Token { get; init; }

        public required GuestBuffer[] Readable { get; init; }

        public required GuestBuffer[] Writable { get; init; }

        public required byte[] ReadData { get; init; }

        public required int[] SlotsUsed { get; init; }

        public required int Descriptors { get; init; }

        public uint WritableTotal => (uint)Writable.Sum(b => (long)b.Length);

        public ushort Head { get; set; }

        public IoSegment[] WritableSegments { get; set; } = [];

        public byte[] Written { get; set; } = [];
    }

    private sealed class Model
    {
        private readonly Config _cfg;
        private readonly Coverage _coverage;
        private readonly RingHarness<TAccess> _h;
        private readonly GuestMemory<CheckedAccessor<TAccess>> _memory;
        private readonly SplitQueueDriver<CheckedAccessor<TAccess>> _driver;
        private readonly SplitQueueDevice<CheckedAccessor<TAccess>> _device;
        private readonly Stack<int> _freeSlots = new();
        private readonly Queue<Request> _added = new();     // added, not published
        private readonly Queue<Request> _published = new(); // published, not popped
        private readonly List<Request> _popped = [];        // popped, not completed
        private readonly List<Request> _pushed = [];        // completed, not flushed
        private readonly Queue<Request> _flushed = new();   // flushed, not reaped
        private readonly HashSet<ulong> _returned = [];
        private readonly DescriptorChain[] _chains = new DescriptorChain[8];
        private readonly IoSegment[] _segments = new IoSegment[256];
        private readonly UsedBuffer[] _used = new UsedBuffer[8];
        private int _free;
        private int _inFlight;
        private long _addedCount;
        private bool _deviceAsleep;
        private bool _driverAsleep;

        public Model(IRingMemory<TAccess> memory, Config cfg, Coverage coverage)
        {
            _cfg = cfg;
            _coverage = coverage;
            _h = new RingHarness<TAccess>(memory, queueSize: cfg.QueueSize, features: cfg.Features, memorySize: MemorySize, regionSize: cfg.RegionSize, indirectEntries: cfg.IndirectEntries);
            _memory = new GuestMemory<CheckedAccessor<TAccess>>(_h.Table, new CheckedAccessor<TAccess>(_h.Backing.Address, _h.Backing.Size, _h.Memory.Access));
            _driver = new SplitQueueDriver<CheckedAccessor<TAccess>>("model-driver");
            _device = new SplitQueueDevice<CheckedAccessor<TAccess>>("model-device");
            Assert.True(_driver.Start(_h.State, _memory, _h.Indirect), _driver.BrokenReason);
            Assert.True(_device.Start(_h.State, _memory), _device.BrokenReason);
            for (int s = Slots - 1; s >= 0; s--)
            {
                _freeSlots.Push(s);
            }

            _free = cfg.QueueSize;
        }

        public void RunAll(Op[] ops)
        {
            try
            {
                foreach (var op in ops)
                {
                    Apply(op);
                    CheckInvariants();
                }

                Drain();
            }
            finally
            {
                _coverage.KicksSuppressed += _driver.KicksSuppressed;
                _coverage.InterruptsSuppressed += _device.InterruptsSuppressed;
                _h.Dispose();
            }
        }

        private void Apply(Op op)
        {
            switch (op.Kind)
            {
                case 0 or 1 or 2:
                    Add(op);
                    break;
                case 3:
                    PublishAndKick();
                    break;
                case 4:
                    Pop(1 + (op.A % _chains.Length));
                    break;
                case 5:
                    Complete(op.A, op.B, all: false);
                    break;
                case 6:
                    FlushAndInterrupt();
                    break;
                case 7:
                    Reap(1 + (op.A % _used.Length));
                    break;
                case 8:
                    Notifications(enable: op.A % 2 == 1);
                    break;
                case 9:
                    Interrupts(enable: op.A % 2 == 1);
                    break;
                case 10:
                    Add(op);
                    PublishAndKick();
                    break;
                default:
                    Complete(op.A, op.B, all: false);
                    FlushAndInterrupt();
                    break;
            }
        }

        private void Add(Op op)
        {
            int r = op.A % (_cfg.MaxChain + 1);
            int w = op.B % (_cfg.MaxChain + 1 - r);
            if (r + w == 0)
            {
                if (op.A % 2 == 0)
                {
                    r = 1;
                }
                else
                {
                    w = 1;
                }
            }

            int total = r + w;
            if (_freeSlots.Count < total)
            {
                return;
            }

            bool indirect = _cfg.IndirectEntries >= 2 && total > 1 && total <= _cfg.IndirectEntries;
            int needed = indirect ? 1 : total;
            ulong token = ((ulong)_addedCount * 0x9E37_79B9UL) + 0x5000_0000_0000UL;
            var readable = new GuestBuffer[r];
            var writable = new GuestBuffer[w];
            var slots = new int[total];
            var readData = new List<byte>();
            var rnd = new Random((int)(_addedCount * 31) + op.B);
            for (int i = 0; i < total; i++)
            {
                slots[i] = _freeSlots.Pop();
                uint len = (uint)op.Lens[i];
                int room = SlotSize - (int)len;
                int offset = room == 0 ? 0 : op.Lens[7 - i] % (room + 1);
                var buffer = new GuestBuffer(HarnessLayout.GuestBase + HarnessLayout.DataOffset + ((ulong)slots[i] * SlotSize) + (ulong)offset, len);
                if (i < r)
                {
                    var data = new byte[len];
                    rnd.NextBytes(data);
                    Assert.True(_memory.TryWrite(buffer.Address, data));
                    readData.AddRange(data);
                    readable[i] = buffer;
                }
                else
                {
                    writable[i - r] = buffer;
                }
            }

            bool added = _driver.TryAdd(readable, writable, token);
            if (added != (_free >= needed))
            {
                Assert.Fail($"TryAdd of {r}+{w} buffers ({needed} descriptors) with {_free} free returned {added}");
            }

            if (!added)
            {
                _coverage.AddsRefused++;
                foreach (int s in slots)
                {
                    _freeSlots.Push(s);
                }

                return;
            }

            _addedCount++;
            _coverage.IndirectChains += indirect ? 1 : 0;
            _free -= needed;
            _inFlight++;
            _added.Enqueue(new Request
            {
                Token = token,
                Readable = readable,
                Writable = writable,
                ReadData = [.. readData],
                SlotsUsed = slots,
                Descriptors = needed,
            });
        }

        private void PublishAndKick()
        {
            bool any = _added.Count > 0;
            _driver.Publish();
            while (_added.Count > 0)
            {
                _published.Enqueue(_added.Dequeue());
            }

            bool kick = _driver.NeedsKick();
            if (!any)
            {
                Assert.False(kick, "a kick with nothing new published");
            }

            if (_deviceAsleep && any)
            {
                _coverage.SleepingDeviceKicked++;
                Assert.True(kick, "lost kick: the device re-enabled notifications and slept, the driver published, and no kick was due");
            }

            if (kick)
            {
                _deviceAsleep = false;
            }
        }

        private void Pop(int batch)
        {
            int n = _device.PopAvail(_chains.AsSpan(0, batch), _segments);
            Assert.False(_device.IsBroken, _device.BrokenReason);

            // At least one when anything is published; possibly fewer than published when the
            // device's cached avail index is behind (it re-reads avail.idx only once the cached
            // entries are consumed, as Linux vhost does), never more.
            int max = Math.Min(batch, _published.Count);
            Assert.InRange(n, Math.Min(1, max), max);
            for (int i = 0; i < n; i++)
            {
                var req = _published.Dequeue();
                var chain = _chains[i];
                Assert.Equal((uint)req.ReadData.Length, chain.ReadableBytes);
                Assert.Equal(req.WritableTotal, chain.WritableBytes);
                Assert.DoesNotContain(_popped, p => p.Head == chain.Head);
                Assert.DoesNotContain(_pushed, p => p.Head == chain.Head);
                var readable = chain.Readable(_segments);
                var writable = chain.Writable(_segments);
                CheckCovers(readable, req.Readable);
                CheckCovers(writable, req.Writable);
                var gathered = new byte[chain.ReadableBytes];
                Assert.Equal(gathered.Length, _memory.Gather(readable, 0, gathered));
                Assert.Equal(req.ReadData, gathered);
                req.Head = chain.Head;
                req.WritableSegments = writable.ToArray();
                _coverage.Chains++;
                _popped.Add(req);
            }

            if (n > 0)
            {
                _deviceAsleep = false;
            }
        }

        /// <summary>The segments are exactly the buffers, in order, each split only where
        /// a memory region ends, and each mapped where the table says.</summary>
        private void CheckCovers(ReadOnlySpan<IoSegment> segments, GuestBuffer[] buffers)
        {
            int j = 0;
            foreach (var b in buffers)
            {
                ulong covered = 0;
                while (covered < b.Length)
                {
                    Assert.True(j < segments.Length, "fewer segments than buffer bytes");
                    var s = segments[j++];
                    if (s.Guest != b.Address + covered
                        || s.Length == 0
                        || covered + s.Length > b.Length
                        || _h.Table.TranslatePiece(s.Guest, s.Length, out nint host) != s.Length
                        || host != s.Host)
                    {
                        Assert.Fail($"segment {s} (host 0x{s.Host:x}) does not continue buffer {b} at offset {covered} where the table maps it");
                    }

                    if (s.Length < b.Length)
                    {
                        _coverage.SplitBuffers++;
                    }

                    covered += s.Length;
                }
            }

            Assert.Equal(segments.Length, j);
        }

        private void Complete(int a, int b, bool all)
        {
            if (_popped.Count == 0)
            {
                return;
            }

            var rnd = new Random((b * 7919) + a);
            int k = all ? _popped.Count : 1 + (a % _popped.Count);
            for (int j = 0; j < k; j++)
            {
                int idx = rnd.Next(_popped.Count);
                _coverage.OutOfOrder += idx == 0 ? 0 : 1;
                var req = _popped[idx];
                _popped.RemoveAt(idx);
                uint len = (uint)rnd.NextInt64(0, (long)req.WritableTotal + 1);
                var data = new byte[len];
                rnd.NextBytes(data);
                Assert.Equal((int)len, _memory.Scatter(req.WritableSegments, 0, data));
                req.Written = data;
                _device.PushUsed(req.Head, len);
                _pushed.Add(req);
            }
        }

        private void FlushAndInterrupt()
        {
            bool any = _pushed.Count > 0;
            _device.FlushUsed();
            foreach (var req in _pushed)
            {
                _flushed.Enqueue(req);
            }

            _pushed.Clear();
            bool interrupt = _device.NeedsInterrupt();
            if (!any)
            {
                Assert.False(interrupt, "an interrupt with nothing new published");
            }

            if (_driverAsleep && any)
            {
                _coverage.SleepingDriverInterrupted++;
                Assert.True(interrupt, "lost interrupt: the driver re-enabled interrupts and slept, the device published, and no interrupt was due");
            }

            if (interrupt)
            {
                _driverAsleep = false;
            }
        }

        private void Reap(int batch)
        {
            int n = _driver.Reap(_used.AsSpan(0, batch));
            Assert.False(_driver.IsBroken, _driver.BrokenReason);
            Assert.Equal(Math.Min(batch, _flushed.Count), n);
            for (int i = 0; i < n; i++)
            {
                var req = _flushed.Dequeue();
                Assert.Equal(new UsedBuffer(req.Token, (uint)req.Written.Length), _used[i]);
                Assert.True(_returned.Add(req.Token), $"token {req.Token} returned twice");

                // What the device wrote is in the driver's writable buffers, in order.
                var back = new byte[req.Written.Length];
                int at = 0;
                foreach (var wb in req.Writable)
                {
                    int n1 = Math.Min((int)wb.Length, back.Length - at);
                    Assert.True(_memory.TryRead(wb.Address, back.AsSpan(at, n1)));
                    at += n1;
                }

                Assert.Equal(req.Written, back);
                foreach (int s in req.SlotsUsed)
                {
                    _freeSlots.Push(s);
                }

                _free += req.Descriptors;
                _inFlight--;
            }

            if (n > 0)
            {
                _driverAsleep = false;
            }
        }

        private void Notifications(bool enable)
        {
            if (!enable)
            {
                _device.DisableNotifications();
                _deviceAsleep = false;
                Assert.Equal(_cfg.EventIdx ? 0 : (ushort)VirtqUsedFlags.NoNotify, _h.ReadU16(_h.State.UsedRing));
                return;
            }

            bool pending = _device.EnableNotifications();
            Assert.Equal(_published.Count > 0, pending);
            _deviceAsleep = !pending;
            Assert.Equal(0, _h.ReadU16(_h.State.UsedRing));
            if (_cfg.EventIdx)
            {
                Assert.Equal(_device.State.NextAvail, _h.ReadU16(_h.State.UsedRing + 4 + (8 * (ulong)_cfg.QueueSize)));
            }
        }

        private void Interrupts(bool enable)
        {
            if (!enable)
            {
                _driver.DisableInterrupts();
                _driverAsleep = false;
                Assert.Equal(_cfg.EventIdx ? 0 : (ushort)VirtqAvailFlags.NoInterrupt, _h.ReadU16(_h.State.AvailRing));
                return;
            }

            bool pending = _driver.EnableInterrupts();
            Assert.Equal(_flushed.Count > 0, pending);
            _driverAsleep = !pending;
            Assert.Equal(0, _h.ReadU16(_h.State.AvailRing));
            if (_cfg.EventIdx)
            {
                Assert.Equal(_driver.State.NextUsed, _h.ReadU16(_h.State.AvailRing + 4 + (2 * (ulong)_cfg.QueueSize)));
            }
        }

        private void CheckInvariants()
        {
            Assert.False(_driver.IsBroken, _driver.BrokenReason);
            Assert.False(_device.IsBroken, _device.BrokenReason);
            Assert.Equal(_free, _driver.FreeDescriptors);
            Assert.Equal(_inFlight, _driver.InFlight);
            Assert.Equal(_added.Count + _published.Count + _popped.Count + _pushed.Count + _flushed.Count, _inFlight);
        }

        private void Drain()
        {
            PublishAndKick();
            while (_published.Count > 0)
            {
                Pop(_chains.Length);
            }

            Complete(1, 2, all: true);
            FlushAndInterrupt();
            while (_flushed.Count > 0)
            {
                Reap(_used.Length);
            }

            CheckInvariants();
            Assert.Equal(0, _driver.InFlight);
            Assert.Equal(_cfg.QueueSize, _driver.FreeDescriptors);
            Assert.Equal(Slots, _freeSlots.Count);
            Assert.Equal(_addedCount, _returned.Count);
            Assert.Equal(0, _driver.Reap(_used));
            Assert.Equal(0, _device.PopAvail(_chains, _segments));
        }
    }
}

/// <summary>RingModelProperties over ordinary RAM (<see cref="RamAccessor"/>).</summary>
public sealed class RingModelProperties_Ram(ITestOutputHelper output) : RingModelProperties<RamAccessor, RamRingMemory>(output, half: 0);

/// <summary>RingModelProperties over a PCI BAR stand-in through <see cref="IoMemoryAccessor"/> (accesses counted).</summary>
public sealed class RingModelProperties_Io(ITestOutputHelper output) : RingModelProperties<IoMemoryAccessor, IoRingMemory>(output, half: 1);
