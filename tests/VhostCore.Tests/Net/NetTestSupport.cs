using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Net;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.VhostUser;

namespace PciVirtio.VhostCore.Tests.Net;

/// <summary>A data-plane event source the test drives by hand: kicks are delivered when the
/// test says so, deferred work runs when the test pumps, calls are counted.</summary>
public sealed class ManualEvents : IDataPlaneEvents
{
    private readonly Dictionary<nint, Action> _kicks = [];
    private readonly Queue<Action> _deferred = new();
    private readonly Dictionary<nint, int> _signals = [];

    public IDisposable WatchKick(SafeHandle kick, Action onKick)
    {
        nint key = kick.DangerousGetHandle();
        Assert.False(_kicks.ContainsKey(key), "kick watched twice");
        _kicks[key] = onKick;
        return new Unwatch(() => _kicks.Remove(key));
    }

    public void Signal(SafeHandle call)
    {
        nint key = call.DangerousGetHandle();
        _signals[key] = Signals(call) + 1;
    }

    public void Defer(Action action) => _deferred.Enqueue(action);

    public bool Polling { get; init; }

    public List<Func<bool>> Pollers { get; } = [];

    public IDisposable AddPoller(Func<bool> poll)
    {
        Pollers.Add(poll);
        return new Unwatch(() => Pollers.Remove(poll));
    }

    /// <summary>One turn of every poller, then deferred work.</summary>
    public bool PollOnce()
    {
        bool any = false;
        foreach (var p in Pollers.ToArray())
        {
            any |= p();
        }

        Pump();
        return any;
    }

    public int Signals(SafeHandle call) => _signals.GetValueOrDefault(call.DangerousGetHandle());

    public bool IsWatched(SafeHandle kick) => _kicks.ContainsKey(kick.DangerousGetHandle());

    /// <summary>Delivers a kick (if the device watches it) and runs deferred work.</summary>
    public void Kick(SafeHandle kick)
    {
        if (_kicks.TryGetValue(kick.DangerousGetHandle(), out var action))
        {
            action();
        }

        Pump();
    }

    /// <summary>Runs deferred work until none is left (bounded: a device that defers forever fails).</summary>
    public int Pump()
    {
        int ran = 0;
        while (_deferred.TryDequeue(out var action))
        {
            Assert.True(++ran < 100_000, "deferred work never ends");
            action();
        }

        return ran;
    }

    private sealed class Unwatch(Action action) : IDisposable
    {
        public void Dispose() => action();
    }
}

/// <summary>A backend that records what the device sends and can refuse (full) on demand.</summary>
public sealed class RecordingBackend(VirtioNetFeatures offloads = VirtioNetFeatures.None, int maxPairs = 8) : INetBackend
{
    public List<(int Pair, byte[] Frame)> Sent { get; } = [];

    public Dictionary<int, INetPort> Ports { get; } = [];

    public List<int> SpaceAvailable { get; } = [];

    public int Batches { get; private set; }

    public VirtioNetFeatures Negotiated { get; private set; }

    /// <summary>Answer Full to sends while set.</summary>
    public bool Full { get; set; }

    public SendResult NextResult { get; set; } = SendResult.Sent;

    public VirtioNetFeatures Offloads => offloads;

    public int MaxQueuePairs => maxPairs;

    public void Attach(INetPort port) => Ports[port.PairIndex] = port;

    public void Detach(int pair) => Ports.Remove(pair);

    public unsafe SendResult Send(int pair, ReadOnlySpan<IoSegment> frame, int length)
    {
        if (Full)
        {
            return SendResult.Full;
        }

        var bytes = new byte[length];
        int at = 0;
        foreach (var s in frame)
        {
            new ReadOnlySpan<byte>((void*)s.Host, (int)s.Length).CopyTo(bytes.AsSpan(at));
            at += (int)s.Length;
        }

        Assert.Equal(length, at);
        if (NextResult == SendResult.Sent)
        {
            Sent.Add((pair, bytes));
        }

        return NextResult;
    }

    public void EndOfBatch(int pair) => Batches++;

    public void ReceiveSpaceAvailable(int pair) => SpaceAvailable.Add(pair);

    public void FeaturesNegotiated(VirtioNetFeatures features) => Negotiated = features;
}

/// <summary>Pinned bytes a test hands to <see cref="INetPort.Receive"/>.</summary>
public sealed class PinnedFrame
{
    private readonly byte[] _bytes;

    public PinnedFrame(ReadOnlySpan<byte> frame)
    {
        _bytes = GC.AllocateArray<byte>(frame.Length, pinned: true);
        frame.CopyTo(_bytes);
    }

