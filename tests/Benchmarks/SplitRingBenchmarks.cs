// Split-virtqueue round-trip benchmarks.
//
// How to run (BenchmarkDotNet refuses Debug builds, so always -c Release):
//
//   dotnet run -c Release --project tests/Benchmarks -- --filter '*SplitRing*'
//
// Quick run (ShortRun job: 1 launch, 3 warm-up and 3 measured iterations; about two minutes
// for all 16 cases, noisy but fine for the Ratio and Allocated columns):
//
//   dotnet run -c Release --project tests/Benchmarks -- --filter '*SplitRing*' --job short
//   dotnet run -c Release --project tests/Benchmarks -- --filter '*SplitRing*' --quick   (same thing)
//
// "Does it still run at all" check: `--job dry` (one invocation per case; times meaningless).
//
// Reading the results: Mean is per packet (OperationsPerInvoke = 32). Compare the Ratio
// column, not absolute times: CopyOnly (the baseline) copies the same 32 payloads with
// Span.CopyTo, the floor any ring engine pays for moving the bytes, so RoundTrip's ratio is
// the ring's overhead on top of the copy, measured in the same run on the same machine.
// Allocated must be '-' (0 bytes): the data path does not allocate in steady state
// (tests/VhostCore.Tests/Allocation/ZeroAllocationTests.cs asserts the same).

using System.Runtime.CompilerServices;
using BenchmarkDotNet.Attributes;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;

namespace PciVirtio.Benchmarks;

/// <summary>
/// A burst of 32 transmit-style requests through our driver and device over one split ring
/// in native memory: the driver adds 32 header + payload chains and publishes them (one
/// avail index store) and asks whether to kick; the device pops the 32 chains, copies each
/// payload out of guest memory into a preallocated buffer, returns them as used (one used
/// index store) and asks whether to interrupt; the driver reaps the 32 used entries.
/// </summary>
[MemoryDiagnoser]
public class SplitRingBenchmarks
{
    /// <summary>Requests per burst (and per benchmark invocation).</summary>
    public const int Burst = 32;

    /// <summary>virtio_net_hdr_mrg_rxbuf: the header buffer in front of every payload.</summary>
    public const int HeaderSize = 12;

    private const int QueueSize = 256;
    private const ulong GuestBase = 0x1_0000_0000;  // non-zero, like a guest above 4 GiB
    private const ulong RingOffset = 0x10000;
    private const ulong IndirectOffset = 0x80000;
    private const ulong HeaderOffset = 0xC0000;
    private const ulong HeaderStride = 64;
    private const ulong PayloadOffset = 0x100000;
    private const ulong PayloadStride = 2048;
    private const ulong MemorySize = 4 << 20;

    private NativeMemoryBlock _block = null!;
    private GuestMemory<RamAccessor> _memory;
    private SplitQueueDriver<RamAccessor> _driver = null!;
    private SplitQueueDevice<RamAccessor> _device = null!;

    // Everything the hot path touches is allocated here, once.
    private GuestBuffer[] _requests = null!;      // [2i] header, [2i + 1] payload of request i
    private nint[] _payloadHost = null!;          // where payload i sits in our mapping (baseline)
    private DescriptorChain[] _chains = null!;
    private IoSegment[] _segments = null!;
    private UsedBuffer[] _used = null!;
    private byte[] _copy = null!;                 // the device's destination for each payload

    /// <summary>Payload bytes per packet (the header comes on top).</summary>
    [Params(64, 1500)]
    public int PayloadSize { get; set; }

    /// <summary>VIRTIO_F_RING_EVENT_IDX negotiated.</summary>
    [Params(false, true)]
    public bool EventIdx { get; set; }

