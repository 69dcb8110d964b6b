using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.VhostUser;

namespace PciVirtio.VhostCore.Net;

/// <summary>
/// A virtio-net device served over vhost-user: queue 2N receives and 2N+1 transmits for
/// pair N, the queue after the last pair is the control queue. Frames go to and come from
/// an <see cref="INetBackend"/>. Every method runs on the data-plane thread of
/// <see cref="IDataPlaneEvents"/> (the vhost-user session and the queues share it).
/// </summary>
public sealed class VhostUserNetDevice : IVhostUserDevice
{
    /// <summary>Size of the virtio_net_config we expose: mac, status, max_virtqueue_pairs,
    /// mtu, speed, duplex.</summary>
    public const int ConfigSize = 17;

    private const ushort LinkUp = 1;

    private readonly NetDeviceOptions _options;
    private readonly INetBackend _backend;
    private readonly ILogger? _logger;
    private readonly NetQueuePair[] _pairs;
    private readonly NetControlQueue _control;
    private ulong _acked;

    public VhostUserNetDevice(string name, NetDeviceOptions options, INetBackend backend, IDataPlaneEvents events, ILogger? logger = null)
    {
        options.Validate();
        Name = name;
        _options = options;
        _backend = backend;
        _logger = logger;
        int pairs = Math.Min(options.QueuePairs, backend.MaxQueuePairs);
        _pairs = new NetQueuePair[pairs];
        for (int i = 0; i < pairs; i++)
        {
            _pairs[i] = new NetQueuePair(name, i, backend, events, logger);
        }

        _control = new NetControlQueue($"{name}/ctrl", pairs, events, logger);
        var features = VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx | VirtioFeatures.RingIndirectDesc;
        var net = VirtioNetFeatures.Status | VirtioNetFeatures.Mtu | VirtioNetFeatures.CtrlVq | VirtioNetFeatures.Mq |
            (backend.Offloads & (VirtioNetFeatures.HostOffloads | VirtioNetFeatures.GuestOffloads));
        if (options.MergeableRxBuffers)
        {
            net |= VirtioNetFeatures.MrgRxbuf;
        }

        if (options.Mac is not null)
        {
            net |= VirtioNetFeatures.Mac;
        }

        if (options.InOrder)
        {
            features |= VirtioFeatures.InOrder;
        }

        Features = (ulong)features | (ulong)net | VhostUserConstants.ProtocolFeaturesBit;
    }

    public string Name { get; }

    public ulong Features { get; }

    public VhostUserProtocolFeatures ProtocolFeatures => VhostUserSession.SupportedProtocolFeatures;

    public int QueueCount => (2 * _pairs.Length) + 1;

    public ulong QueueNum => (ulong)_pairs.Length;

    /// <summary>The negotiated features.</summary>
    public ulong AckedFeatures => _acked;

    public IReadOnlyList<NetQueuePair> Pairs => _pairs;

    public NetControlQueue Control => _control;

    /// <summary>The MTU the frontend set (NET_SET_MTU) or the configured one.</summary>
    public int Mtu { get; private set; }

