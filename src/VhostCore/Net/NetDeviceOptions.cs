namespace PciVirtio.VhostCore.Net;

/// <summary>What a virtio-net device offers its driver.</summary>
public sealed record NetDeviceOptions
{
    public const int MinMtu = 68;
    public const int MaxMtu = 65535;
    public const int MaxQueuePairs = 64;

    /// <summary>Queue pairs offered (MQ); the backend may serve fewer.</summary>
    public int QueuePairs { get; init; } = 1;

    /// <summary>The MAC address in config space (VIRTIO_NET_F_MAC); null: none offered and the
    /// driver picks one (QEMU and DPDK set their own anyway).</summary>
    public byte[]? Mac { get; init; }

    /// <summary>The MTU in config space (VIRTIO_NET_F_MTU).</summary>
    public int Mtu { get; init; } = 1500;

    /// <summary>Offer mergeable receive buffers.</summary>
    public bool MergeableRxBuffers { get; init; } = true;

    /// <summary>Offer VIRTIO_F_IN_ORDER. Every queue of the device already uses buffers in the
    /// order the driver made them available (receive chains are popped and filled in order,
    /// transmit chains are completed in order, a full backend holds the rest of the batch);
    /// saying so lets a driver skip the used ring's indirection (DPDK's virtio PMD then
    /// takes its in-order receive and transmit paths).</summary>
    public bool InOrder { get; init; } = true;

    /// <summary>Throws <see cref="ArgumentException"/> naming the bad option.</summary>
    public void Validate()
    {
        if (QueuePairs is < 1 or > MaxQueuePairs)
        {
            throw new ArgumentException($"QueuePairs must be 1..{MaxQueuePairs}, not {QueuePairs}", nameof(QueuePairs));
        }

        if (Mtu is < MinMtu or > MaxMtu)
        {
            throw new ArgumentException($"Mtu must be {MinMtu}..{MaxMtu}, not {Mtu}", nameof(Mtu));
        }

        if (Mac is not null && (Mac.Length != 6 || (Mac[0] & 1) != 0))
        {
            throw new ArgumentException($"Mac must be a 6-byte unicast address, not {Convert.ToHexString(Mac)}", nameof(Mac));
        }
    }
}