    /// <summary>VIRTIO_F_RING_INDIRECT_DESC negotiated and used: each two-buffer chain is one
    /// ring descriptor pointing at a two-entry indirect table.</summary>
    [Params(false, true)]
    public bool Indirect { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _block = new NativeMemoryBlock(MemorySize);
        var table = MemoryTable.Create(_block.Region(GuestBase));
        _memory = new GuestMemory<RamAccessor>(table, default);

        var features = VirtioFeatures.Version1
            | (EventIdx ? VirtioFeatures.RingEventIdx : VirtioFeatures.None)
            | (Indirect ? VirtioFeatures.RingIndirectDesc : VirtioFeatures.None);
        var state = QueueState.AtBase(QueueSize, GuestBase + RingOffset, features);
        IndirectArea? indirect = Indirect ? new IndirectArea(GuestBase + IndirectOffset, 2) : null;

        _driver = new SplitQueueDriver<RamAccessor>("bench-driver");
        _device = new SplitQueueDevice<RamAccessor>("bench-device");
        if (!_driver.Start(state, _memory, indirect) || !_device.Start(state, _memory))
        {
            throw new InvalidOperationException($"ring did not start: {_driver.BrokenReason ?? _device.BrokenReason}");
        }

        _requests = new GuestBuffer[2 * Burst];
        _payloadHost = new nint[Burst];
        Span<byte> header = stackalloc byte[HeaderSize];
        var payload = new byte[PayloadSize];
        for (int i = 0; i < Burst; i++)
        {
            ulong h = GuestBase + HeaderOffset + ((ulong)i * HeaderStride);
            ulong p = GuestBase + PayloadOffset + ((ulong)i * PayloadStride);
            _requests[2 * i] = new GuestBuffer(h, HeaderSize);
            _requests[(2 * i) + 1] = new GuestBuffer(p, (uint)PayloadSize);

            header.Fill((byte)i);
            for (int b = 0; b < payload.Length; b++)
            {
                payload[b] = PayloadByte(i, b);
            }

            if (!_memory.TryWrite(h, header) || !_memory.TryWrite(p, payload) || !table.TryTranslate(p, (ulong)PayloadSize, out _payloadHost[i]))
            {
                throw new InvalidOperationException("buffer outside guest memory");
            }
        }

        _chains = new DescriptorChain[Burst];
        _segments = new IoSegment[4 * Burst];
        _used = new UsedBuffer[Burst];
        _copy = new byte[PayloadSize];

        // One checked burst: the ring really carries the payloads, so the numbers below
        // measure working code.
        RoundTrip();
        if (_copy[0] != PayloadByte(Burst - 1, 0) || _copy[^1] != PayloadByte(Burst - 1, PayloadSize - 1)
            || _driver.InFlight != 0 || _driver.FreeDescriptors != QueueSize || _device.IsBroken || _driver.IsBroken)
        {
            throw new InvalidOperationException("round trip did not carry the payload");
        }
    }

    [GlobalCleanup]
    public void Cleanup() => _block.Dispose();

    /// <summary>The floor: copy the same 32 payloads from guest memory with Span.CopyTo.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Burst)]
    public unsafe int CopyOnly()
    {
        var copy = _copy.AsSpan();
        var hosts = _payloadHost;
        int total = 0;
        for (int i = 0; i < hosts.Length; i++)
        {
            new ReadOnlySpan<byte>((void*)hosts[i], copy.Length).CopyTo(copy);
            total += copy.Length;
        }

        return total;
    }

    /// <summary>32 avail → used round trips through driver and device, copying each payload.</summary>
    [Benchmark(OperationsPerInvoke = Burst)]
    public int RoundTrip()
    {
        var driver = _driver;
        var device = _device;
        var requests = _requests;

        // Driver: 32 chains of header (readable) + payload (readable), one avail.idx store.
        for (int i = 0; i < Burst; i++)
        {
            if (!driver.TryAdd(requests.AsSpan(2 * i, 2), default, (ulong)i))
            {
                Fail("TryAdd");
            }
        }

        driver.Publish();
        int events = driver.NeedsKick() ? 1 : 0;

        // Device: pop the burst, copy each payload (after the header) out of guest memory,
        // return the chains with 0 bytes written, one used.idx store.
        var segments = _segments;
        int popped = device.PopAvail(_chains, segments);
        if (popped != Burst)
        {
            Fail("PopAvail");
        }

        var copy = _copy.AsSpan();
        int copied = 0;
        foreach (ref readonly var chain in _chains.AsSpan(0, popped))
        {
            copied += _memory.Gather(chain.Readable(segments), HeaderSize, copy);
            device.PushUsed(chain.Head, 0);
        }

        device.FlushUsed();
        events += device.NeedsInterrupt() ? 1 : 0;

        // Driver: reap the 32 used entries.
        if (driver.Reap(_used) != Burst)
        {
            Fail("Reap");
        }

        return copied + events;
    }

    private static byte PayloadByte(int packet, int offset) => unchecked((byte)((packet * 31) + offset));

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void Fail(string step) =>
        throw new InvalidOperationException($"{step} failed in steady state: driver {_driver.Error} {_driver.BrokenReason}, device {_device.Error} {_device.BrokenReason}");
}
