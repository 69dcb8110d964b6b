using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using PciVirtio.Bridge.Hardware;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Net;
using PciVirtio.VhostCore.Ring;

namespace PciVirtio.Bridge.Link;

/// <summary>
/// One queue pair of the link: our transmit ring, where we are the virtio driver (its
/// descriptors, avail ring and the frames in the peer's window, its used ring in ours), and
/// our receive ring, where we are the device (descriptors, avail ring and frames in our
/// window, used ring in the peer's). Nothing on this path reads the peer's window. Towards
/// the backend (the TAP) it is an <see cref="INetPort"/>: frames the backend delivers are
/// sent across; frames that arrive are handed to the backend's Send.
/// </summary>
internal sealed class LinkQueuePair : INetPort
{
    private const int Batch = 32;
    private readonly INtbHardware _hardware;
    private readonly INetBackend _backend;
    private readonly ILogger? _logger;
    private readonly TransmitBufferRing _buffers;
    private readonly LinkStats _stats;
    private readonly GuestMemory<NtbMemoryAccessor> _txMemory;
    private readonly QueueState _state;
    private readonly ulong _txBufferBase;
    private nint _txBufferHost;
    private readonly NtbMemoryAccessor _txAccess; // the copy is made by the field itself, not a copy of it
    private readonly DescriptorChain[] _chains = new DescriptorChain[Batch];
    private readonly IoSegment[] _segments = new IoSegment[1024];
    private readonly UsedBuffer[] _used = new UsedBuffer[Batch];

    // LinkFeatures.InOrder: frames are one descriptor each, in ring order, returned by one
    // used element per batch (docs/link-protocol.md). Popped frames wait here.
    private readonly bool _inOrder;
    private readonly ushort[] _heads = new ushort[Batch];
    private readonly IoSegment[] _frames = new IoSegment[Batch];
    private readonly ulong _publishEvery;
    private ulong _unpublished; // bytes sent since the last publish
    private long _unpublishedFrames; // frames sent since the last publish
    private readonly GuestMemory<NtbMemoryAccessor> _rxMemory;
    private int _next;
    private int _count;
    private bool _backendFull;
    private bool _senderWaiting;

    // The linger (LinkOptions.Linger): a dry receive ring is looked at again on each turn of
    // the loop for this long before the peer is asked for a kick.
    private readonly Action<Action> _post;
    private readonly TimeProvider _clock;
    private readonly long _lingerTicks;
    private readonly Action _linger;
    private bool _dry;
    private long _dryAt;
    private bool _lingerPosted;

    // The same linger on the transmit side: a sender out of space looks at the used ring.
    private readonly Action _txLinger;
    private long _stallAt;
    private bool _txLingerPosted;

    /// <param name="post">Runs an action on the link's loop thread after the current one
    /// (from that thread: no system call); the lingers reschedule themselves with it.</param>
    /// <param name="linger">How long a dry receive ring, or a transmit ring out of space, is
    /// watched before the peer is asked for a doorbell; zero asks at once.</param>
    /// <param name="clock">What <paramref name="linger"/> is measured by.</param>
    public LinkQueuePair(int pair, INtbHardware hardware, LinkLayout layout, LinkParameters agreed, GuestMemory<NtbMemoryAccessor> txMemory,
        GuestMemory<NtbMemoryAccessor> rxMemory, INetBackend backend, LinkStats stats, ILogger? logger, Action<Action> post, TimeSpan linger, TimeProvider clock)
    {
        PairIndex = pair;
        _post = post;
        _clock = clock;
        _lingerTicks = (long)(linger.TotalSeconds * clock.TimestampFrequency);
        _linger = Linger;
        _txLinger = TxLinger;
        _hardware = hardware;
        _backend = backend;
        _logger = logger;
        _stats = stats;
        _txMemory = txMemory;
        _txAccess = txMemory.Access;
        _rxMemory = rxMemory;
        var q = layout[pair];
        _inOrder = (agreed.Features & LinkFeatures.InOrder) != 0;
        var features = VirtioFeatures.Version1
            | ((agreed.Features & LinkFeatures.EventIdx) != 0 ? VirtioFeatures.RingEventIdx : 0)
            | (_inOrder ? VirtioFeatures.InOrder : 0);

        // Same offsets in both windows, so both rings have one state: for what we send the
        // peer's window is at link address 0 (the receiver's memory) and ours at SenderBase;
        // for what we receive it is the other way, which the two memory tables express.
        _state = new QueueState
        {
            Size = agreed.QueueSize, DescTable = q.RxDesc, AvailRing = q.RxAvail, UsedRing = LinkAddresses.SenderBase + q.TxUsed, Features = features,
        };
        _txBufferBase = q.RxBuffers;
        _buffers = new TransmitBufferRing(q.RxBufferBytes, agreed.QueueSize);
        _publishEvery = Math.Max(1, q.RxBufferBytes / 4);
        MaxFrame = (int)Math.Min((ulong)(VirtioNetHeader.Size + agreed.Mtu + 18), q.RxBufferBytes / 2);
        Tx = new SplitQueueDriver<NtbMemoryAccessor>($"{hardware.Name}/tx{pair}", logger);
        Rx = new SplitQueueDevice<NtbMemoryAccessor>($"{hardware.Name}/rx{pair}", ChainErrorPolicy.BreakQueue, logger);
    }

