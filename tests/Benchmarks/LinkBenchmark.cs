using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text.Json;
using PciVirtio.Bridge.Hardware;
using PciVirtio.Bridge.Link;
using PciVirtio.HwSim.Device;
using PciVirtio.Mmio.EventLoop;
using PciVirtio.VhostCore.Net;

namespace PciVirtio.Benchmarks;

/// <summary>
/// The host-to-host link's speed, in one run (docs/link-benchmark.md):
/// <list type="number">
/// <item>the in-process packet API over an in-process hw-sim NTB, one end sending as fast as
/// it can and the other checking every frame's sequence number, at several packet sizes,
/// next to a single-threaded plain copy of the same bytes (the copy limit), with the remote
/// reads of the run and the managed bytes allocated per packet on both loop threads after
/// warm-up;</item>
/// <item>as root, TCP (iperf3) between two network namespaces joined by two
/// <c>pcivirtio link</c> processes over a <c>pcivirtio-hwsim serve</c>, against the same
/// iperf3 over a veth pair (the kernel's own path).</item>
/// </list>
/// Only ratios within one run mean anything.
/// </summary>
public static partial class LinkBenchmark
{
    private const ulong WindowSize = 16 << 20;
    private const string Usage = "usage: Benchmarks link [--seconds S] [--sizes 64,1500,65535] [--modes doorbells,busy-poll] [--check full|sequence|length] [--one-thread] [--linger US] [--tcp-seconds S] [--no-tcp]";

