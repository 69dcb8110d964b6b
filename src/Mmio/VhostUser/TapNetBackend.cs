using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using PciVirtio.Mmio.EventLoop;
using PciVirtio.Mmio.Net;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Net;

namespace PciVirtio.Mmio.VhostUser;

/// <summary>
/// A TAP interface behind a virtio-net device: queue pair N is TAP queue N. Transmitted
/// frames go to the kernel straight from guest memory (writev, the vnet header first, so
/// checksum and segmentation offloads reach the kernel intact); received frames are read
/// into a bounce buffer per queue and copied into the guest's buffers. The carrier is on
/// while the device has a pair attached. Runs on the device's event loop thread.
/// </summary>
public sealed class TapNetBackend : INetBackend, IDisposable
{
    private readonly TapDevice _tap;
    private readonly EpollEventLoop _loop;
    private readonly ILogger? _logger;
    private readonly Pair[] _pairs;
    private int _attached;

    public TapNetBackend(TapDevice tap, EpollEventLoop loop, ILogger? logger = null)
    {
        if (tap.VnetHeaderSize != VirtioNetHeader.Size)
        {
            throw new ArgumentException($"TAP {tap.Name} has a {tap.VnetHeaderSize}-byte vnet header; the device needs {VirtioNetHeader.Size}", nameof(tap));
        }

        _tap = tap;
        _loop = loop;
        _logger = logger;
        _pairs = new Pair[tap.Queues.Count];
        for (int i = 0; i < _pairs.Length; i++)
        {
            _pairs[i] = new Pair(this, tap.Queues[i]);
        }

        TrySetCarrier(false);
    }

    public TapDevice Tap => _tap;

    /// <summary>Everything a TAP with a vnet header carries: checksum offload and TSO both ways.</summary>
    public VirtioNetFeatures Offloads =>
        VirtioNetFeatures.Csum | VirtioNetFeatures.HostTso4 | VirtioNetFeatures.HostTso6 | VirtioNetFeatures.HostEcn |
        VirtioNetFeatures.GuestCsum | VirtioNetFeatures.GuestTso4 | VirtioNetFeatures.GuestTso6 | VirtioNetFeatures.GuestEcn;

    public int MaxQueuePairs => _pairs.Length;

    /// <summary>Frames the kernel refused (bad vnet header, interface down, ...).</summary>
    public long Rejected { get; private set; }

    /// <summary>Frames read from the TAP that the device dropped.</summary>
    public long ReceiveDrops { get; private set; }

    public void Attach(INetPort port)
    {
        var pair = _pairs[port.PairIndex];
        pair.Attach(port);
        if (_attached++ == 0)
        {
            TrySetCarrier(true);
        }
    }

    public void Detach(int pair)
    {
        _pairs[pair].Detach();
        if (--_attached == 0)
        {
            TrySetCarrier(false);
        }
    }

    public SendResult Send(int pair, ReadOnlySpan<IoSegment> frame, int length) => _pairs[pair].Send(frame);

    public void EndOfBatch(int pair)
    {
    }

    public void ReceiveSpaceAvailable(int pair) => _pairs[pair].OnSpace();

    public void FeaturesNegotiated(VirtioNetFeatures features)
    {
        // Tell the kernel what the driver can take, so it never hands us a frame the driver
        // would have to refuse. TSO needs checksum offload too.
        var offloads = TunOffloads.None;
        if ((features & VirtioNetFeatures.GuestCsum) != 0)
        {
            offloads |= TunOffloads.Csum;
            if ((features & VirtioNetFeatures.GuestTso4) != 0)
            {
                offloads |= TunOffloads.Tso4;
            }

            if ((features & VirtioNetFeatures.GuestTso6) != 0)
            {
                offloads |= TunOffloads.Tso6;
            }

            if ((features & VirtioNetFeatures.GuestEcn) != 0 && (offloads & (TunOffloads.Tso4 | TunOffloads.Tso6)) != 0)
            {
                offloads |= TunOffloads.TsoEcn;
            }
        }

        _tap.SetOffloads(offloads);
    }

    public void Dispose()
    {
        foreach (var p in _pairs)
        {
            p.Detach();
        }
    }

    private void TrySetCarrier(bool on)
    {
        try
        {
            _tap.SetCarrier(on);
        }
        catch (Interop.NativeCallException e)
        {
            if (_logger is not null)
            {
                NetBackendLog.CarrierFailed(_logger, _tap.Name, on, e.Message);
            }
        }
    }