    public int PairIndex { get; }

    public int MaxFrame { get; }

    public SplitQueueDriver<NtbMemoryAccessor> Tx { get; }

    public SplitQueueDevice<NtbMemoryAccessor> Rx { get; }

    public bool IsBroken => Tx.IsBroken || Rx.IsBroken;

    /// <summary>Busy-polling: the rings are served by <see cref="Poll"/>; no doorbell is asked for.</summary>
    public bool Polling { get; set; }

    public string? BrokenReason => Tx.BrokenReason ?? Rx.BrokenReason;

    private int KickBit => 2 * PairIndex;

    private int UsedBit => (2 * PairIndex) + 1;

    /// <summary>Starts both rings from index 0 (both windows were cleared in the handshake).</summary>
    public bool Start()
    {
        _buffers.Reset();
        _next = _count = 0;
        _backendFull = _senderWaiting = false;
        _unpublished = 0;
        _unpublishedFrames = 0;
        _dry = false;
        if (!Tx.Start(_state, _txMemory) || !Rx.Start(_state, _rxMemory))
        {
            return false;
        }

        // The buffer area is one range of the peer's window for the life of the rings, so it
        // is translated once here, not twice per frame (a check, then the copy) on the data path.
        if (!_txMemory.Table.TryTranslate(_txBufferBase, _buffers.Size, out _txBufferHost))
        {
            Tx.Break(QueueError.BufferOutOfMemory, $"the transmit buffer area (0x{_txBufferBase:x}, {_buffers.Size} bytes) is not inside the peer's window");
            return false;
        }

        // Used doorbells are asked for only while the sender waits for space (Receive).
        Tx.DisableInterrupts();
        if (Polling)
        {
            // No kicks either: the poller looks at both rings.
            Rx.DisableNotifications();
        }

        return true;
    }

    /// <summary>Stops both rings; frames in flight are forgotten (never sent twice).</summary>
    public void Stop()
    {
        Tx.Stop();
        Rx.Stop();
        _buffers.Reset();
        _next = _count = 0;
        _unpublished = 0;
        _unpublishedFrames = 0;
    }

    // ---- sending (the backend delivers a frame to us) ----

    // The path of a frame stores as little as it can besides the frame itself: a sender
    // that streams frames into lines the other CPU (or the bus) holds spends its time
    // waiting for those payload stores to leave, and every other store queues behind them
    // (docs/link-benchmark.md, What changed, night: stores per frame). So the place is
    // found before it is taken (nothing to undo), the counters are summed per publish, and
    // the accessor is called where it lies rather than copied out of the object it belongs to.

    public ReceiveResult Receive(ReadOnlySpan<IoSegment> frame, int length)
    {
        if (frame.Length == 1 && frame[0].Length >= (uint)length)
        {
            // The usual case (a TAP's bounce buffer): one segment.
            unsafe
            {
                return Send(new ReadOnlySpan<byte>((void*)frame[0].Host, length));
            }
        }

        return SendGathered(frame, length);
    }

    /// <summary>Sends one frame held in one span (the packet API, a TAP's bounce buffer):
    /// copied straight into the peer's window; visible to it after <see cref="Flush"/>.</summary>
    /// <remarks>Not inlined into its callers: a caller's loop is often inlined into the event
    /// loop's, where the JIT's budget runs out and the small steps here (finding the place,
    /// adding the descriptor) would become calls of their own, each saving registers.</remarks>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public ReceiveResult Send(ReadOnlySpan<byte> frame)
    {
        int length = frame.Length;
        if (!Tx.IsRunning)
        {
            return ReceiveResult.NoBuffers;
        }

        if (length > MaxFrame || length < VirtioNetHeader.Size + 14)
        {
            return DropLength(length);
        }

        ulong offset = FindPlace((uint)length);
        if (offset == TransmitBufferRing.NoRoom)
        {
            return ReceiveResult.NoBuffers;
        }

        // payload → (the driver's release store of avail.idx orders it) → index → doorbell.
        // The allocator keeps the frame inside the area.
        _txAccess.CopyTo(_txBufferHost + (nint)offset, frame);
        return Added(offset, length);
    }