    public int Length => _bytes.Length;

    /// <summary>The frame as <paramref name="pieces"/> segments of about equal size.</summary>
    public IoSegment[] Segments(int pieces = 1)
    {
        var result = new List<IoSegment>();
        int at = 0;
        int step = Math.Max(1, (_bytes.Length + pieces - 1) / pieces);
        while (at < _bytes.Length)
        {
            int n = Math.Min(step, _bytes.Length - at);
            result.Add(new IoSegment(Marshal.UnsafeAddrOfPinnedArrayElement(_bytes, at), (uint)n, 0));
            at += n;
        }

        return [.. result];
    }
}

/// <summary>
/// A guest for a <see cref="VhostUserNetDevice"/>: one block of guest memory, our split-ring
/// driver on each queue (rx 2N, tx 2N+1, ctrl last), a bump allocator for buffers, and
/// fake kick/call handles watched through <see cref="ManualEvents"/>.
/// </summary>
public sealed class TestNetGuest : IDisposable
{
    public const ulong GuestBase = 0x4000_0000;
    private const ulong RingStride = 0x10000;
    private const ulong DataStart = 0x100000;
    private readonly NativeMemoryBlock _block;
    private readonly SafeHandle[] _kicks;
    private readonly SafeHandle[] _calls;
    private static int s_handleBase;
    private ulong _next = DataStart;

    public TestNetGuest(VhostUserNetDevice device, ManualEvents events, ulong features, int queueSize = 256, ulong memorySize = 32 << 20)
    {
        Device = device;
        Events = events;
        Features = features;
        _block = new NativeMemoryBlock(memorySize);
        Table = MemoryTable.Create(_block.Region(GuestBase));
        Memory = new GuestMemory<RamAccessor>(Table, default);
        int queues = device.QueueCount;
        int handles = Interlocked.Add(ref s_handleBase, 1000) * 2; // distinct fake fds per guest
        Drivers = new SplitQueueDriver<RamAccessor>[queues];
        States = new QueueState[queues];
        _kicks = new SafeHandle[queues];
        _calls = new SafeHandle[queues];
        for (int q = 0; q < queues; q++)
        {
            States[q] = QueueState.AtBase(queueSize, GuestBase + ((ulong)(q + 1) * RingStride), (VirtioFeatures)features);
            Drivers[q] = new SplitQueueDriver<RamAccessor>($"guest-q{q}");
            _kicks[q] = new SafeFileHandle(handles + q, ownsHandle: false);
            _calls[q] = new SafeFileHandle(handles + 500 + q, ownsHandle: false);
        }

        device.OnFeatures(features);
    }

    public VhostUserNetDevice Device { get; }

    public ManualEvents Events { get; }

    public ulong Features { get; }

    public MemoryTable Table { get; }

    public GuestMemory<RamAccessor> Memory { get; }

    public SplitQueueDriver<RamAccessor>[] Drivers { get; }

    public QueueState[] States { get; }

    public int HeaderSize => VirtioNetHeader.SizeFor(Features);

    public SafeHandle KickOf(int queue) => _kicks[queue];

    public SafeHandle CallOf(int queue) => _calls[queue];

    public static int Rx(int pair) => 2 * pair;

    public static int Tx(int pair) => (2 * pair) + 1;

    /// <summary>Starts the driver and the device side of <paramref name="queue"/>.</summary>
    public void Start(int queue)
    {
        Assert.True(Drivers[queue].Start(States[queue], Memory), Drivers[queue].BrokenReason);
        Assert.True(Device.StartQueue(queue, States[queue] with { NextAvail = Drivers[queue].State.NextAvail }, Memory, _kicks[queue], _calls[queue]));
        Events.Pump();
    }

    public void StartAll()
    {
        for (int q = 0; q < Drivers.Length; q++)
        {
            Start(q);
        }
    }

    public ulong Alloc(int size)
    {
        ulong at = GuestBase + _next;
        _next += (ulong)((size + 63) & ~63);
        Assert.True(_next <= _block.Size, "test guest memory exhausted");
        return at;
    }

    public void Write(ulong guestAddr, ReadOnlySpan<byte> data) => Assert.True(Memory.TryWrite(guestAddr, data));

    public byte[] Read(ulong guestAddr, int length)
    {
        var b = new byte[length];
        Assert.True(Memory.TryRead(guestAddr, b));
        return b;
    }

