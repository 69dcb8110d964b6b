using System.Diagnostics;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;

namespace PciVirtio.Host.Demo;

/// <summary>
/// The embedded default job: two hosts in one process, each with its own memory, joined by
/// two split rings laid out as on a PCIe link — every ring part and every payload in the
/// memory of the side that reads it. Host A sends numbered frames, host B echoes them, A
/// checks each comes back whole, once and in order. Prints throughput, kicks and
/// interrupts (and how many EVENT_IDX suppressed), and a summary.
/// </summary>
internal sealed class RingDemo(DemoOptions options, TextWriter output)
{
    private const ulong MemoryA = 0x1000_0000;
    private const ulong MemoryB = 0x2000_0000;
    private const ulong RingOffset = 0;
    private const ulong UsedOffset = 0x8_0000;
    private const ulong BufferOffset = 0x10_0000;

    public int Run()
    {
        ulong ringBytes = SplitRingLayout.DescTableBytes(options.QueueSize) + SplitRingLayout.AvailRingBytes(options.QueueSize);
        ulong usedBytes = SplitRingLayout.UsedRingBytes(options.QueueSize);
        ulong buffers = (ulong)options.QueueSize * (ulong)options.FrameSize;
        if (ringBytes > UsedOffset || usedBytes > BufferOffset - UsedOffset)
        {
            output.WriteLine($"queue size {options.QueueSize} does not fit the demo's ring area");
            return 2;
        }

        ulong hostMemory = SplitRingLayout.AlignUp(BufferOffset + buffers, 4096);
        using var blockA = new NativeMemoryBlock(hostMemory);
        using var blockB = new NativeMemoryBlock(hostMemory);
        var table = MemoryTable.Create(blockA.Region(MemoryA), blockB.Region(MemoryB));
        var memory = new GuestMemory<RamAccessor>(table, default);
        var features = VirtioFeatures.Version1 | (options.EventIdx ? VirtioFeatures.RingEventIdx : 0);

        // A→B: B (device) reads desc and avail, so they sit in B's memory; A (driver) reads
        // used, so it sits in A's. B→A is the mirror image.
        var ab = new QueueState { Size = options.QueueSize, DescTable = MemoryB + RingOffset, AvailRing = MemoryB + RingOffset + SplitRingLayout.DescTableBytes(options.QueueSize), UsedRing = MemoryA + UsedOffset, Features = features };
        var ba = new QueueState { Size = options.QueueSize, DescTable = MemoryA + RingOffset, AvailRing = MemoryA + RingOffset + SplitRingLayout.DescTableBytes(options.QueueSize), UsedRing = MemoryB + UsedOffset, Features = features };

        var template = new byte[options.FrameSize];
        for (int i = 0; i < template.Length; i++)
        {
            template[i] = (byte)((i * 31) + 7);
        }

        using var a = new DemoHost("A", DemoRole.Source, options, memory, tx: ab, rx: ba, txBufferBase: MemoryB + BufferOffset, template);
        using var b = new DemoHost("B", DemoRole.Echo, options, memory, tx: ba, rx: ab, txBufferBase: MemoryA + BufferOffset, template);
        a.Peer = b;
        b.Peer = a;

        output.WriteLine("PciVirtio ring demo: host A sends numbered frames to host B through split virtqueues; B echoes them back.");
        output.WriteLine($"  frames {options.Frames:N0} x {options.FrameSize} B, queue size {options.QueueSize}, burst {options.Burst}, EVENT_IDX {(options.EventIdx ? "on" : "off")}");
        output.WriteLine("  placement (read locally, write remotely):");
        output.WriteLine($"    A->B ring: desc 0x{ab.DescTable:x} + avail 0x{ab.AvailRing:x} in B's memory, used 0x{ab.UsedRing:x} in A's; A's frames written into B's memory at 0x{MemoryB + BufferOffset:x}");
        output.WriteLine($"    B->A ring: desc 0x{ba.DescTable:x} + avail 0x{ba.AvailRing:x} in A's memory, used 0x{ba.UsedRing:x} in B's; B's frames written into A's memory at 0x{MemoryA + BufferOffset:x}");

        using var cancel = new CancellationTokenSource(options.Timeout);
        var threadA = new Thread(() => a.Run(cancel.Token)) { Name = "host-A", IsBackground = true };
        var threadB = new Thread(() => b.Run(cancel.Token)) { Name = "host-B", IsBackground = true };
        var clock = Stopwatch.StartNew();
        threadA.Start();
        threadB.Start();

        long lastFrames = 0;
        var lastTime = TimeSpan.Zero;
        while (!threadA.Join(1000))
        {
            var now = clock.Elapsed;
            long frames = a.Frames;
            double seconds = (now - lastTime).TotalSeconds;
            output.WriteLine($"  {now.TotalSeconds,5:F1} s  {frames,12:N0} frames echoed  {(frames - lastFrames) / seconds / 1e6,6:F2} Mpps  {(frames - lastFrames) * (double)options.FrameSize * 8 * 2 / seconds / 1e9,6:F2} Gbit/s both ways");
            lastFrames = frames;
            lastTime = now;
        }

        threadB.Join(TimeSpan.FromSeconds(5));
        var elapsed = clock.Elapsed;
        bool timedOut = cancel.IsCancellationRequested && !(a.Finished && b.Finished);
        cancel.Cancel();

        double mpps = a.Frames / elapsed.TotalSeconds / 1e6;
        output.WriteLine();
        output.WriteLine("Summary");
        output.WriteLine($"  frames sent by A            {a.Frames,14:N0} echoed back, {a.BadFrames:N0} corrupted, duplicated or out of order");
        output.WriteLine($"  bytes each way              {a.Bytes,14:N0}");
        output.WriteLine($"  time                        {elapsed.TotalSeconds,14:F2} s ({mpps:F2} Mpps round trip, {a.Bytes * 8.0 * 2 / elapsed.TotalSeconds / 1e9:F2} Gbit/s both ways)");
        output.WriteLine($"  kicks A->B / suppressed     {a.Tx.KicksRequested,14:N0} / {a.Tx.KicksSuppressed:N0}");
        output.WriteLine($"  kicks B->A / suppressed     {b.Tx.KicksRequested,14:N0} / {b.Tx.KicksSuppressed:N0}");
        output.WriteLine($"  interrupts to A / suppressed{b.Rx.InterruptsRequested,14:N0} / {b.Rx.InterruptsSuppressed:N0}");
        output.WriteLine($"  interrupts to B / suppressed{a.Rx.InterruptsRequested,14:N0} / {a.Rx.InterruptsSuppressed:N0}");
        output.WriteLine($"  sleeps A / B                {a.Wakeups,14:N0} / {b.Wakeups:N0}");

        string? failure = a.Failure ?? b.Failure;
        if (failure is not null)
        {
            output.WriteLine($"FAILED: {failure}");
            return 1;
        }

        if (timedOut)
        {
            output.WriteLine($"FAILED: timed out after {options.Timeout.TotalSeconds:F0} s with {a.Frames:N0} of {options.Frames:N0} frames back");
            return 1;
        }

        if (a.BadFrames != 0 || a.Frames != options.Frames)
        {
            output.WriteLine("FAILED: frames were lost or damaged");
            return 1;
        }

        output.WriteLine("OK: every frame came back whole, once and in order.");
        return 0;
    }
}
