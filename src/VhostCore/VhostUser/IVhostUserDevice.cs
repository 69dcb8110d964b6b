using System.Runtime.InteropServices;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;

namespace PciVirtio.VhostCore.VhostUser;

/// <summary>
/// What a vhost-user backend device (virtio-net, a test device) gives the session: its
/// features and queues, its config space, and what it does when a queue starts or stops.
/// The session calls these only from its dispatcher, one call at a time.
/// </summary>
public interface IVhostUserDevice
{
    /// <summary>Virtio feature bits offered (GET_FEATURES); include
    /// <see cref="VhostUserConstants.ProtocolFeaturesBit"/> to offer protocol features.</summary>
    ulong Features { get; }

    /// <summary>Protocol features the device supports; the session offers the ones it also
    /// implements (see <see cref="VhostUserSession.SupportedProtocolFeatures"/>).</summary>
    VhostUserProtocolFeatures ProtocolFeatures { get; }

    /// <summary>Number of virtqueues (GET_QUEUE_NUM reports it; vring indexes are checked
    /// against it).</summary>
    int QueueCount { get; }

    /// <summary>What GET_QUEUE_NUM reports (for virtio-net, as QEMU and DPDK read it, the
    /// number of queue pairs).</summary>
    ulong QueueNum { get; }

    /// <summary>Reads config space (GET_CONFIG); false when the range is not the device's.</summary>
    bool TryGetConfig(uint offset, Span<byte> destination);

    /// <summary>Writes config space (SET_CONFIG); false when refused.</summary>
    bool TrySetConfig(uint offset, ReadOnlySpan<byte> source, uint flags);

    /// <summary>Starts queue <paramref name="index"/> from a validated state. The kick and
    /// call descriptors (null when the frontend sent NOFD) stay owned by the session and
    /// valid until <see cref="StopQueue"/>. False when the device cannot start it.</summary>
    bool StartQueue(int index, in QueueState state, GuestMemory<RamAccessor> memory, SafeHandle? kick, SafeHandle? call);

    /// <summary>Stops the queue and returns its state (what GET_VRING_BASE reports).</summary>
    QueueState StopQueue(int index);

    /// <summary>The frontend changed the memory map while the queue runs; false when the
    /// queue cannot move to <paramref name="memory"/> (it then keeps the old mappings).</summary>
    bool UpdateMemory(int index, GuestMemory<RamAccessor> memory);

    /// <summary>The negotiated features changed (SET_FEATURES).</summary>
    void OnFeatures(ulong features);

    /// <summary>SET_STATUS (virtio device status byte).</summary>
    void OnStatus(byte status);

    /// <summary>SEND_RARP: the guest MAC to announce.</summary>
    void OnRarp(ReadOnlySpan<byte> mac);

    /// <summary>NET_SET_MTU; false when refused.</summary>
    bool OnMtu(uint mtu);

    /// <summary>RESET_DEVICE / RESET_OWNER, after every queue was stopped.</summary>
    void Reset();
}

/// <summary>A mapping of one region of frontend memory; disposing unmaps it.</summary>
public interface IMappedRegion : IDisposable
{
    /// <summary>The memory-table entry (HostAddr is our mapping).</summary>
    MemoryRegion Region { get; }
}

/// <summary>Maps frontend memory (the seam that keeps this assembly free of mmap).</summary>
public interface IRegionMapper
{
    /// <summary>Maps <paramref name="region"/> of <paramref name="fd"/> (borrowed: the
    /// session closes it after the call; the mapping stays valid without it). Throws on failure.</summary>
    IMappedRegion Map(SafeHandle fd, in VhostUserMemoryRegion region);
}
