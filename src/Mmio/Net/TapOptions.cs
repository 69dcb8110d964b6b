namespace PciVirtio.Mmio.Net;

/// <summary>How <see cref="TapDevice.Create"/> opens a TAP interface.</summary>
public sealed record TapOptions
{
    /// <summary>The most queues one TAP may have (the kernel's MAX_TAP_QUEUES).</summary>
    public const int MaxQueues = 256;

    /// <summary>The longest interface name: IFNAMSIZ less the terminating NUL.</summary>
    public const int MaxNameBytes = 15;

    /// <summary>
    /// The interface name, or null for the kernel to choose the first free "tap%d". A name
    /// with one "%d" is a template the kernel fills in the same way. An existing TAP of that
    /// name (a persistent one, or another process's multi-queue TAP) is attached to, not
    /// created; <see cref="TapDevice.Name"/> is always the name the kernel reports back.
    /// </summary>
    public string? Name { get; init; }

    /// <summary>How many queues (one fd each); more than one makes it IFF_MULTI_QUEUE, and the
    /// kernel spreads received flows over the queues.</summary>
    public int Queues { get; init; } = 1;

    /// <summary>The virtio-net header in front of every frame in both directions: 0 for none
    /// (no IFF_VNET_HDR), 10 (struct virtio_net_hdr, the legacy layout) or 12 (with
    /// num_buffers: VIRTIO_NET_F_MRG_RXBUF or VIRTIO_F_VERSION_1).</summary>
    public int VnetHeaderSize { get; init; } = 12;

    /// <summary>O_NONBLOCK on every queue: reads return 0 and writes
    /// <see cref="TapWriteResult.WouldBlock"/> instead of waiting, so the fds can sit in an
    /// epoll loop.</summary>
    public bool NonBlocking { get; init; } = true;
}