    public bool TryGetConfig(uint offset, Span<byte> destination)
    {
        Span<byte> config = stackalloc byte[ConfigSize];
        config.Clear();
        _options.Mac?.CopyTo(config);
        BinaryPrimitives.WriteUInt16LittleEndian(config[6..], LinkUp);
        BinaryPrimitives.WriteUInt16LittleEndian(config[8..], (ushort)_pairs.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(config[10..], (ushort)(Mtu == 0 ? _options.Mtu : Mtu));
        BinaryPrimitives.WriteUInt32LittleEndian(config[12..], uint.MaxValue); // speed unknown
        config[16] = 0xff; // duplex unknown
        if (offset > ConfigSize || (ulong)offset + (ulong)destination.Length > ConfigSize)
        {
            return false;
        }

        config.Slice((int)offset, destination.Length).CopyTo(destination);
        return true;
    }

    public bool TrySetConfig(uint offset, ReadOnlySpan<byte> source, uint flags) => false;

    public bool StartQueue(int index, in QueueState state, GuestMemory<RamAccessor> memory, SafeHandle? kick, SafeHandle? call)
    {
        NetQueue queue = QueueAt(index, out var pair);
        if (!queue.Start(state, memory, kick, call))
        {
            if (_logger is not null)
            {
                NetLog.QueueStartFailed(_logger, Name, index, queue.Ring.BrokenReason);
            }

            return false;
        }

        pair?.AttachIfNeeded();
        return true;
    }

    public QueueState StopQueue(int index)
    {
        NetQueue queue = QueueAt(index, out var pair);
        var state = queue.Stop();
        pair?.DetachIfIdle();
        return state;
    }

    public bool UpdateMemory(int index, GuestMemory<RamAccessor> memory) => QueueAt(index, out _).UpdateMemory(memory);

    public void OnFeatures(ulong features)
    {
        _acked = features;
        var net = (VirtioNetFeatures)features;
        var offloads = net & (VirtioNetFeatures.HostOffloads | VirtioNetFeatures.GuestOffloads);
        _backend.FeaturesNegotiated(offloads);
        if (_logger is not null)
        {
            NetLog.Features(_logger, Name, features, (net & VirtioNetFeatures.MrgRxbuf) != 0, offloads);
        }
    }

    public void OnStatus(byte status)
    {
        if (_logger is not null)
        {
            NetLog.Status(_logger, Name, status);
        }
    }

    public void OnRarp(ReadOnlySpan<byte> mac)
    {
        // Announce the guest's MAC on its behalf (after a migration the switches in front of
        // the backend learn where it went): a broadcast RARP request from that address.
        var frame = GC.AllocateArray<byte>(VirtioNetHeader.Size + 60, pinned: true);
        var eth = frame.AsSpan(VirtioNetHeader.Size);
        eth[..6].Fill(0xff);
        mac[..6].CopyTo(eth[6..]);
        BinaryPrimitives.WriteUInt16BigEndian(eth[12..], 0x8035);
        BinaryPrimitives.WriteUInt16BigEndian(eth[14..], 1);      // Ethernet
        BinaryPrimitives.WriteUInt16BigEndian(eth[16..], 0x0800); // IPv4
        eth[18] = 6;
        eth[19] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(eth[20..], 3);      // reverse request
        mac[..6].CopyTo(eth[22..]);
        mac[..6].CopyTo(eth[32..]);
        var result = SendResult.Dropped;
        if (_pairs.Length > 0 && _pairs[0].IsAttached)
        {
            Span<IoSegment> seg = [new IoSegment(Marshal.UnsafeAddrOfPinnedArrayElement(frame, 0), (uint)frame.Length, 0)];
            result = _backend.Send(0, seg, frame.Length);
            _backend.EndOfBatch(0);
        }

        if (_logger is not null)
        {
            string text = Convert.ToHexString(mac[..6]);
            NetLog.Rarp(_logger, Name, text, result);
        }
    }

    public bool OnMtu(uint mtu)
    {
        if (mtu is < NetDeviceOptions.MinMtu or > NetDeviceOptions.MaxMtu)
        {
            if (_logger is not null)
            {
                NetLog.MtuRefused(_logger, Name, mtu, NetDeviceOptions.MinMtu, NetDeviceOptions.MaxMtu);
            }

            return false;
        }

        Mtu = (int)mtu;
        if (_logger is not null)
        {
            NetLog.Mtu(_logger, Name, mtu);
        }

        return true;
    }

    public void Reset()
    {
        _acked = 0;
        Mtu = 0;
    }

    private NetQueue QueueAt(int index, out NetQueuePair? pair)
    {
        if (index == 2 * _pairs.Length)
        {
            pair = null;
            return _control;
        }

        pair = _pairs[index / 2];
        return (index & 1) == 0 ? pair.Rx : pair.Tx;
    }
}