    /// <summary>One TAP queue and the device pair it serves.</summary>
    private sealed unsafe class Pair
    {
        private const int ReadBudget = 256;
        private readonly TapNetBackend _owner;
        private readonly TapQueue _queue;
        private readonly byte[] _bounce = GC.AllocateArray<byte>(VirtioNetHeader.MaxFrame, pinned: true);
        private readonly IoSegment[] _bounceSegment = new IoSegment[1];
        private readonly Action<EpollEvents> _onEvents;
        private EventRegistration? _registration;
        private INetPort? _port;
        private int _pending;
        private bool _writeBlocked;
        private bool _readPaused;

        public Pair(TapNetBackend owner, TapQueue queue)
        {
            _owner = owner;
            _queue = queue;
            _onEvents = OnEvents;
        }

        public void Attach(INetPort port)
        {
            _port = port;
            _pending = 0;
            _writeBlocked = false;
            _readPaused = false;
            _registration ??= _owner._loop.Add(_queue.Handle, EpollEvents.In, _onEvents);
            Update();
        }

        public void Detach()
        {
            _port = null;
            _pending = 0;
            _registration?.Dispose();
            _registration = null;
        }

        public SendResult Send(ReadOnlySpan<IoSegment> frame)
        {
            switch (_queue.Write(frame, out int errno))
            {
                case TapWriteResult.Written:
                    return SendResult.Sent;
                case TapWriteResult.WouldBlock:
                    _writeBlocked = true;
                    Update();
                    return SendResult.Full;
                default:
                    _owner.Rejected++;
                    if (_owner._logger is not null && (_owner.Rejected & (_owner.Rejected - 1)) == 0)
                    {
                        NetBackendLog.FrameRejected(_owner._logger, _owner._tap.Name, _queue.Index, Interop.Errno.Name(errno), _owner.Rejected);
                    }

                    return SendResult.Dropped;
            }
        }

        public void OnSpace()
        {
            if (_readPaused)
            {
                _readPaused = false;
                Update();
                PumpReceive();
            }
        }

        private void OnEvents(EpollEvents events)
        {
            if ((events & EpollEvents.Out) != 0 && _writeBlocked)
            {
                _writeBlocked = false;
                Update();
                _port?.ResumeTransmit();
            }

            if ((events & (EpollEvents.In | EpollEvents.Error | EpollEvents.HangUp)) != 0)
            {
                PumpReceive();
            }
        }

        /// <summary>Reads frames into the guest until the TAP is empty, the guest has no
        /// buffers (then stop watching for input until it posts some), or the budget is used
        /// (the level-triggered registration brings us back).</summary>
        private void PumpReceive()
        {
            var port = _port;
            if (port is null || _readPaused)
            {
                return;
            }

            _bounceSegment[0] = new IoSegment(Marshal.UnsafeAddrOfPinnedArrayElement(_bounce, 0), (uint)_bounce.Length, 0);
            int delivered = 0;
            for (int i = 0; i < ReadBudget; i++)
            {
                int length = _pending;
                if (length == 0)
                {
                    length = _queue.Read(_bounce);
                    if (length == 0)
                    {
                        break;
                    }

                    if (length > _bounce.Length)
                    {
                        _owner.ReceiveDrops++;
                        continue;
                    }
                }

                var result = port.Receive(_bounceSegment, length);
                if (result == ReceiveResult.NoBuffers)
                {
                    _pending = length;
                    _readPaused = true;
                    Update();
                    break;
                }

                _pending = 0;
                if (result == ReceiveResult.Delivered)
                {
                    delivered++;
                }
                else
                {
                    _owner.ReceiveDrops++;
                }
            }

            if (delivered > 0)
            {
                port.FlushReceived();
            }
        }

        private void Update()
        {
            if (_registration is null)
            {
                return;
            }

            var want = (_readPaused ? EpollEvents.None : EpollEvents.In) | (_writeBlocked ? EpollEvents.Out : EpollEvents.None);
            if (want != _registration.Events)
            {
                _registration.Modify(want);
            }
        }
    }
}

internal static partial class NetBackendLog
{
    [LoggerMessage(EventId = 400, Level = LogLevel.Warning, Message = "TAP {Tap} queue {Queue}: the kernel refused a frame ({Errno}); {Count} refused so far")]
    public static partial void FrameRejected(ILogger logger, string tap, int queue, string errno, long count);

    [LoggerMessage(EventId = 401, Level = LogLevel.Warning, Message = "TAP {Tap}: carrier {On} failed: {Reason}")]
    public static partial void CarrierFailed(ILogger logger, string tap, bool on, string reason);
}
