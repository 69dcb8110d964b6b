namespace PciVirtio.Mmio.Net.Interop;

/// <summary>
/// The ioctl request numbers a TAP device needs: the TUN* requests of linux/if_tun.h, which
/// encode direction and argument size (<c>_IOW('T', n, int)</c> = 0x4004_54nn,
/// <c>_IOR('T', n, unsigned int)</c> = 0x8004_54nn), and the classic SIOC* interface requests
/// of linux/sockios.h. Tests pin every value against the kernel's encoding.
/// </summary>
internal static class TunIoctl
{
    private const uint Write = 1u << 30;   // _IOC_WRITE: user space hands the kernel an argument
    private const uint Read = 2u << 30;    // _IOC_READ: the kernel fills the argument in
    private const uint IntSize = 4u << 16; // every TUN request declares an int-sized argument
    private const uint Type = 'T' << 8;

    public const int SetIff = unchecked((int)(Write | IntSize | Type | 202));            // TUNSETIFF 0x400454ca
    public const int GetFeatures = unchecked((int)(Read | IntSize | Type | 207));        // TUNGETFEATURES 0x800454cf
    public const int SetOffload = unchecked((int)(Write | IntSize | Type | 208));        // TUNSETOFFLOAD 0x400454d0
    public const int GetIff = unchecked((int)(Read | IntSize | Type | 210));             // TUNGETIFF 0x800454d2
    public const int GetVnetHeaderSize = unchecked((int)(Read | IntSize | Type | 215));  // TUNGETVNETHDRSZ 0x800454d7
    public const int SetVnetHeaderSize = unchecked((int)(Write | IntSize | Type | 216)); // TUNSETVNETHDRSZ 0x400454d8
    public const int SetCarrier = unchecked((int)(Write | IntSize | Type | 226));        // TUNSETCARRIER 0x400454e2

    // linux/sockios.h: no encoded direction, the number alone.
    public const int GetInterfaceFlags = 0x8913;   // SIOCGIFFLAGS
    public const int SetInterfaceFlags = 0x8914;   // SIOCSIFFLAGS
    public const int GetMtu = 0x8921;              // SIOCGIFMTU
    public const int SetMtu = 0x8922;              // SIOCSIFMTU
    public const int SetHardwareAddress = 0x8924;  // SIOCSIFHWADDR
    public const int GetHardwareAddress = 0x8927;  // SIOCGIFHWADDR
    public const int GetInterfaceIndex = 0x8933;   // SIOCGIFINDEX

    // How the failing call is named in NativeCallException messages.
    public const string SetIffCall = "ioctl(TUNSETIFF)";
    public const string GetIffCall = "ioctl(TUNGETIFF)";
    public const string GetFeaturesCall = "ioctl(TUNGETFEATURES)";
    public const string SetOffloadCall = "ioctl(TUNSETOFFLOAD)";
    public const string GetVnetHeaderSizeCall = "ioctl(TUNGETVNETHDRSZ)";
    public const string SetVnetHeaderSizeCall = "ioctl(TUNSETVNETHDRSZ)";
    public const string SetCarrierCall = "ioctl(TUNSETCARRIER)";
    public const string GetInterfaceFlagsCall = "ioctl(SIOCGIFFLAGS)";
    public const string SetInterfaceFlagsCall = "ioctl(SIOCSIFFLAGS)";
    public const string GetMtuCall = "ioctl(SIOCGIFMTU)";
    public const string SetMtuCall = "ioctl(SIOCSIFMTU)";
    public const string GetHardwareAddressCall = "ioctl(SIOCGIFHWADDR)";
    public const string SetHardwareAddressCall = "ioctl(SIOCSIFHWADDR)";
    public const string GetInterfaceIndexCall = "ioctl(SIOCGIFINDEX)";

    /// <summary>ARPHRD_ETHER: the address family SIOCSIFHWADDR must carry for a TAP (the
    /// kernel refuses an address whose family differs from the device type).</summary>
    public const ushort ArpHardwareEther = 1;
}

/// <summary>The IFF_* flags of TUNSETIFF / TUNGETIFF (linux/if_tun.h), as the 16-bit
/// <c>ifr_flags</c> carries them.</summary>
[Flags]
internal enum TunFlags : ushort
{
    None = 0,
    Tun = 0x0001,
    Tap = 0x0002,
    NoCarrier = 0x0040,
    MultiQueue = 0x0100,
    Persist = 0x0800,
    NoPacketInfo = 0x1000,
    VnetHeader = 0x4000,
}

/// <summary>The net_device flags SIOCGIFFLAGS / SIOCSIFFLAGS carry (linux/if.h); only the
/// one we change is named, the rest pass through untouched.</summary>
[Flags]
internal enum InterfaceFlags : ushort
{
    None = 0,
    Up = 0x1,
}
