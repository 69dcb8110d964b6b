namespace PciVirtio.VhostCore.Net;

/// <summary>virtio-net device feature bits (virtio 1.x section 5.1.3). "Guest" bits are
/// what the driver can receive (the device may hand it checksum-pending or GSO frames);
/// "host" bits are what the device accepts from the driver's transmit queue.</summary>
[Flags]
public enum VirtioNetFeatures : ulong
{
    None = 0,

    /// <summary>The device accepts frames with a partial checksum (tx checksum offload).</summary>
    Csum = 1UL << 0,

    /// <summary>The driver accepts frames with a partial checksum.</summary>
    GuestCsum = 1UL << 1,
    CtrlGuestOffloads = 1UL << 2,
    Mtu = 1UL << 3,
    Mac = 1UL << 5,
    GuestTso4 = 1UL << 7,
    GuestTso6 = 1UL << 8,
    GuestEcn = 1UL << 9,
    GuestUfo = 1UL << 10,
    HostTso4 = 1UL << 11,
    HostTso6 = 1UL << 12,
    HostEcn = 1UL << 13,
    HostUfo = 1UL << 14,

    /// <summary>Receive frames may span several descriptor chains (num_buffers in the header).</summary>
    MrgRxbuf = 1UL << 15,
    Status = 1UL << 16,
    CtrlVq = 1UL << 17,
    CtrlRx = 1UL << 18,
    CtrlVlan = 1UL << 19,
    GuestAnnounce = 1UL << 21,
    Mq = 1UL << 22,
    CtrlMacAddr = 1UL << 23,

    /// <summary>Offloads the driver may use when transmitting.</summary>
    HostOffloads = Csum | HostTso4 | HostTso6 | HostEcn | HostUfo,

    /// <summary>Offloads the driver accepts on receive.</summary>
    GuestOffloads = GuestCsum | GuestTso4 | GuestTso6 | GuestEcn | GuestUfo,
}