    /// <summary>Queues one frame for transmission: the driver's header (all zero unless
    /// given) then the packet, cut at <paramref name="cuts"/> (offsets into header+packet)
    /// into separate descriptors. Does not kick.</summary>
    public void AddTx(int pair, ReadOnlySpan<byte> packet, byte[]? header = null, params int[] cuts)
    {
        var whole = new byte[HeaderSize + packet.Length];
        header?.AsSpan(0, HeaderSize).CopyTo(whole);
        packet.CopyTo(whole.AsSpan(HeaderSize));
        var pieces = new List<GuestBuffer>();
        int at = 0;
        foreach (int cut in cuts.Append(whole.Length))
        {
            int n = cut - at;
            ulong addr = Alloc(n);
            Write(addr, whole.AsSpan(at, n));
            pieces.Add(new GuestBuffer(addr, (uint)n));
            at = cut;
        }

        Assert.True(Drivers[Tx(pair)].TryAdd([.. pieces], [], pieces[0].Address));
        Drivers[Tx(pair)].Publish();
    }

    /// <summary>Posts <paramref name="count"/> receive buffers of <paramref name="size"/> bytes. Does not kick.</summary>
    public void PostRx(int pair, int count, int size)
    {
        for (int i = 0; i < count; i++)
        {
            ulong addr = Alloc(size);
            Assert.True(Drivers[Rx(pair)].TryAdd([], [new GuestBuffer(addr, (uint)size)], addr));
        }

        Drivers[Rx(pair)].Publish();
    }

    /// <summary>Posts one receive chain of the given buffers (in that order) and kicks.</summary>
    public void PostRxChain(int pair, params GuestBuffer[] writable)
    {
        Assert.True(Drivers[Rx(pair)].TryAdd([], writable, writable[0].Address));
        Drivers[Rx(pair)].Publish();
        Kick(Rx(pair));
    }

    public void Kick(int queue) => Events.Kick(_kicks[queue]);

    /// <summary>Reaps the receive queue and reassembles frames (header + packet as the driver
    /// sees them) by num_buffers (1 without MRG_RXBUF).</summary>
    public List<byte[]> ReapRx(int pair)
    {
        var used = new UsedBuffer[512];
        int n = Drivers[Rx(pair)].Reap(used);
        Assert.False(Drivers[Rx(pair)].IsBroken, Drivers[Rx(pair)].BrokenReason);
        var frames = new List<byte[]>();
        bool mergeable = (Features & (ulong)VirtioNetFeatures.MrgRxbuf) != 0;
        int i = 0;
        while (i < n)
        {
            var first = Read(used[i].Token, (int)used[i].Length);
            int buffers = mergeable ? BinaryPrimitives.ReadUInt16LittleEndian(first.AsSpan(VirtioNetHeader.NumBuffersOffset)) : 1;
            Assert.InRange(buffers, 1, n - i);
            var frame = new List<byte>(first);
            for (int b = 1; b < buffers; b++)
            {
                frame.AddRange(Read(used[i + b].Token, (int)used[i + b].Length));
            }

            frames.Add([.. frame]);
            i += buffers;
        }

        return frames;
    }

    /// <summary>Reaps the transmit queue: how many chains came back.</summary>
    public int ReapTx(int pair)
    {
        var used = new UsedBuffer[512];
        int n = Drivers[Tx(pair)].Reap(used);
        Assert.False(Drivers[Tx(pair)].IsBroken, Drivers[Tx(pair)].BrokenReason);
        return n;
    }

    public void Dispose() => _block.Dispose();
}

/// <summary>Frames for tests.</summary>
public static class TestFrames
{
    /// <summary>An Ethernet frame of <paramref name="length"/> bytes whose payload carries
    /// <paramref name="seq"/> and a byte pattern derived from it.</summary>
    public static byte[] Packet(int length, int seq)
    {
        var p = new byte[length];
        p.AsSpan(0, 6).Fill(0x02);
        p.AsSpan(6, 6).Fill(0x04);
        p[12] = 0x88;
        p[13] = 0xb5; // local experimental ethertype
        BinaryPrimitives.WriteInt32LittleEndian(p.AsSpan(14), seq);
        for (int i = 18; i < length; i++)
        {
            p[i] = (byte)(i * 7 + seq);
        }

        return p;
    }

    /// <summary><paramref name="packet"/> behind a 12-byte virtio_net_hdr_v1.</summary>
    public static byte[] WithHeader(byte[] packet, byte flags = 0, byte gsoType = 0)
    {
        var f = new byte[VirtioNetHeader.Size + packet.Length];
        f[0] = flags;
        f[1] = gsoType;
        packet.CopyTo(f.AsSpan(VirtioNetHeader.Size));
        return f;
    }
}
