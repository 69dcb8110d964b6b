using PciVirtio.VhostCore.Memory;

namespace PciVirtio.VhostCore.Net;

/// <summary>
/// Joins two virtio-net devices of one process back to back, as a forwarding testpmd does:
/// what one driver transmits on pair N arrives in the other's receive queue N (or pair
/// N mod its pair count), copied once, guest memory to guest memory. A peer without
/// receive buffers holds the sender back (its transmit queue waits and resumes when the
/// buffers come) rather than dropping; a peer that is not connected drops. Both devices
/// must run on the same data-plane thread.
/// </summary>
public sealed class PortToPortSwitch
{
    public PortToPortSwitch(int maxQueuePairs = NetDeviceOptions.MaxQueuePairs)
    {
        Left = new Port(maxQueuePairs);
        Right = new Port(maxQueuePairs);
        Left.Peer = Right;
        Right.Peer = Left;
    }

    /// <summary>The backend for the first device.</summary>
    public Port Left { get; }

    /// <summary>The backend for the second device.</summary>
    public Port Right { get; }

    /// <summary>One side of the switch.</summary>
    public sealed class Port : INetBackend
    {
        private readonly INetPort?[] _ports;
        private readonly bool[] _dirty;
        private int _attached;
        private long _forwarded;
        private long _dropped;

        internal Port(int maxQueuePairs)
        {
            MaxQueuePairs = maxQueuePairs;
            _ports = new INetPort?[maxQueuePairs];
            _dirty = new bool[maxQueuePairs];
        }

        public VirtioNetFeatures Offloads => VirtioNetFeatures.None;

        public int MaxQueuePairs { get; }

        /// <summary>Frames this side delivered to the other.</summary>
        public long Forwarded => Volatile.Read(ref _forwarded);

        /// <summary>Frames this side dropped (other side absent, or the frame undeliverable there).</summary>
        public long Dropped => Volatile.Read(ref _dropped);

        internal Port Peer { get; set; } = null!;

        public void Attach(INetPort port)
        {
            _ports[port.PairIndex] = port;
            _attached = Math.Max(_attached, port.PairIndex + 1);
        }

        public void Detach(int pair)
        {
            _ports[pair] = null;
            while (_attached > 0 && _ports[_attached - 1] is null)
            {
                _attached--;
            }

            // A sender on the other side that waited for this pair's buffers would wait for
            // ever: let it go on (to another pair of ours, or dropped when none is left).
            ResumePeerSenders();
        }

        public SendResult Send(int pair, ReadOnlySpan<IoSegment> frame, int length)
        {
            var target = Peer.PortFor(pair, out int targetPair);
            if (target is null)
            {
                _dropped++;
                return SendResult.Dropped;
            }

            switch (target.Receive(frame, length))
            {
                case ReceiveResult.Delivered:
                    Peer._dirty[targetPair] = true;
                    _forwarded++;
                    return SendResult.Sent;
                case ReceiveResult.NoBuffers:
                    Peer.Flush(targetPair);
                    return SendResult.Full;
                default:
                    _dropped++;
                    return SendResult.Dropped;
            }
        }

        public void EndOfBatch(int pair)
        {
            if (Peer.PortFor(pair, out int targetPair) is not null)
            {
                Peer.Flush(targetPair);
            }
        }

        public void ReceiveSpaceAvailable(int pair)
        {
            // Our driver posted buffers: every sender on the other side that waited may go on.
            ResumePeerSenders();
        }

        public void FeaturesNegotiated(VirtioNetFeatures features)
        {
        }

        private void ResumePeerSenders()
        {
            for (int i = 0; i < Peer._attached; i++)
            {
                Peer._ports[i]?.ResumeTransmit();
            }
        }

        private INetPort? PortFor(int pair, out int index)
        {
            index = _attached == 0 ? 0 : pair % _attached;
            return _ports[index];
        }

        private void Flush(int pair)
        {
            if (_dirty[pair])
            {
                _dirty[pair] = false;
                _ports[pair]?.FlushReceived();
            }
        }
    }
}
