using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.VhostUser;

namespace PciVirtio.VhostCore.Net;

/// <summary>
/// The transmit queue of a virtio-net device: pops the driver's frames in batches and hands
/// each to the backend without copying the packet. The header is copied into our own
/// memory first, so the backend sees the 12-byte form whatever the driver uses, and the
/// driver cannot change it after we looked at it. Header and packet may be split across
/// descriptors any way the driver likes.
/// </summary>
public sealed unsafe class NetTxQueue : NetQueue
{
    /// <summary>Chains popped per batch.</summary>
    public const int Batch = 32;

    /// <summary>Frames handled before yielding to other queues and devices.</summary>
    public const int Budget = 256;

    private const int MaxSegments = 1024;

    private readonly DescriptorChain[] _chains = new DescriptorChain[Batch];
    private readonly IoSegment[] _segments = new IoSegment[MaxSegments];
    private readonly IoSegment[] _frame = new IoSegment[MaxSegments + 1];
    private readonly INetBackendLink _link;
    private readonly Action _resume;
    private readonly byte[] _headerBuffer = GC.AllocateArray<byte>(VirtioNetHeader.Size, pinned: true);
    private readonly byte* _header;
    private int _next;
    private int _count;
    private bool _blocked;
    private bool _scheduled;
    private int _guestHeader;

    public NetTxQueue(string name, IDataPlaneEvents events, INetBackendLink link, ILogger? logger = null)
        : base(name, events, logger)
    {
        _link = link;
        _resume = Resume;
        _header = (byte*)Marshal.UnsafeAddrOfPinnedArrayElement(_headerBuffer, 0);
    }

    /// <summary>Chains popped but not yet taken by the backend.</summary>
    public int HeldChains => _count - _next;

    /// <summary>The backend can take frames again: continue where it stopped.</summary>
    public void ResumeTransmit()
    {
        if (_blocked)
        {
            _blocked = false;
            Schedule();
        }
    }

    private protected override void OnStarted()
    {
        _guestHeader = VirtioNetHeader.SizeFor(Features);
        _next = 0;
        _count = 0;
        _blocked = false;
    }

    private protected override void OnKick()
    {
        if (!_blocked)
        {
            Process();
        }
    }

    private protected override void ReleaseHeld()
    {
        if (_count > _next && Ring.IsRunning)
        {
            Ring.Unpop(_count - _next);
        }

        _next = 0;
        _count = 0;
    }

    private protected override bool Poll()
    {
        if (_blocked || !Ring.IsRunning)
        {
            return false;
        }

        long before = Stats.PacketsField + Stats.DropsField;
        Process();
        return Stats.PacketsField + Stats.DropsField != before;
    }

    private void Schedule()
    {
        if (!_scheduled)
        {
            _scheduled = true;
            Events.Defer(_resume);
        }
    }

    private void Resume()
    {
        _scheduled = false;
        if (!_blocked)
        {
            Process();
        }
    }

    /// <summary>Serves the ring until it is empty (with notifications re-enabled and the
    /// re-check done), the backend is full, or the budget is used (then yields).</summary>
    private void Process()
    {
        var ring = Ring;
        int handled = 0;
        while (ring.IsRunning)
        {
            ring.DisableNotifications();
            while (handled < Budget)
            {
                if (_next == _count)
                {
                    _next = 0;
                    _count = ring.PopAvail(_chains, _segments);
                    if (_count == 0)
                    {
                        break;
                    }
                }

                while (_next < _count)
                {
                    ref readonly var chain = ref _chains[_next];
                    var result = SendChain(chain);
                    if (result == SendResult.Full)
                    {
                        // Keep this chain and the rest of the batch for the resume.
                        Stats.FullField++;
                        _blocked = true;
                        Publish();
                        _link.EndOfBatch();
                        return;
                    }

                    if (!ring.IsRunning)
                    {
                        return;
                    }

                    ring.PushUsed(chain.Head, 0);
                    _next++;
                    handled++;
                }

                Publish();
                _link.EndOfBatch();
            }

            Publish();
            if (handled >= Budget)
            {
                // Polling comes back by itself; otherwise yield to the other queues.
                if (!Polling)
                {
                    Schedule();
                }

                return;
            }

            if (Polling || !ring.EnableNotifications())
            {
                return;
            }
        }
    }

    private SendResult SendChain(in DescriptorChain chain)
    {
        if (chain.WritableSegments != 0)
        {
            Ring.Break(QueueError.WrongDirection, $"transmit chain {chain.Head} has {chain.WritableSegments} device-writable buffers");
            return SendResult.Dropped;
        }

        if (chain.ReadableBytes < (uint)_guestHeader)
        {
            Ring.Break(QueueError.ShortHeader, $"transmit chain {chain.Head} holds {chain.ReadableBytes} bytes, less than the {_guestHeader}-byte virtio_net_hdr");
            return SendResult.Dropped;
        }

        uint packet = chain.ReadableBytes - (uint)_guestHeader;
        if (packet > VirtioNetHeader.MaxPacket || packet < 14)
        {
            Stats.DropsField++;
            return SendResult.Dropped;
        }

        var readable = chain.Readable(_segments);
        if (readable[0].Length >= (uint)_guestHeader)
        {
            // One store per piece a receiver loads (8 + 4 bytes, as NetRxQueue does), with
            // num_buffers zeroed in a register: a receiver's load that spans several smaller
            // stores cannot be forwarded from them and waits for the store buffer to drain.
            var access = Ring.Memory.Access;
            BinaryPrimitives.WriteUInt64LittleEndian(new Span<byte>(_header, 8), access.LoadU64(readable[0].Host));
            BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(_header + 8, 4), access.LoadU16(readable[0].Host + 8));
        }
        else
        {
            var header = new Span<byte>(_header, VirtioNetHeader.Size);
            Ring.Memory.Gather(readable, 0, header[.._guestHeader]);
            VirtioNetHeader.SetNumBuffers(header, 0);
        }

        _frame[0] = new IoSegment((nint)_header, VirtioNetHeader.Size, 0);
        int count = 1;
        int skip = _guestHeader;
        foreach (ref readonly var seg in readable)
        {
            if (skip >= seg.Length)
            {
                skip -= (int)seg.Length;
                continue;
            }

            _frame[count++] = skip == 0 ? seg : new IoSegment(seg.Host + skip, seg.Length - (uint)skip, seg.Guest + (ulong)skip);
            skip = 0;
        }

        var result = _link.Send(_frame.AsSpan(0, count), VirtioNetHeader.Size + (int)packet);
        if (result == SendResult.Sent)
        {
            Stats.PacketsField++;
            Stats.BytesField += packet;
        }
        else if (result == SendResult.Dropped)
        {
            Stats.DropsField++;
        }

        return result;
    }
}

/// <summary>Where a transmit queue sends its frames (its pair's backend).</summary>
public interface INetBackendLink
{
    SendResult Send(ReadOnlySpan<IoSegment> frame, int length);

    /// <summary>A batch of <see cref="Send"/> calls ended (a switch publishes to the peer then).</summary>
    void EndOfBatch();
}
