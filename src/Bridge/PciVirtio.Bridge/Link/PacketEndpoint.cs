using System.Runtime.CompilerServices;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Net;

namespace PciVirtio.Bridge.Link;

/// <summary>
/// The in-process packet API of a link end (for tests and benchmarks): <see cref="Send"/>
/// puts a frame on the link, <see cref="FrameArrived"/> hands over each frame that comes
/// in. Frames are a 12-byte virtio_net_hdr then the packet. Call <see cref="Send"/> and
/// <see cref="Flush"/> on the link's loop thread only; the callback runs there too, with a
/// frame valid for the duration of the call.
/// </summary>
public sealed class PacketEndpoint : INetBackend
{
    private readonly INetPort?[] _ports = new INetPort?[LinkParameters.MaxQueuePairs];
    private readonly byte[] _staging = new byte[VirtioNetHeader.MaxFrame]; // a received frame in several segments, gathered
    private readonly bool[] _dirty = new bool[LinkParameters.MaxQueuePairs];

    /// <summary>Called with each frame the peer sent; return false to refuse it for now
    /// (back-pressure: the link keeps it and offers it again after <see cref="Resume"/>).</summary>
    public Func<int, ReadOnlySpan<byte>, bool>? FrameArrived { get; set; }

    /// <summary>Called when a pair that answered NoBuffers has room again.</summary>
    public Action<int>? SpaceAvailable { get; set; }

    /// <summary>Called when a pair connects or disconnects (link up or down).</summary>
    public Action<int, bool>? PairChanged { get; set; }

    public VirtioNetFeatures Offloads => VirtioNetFeatures.None;

    public int MaxQueuePairs => LinkParameters.MaxQueuePairs;

    public bool IsAttached(int pair) => _ports[pair] is not null;

    /// <summary>Sends <paramref name="frame"/> on <paramref name="pair"/>; visible to the peer
    /// after <see cref="Flush"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ReceiveResult Send(int pair, ReadOnlySpan<byte> frame)
    {
        // The link copies straight from the caller's bytes into the peer's window (one copy,
        // as from a TAP's bounce buffer) and keeps no reference to them once this returns.
        // A call of the link itself, not of INetPort: no segment to build, no pin, and one
        // call level less, on a path where each store waits behind the payload's.
        var port = _ports[pair];
        return port is LinkQueuePair link ? link.Send(frame) : SendOther(pair, port, frame);
    }

    private ReceiveResult SendOther(int pair, INetPort? port, ReadOnlySpan<byte> frame)
    {
        if (port is null)
        {
            return ReceiveResult.NoBuffers;
        }

        ReceiveResult result;
        unsafe
        {
            fixed (byte* bytes = frame)
            {
                var segment = new IoSegment((nint)bytes, (uint)frame.Length, 0);
                result = port.Receive(new ReadOnlySpan<IoSegment>(in segment), frame.Length);
            }
        }

        _dirty[pair] |= result == ReceiveResult.Delivered;
        return result;
    }

    /// <summary>Publishes what was sent on <paramref name="pair"/> and rings the peer if it wants.</summary>
    public void Flush(int pair)
    {
        if (_ports[pair] is LinkQueuePair link)
        {
            link.Flush(); // it knows whether anything is unpublished
        }
        else if (_dirty[pair])
        {
            _dirty[pair] = false;
            _ports[pair]?.FlushReceived();
        }
    }

    /// <summary>The receiver has room again after refusing a frame.</summary>
    public void Resume(int pair) => _ports[pair]?.ResumeTransmit();

    void INetBackend.Attach(INetPort port)
    {
        _ports[port.PairIndex] = port;
        PairChanged?.Invoke(port.PairIndex, true);
    }

    void INetBackend.Detach(int pair)
    {
        _ports[pair] = null;
        PairChanged?.Invoke(pair, false);
    }

    unsafe SendResult INetBackend.Send(int pair, ReadOnlySpan<IoSegment> frame, int length)
    {
        if (FrameArrived is not { } handler)
        {
            return SendResult.Dropped;
        }

        ReadOnlySpan<byte> bytes;
        if (frame.Length == 1)
        {
            bytes = new ReadOnlySpan<byte>((void*)frame[0].Host, length);
        }
        else
        {
            // Ordinary memory: the RAM accessor reads the segments (no memory table involved).
            default(GuestMemory<RamAccessor>).Gather(frame, 0, _staging.AsSpan(0, length));
            bytes = _staging.AsSpan(0, length);
        }

        return handler(pair, bytes) ? SendResult.Sent : SendResult.Full;
    }

    void INetBackend.EndOfBatch(int pair)
    {
    }

    void INetBackend.ReceiveSpaceAvailable(int pair) => SpaceAvailable?.Invoke(pair);

    void INetBackend.FeaturesNegotiated(VirtioNetFeatures features)
    {
    }
}
