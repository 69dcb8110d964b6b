namespace PciVirtio.Mmio.Net;

/// <summary>
/// The TUNSETOFFLOAD bits (TUN_F_* of linux/if_tun.h): what the kernel may hand us
/// unfinished, described in the vnet header — a checksum left for the reader to complete, or a
/// large segment the reader (the guest) splits. The kernel takes a set only in the shapes a
/// virtio-net driver can negotiate: every bit other than <see cref="Csum"/> needs
/// <see cref="Csum"/>, and <see cref="Uso4"/> and <see cref="Uso6"/> go together; anything
/// else, and any bit this kernel does not know, is refused with EINVAL.
/// </summary>
[Flags]
public enum TunOffloads : uint
{
    None = 0,

    /// <summary>Frames may arrive with a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM).</summary>
    Csum = 0x01,

    /// <summary>TCP over IPv4 segments up to 64 KiB (GSO_TCPV4).</summary>
    Tso4 = 0x02,

    /// <summary>TCP over IPv6 segments up to 64 KiB (GSO_TCPV6).</summary>
    Tso6 = 0x04,

    /// <summary>TSO with the ECN bit set (GSO_ECN).</summary>
    TsoEcn = 0x08,

    /// <summary>UDP fragmentation offload: accepted and ignored, since Linux 4.14 no longer
    /// produces UFO frames.</summary>
    Ufo = 0x10,

    /// <summary>UDP segmentation over IPv4 (GSO_UDP_L4; Linux 6.2 and later).</summary>
    Uso4 = 0x20,

    /// <summary>UDP segmentation over IPv6 (GSO_UDP_L4; Linux 6.2 and later).</summary>
    Uso6 = 0x40,
}
