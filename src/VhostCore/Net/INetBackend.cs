using PciVirtio.VhostCore.Memory;

namespace PciVirtio.VhostCore.Net;

/// <summary>What a backend did with a frame handed to it.</summary>
public enum SendResult
{
    /// <summary>Taken (written to the kernel, copied to a peer).</summary>
    Sent,

    /// <summary>Not taken now; the backend calls <see cref="INetPort.ResumeTransmit"/> when it can
    /// take frames again, and the same frame is offered again.</summary>
    Full,

    /// <summary>Refused for good (malformed, too big, offload the receiver cannot take); counted as a drop.</summary>
    Dropped,
}

/// <summary>What the device did with a frame a backend delivered.</summary>
public enum ReceiveResult
{
    /// <summary>Copied into the driver's receive buffers (visible after <see cref="INetPort.FlushReceived"/>).</summary>
    Delivered,

    /// <summary>The driver has no buffers posted (or the queue is not running); the device calls
    /// <see cref="INetBackend.ReceiveSpaceAvailable"/> when it has; the frame may be offered again.</summary>
    NoBuffers,

    /// <summary>The frame can never be delivered (too big for the driver's buffers, an offload the
    /// driver did not negotiate, malformed); counted as a drop.</summary>
    Dropped,
}

/// <summary>
/// The device side of one queue pair, as a backend sees it. Frames are a 12-byte
/// virtio_net_hdr_v1 followed by the packet, described by segments of ordinary memory
/// (host pointers valid for the duration of the call). Called on the device's data-plane thread only.
/// </summary>
public interface INetPort
{
    int PairIndex { get; }

    /// <summary>Delivers one frame to the driver's receive queue.</summary>
    ReceiveResult Receive(ReadOnlySpan<IoSegment> frame, int length);

    /// <summary>Ends a batch of <see cref="Receive"/> calls: publishes the used entries and
    /// interrupts the driver if it asked for it (one index store and at most one interrupt per batch).</summary>
    void FlushReceived();

    /// <summary>The backend can take frames again after it answered <see cref="SendResult.Full"/>.</summary>
    void ResumeTransmit();
}

/// <summary>
/// Where a virtio-net device's frames go and come from: a TAP, a port of a switch. All
/// calls come from the device's data-plane thread.
/// </summary>
public interface INetBackend
{
    /// <summary>The offload features (<see cref="VirtioNetFeatures.HostOffloads"/> and
    /// <see cref="VirtioNetFeatures.GuestOffloads"/> bits) this backend carries.</summary>
    VirtioNetFeatures Offloads { get; }

    /// <summary>How many queue pairs the backend can serve.</summary>
    int MaxQueuePairs { get; }

    /// <summary>A queue of pair <paramref name="port"/> started: frames may flow both ways.</summary>
    void Attach(INetPort port);

    /// <summary>Both queues of the pair stopped: the backend forgets the port.</summary>
    void Detach(int pair);

    /// <summary>A frame the driver transmitted.</summary>
    SendResult Send(int pair, ReadOnlySpan<IoSegment> frame, int length);

    /// <summary>A batch of <see cref="Send"/> calls for <paramref name="pair"/> ended: a backend
    /// that delivers into another device's queue publishes there now, once per batch.</summary>
    void EndOfBatch(int pair);

    /// <summary>The driver posted receive buffers after a <see cref="ReceiveResult.NoBuffers"/>.</summary>
    void ReceiveSpaceAvailable(int pair);

    /// <summary>The driver negotiated <paramref name="features"/> (e.g. a TAP then tells the
    /// kernel which offloads it may hand over).</summary>
    void FeaturesNegotiated(VirtioNetFeatures features);
}
