using Microsoft.Extensions.Logging;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.VhostUser;

namespace PciVirtio.VhostCore.Net;

/// <summary>
/// Receive queue 2N and transmit queue 2N+1 of a virtio-net device, joined to the
/// backend: the port the backend delivers into, and the link the transmit queue sends through.
/// </summary>
public sealed class NetQueuePair : INetPort, INetBackendLink
{
    private readonly INetBackend _backend;

    public NetQueuePair(string device, int index, INetBackend backend, IDataPlaneEvents events, ILogger? logger)
    {
        PairIndex = index;
        _backend = backend;
        Rx = new NetRxQueue($"{device}/rx{index}", index, events, backend.ReceiveSpaceAvailable, logger);
        Tx = new NetTxQueue($"{device}/tx{index}", events, this, logger);
    }

    public int PairIndex { get; }

    public NetRxQueue Rx { get; }

    public NetTxQueue Tx { get; }

    /// <summary>The backend knows this pair (a queue of it started).</summary>
    public bool IsAttached { get; private set; }

    public ReceiveResult Receive(ReadOnlySpan<IoSegment> frame, int length) => Rx.Receive(frame, length);

    public void FlushReceived() => Rx.Flush();

    public void ResumeTransmit() => Tx.ResumeTransmit();

    SendResult INetBackendLink.Send(ReadOnlySpan<IoSegment> frame, int length) => _backend.Send(PairIndex, frame, length);

    void INetBackendLink.EndOfBatch() => _backend.EndOfBatch(PairIndex);

    /// <summary>Tells the backend about the pair when its first queue starts.</summary>
    internal void AttachIfNeeded()
    {
        if (!IsAttached)
        {
            IsAttached = true;
            _backend.Attach(this);
        }
    }

    /// <summary>Tells the backend to forget the pair once both queues are stopped.</summary>
    internal void DetachIfIdle()
    {
        if (IsAttached && !Rx.Ring.IsRunning && !Tx.Ring.IsRunning)
        {
            IsAttached = false;
            _backend.Detach(PairIndex);
        }
    }
}