    /// <summary>A frame in several segments (which may describe more than the frame): exactly
    /// <paramref name="length"/> bytes of them, gathered into one place.</summary>
    private ReceiveResult SendGathered(ReadOnlySpan<IoSegment> frame, int length)
    {
        if (!Tx.IsRunning)
        {
            return ReceiveResult.NoBuffers;
        }

        if (length > MaxFrame || length < VirtioNetHeader.Size + 14)
        {
            return DropLength(length);
        }

        long available = 0;
        foreach (ref readonly var s in frame)
        {
            available += s.Length;
        }

        if (available < length)
        {
            Dropped($"a frame said to be {length} bytes came in {available}");
            return ReceiveResult.Dropped;
        }

        ulong offset = FindPlace((uint)length);
        if (offset == TransmitBufferRing.NoRoom)
        {
            return ReceiveResult.NoBuffers;
        }

        nint at = _txBufferHost + (nint)offset;
        int remaining = length;
        foreach (ref readonly var s in frame)
        {
            if (remaining == 0)
            {
                break;
            }

            int n = (int)Math.Min(s.Length, (uint)remaining);
            unsafe
            {
                _txAccess.CopyTo(at, new ReadOnlySpan<byte>((void*)s.Host, n));
            }

            at += n;
            remaining -= n;
        }

        return Added(offset, length);
    }

    /// <summary>The frame is in its place: describe it to the peer, take the place, count it,
    /// and publish early when a quarter of the area is written.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ReceiveResult Added(ulong offset, int length)
    {
        var buffer = new GuestBuffer(_txBufferBase + offset, (uint)length);
        if (!(_inOrder ? Tx.TryAddInOrder(buffer) : Tx.TryAddReadable(buffer, (ulong)_buffers.NextSlot)))
        {
            // Not reached: running and a free descriptor were checked before the copy.
            return ReceiveResult.NoBuffers;
        }

        _buffers.Take(offset, (uint)length);

        // Big frames: the caller's batch can take longer to copy than the receiver lingers
        // on a dry ring (15 frames of 64 KiB fill the area); what is written is published
        // once a quarter of the area is, so the receiver has work before it goes back to
        // sleep and has to be kicked.
        _unpublishedFrames++;
        if ((_unpublished += (ulong)length) >= _publishEvery)
        {
            Flush();
        }

        return ReceiveResult.Delivered;
    }

    /// <summary>Where a frame of <paramref name="length"/> bytes goes, waiting for room as
    /// <see cref="FindWhenShort"/> says when there is none; <see cref="TransmitBufferRing.NoRoom"/>
    /// when the sender must wait.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong FindPlace(uint length)
    {
        ulong offset = FindFree(length);
        return offset != TransmitBufferRing.NoRoom ? offset : FindWhenShort(length);
    }

    /// <summary>A place for <paramref name="length"/> bytes with a descriptor free for it, as
    /// things stand; <see cref="TransmitBufferRing.NoRoom"/> when either is short.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong FindFree(uint length) => Tx.FreeDescriptors > 0 ? _buffers.Find(length) : TransmitBufferRing.NoRoom;

