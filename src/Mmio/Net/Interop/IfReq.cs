using System.Runtime.InteropServices;
using System.Text;

namespace PciVirtio.Mmio.Net.Interop;

/// <summary>
/// struct ifreq on 64-bit Linux: a 16-byte interface name and a 24-byte union, 40 bytes in
/// all. The kernel copies the whole struct in and out for every TUN and SIOC request, so it
/// must be this size even when a request uses only the name and one short. Only the union
/// members we use are declared.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
internal unsafe struct IfReq
{
    public const int Size = 40;

    /// <summary>IFNAMSIZ: the name with its terminating NUL.</summary>
    public const int NameSize = 16;

    public const int HardwareAddressLength = 6;

    [FieldOffset(0)]
    public fixed byte Name[NameSize];

    /// <summary>ifr_flags (TUNSETIFF / TUNGETIFF, SIOCGIFFLAGS / SIOCSIFFLAGS).</summary>
    [FieldOffset(16)]
    public ushort Flags;

    /// <summary>ifr_mtu or ifr_ifindex.</summary>
    [FieldOffset(16)]
    public int Value;

    /// <summary>ifr_hwaddr.sa_family.</summary>
    [FieldOffset(16)]
    public ushort HardwareFamily;

    /// <summary>ifr_hwaddr.sa_data; a MAC address takes its first six bytes.</summary>
    [FieldOffset(18)]
    public fixed byte HardwareAddress[14];

    /// <summary>An ifreq naming <paramref name="name"/> (already validated: printable ASCII,
    /// at most 15 bytes); null or empty leaves the name zeroed, for the kernel to choose.</summary>
    public static IfReq For(string? name)
    {
        IfReq request = default;
        if (!string.IsNullOrEmpty(name))
        {
            Encoding.ASCII.GetBytes(name, new Span<byte>(request.Name, NameSize - 1));
        }

        return request;
    }

    /// <summary>The name as the kernel left it (up to the first NUL).</summary>
    public readonly string ReadName()
    {
        fixed (byte* name = Name)
        {
            var bytes = new ReadOnlySpan<byte>(name, NameSize);
            int end = bytes.IndexOf((byte)0);
            return Encoding.ASCII.GetString(end < 0 ? bytes : bytes[..end]);
        }
    }
}