    public static async Task<int> RunAsync(string[] args)
    {
        double seconds = 2;
        double tcpSeconds = 4;
        bool tcp = true;
        bool[] modes = [false];
        int[] sizes = [64, 1500, 65535];
        var check = FrameCheck.Full;
        bool oneThread = false;
        var linger = LinkOptions.DefaultLinger;
        try
        {
            for (int i = 0; i < args.Length; i++)
            {
                string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
                switch (args[i])
                {
                    case "--seconds": seconds = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--tcp-seconds": tcpSeconds = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--sizes": sizes = [.. Next().Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture))]; break;
                    case "--no-tcp": tcp = false; break;
                    case "--one-thread": oneThread = true; break;
                    case "--linger": linger = TimeSpan.FromMicroseconds(int.Parse(Next(), CultureInfo.InvariantCulture)); break;
                    case "--check": check = Next() switch
                    {
                        "full" => FrameCheck.Full,
                        "sequence" => FrameCheck.Sequence,
                        "length" => FrameCheck.Length,
                        var c => throw new ArgumentException($"--check takes full, sequence or length, not '{c}'"),
                    }; break;
                    case "--modes": modes = [.. Next().Split(',').Select(m => m switch
                    {
                        "doorbells" => false,
                        "busy-poll" => true,
                        _ => throw new ArgumentException($"--modes takes doorbells and/or busy-poll, not '{m}'"),
                    })]; break;
                    default: throw new ArgumentException($"unknown option '{args[i]}'");
                }
            }
        }
        catch (Exception e) when (e is ArgumentException or FormatException or OverflowException)
        {
            Console.Error.WriteLine($"link benchmark: {e.Message}");
            Console.Error.WriteLine(Usage);
            return 2;
        }

        if (LinkOptions.LingerError(linger) is { } lingerError)
        {
            Console.Error.WriteLine($"link benchmark: --linger: {lingerError}");
            return 2;
        }

        // A packet holds an Ethernet header, the sequence number after it and a last byte of its own.
        if (sizes.Any(s => s is < 20 or > 65535))
        {
            Console.Error.WriteLine("link benchmark: packet sizes are 20..65535 bytes");
            return 2;
        }

        // Ctrl-C or SIGTERM ends the run through the cleanup below; a second one ends the process.
        using var cancel = new CancellationTokenSource();
        void OnSignal(PosixSignalContext context)
        {
            if (!cancel.IsCancellationRequested)
            {
                context.Cancel = true;
                cancel.Cancel();
            }
        }

        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        var token = cancel.Token;
        try
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"link benchmark, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, {RuntimeInformation.FrameworkDescription}, {RuntimeInformation.OSDescription}"));
            Console.WriteLine();
            var rows = RunPackets(sizes, seconds, modes, check, oneThread, linger, token);
            Console.WriteLine();
            TcpResult? tcpResult = null;
            if (tcp)
            {
                tcpResult = await RunTcpAsync(tcpSeconds, linger, token);
                Console.WriteLine();
            }

            PrintTargets(rows, check, tcpResult);
            return rows.All(r => r.Bad == 0 && r.Lost == 0 && r.Dropped == 0) ? 0 : 1;
        }
        catch (Exception e) when (e is InvalidOperationException or TimeoutException)
        {
            Console.Error.WriteLine($"link benchmark failed: {e.Message}");
            return 1;
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            Console.Error.WriteLine("link benchmark: interrupted; everything it started is stopped and removed");
            return 130;
        }
    }

    // ---- 1. the packet API over an in-process hw-sim NTB ----

    private static List<PacketRow> RunPackets(int[] sizes, double seconds, bool[] modes, FrameCheck check, bool oneThread, TimeSpan linger, CancellationToken token)
    {
        var offer = new LinkParameters();
        int area = offer.QueueSize * offer.BufferSize;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"packet API over an in-process hw-sim NTB ({WindowSize >> 20} MiB window, {offer.QueueSize}-entry rings, {area >> 10} KiB of receive buffers), {seconds:0.#} s per size after warm-up: one loop thread sends (batches of {Sender.Batch}, a flush per batch, {Sender.Batch * Sender.BatchesPerTurn} frames per loop turn at most), the other checks every frame ({CheckText(check)}). Copy limit: one thread copying the same frames into a {area >> 10} KiB area for as long. Sizes are packet bytes (the frame adds the {VirtioNetHeader.Size}-byte vnet header); Gbit/s counts packet bytes. Mode doorbells: EVENT_IDX-suppressed kicks and used doorbells, as `pcivirtio link` runs by default, a dry receive ring or a full transmit ring watched {linger.TotalMicroseconds:0} µs before a doorbell is asked for (--linger); busy-poll (--modes doorbells,busy-poll): LinkOptions.Poll on both ends. Line round trip: nanoseconds for a cache line to go to the other CPU and back, measured with nothing else running just before each link comes up and after it goes down, and before and after the two-thread ring; two-thread rows follow it, and on a virtual machine it changes with where the host places the two CPUs.{(oneThread ? " Rows marked one thread (--one-thread): both ends on one loop thread, so no cache line crosses between CPUs and what is left is the link's own instructions; their CPU columns are that one thread's." : "")}"));
        Console.WriteLine();
        var rows = new List<PacketRow>();
        foreach (bool single in oneThread ? new[] { false, true } : [false])
        {
            foreach (bool poll in modes)
            {
                // The probe runs while nothing else does: busy-polling loops would share its CPUs.
                double before = LineRoundTrip(token);
                var measured = new List<PacketRow>();
                using (var bench = new PacketBench(poll, check, single, linger))
                {
                    Console.Error.WriteLine($"link benchmark: bringing the link up ({ModeName(poll, single)})");
                    bench.Start(token);
                    foreach (int size in sizes)
                    {
                        Console.Error.WriteLine($"link benchmark: {size}-byte packets, {ModeName(poll, single)}");
                        measured.Add(bench.Measure(size, seconds, token));
                    }
                }

                double after = LineRoundTrip(token);
                foreach (var r in measured)
                {
                    (r.LineBefore, r.LineAfter) = (before, after);
                }

                rows.AddRange(measured);
            }
        }

        foreach (int size in sizes)
        {
            Console.Error.WriteLine($"link benchmark: copy limit at {size} bytes");
            double copy = CopyLimit(VirtioNetHeader.Size + size, area, seconds, token);
            Console.Error.WriteLine($"link benchmark: two-thread ring at {size} bytes");
            double ringBefore = LineRoundTrip(token);
            double ring = TwoThreadRing(VirtioNetHeader.Size + size, area, offer.QueueSize, check, seconds, token);
            double ringAfter = LineRoundTrip(token);
            foreach (var r in rows.Where(r => r.Size == size))
            {
                r.CopyPerSecond = copy;
                r.RingPerSecond = ring;
                (r.RingLineBefore, r.RingLineAfter) = (ringBefore, ringAfter);
            }
        }

        Console.WriteLine("| packet | mode | link Mpps | link Gbit/s | copy Mpps | copy Gbit/s | link/copy | two-thread ring Mpps | link/ring | line round trip ns, link / ring | CPU ns/packet tx, rx (busy) | copy ns/packet | remote reads tx/rx | B alloc/packet tx | B alloc/packet rx |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var r in rows.OrderBy(r => Array.IndexOf(sizes, r.Size)))
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {r.Size} B | {ModeName(r.Poll, r.OneThread)} | {r.PerSecond / 1e6:0.000} | {Gbps(r.PerSecond, r.Size):0.00} | {r.CopyPerSecond / 1e6:0.000} | {Gbps(r.CopyPerSecond, r.Size):0.00} | {r.PerSecond / r.CopyPerSecond:0.000}x | {r.RingPerSecond / 1e6:0.000} | {r.PerSecond / r.RingPerSecond:0.00}x | {r.LineBefore:0}-{r.LineAfter:0} / {r.RingLineBefore:0}-{r.RingLineAfter:0} | {r.SenderCpuNs:0} ({r.SenderBusy * 100:0}%), {r.ReceiverCpuNs:0} ({r.ReceiverBusy * 100:0}%) | {1e9 / r.CopyPerSecond:0.0} | {r.SenderReads}/{r.ReceiverReads} | {PerPacket(r.SenderAllocated, r.SenderPackets)} | {PerPacket(r.ReceiverAllocated, r.ReceiverPackets)} |"));
        }

        Console.WriteLine();
        foreach (var r in rows.OrderBy(r => Array.IndexOf(sizes, r.Size)))
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"- {r.Size} B, {ModeName(r.Poll, r.OneThread)}: {r.Total} frames checked ({r.Bad} bad, {r.Lost} missing, {r.Dropped} refused by the link). Measured window: {r.Stalls} sender stalls (NoBuffers), {r.Retries} retries after 100 ms without SpaceAvailable; tx rang {r.KicksSent} kicks ({Per1000(r.KicksSent, r.SenderPackets)}/1000 packets) and allocated {r.SenderAllocated} B{PerDoorbell(r.SenderAllocated, r.KicksSent)}; rx rang {r.UsedDoorbells} used doorbells and allocated {r.ReceiverAllocated} B{PerDoorbell(r.ReceiverAllocated, r.UsedDoorbells)}"));
        }

        return rows;
    }

    private static string ModeName(bool poll) => poll ? "busy-poll" : "doorbells";

    private static string ModeName(bool poll, bool oneThread) => oneThread ? ModeName(poll) + ", one thread" : ModeName(poll);

    private static string CheckText(FrameCheck check) => check switch
    {
        FrameCheck.Full => "--check full: its length, its sequence number and its last byte, so its first and last cache lines cross to the receiving CPU",
        FrameCheck.Sequence => "--check sequence: its length and sequence number, in its first cache line, with the headers",
        _ => "--check length: its length only; the frame's bytes are not read, as testpmd's rxonly does not read them",
    };

    private static string PerDoorbell(long bytes, long doorbells) =>
        bytes == 0 || doorbells == 0 ? "" : string.Create(CultureInfo.InvariantCulture, $" ({(double)bytes / doorbells:0.##} B per doorbell rung)");

    private static double Gbps(double packetsPerSecond, int size) => packetsPerSecond * size * 8 / 1e9;

    private static string PerPacket(long bytes, long packets) =>
        bytes == 0 ? "0" : string.Create(CultureInfo.InvariantCulture, $"{(double)bytes / Math.Max(1, packets):0.####} ({bytes} B)");

    private static string Per1000(long count, long packets) =>
        (count * 1000.0 / Math.Max(1, packets)).ToString("0.#", CultureInfo.InvariantCulture);

    /// <summary>
    /// Frames per second of the least two threads can do to pass frames: a bare
    /// single-producer, single-consumer ring over the same area, no descriptors, no
    /// notifications. One thread copies each frame into the next 64-aligned place (of as
    /// many as the link's ring has entries, <paramref name="places"/>, so a lap spans as many
    /// bytes as the link's) and publishes its index every 32 frames; the other checks each frame's first and last
    /// bytes (or less, as <paramref name="check"/> says), as the link's receiver here does,
    /// and hands the places back per batch. What it
    /// costs beyond <see cref="CopyLimit"/> is the cache lines crossing between the CPUs: the
    /// yardstick for any link between two threads on this machine.
    /// </summary>
    private static double TwoThreadRing(int frameLength, int area, int places, FrameCheck check, double seconds, CancellationToken token)
    {
        const int Publish = 32;
        var source = AlignedBuffer(frameLength);
        var target = AlignedBuffer(area);
        int stride = (frameLength + 63) & ~63;
        long slots = Math.Min(places, area / stride); // as many places as the link's ring, where they fit
        var indices = new long[32]; // produced at [0], consumed at [16]: separate lines
        bool stop = false;
        long bad = 0;
        var consumer = new Thread(() =>
        {
            long next = 0;
            while (!Volatile.Read(ref stop))
            {
                long produced = Volatile.Read(ref indices[0]);
                if (produced == next)
                {
                    continue;
                }

                for (; next < produced; next++)
                {
                    int at = (int)(next % slots) * stride;
                    if (check != FrameCheck.Length
                        && (BinaryPrimitives.ReadInt32LittleEndian(target.AsSpan(at)) != (int)next
                            || (check == FrameCheck.Full && target[at + frameLength - 1] != (byte)next)))
                    {
                        bad++;
                    }
                }

                Volatile.Write(ref indices[16], next);
            }
        })
        { IsBackground = true, Name = "ring-rx" };
        consumer.Start();
        double rate = 0;
        long sequence = 0;
        long consumed = 0; // the consumer's index as last read: read again only when it says full
        foreach (double span in new[] { 0.3, seconds }) // warm-up, then the measurement
        {
            long start = Stopwatch.GetTimestamp();
            long end = start + (long)(span * Stopwatch.Frequency);
            long first = sequence;
            long now;
            do
            {
                for (int i = 0; i < Publish; i++, sequence++)
                {
                    if (sequence - consumed >= slots && sequence - (consumed = Volatile.Read(ref indices[16])) >= slots)
                    {
                        // Full (a ring of big frames has fewer places than a batch): show the
                        // consumer what is there, then wait for it.
                        Volatile.Write(ref indices[0], sequence);
                        while (sequence - (consumed = Volatile.Read(ref indices[16])) >= slots)
                        {
                            Thread.SpinWait(1);
                        }
                    }

                    BinaryPrimitives.WriteInt32LittleEndian(source, (int)sequence);
                    source[^1] = (byte)sequence;
                    source.AsSpan().CopyTo(target.AsSpan((int)(sequence % slots) * stride, frameLength));
                }

                Volatile.Write(ref indices[0], sequence);
                now = Stopwatch.GetTimestamp();
            }
            while (now < end && !token.IsCancellationRequested);

            rate = (sequence - first) / Stopwatch.GetElapsedTime(start, now).TotalSeconds;
        }

        Volatile.Write(ref stop, true);
        consumer.Join();
        token.ThrowIfCancellationRequested();
        if (bad != 0)
        {
            throw new InvalidOperationException($"two-thread ring: {bad} frames read wrong");
        }

        return rate;
    }

    /// <summary>
    /// Nanoseconds for one cache line to go from this thread's CPU to another thread's and
    /// back: the two threads take turns writing a counter in one line, each waiting to see
    /// the other's value. Two threads that pass frames pay this for every line that changes
    /// hands. On a virtual machine it changes with where the host runs the two virtual CPUs
    /// (two cores that share a cache, or two that do not), which is why two-thread rows can
    /// differ severalfold between runs while one-thread rows do not. NaN when the second
    /// thread did not answer within 5 s.
    /// </summary>
    private static double LineRoundTrip(CancellationToken token)
    {
        var line = AlignedBuffer(64); // one line to itself
        var stop = new StrongBox<bool>();
        var echo = new Thread(() => Echo(line, stop)) { IsBackground = true, Name = "line-echo" };
        echo.Start();
        double result = Ping(line, token);
        Volatile.Write(ref stop.Value, true);
        echo.Join();
        token.ThrowIfCancellationRequested();
        return result;
    }

    private const long RoundTrips = 20_000;

    /// <summary>The probe's first thousand trips warm both threads up; optimized from the
    /// first call, so a cold process measures the line and not the JIT's first tier.</summary>
    private const long WarmTrips = 1000;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static double Ping(ArraySegment<byte> line, CancellationToken token)
    {
        ref long turn = ref Unsafe.As<byte, long>(ref line.Array![line.Offset]);
        long deadline = Stopwatch.GetTimestamp() + (5 * Stopwatch.Frequency);
        long start = 0;
        for (long i = 1; i <= RoundTrips; i++)
        {
            if (i == WarmTrips + 1)
            {
                start = Stopwatch.GetTimestamp();
            }

            Volatile.Write(ref turn, (2 * i) - 1);
            for (int spins = 1; Volatile.Read(ref turn) != 2 * i; spins++)
            {
                if ((spins & 0xffff) == 0 && (token.IsCancellationRequested || Stopwatch.GetTimestamp() > deadline))
                {
                    return double.NaN;
                }
            }
        }

        return Stopwatch.GetElapsedTime(start).TotalNanoseconds / (RoundTrips - WarmTrips);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Echo(ArraySegment<byte> line, StrongBox<bool> stop)
    {
        ref long turn = ref Unsafe.As<byte, long>(ref line.Array![line.Offset]);
        for (long i = 1; i <= RoundTrips; i++)
        {
            while (Volatile.Read(ref turn) != (2 * i) - 1)
            {
                if (Volatile.Read(ref stop.Value))
                {
                    return;
                }
            }

            Volatile.Write(ref turn, 2 * i);
        }
    }

    /// <summary>Frames per second of one thread copying <paramref name="frameLength"/> bytes
    /// from one buffer into successive 64-aligned places of an <paramref name="area"/>-byte
    /// area (as the link fills the receiver's buffer area), for <paramref name="seconds"/>.</summary>
    private static double CopyLimit(int frameLength, int area, double seconds, CancellationToken token)
    {
        var source = AlignedBuffer(frameLength);
        var target = AlignedBuffer(area);
        for (int i = 0; i < source.Count; i++)
        {
            source[i] = (byte)(i * 7);
        }

        int stride = (frameLength + 63) & ~63;
        int at = 0;
        double rate = 0;
        foreach (double span in new[] { 0.3, seconds }) // warm-up, then the measurement
        {
            long copies = 0;
            long start = Stopwatch.GetTimestamp();
            long end = start + (long)(span * Stopwatch.Frequency);
            long now;
            do
            {
                for (int i = 0; i < 64; i++)
                {
                    source.AsSpan().CopyTo(target.AsSpan(at, frameLength));
                    at += stride;
                    if (at + frameLength > area)
                    {
                        at = 0;
                    }
                }

                copies += 64;
                now = Stopwatch.GetTimestamp();
            }
            while (now < end && !token.IsCancellationRequested);

            token.ThrowIfCancellationRequested();
            rate = copies / Stopwatch.GetElapsedTime(start, now).TotalSeconds;
        }

        return rate;
    }

    /// <summary>
    /// <paramref name="length"/> bytes of pinned memory starting on a 64-byte boundary, as the
    /// link's windows and buffer places are: an array's data is only 8-aligned, and a copy into
    /// places 64 bytes apart from an unaligned start splits every other vector store across two
    /// lines, which made the copy limit vary from run to run with where the array fell.
    /// </summary>
    private static ArraySegment<byte> AlignedBuffer(int length)
    {
        byte[] array = GC.AllocateArray<byte>(length + 63, pinned: true);
        int offset;
        unsafe
        {
            offset = (int)((64 - ((nint)Unsafe.AsPointer(ref array[0]) & 63)) & 63);
        }

        return new ArraySegment<byte>(array, offset, length);
    }

    private sealed class PacketRow
    {
        public int Size;
        public bool Poll;
        public bool OneThread;
        public double PerSecond;
        public double CopyPerSecond;

        public double RingPerSecond;

        /// <summary>The CPU line round trip (<see cref="LineRoundTrip"/>) just before the
        /// link of this row came up and just after it went down, and around the ring.</summary>
        public double LineBefore;
        public double LineAfter;
        public double RingLineBefore;
        public double RingLineAfter;
        public long SenderReads;
        public long ReceiverReads;
        public long SenderAllocated;
        public long SenderPackets;
        public double SenderCpuNs;
        public double ReceiverCpuNs;
        public double SenderBusy;
        public double ReceiverBusy;
        public long ReceiverAllocated;
        public long ReceiverPackets;
        public long Stalls;
        public long KicksSent;
        public long UsedDoorbells;
        public long Retries;
        public long Total;
        public long Bad;
        public long Lost;
        public long Dropped;
    }

    /// <summary>What a loop thread reports about itself, read on that thread.</summary>
    private readonly record struct Reading(long Allocated, long Packets, long Timestamp, long CpuNs, long Stalls, long DoorbellsSent, long Retries);

    /// <summary>CPU time the calling thread has used, in nanoseconds (CLOCK_THREAD_CPUTIME_ID).</summary>
    private static unsafe long ThreadCpuNs()
    {
        long* ts = stackalloc long[2];
        return ClockGetTime(3, ts) == 0 ? (ts[0] * 1_000_000_000) + ts[1] : 0;
    }

    [LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static unsafe partial int ClockGetTime(int clock, long* timespec);

    /// <summary>Takes a <see cref="Reading"/> on a loop thread without allocating there: a
    /// cached action is posted and the caller waits for its flag.</summary>
    private sealed class Sampler
    {
        private readonly EpollEventLoop _loop;
        private readonly Action _post;
        private Reading _value;
        private volatile bool _ready;

        public Sampler(EpollEventLoop loop, Func<Reading> read)
        {
            _loop = loop;
            _post = () =>
            {
                _value = read();
                _ready = true;
            };
        }

        public Reading Take(CancellationToken token)
        {
            _ready = false;
            _loop.Post(_post);
            var clock = Stopwatch.StartNew();
            while (!_ready)
            {
                token.ThrowIfCancellationRequested();
                if (clock.Elapsed > TimeSpan.FromSeconds(10))
                {
                    throw new TimeoutException($"{_loop.Name} did not answer for 10 s");
                }

                Thread.Sleep(1);
            }

            return _value;
        }
    }

    /// <summary>The sending end, all on its loop thread: batches of numbered frames, a flush
    /// per batch, up to <see cref="BatchesPerTurn"/> batches per loop turn (each turn is a
    /// Post: an eventfd write and an epoll_wait, which cost several microseconds on this
    /// machine, so a turn is long); on NoBuffers it waits for SpaceAvailable.</summary>
    private sealed class Sender
    {
        public const int Batch = 32;
        public const int BatchesPerTurn = 32;
        private readonly PacketEndpoint _endpoint;
        private readonly EpollEventLoop _loop;
        private readonly Action _pump;
        private readonly Action _retry;
        private readonly Action _begin;
        private ArraySegment<byte> _frame = ArraySegment<byte>.Empty;
        private bool _scheduled;
        private int _seq;
        private long _sent;
        private long _retries;
        private long _dropped;
        private volatile bool _running;
        private volatile bool _waiting;
        private volatile bool _idle = true;

        public Sender(PacketEndpoint endpoint, EpollEventLoop loop)
        {
            _endpoint = endpoint;
            _loop = loop;
            _pump = Pump;
            _retry = Retry;
            _begin = Begin;
            endpoint.SpaceAvailable = OnSpace;
        }

        public long Sent => Volatile.Read(ref _sent);

        public long Retries => _retries;

        /// <summary>Frames the link refused as malformed (none expected).</summary>
        public long Dropped => Volatile.Read(ref _dropped);

        public bool Waiting => _waiting;

        public bool Idle => _idle;

        /// <summary>On the loop thread: frames of <paramref name="packetBytes"/> from now on.</summary>
        public void Prepare(int packetBytes)
        {
            _frame = AlignedBuffer(VirtioNetHeader.Size + packetBytes); // as a TAP's bounce buffer is
            var packet = _frame.AsSpan(VirtioNetHeader.Size);
            packet[..6].Fill(0xff);
            packet[6..12].Fill(0x02);
            packet[12] = 0x88;
            packet[13] = 0xb5;
            for (int i = 18; i < packet.Length; i++)
            {
                packet[i] = (byte)(i * 31);
            }
        }

        /// <summary>Starts sending (any thread).</summary>
        public void Start()
        {
            _running = true;
            _idle = false;
            _loop.Post(_begin);
        }

        /// <summary>Stops after the current turn (any thread).</summary>
        public void Stop() => _running = false;

        /// <summary>From another thread: the sender waits and nothing came; try again.</summary>
        public void Nudge() => _loop.Post(_retry);

        private void Begin()
        {
            _waiting = false;
            Schedule();
        }

        /// <summary>Posts the pump unless it is posted already (one chain of turns).</summary>
        private void Schedule()
        {
            if (!_scheduled)
            {
                _scheduled = true;
                _loop.Post(_pump);
            }
        }

        private void Pump()
        {
            _scheduled = false;
            if (!_running)
            {
                _idle = true;
                return;
            }

            // The frame and the sequence number live in locals for the turn: what is measured
            // is the packet API, not this loop's field and bounds bookkeeping.
            var frame = _frame.AsSpan();
            var seqField = frame[(VirtioNetHeader.Size + 14)..];
            int seq = _seq;
            for (int b = 0; b < BatchesPerTurn && !_waiting; b++)
            {
                int n = 0;
                for (; n < Batch; n++)
                {
                    BinaryPrimitives.WriteInt32LittleEndian(seqField, seq);
                    frame[^1] = (byte)seq;
                    var result = _endpoint.Send(0, frame);
                    if (result != ReceiveResult.Delivered)
                    {
                        if (result == ReceiveResult.NoBuffers)
                        {
                            _waiting = true;
                            break;
                        }

                        Volatile.Write(ref _dropped, _dropped + 1); // reported; the run fails
                        continue;
                    }

                    seq++;
                }

                _seq = seq;
                Volatile.Write(ref _sent, _sent + n);
                _endpoint.Flush(0);
            }

            if (!_waiting)
            {
                Schedule();
            }
        }

        private void OnSpace(int pair)
        {
            if (_waiting)
            {
                _waiting = false;
                Schedule();
            }
        }

        private void Retry()
        {
            if (_waiting)
            {
                _retries++;
                _waiting = false;
                Schedule();
            }
        }
    }

    /// <summary>How much of each frame the receiver reads to check it.</summary>
    private enum FrameCheck
    {
        /// <summary>Length, sequence number and the last byte: the frame's first and last lines.</summary>
        Full,

        /// <summary>Length and sequence number: the first line, where the headers are.</summary>
        Sequence,

        /// <summary>Length only: none of the frame's bytes.</summary>
        Length,
    }

    /// <summary>The receiving end's FrameArrived: counts and checks each frame (its length,
    /// and as <see cref="FrameCheck"/> says its sequence number and the last byte the sender
    /// stamped with it; a lost frame shows anyway, in the count).</summary>
    private sealed class Receiver(FrameCheck check)
    {
        private volatile int _length;
        private int _expected;
        private long _packets;
        private long _bad;

        public long Packets => Volatile.Read(ref _packets);

        public long Bad => Volatile.Read(ref _bad);

        /// <summary>Frames of this length from now on (set while nothing is in flight).</summary>
        public void Expect(int frameLength) => _length = frameLength;

        public bool OnFrame(int pair, ReadOnlySpan<byte> frame)
        {
            if (check == FrameCheck.Length)
            {
                if (frame.Length != _length)
                {
                    Volatile.Write(ref _bad, _bad + 1);
                }
            }
            else
            {
                int seq = frame.Length >= VirtioNetHeader.Size + 18 ? BinaryPrimitives.ReadInt32LittleEndian(frame[(VirtioNetHeader.Size + 14)..]) : -1;
                if (frame.Length != _length || seq != _expected || (check == FrameCheck.Full && frame[^1] != (byte)seq))
                {
                    Volatile.Write(ref _bad, _bad + 1);
                }

                _expected = seq + 1;
            }

            Volatile.Write(ref _packets, _packets + 1);
            return true;
        }
    }

    /// <summary>Two link ends over one in-process hw-sim device, each on its own loop thread.</summary>
    private sealed class PacketBench : IDisposable
    {
        private readonly bool _poll;
        private readonly HwSimDevice _device;
        private readonly SimNtbHardware _hwA;
        private readonly SimNtbHardware _hwB;
        private readonly EpollEventLoop _loopA;
        private readonly EpollEventLoop _loopB;
        private readonly NtbLink _linkA;
        private readonly NtbLink _linkB;
        private readonly Sender _sender;
        private readonly Receiver _receiver;
        private readonly Sampler _sampleA;
        private readonly Sampler _sampleB;

        /// <param name="oneThread">Both ends on one loop thread (nothing crosses between CPUs).</param>
        public PacketBench(bool poll, FrameCheck check, bool oneThread, TimeSpan linger)
        {
            _poll = poll;
            _loopA = new EpollEventLoop(oneThread ? "lbench" : "lbench-tx");
            _loopB = oneThread ? _loopA : new EpollEventLoop("lbench-rx");
            _receiver = new Receiver(check);
            _device = HwSimDevice.Create(windows: 1, windowSize: WindowSize);
            _hwA = new SimNtbHardware(_device.OpenPort(0));
            _hwB = new SimNtbHardware(_device.OpenPort(1));
            var endA = new PacketEndpoint();
            var endB = new PacketEndpoint { FrameArrived = _receiver.OnFrame };
            _linkA = new NtbLink(_hwA, endA, _loopA, new LinkOptions { Name = "tx", Poll = poll, Linger = linger });
            _linkB = new NtbLink(_hwB, endB, _loopB, new LinkOptions { Name = "rx", Poll = poll, Linger = linger });
            _sender = new Sender(endA, _loopA);
            var statsA = _linkA.Stats;
            var statsB = _linkB.Stats;
            _sampleA = new Sampler(_loopA, () => new Reading(GC.GetAllocatedBytesForCurrentThread(), _sender.Sent, Stopwatch.GetTimestamp(), ThreadCpuNs(), statsA.TxStalls, statsA.DoorbellsSent, _sender.Retries));
            _sampleB = new Sampler(_loopB, () => new Reading(GC.GetAllocatedBytesForCurrentThread(), _receiver.Packets, Stopwatch.GetTimestamp(), ThreadCpuNs(), statsB.RxStalls, statsB.DoorbellsSent, 0));
        }

        /// <summary>Both ends run on one loop thread.</summary>
        private bool OneThread => _loopB == _loopA;

        public void Start(CancellationToken token)
        {
            _loopA.Start();
            if (!OneThread)
            {
                _loopB.Start();
            }

            _loopA.Post(_linkA.Start);
            _loopB.Post(_linkB.Start);
            var clock = Stopwatch.StartNew();
            while (_loopA.Invoke(() => _linkA.State) != LinkState.Up || _loopB.Invoke(() => _linkB.State) != LinkState.Up)
            {
                if (clock.Elapsed > TimeSpan.FromSeconds(15))
                {
                    throw new InvalidOperationException($"the link did not come up: {_loopA.Invoke(() => _linkA.Problem)} / {_loopB.Invoke(() => _linkB.Problem)}");
                }

                token.WaitHandle.WaitOne(20);
                token.ThrowIfCancellationRequested();
            }

            // A first reading on each loop thread outside any measured window: it binds the
            // clock_gettime import, which allocates once (80 B on whichever thread came first).
            _sampleA.Take(token);
            _sampleB.Take(token);
        }

        public PacketRow Measure(int packetBytes, double seconds, CancellationToken token)
        {
            long first = _receiver.Packets;
            long droppedBefore = _sender.Dropped;
            long badBefore = _receiver.Bad;
            _receiver.Expect(VirtioNetHeader.Size + packetBytes);
            _loopA.Invoke(() =>
            {
                _sender.Prepare(packetBytes);
                return 0;
            });
            var remoteA = _hwA.RemoteAccesses;
            var remoteB = _hwB.RemoteAccesses;
            _sender.Start();
            Run(TimeSpan.FromSeconds(0.75), token); // warm-up: JIT tiers, first buffers
            var a0 = _sampleA.Take(token);
            var b0 = _sampleB.Take(token);
            Run(TimeSpan.FromSeconds(seconds), token);
            var b1 = _sampleB.Take(token);
            var a1 = _sampleA.Take(token);
            _sender.Stop();
            var clock = Stopwatch.StartNew();
            while (!_sender.Idle && !_sender.Waiting && clock.Elapsed < TimeSpan.FromSeconds(10))
            {
                token.WaitHandle.WaitOne(5);
                token.ThrowIfCancellationRequested();
            }

            // Everything sent is on the link: it all arrives.
            long sentTotal = _sender.Sent;
            clock.Restart();
            while (_receiver.Packets < sentTotal && clock.Elapsed < TimeSpan.FromSeconds(10))
            {
                token.WaitHandle.WaitOne(5);
                token.ThrowIfCancellationRequested();
            }

            return new PacketRow
            {
                Size = packetBytes,
                Poll = _poll,
                OneThread = OneThread,
                PerSecond = (b1.Packets - b0.Packets) / Stopwatch.GetElapsedTime(b0.Timestamp, b1.Timestamp).TotalSeconds,
                SenderReads = _hwA.RemoteAccesses.Since(remoteA).Reads,
                ReceiverReads = _hwB.RemoteAccesses.Since(remoteB).Reads,
                SenderAllocated = a1.Allocated - a0.Allocated,
                SenderPackets = a1.Packets - a0.Packets,
                SenderCpuNs = (double)(a1.CpuNs - a0.CpuNs) / Math.Max(1, a1.Packets - a0.Packets),
                ReceiverCpuNs = (double)(b1.CpuNs - b0.CpuNs) / Math.Max(1, b1.Packets - b0.Packets),
                SenderBusy = (a1.CpuNs - a0.CpuNs) / Stopwatch.GetElapsedTime(a0.Timestamp, a1.Timestamp).TotalNanoseconds,
                ReceiverBusy = (b1.CpuNs - b0.CpuNs) / Stopwatch.GetElapsedTime(b0.Timestamp, b1.Timestamp).TotalNanoseconds,
                ReceiverAllocated = b1.Allocated - b0.Allocated,
                ReceiverPackets = b1.Packets - b0.Packets,
                Stalls = a1.Stalls - a0.Stalls,
                KicksSent = a1.DoorbellsSent - a0.DoorbellsSent,
                UsedDoorbells = b1.DoorbellsSent - b0.DoorbellsSent,
                Retries = a1.Retries - a0.Retries,
                Total = _receiver.Packets - first,
                Bad = _receiver.Bad - badBefore,
                Lost = sentTotal - _receiver.Packets,
                Dropped = _sender.Dropped - droppedBefore,
            };
        }

        public void Dispose()
        {
            _sender.Stop();
            foreach (var (loop, link) in new[] { (_loopA, _linkA), (_loopB, _linkB) })
            {
                if (loop.IsRunning)
                {
                    loop.Invoke(() =>
                    {
                        link.Dispose();
                        return 0;
                    });
                }
            }

            foreach (var loop in new[] { _loopA, _loopB }.Distinct())
            {
                loop.Stop(10_000);
                loop.Dispose();
            }

            _hwA.Dispose();
            _hwB.Dispose();
            _device.Dispose();
        }

        /// <summary>Lets the sender run for <paramref name="span"/>, retrying a sender that
        /// has waited for space for 100 ms without a SpaceAvailable call (counted: a lost
        /// wake-up would show there, or a peer thread the neighbours kept off the CPU).</summary>
        private void Run(TimeSpan span, CancellationToken token)
        {
            var clock = Stopwatch.StartNew();
            long last = _sender.Sent;
            var movedAt = clock.Elapsed;
            while (clock.Elapsed < span)
            {
                token.WaitHandle.WaitOne(20);
                token.ThrowIfCancellationRequested();
                long now = _sender.Sent;
                if (now != last)
                {
                    last = now;
                    movedAt = clock.Elapsed;
                }
                else if (_sender.Waiting && clock.Elapsed - movedAt > TimeSpan.FromMilliseconds(100))
                {
                    _sender.Nudge();
                    movedAt = clock.Elapsed;
                }
            }
        }
    }

    // ---- 2. TAP to TAP over pcivirtio link processes, against veth ----

    private sealed record TcpResult(double LinkGbps, double VethGbps);

    private static string Microseconds(TimeSpan t) => ((int)t.TotalMicroseconds).ToString(CultureInfo.InvariantCulture);

    private static async Task<TcpResult?> RunTcpAsync(double seconds, TimeSpan linger, CancellationToken token)
    {
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"TCP between two network namespaces (iperf3, one stream, {seconds:0.#} s after 1 s omitted, MTU 1500): two `pcivirtio link` processes over `pcivirtio-hwsim serve` (TAP to TAP) against a veth pair"));
        Console.WriteLine();
        string? missing = Tmds.Linux.LibC.geteuid() != 0 ? "not root"
            : !File.Exists("/dev/net/tun") ? "no /dev/net/tun"
            : Which("ip") is null ? "ip (iproute2) is not installed"
            : Which("iperf3") is null ? "iperf3 is not installed (apt-get install -y iperf3)"
            : null;
        string hwsim = Path.Combine(AppContext.BaseDirectory, "pcivirtio-hwsim.dll");
        string pcivirtio = Path.Combine(AppContext.BaseDirectory, "pcivirtio.dll");
        missing ??= !File.Exists(hwsim) ? $"{hwsim} is missing (build the solution)" : !File.Exists(pcivirtio) ? $"{pcivirtio} is missing" : null;
        if (missing is not null)
        {
            Console.WriteLine($"skipped: {missing}; this part needs root, /dev/net/tun, ip and iperf3");
            return null;
        }

        string tag = Environment.ProcessId.ToString(CultureInfo.InvariantCulture);
        double link, veth;
        try
        {
            using (var scope = new Scope())
            {
                Console.Error.WriteLine("link benchmark: TAP to TAP over pcivirtio link");
                link = await TapToTapAsync(scope, tag, hwsim, pcivirtio, seconds, linger, token);
            }

            using (var scope = new Scope())
            {
                Console.Error.WriteLine("link benchmark: veth");
                veth = await VethAsync(scope, tag, seconds, token);
            }
        }
        catch (Exception e) when (e is InvalidOperationException or TimeoutException or JsonException or KeyNotFoundException)
        {
            // Everything it started is gone already (the scopes are disposed on the way out).
            Console.WriteLine($"failed: {e.Message}");
            return null;
        }

        Console.WriteLine("| path | TCP Gbit/s |");
        Console.WriteLine("|---|---|");
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| TAP to TAP over `pcivirtio link` + hw-sim | {link:0.00} |"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| veth pair | {veth:0.00} |"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| ratio (link / veth) | {link / veth:0.00}x |"));
        return new TcpResult(link, veth);
    }

    private static async Task<double> TapToTapAsync(Scope scope, string tag, string hwsim, string pcivirtio, double seconds, TimeSpan linger, CancellationToken token)
    {
        string socket = Path.Combine(Path.GetTempPath(), $"pcv-lbench-{tag}.sock");
        scope.AddFile(socket);
        var server = scope.Start("dotnet", hwsim, "serve", "--socket", socket, "--windows", "1", "--window-size", WindowSize.ToString(CultureInfo.InvariantCulture));
        var clock = Stopwatch.StartNew();
        while (!File.Exists(socket))
        {
            if (server.HasExited || clock.Elapsed > TimeSpan.FromSeconds(30))
            {
                throw new InvalidOperationException($"pcivirtio-hwsim serve did not start: {server.Tail}");
            }

            await Task.Delay(50, token);
        }

        string nsA = $"pcv-lb-a-{tag}", nsB = $"pcv-lb-b-{tag}";
        await scope.AddNamespaceAsync(nsA, token);
        await scope.AddNamespaceAsync(nsB, token);
        var ends = new[]
        {
            scope.Start("ip", "netns", "exec", nsA, "dotnet", pcivirtio, "link", "--hw", $"hw-sim:{socket}#0", "--tap", "lk0", "--address", "10.231.0.1/24", "--stats", "1", "--linger", Microseconds(linger)),
            scope.Start("ip", "netns", "exec", nsB, "dotnet", pcivirtio, "link", "--hw", $"hw-sim:{socket}#1", "--tap", "lk0", "--address", "10.231.0.2/24", "--stats", "1", "--linger", Microseconds(linger)),
        };
        clock.Restart();
        while (!ends.All(e => e.Saw("link Up")))
        {
            var gone = ends.FirstOrDefault(e => e.HasExited);
            if (gone is not null || clock.Elapsed > TimeSpan.FromSeconds(30))
            {
                throw new InvalidOperationException($"the link did not come up: {string.Join(" / ", ends.Select(e => e.Tail))}");
            }

            await Task.Delay(50, token);
        }

        double gbps = await IperfAsync(scope, nsB, nsA, "10.231.0.2", seconds, token);
        foreach (var e in ends)
        {
            Scope.Stop(e);
        }

        Scope.Stop(server);
        return gbps;
    }

    private static async Task<double> VethAsync(Scope scope, string tag, double seconds, CancellationToken token)
    {
        string nsA = $"pcv-lb-va-{tag}", nsB = $"pcv-lb-vb-{tag}";
        await scope.AddNamespaceAsync(nsA, token);
        await scope.AddNamespaceAsync(nsB, token);
        await Scope.IpAsync(token, "-n", nsA, "link", "add", "lbv0", "type", "veth", "peer", "name", "lbv1", "netns", nsB);
        foreach (var (ns, dev, address) in new[] { (nsA, "lbv0", "10.232.0.1/24"), (nsB, "lbv1", "10.232.0.2/24") })
        {
            await Scope.IpAsync(token, "-n", ns, "addr", "add", address, "dev", dev);
            await Scope.IpAsync(token, "-n", ns, "link", "set", dev, "up");
        }

        return await IperfAsync(scope, nsB, nsA, "10.232.0.2", seconds, token);
    }

    /// <summary>One iperf3 TCP run from <paramref name="clientNs"/> to a one-off server in
    /// <paramref name="serverNs"/>; the receiver's Gbit/s.</summary>
    private static async Task<double> IperfAsync(Scope scope, string serverNs, string clientNs, string address, double seconds, CancellationToken token)
    {
        var server = scope.Start("ip", "netns", "exec", serverNs, "iperf3", "-s", "-1");
        string secs = Math.Max(1, (int)Math.Round(seconds)).ToString(CultureInfo.InvariantCulture);
        for (int attempt = 0; ; attempt++)
        {
            await Task.Delay(300, token);
            var client = scope.Start("ip", "netns", "exec", clientNs, "iperf3", "-c", address, "-t", secs, "-O", "1", "-J");
            await client.WaitForExitAsync(TimeSpan.FromSeconds(seconds + 30), token);
            string json = client.Output;
            if (client.ExitCode == 0)
            {
                using var doc = JsonDocument.Parse(json);
                Scope.Stop(server);
                return doc.RootElement.GetProperty("end").GetProperty("sum_received").GetProperty("bits_per_second").GetDouble() / 1e9;
            }

            if (attempt >= 10 || server.HasExited)
            {
                throw new InvalidOperationException($"iperf3 to {address} failed: {json.Trim()} {client.Tail}");
            }
        }
    }

    private static string? Which(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").Split(':').Select(d => Path.Combine(d, program)).FirstOrDefault(File.Exists);

    /// <summary>A process we started, with its output collected.</summary>
    private sealed class Child : IDisposable
    {
        private readonly Process _process;
        private readonly System.Text.StringBuilder _output = new();
        private readonly Queue<string> _tail = new();
        private readonly Lock _gate = new();

        public Child(Process process)
        {
            _process = process;
            process.OutputDataReceived += (_, e) => Take(e.Data, stdout: true);
            process.ErrorDataReceived += (_, e) => Take(e.Data, stdout: false);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
        }

        public int Pid => _process.Id;

        public bool HasExited => _process.HasExited;

        public int ExitCode => _process.ExitCode;

        /// <summary>Its standard output so far.</summary>
        public string Output
        {
            get
            {
                lock (_gate)
                {
                    return _output.ToString();
                }
            }
        }

        /// <summary>Its last lines (both streams), for an error message.</summary>
        public string Tail
        {
            get
            {
                lock (_gate)
                {
                    return string.Join(" | ", _tail);
                }
            }
        }

        public bool Saw(string start)
        {
            lock (_gate)
            {
                return _tail.Any(l => l.StartsWith(start, StringComparison.Ordinal));
            }
        }

        public async Task WaitForExitAsync(TimeSpan limit, CancellationToken token)
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(token);
            timeout.CancelAfter(limit);
            try
            {
                await _process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException) when (!token.IsCancellationRequested)
            {
                throw new TimeoutException($"{_process.StartInfo.FileName} (pid {Pid}) did not finish in {limit.TotalSeconds:0} s: {Tail}");
            }

            _process.WaitForExit(); // the output streams are drained
        }

        /// <summary>SIGTERM (every program here stops cleanly on it; SIGINT may be ignored
        /// by a process started in the background).</summary>
        public void Terminate()
        {
            if (!_process.HasExited)
            {
                _ = Tmds.Linux.LibC.kill(_process.Id, Tmds.Linux.LibC.SIGTERM);
            }
        }

        /// <summary>Waits until <paramref name="deadline"/> for it to end, then SIGKILL.</summary>
        public void WaitOrKill(DateTime deadline)
        {
            var left = deadline - DateTime.UtcNow;
            if (!_process.WaitForExit(left > TimeSpan.Zero ? left : TimeSpan.Zero))
            {
                _process.Kill();
                _process.WaitForExit(5_000);
            }
        }

        /// <summary>SIGTERM, then SIGKILL after <paramref name="grace"/>.</summary>
        public void Stop(TimeSpan grace)
        {
            Terminate();
            WaitOrKill(DateTime.UtcNow + grace);
        }

        public void Dispose() => _process.Dispose();

        private void Take(string? line, bool stdout)
        {
            if (line is null)
            {
                return;
            }

            lock (_gate)
            {
                if (stdout)
                {
                    _output.AppendLine(line);
                }

                _tail.Enqueue(line);
                if (_tail.Count > 12)
                {
                    _tail.Dequeue();
                }
            }
        }
    }

    /// <summary>What one part of the TCP measurement started: processes (stopped by PID,
    /// newest first), network namespaces and files, all removed at the end, whatever happened.</summary>
    private sealed class Scope : IDisposable
    {
        private readonly List<Child> _children = [];
        private readonly List<string> _namespaces = [];
        private readonly List<string> _files = [];
        private bool _disposed;

        public Child Start(string program, params string[] args)
        {
            var psi = new ProcessStartInfo(program)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                RedirectStandardInput = true,
                UseShellExecute = false,
            };
            foreach (string a in args)
            {
                psi.ArgumentList.Add(a);
            }

            var child = new Child(Process.Start(psi) ?? throw new InvalidOperationException($"could not start {program}"));
            _children.Add(child);
            return child;
        }

        public async Task AddNamespaceAsync(string name, CancellationToken token)
        {
            await IpAsync(token, "netns", "add", name);
            _namespaces.Add(name);
        }

        public void AddFile(string path) => _files.Add(path);

        public static void Stop(Child child) => child.Stop(TimeSpan.FromSeconds(5));

        public void Dispose()
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;

            // All at once, so a cleanup after Ctrl-C takes one grace period at most.
            foreach (var child in _children)
            {
                child.Terminate();
            }

            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
            foreach (var child in _children)
            {
                try
                {
                    child.WaitOrKill(deadline);
                }
                catch (InvalidOperationException)
                {
                    // it is gone already
                }

                child.Dispose();
            }

            foreach (string ns in _namespaces)
            {
                try
                {
                    IpAsync(CancellationToken.None, "netns", "delete", ns).GetAwaiter().GetResult();
                }
                catch (InvalidOperationException e)
                {
                    Console.Error.WriteLine($"link benchmark: {e.Message}");
                }
            }

            foreach (string file in _files)
            {
                File.Delete(file);
            }
        }

        public static async Task IpAsync(CancellationToken token, params string[] args)
        {
            var psi = new ProcessStartInfo("ip") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (string a in args)
            {
                psi.ArgumentList.Add(a);
            }

            using var ip = Process.Start(psi) ?? throw new InvalidOperationException("could not run ip");
            var error = ip.StandardError.ReadToEndAsync(CancellationToken.None);
            _ = ip.StandardOutput.ReadToEndAsync(CancellationToken.None);
            await ip.WaitForExitAsync(CancellationToken.None);
            if (ip.ExitCode != 0)
            {
                throw new InvalidOperationException($"ip {string.Join(' ', args)}: {(await error).Trim()}");
            }

            token.ThrowIfCancellationRequested();
        }
    }

    // ---- the targets of the issue ----

    private static void PrintTargets(List<PacketRow> rows, FrameCheck check, TcpResult? tcp)
    {
        static string Verdict(bool met) => met ? "met" : "NOT met";
        Console.WriteLine("targets:");
        var single = rows.Where(r => r.OneThread).ToList();
        rows = [.. rows.Where(r => !r.OneThread)]; // the targets are about two hosts: two threads
        var mtu = rows.Where(r => r.Size == 1500).ToList();
        if (mtu.Count == 0)
        {
            Console.WriteLine("- packet API >= 0.5x the copy limit at 1500 B: not measured (1500 not in --sizes)");
        }

        foreach (var r in mtu)
        {
            double ratio = r.PerSecond / r.CopyPerSecond;

            // What two threads can do at all on this machine in this run, and with --one-thread
            // the link's own cost, beside the verdict.
            var alone = single.FirstOrDefault(o => o.Size == r.Size && o.Poll == r.Poll);
            string aloneText = alone is null ? "" : string.Create(CultureInfo.InvariantCulture, $"; both ends on one thread: {alone.PerSecond / alone.CopyPerSecond:0.000}x");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"- packet API >= 0.5x the copy limit at 1500 B ({ModeName(r.Poll)}, --check {check.ToString().ToLowerInvariant()}): {ratio:0.000}x, {Verdict(ratio >= 0.5)} (the bare two-thread ring: {r.RingPerSecond / r.CopyPerSecond:0.000}x; CPU line round trip {r.LineBefore:0}-{r.LineAfter:0} ns around the link, {r.RingLineBefore:0}-{r.RingLineAfter:0} around the ring{aloneText})"));
        }

        Console.WriteLine(tcp is null
            ? "- TAP-to-TAP TCP >= 0.5x veth: not measured"
            : string.Create(CultureInfo.InvariantCulture, $"- TAP-to-TAP TCP >= 0.5x veth: {tcp.LinkGbps / tcp.VethGbps:0.00}x, {Verdict(tcp.LinkGbps / tcp.VethGbps >= 0.5)}"));
        long reads = rows.Sum(r => r.SenderReads + r.ReceiverReads);
        Console.WriteLine($"- 0 remote reads: {reads}, {Verdict(reads == 0)}");
        foreach (var group in rows.GroupBy(r => r.Poll))
        {
            long allocated = group.Sum(r => r.SenderAllocated + r.ReceiverAllocated);
            Console.WriteLine($"- 0 bytes allocated per packet after warm-up, both loop threads ({ModeName(group.Key)}): {allocated} B in all, {Verdict(allocated == 0)}");
        }
    }
}