    /// <summary>No room for <paramref name="length"/> bytes: take what the peer returned, and
    /// if that is not enough publish what we have and wait for buffers to come back: by
    /// looking at the used ring for the linger (TxLinger), or at once by asking the peer for a
    /// used doorbell. Re-checks first (it may have returned buffers before it saw our
    /// request). <see cref="TransmitBufferRing.NoRoom"/> when the sender must wait.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong FindWhenShort(uint length)
    {
        Reclaim();
        ulong offset = FindFree(length);
        if (offset != TransmitBufferRing.NoRoom)
        {
            return offset;
        }

        _senderWaiting = true;
        Flush();
        bool lingering = !Polling && _lingerTicks > 0;
        if ((Polling || lingering || Tx.EnableInterrupts()) && Reclaim() > 0)
        {
            offset = FindFree(length);
        }

        if (offset == TransmitBufferRing.NoRoom)
        {
            if (lingering)
            {
                _stallAt = _clock.GetTimestamp();
                if (!_txLingerPosted)
                {
                    _txLingerPosted = true;
                    _post(_txLinger);
                }
            }

            _stats.TxStalls++;
        }

        return offset;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ReceiveResult DropLength(int length)
    {
        Dropped($"a {length}-byte frame (the link carries {VirtioNetHeader.Size + 14}..{MaxFrame})");
        return ReceiveResult.Dropped;
    }

    public void FlushReceived() => Flush();

    private void Dropped(string what)
    {
        long n = ++_stats.TxDropped;
        if (_logger is not null && (n & (n - 1)) == 0)
        {
            LinkLog.FrameDropped(_logger, _hardware.Name, PairIndex, what, n);
        }
    }

    public void ResumeTransmit()
    {
        // The backend has room again for frames we received.
        if (_backendFull)
        {
            _backendFull = false;
            ServeReceive();
        }
    }

    /// <summary>Publishes what we added and rings the peer's kick doorbell if it wants one.</summary>
    public void Flush()
    {
        if (_unpublishedFrames == 0)
        {
            return;
        }

        _stats.TxFrames += _unpublishedFrames;
        _stats.TxBytes += (long)_unpublished - (_unpublishedFrames * VirtioNetHeader.Size);
        _unpublishedFrames = 0;
        _unpublished = 0;
        Tx.Publish();
        if (Tx.NeedsKick())
        {
            _stats.DoorbellsSent++;
            _hardware.RingPeerDoorbell(KickBit);
        }
    }

    /// <summary>Our used doorbell: the peer returned buffers.</summary>
    public void OnUsedDoorbell()
    {
        Reclaim();
        if (_senderWaiting)
        {
            _senderWaiting = false;
            Tx.DisableInterrupts();
            _backend.ReceiveSpaceAvailable(PairIndex);
        }
    }

    /// <summary>One look at both rings when polling; true when there was work.</summary>
    public bool Poll()
    {
        bool work = false;
        if (Rx.IsRunning && !_backendFull && (_next < _count || Rx.AvailPending() > 0))
        {
            ServeReceive();
            work = true;
        }

        if (_buffers.InFlight > 0 && Reclaim() > 0)
        {
            work = true;
            if (_senderWaiting)
            {
                _senderWaiting = false;
                _backend.ReceiveSpaceAvailable(PairIndex);
            }
        }

        return work;
    }

    /// <summary>Returns reclaimed buffers; a peer returning something we never sent breaks the ring.</summary>
    public int Reclaim()
    {
        if (_inOrder)
        {
            // Descriptors and buffer slots are both handed out in ring order from 0, so the
            // n buffers done are the n oldest slots.
            int done = Tx.ReapInOrder();
            if (done > 0)
            {
                _buffers.ReleaseOldest(done);
            }

            return done;
        }

        int total = 0;
        int n;
        while ((n = Tx.Reap(_used)) > 0)
        {
            for (int i = 0; i < n; i++)
            {
                if (!_buffers.Release((int)_used[i].Token))
                {
                    Tx.Break(QueueError.UsedIdNotInFlight, $"the peer returned buffer slot {_used[i].Token}, which is not out");
                    return total;
                }
            }

            total += n;
        }

        return total;
    }

    // ---- receiving (the peer kicks us) ----

    /// <summary>Our kick doorbell (or a poll): serve the receive ring.</summary>
    public void ServeReceive()
    {
        var ring = Rx;
        while (ring.IsRunning && !_backendFull)
        {
            ring.DisableNotifications();
            while (!_backendFull)
            {
                if (_next == _count)
                {
                    _next = 0;
                    _count = _inOrder ? ring.PopSingleReadable(_heads, _frames) : ring.PopAvail(_chains, _segments);
                    if (_count == 0)
                    {
                        break;
                    }

                    _dry = false;
                }

                if (_inOrder)
                {
                    if (!DeliverInOrder(ring))
                    {
                        return;
                    }
                }

                for (; !_inOrder && _next < _count; _next++)
                {
                    ref readonly var chain = ref _chains[_next];
                    if (chain.WritableSegments != 0 || chain.ReadableBytes < VirtioNetHeader.Size + 14 || chain.ReadableBytes > (uint)MaxFrame)
                    {
                        ring.Break(QueueError.WrongDirection, $"frame chain {chain.Head}: {chain.ReadableBytes} readable and {chain.WritableBytes} writable bytes");
                        return;
                    }

                    var result = _backend.Send(PairIndex, chain.Readable(_segments), (int)chain.ReadableBytes);
                    if (result == SendResult.Full)
                    {
                        _backendFull = true;
                        _stats.RxStalls++;
                        break;
                    }

                    if (result == SendResult.Sent)
                    {
                        _stats.RxFrames++;
                        _stats.RxBytes += chain.ReadableBytes - VirtioNetHeader.Size;
                    }
                    else
                    {
                        _stats.RxDropped++;
                    }

                    ring.PushUsed(chain.Head, 0);
                }

                ring.FlushUsed();
                _backend.EndOfBatch(PairIndex);
                if (ring.NeedsInterrupt())
                {
                    _stats.DoorbellsSent++;
                    _hardware.RingPeerDoorbell(UsedBit);
                }
            }

            if (_backendFull || Polling || !ring.IsRunning)
            {
                return;
            }

            if (KeepLingering())
            {
                return;
            }

            _stats.RxRearms++;
            if (!ring.EnableNotifications())
            {
                return;
            }
        }
    }

    /// <summary>Hands the popped frames to the backend and returns them with one used
    /// element naming the last (in order, it returns every one before it); false when the
    /// ring broke.</summary>
    private bool DeliverInOrder(SplitQueueDevice<NtbMemoryAccessor> ring)
    {
        int delivered = 0;
        ushort last = 0;
        long frames = 0;
        long bytes = 0;
        for (; _next < _count; _next++)
        {
            ref readonly var frame = ref _frames[_next];
            uint length = frame.Length;
            if (length < VirtioNetHeader.Size + 14 || length > (uint)MaxFrame)
            {
                ring.Break(QueueError.WrongDirection, $"frame {_heads[_next]}: {length} bytes (the link carries {VirtioNetHeader.Size + 14}..{MaxFrame})");
                return false;
            }

            var result = _backend.Send(PairIndex, new ReadOnlySpan<IoSegment>(in frame), (int)length);
            if (result == SendResult.Full)
            {
                _backendFull = true;
                _stats.RxStalls++;
                break;
            }

            if (result == SendResult.Sent)
            {
                frames++;
                bytes += length - VirtioNetHeader.Size;
            }
            else
            {
                _stats.RxDropped++;
            }

            last = _heads[_next];
            delivered++;
        }

        _stats.RxFrames += frames;
        _stats.RxBytes += bytes;
        if (delivered > 0)
        {
            ring.PushUsed(last, 0);
        }

        return true;
    }

    /// <summary>
    /// The ring ran dry with notifications off. While the linger lasts, leave them off and
    /// look again on the loop's next turn (the loop serves its fds in between): a peer that
    /// is still sending is then served without a kick. A kick costs the peer a doorbell and
    /// us a wake-up, and where an idle CPU sleeps (a virtual machine's above all) waking the
    /// receiver costs the sender microseconds per kick, more than the frames it sends between
    /// two kicks (docs/link-benchmark.md has the figures).
    /// </summary>
    private bool KeepLingering()
    {
        if (_lingerTicks <= 0)
        {
            return false;
        }

        long now = _clock.GetTimestamp();
        if (!_dry)
        {
            _dry = true;
            _dryAt = now;
        }
        else if (now - _dryAt >= _lingerTicks)
        {
            _dry = false;
            return false;
        }

        if (!_lingerPosted)
        {
            _lingerPosted = true;
            _post(_linger);
        }

        return true;
    }

    /// <summary>The sender waits for space: take what the peer returned, on each turn of the
    /// loop, until the linger is over; then ask for a used doorbell (and re-check).</summary>
    private void TxLinger()
    {
        _txLingerPosted = false;
        if (!_senderWaiting || Polling || !Tx.IsRunning)
        {
            return;
        }

        bool back = Reclaim() > 0;
        if (!back && _clock.GetTimestamp() - _stallAt < _lingerTicks)
        {
            _txLingerPosted = true;
            _post(_txLinger);
            return;
        }

        if (!back && !(Tx.EnableInterrupts() && Reclaim() > 0))
        {
            return; // OnUsedDoorbell takes it from here
        }

        _senderWaiting = false;
        Tx.DisableInterrupts();
        _backend.ReceiveSpaceAvailable(PairIndex);
    }

    private void Linger()
    {
        _lingerPosted = false;
        if (Rx.IsRunning && !Polling && !_backendFull)
        {
            ServeReceive();
        }
    }
}

/// <summary>Link addresses (docs/link-protocol.md): the receiver's window from 0, the sender's from <see cref="SenderBase"/>.</summary>
public static class LinkAddresses
{
    public const ulong SenderBase = 1UL << 40;
}
