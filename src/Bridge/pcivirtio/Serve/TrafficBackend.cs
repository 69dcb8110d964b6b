using System.Runtime.InteropServices;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Net;
using PciVirtio.VhostCore.VhostUser;

namespace PciVirtio.Host.Serve;

/// <summary>What a <see cref="TrafficBackend"/> does.</summary>
public enum TrafficMode
{
    /// <summary>Counts and discards every frame the driver transmits (testpmd's rxonly).</summary>
    Sink,

    /// <summary>Fills the driver's receive queue with frames as fast as it posts buffers
    /// (testpmd's txonly), and discards what the driver transmits.</summary>
    Source,
}

/// <summary>
/// A backend that only makes or eats traffic, for measuring the device against another
/// vhost-user backend with the same frontend. Source frames are one prebuilt frame sent
/// over and over (no per-frame work beyond the device's), like testpmd's txonly.
/// </summary>
public sealed class TrafficBackend : INetBackend
{
    private const int Budget = 256;
    private readonly IDataPlaneEvents _events;
    private readonly INetPort?[] _ports;
    private readonly bool[] _waiting;
    private readonly Action[] _pumps;
    private readonly IoSegment[] _frame;
    private readonly int _length;
    private long _sunk;
    private long _sourced;

    public TrafficBackend(TrafficMode mode, int frameSize, IDataPlaneEvents events, int maxPairs = 64)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(frameSize, 60);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(frameSize, VirtioNetHeader.MaxPacket);
        Mode = mode;
        _events = events;
        MaxQueuePairs = maxPairs;
        _ports = new INetPort?[maxPairs];
        _waiting = new bool[maxPairs];
        _pumps = new Action[maxPairs];
        for (int i = 0; i < maxPairs; i++)
        {
            int pair = i;
            _pumps[i] = () => Pump(pair);
        }

        // A broadcast frame of a local experimental ethertype behind a zero vnet header.
        var bytes = GC.AllocateArray<byte>(VirtioNetHeader.Size + frameSize, pinned: true);
        var eth = bytes.AsSpan(VirtioNetHeader.Size);
        eth[..6].Fill(0xff);
        eth[6..12].Fill(0x02);
        eth[12] = 0x88;
        eth[13] = 0xb5;
        _frame = [new IoSegment(Marshal.UnsafeAddrOfPinnedArrayElement(bytes, 0), (uint)bytes.Length, 0)];
        _length = bytes.Length;
    }

    public TrafficMode Mode { get; }

    public VirtioNetFeatures Offloads => VirtioNetFeatures.None;

    public int MaxQueuePairs { get; }

    /// <summary>Frames the driver transmitted (discarded here).</summary>
    public long Sunk => Volatile.Read(ref _sunk);

    /// <summary>Frames delivered to the driver.</summary>
    public long Sourced => Volatile.Read(ref _sourced);

    public void Attach(INetPort port)
    {
        _ports[port.PairIndex] = port;
        if (Mode == TrafficMode.Source)
        {
            _events.Defer(_pumps[port.PairIndex]);
        }
    }

    public void Detach(int pair) => _ports[pair] = null;

    public SendResult Send(int pair, ReadOnlySpan<IoSegment> frame, int length)
    {
        _sunk++;
        return SendResult.Sent;
    }

    public void EndOfBatch(int pair)
    {
    }

    public void ReceiveSpaceAvailable(int pair)
    {
        if (Mode == TrafficMode.Source && _waiting[pair])
        {
            _waiting[pair] = false;
            Pump(pair);
        }
    }

    public void FeaturesNegotiated(VirtioNetFeatures features)
    {
    }

    /// <summary>Delivers frames until the driver's buffers run out (then the next
    /// ReceiveSpaceAvailable continues) or the budget is used (then it yields).</summary>
    private void Pump(int pair)
    {
        var port = _ports[pair];
        if (port is null)
        {
            return;
        }

        int delivered = 0;
        while (delivered < Budget)
        {
            var result = port.Receive(_frame, _length);
            if (result == ReceiveResult.NoBuffers)
            {
                _waiting[pair] = true;
                break;
            }

            delivered++;
        }

        _sourced += delivered;
        if (delivered > 0)
        {
            port.FlushReceived();
        }

        if (delivered == Budget)
        {
            _events.Defer(_pumps[pair]);
        }
    }
}
