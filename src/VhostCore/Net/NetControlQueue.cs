using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.VhostUser;

namespace PciVirtio.VhostCore.Net;

/// <summary>
/// The control queue (CTRL_VQ), for frontends that hand it to the backend (QEMU and DPDK's
/// virtio-user usually keep it and tell us the outcome with SET_VRING_ENABLE). Answers
/// VQ_PAIRS_SET within the device's pairs, accepts the receive-mode, MAC, VLAN and announce
/// commands (we forward every frame, so they change nothing), and refuses the rest.
/// </summary>
public sealed class NetControlQueue : NetQueue
{
    private const byte Ok = 0;
    private const byte Error = 1;
    private const byte ClassRx = 0;
    private const byte ClassMac = 1;
    private const byte ClassVlan = 2;
    private const byte ClassAnnounce = 3;
    private const byte ClassMq = 4;
    private const byte MqVqPairsSet = 0;

    private readonly DescriptorChain[] _chains = new DescriptorChain[8];
    private readonly IoSegment[] _segments = new IoSegment[256];
    private readonly int _maxPairs;

    public NetControlQueue(string name, int maxPairs, IDataPlaneEvents events, ILogger? logger = null)
        : base(name, events, logger)
    {
        _maxPairs = maxPairs;
        ActivePairs = 1;
    }

    /// <summary>Queue pairs the driver asked for with VQ_PAIRS_SET.</summary>
    public int ActivePairs { get; private set; }

    private protected override void OnStarted()
    {
    }

    private protected override void ReleaseHeld()
    {
    }

    private protected override void OnKick()
    {
        var ring = Ring;
        do
        {
            int n;
            while ((n = ring.PopAvail(_chains, _segments)) > 0)
            {
                for (int i = 0; i < n && ring.IsRunning; i++)
                {
                    Handle(_chains[i]);
                }

                Publish();
            }
        }
        while (ring.IsRunning && ring.EnableNotifications());
    }

    private void Handle(in DescriptorChain chain)
    {
        if (chain.ReadableBytes < 2 || chain.WritableBytes < 1)
        {
            Ring.Break(QueueError.ShortHeader, $"control chain {chain.Head}: {chain.ReadableBytes} readable and {chain.WritableBytes} writable bytes (needs a 2-byte command and a 1-byte ack)");
            return;
        }

        var memory = Ring.Memory;
        Span<byte> command = stackalloc byte[4];
        int got = memory.Gather(chain.Readable(_segments), 0, command);
        byte ack = (command[0], command[1]) switch
        {
            (ClassMq, MqVqPairsSet) when got >= 4 => SetPairs(BinaryPrimitives.ReadUInt16LittleEndian(command[2..])),
            (ClassRx, <= 5) or (ClassMac, <= 1) or (ClassVlan, <= 1) or (ClassAnnounce, 0) => Ok,
            _ => Error,
        };
        Span<byte> status = [ack];
        memory.Scatter(chain.Writable(_segments), 0, status);
        Ring.PushUsed(chain.Head, 1);
    }

    private byte SetPairs(ushort pairs)
    {
        if (pairs < 1 || pairs > _maxPairs)
        {
            return Error;
        }

        ActivePairs = pairs;
        return Ok;
    }
}
