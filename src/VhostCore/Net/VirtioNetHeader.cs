using System.Buffers.Binary;

namespace PciVirtio.VhostCore.Net;

/// <summary>virtio_net_hdr flags.</summary>
[Flags]
public enum VirtioNetHeaderFlags : byte
{
    None = 0,

    /// <summary>The checksum from csum_start, stored at csum_start + csum_offset, is still to be computed.</summary>
    NeedsCsum = 1,

    /// <summary>The checksum was verified (receive only).</summary>
    DataValid = 2,
    RscInfo = 4,
}

/// <summary>virtio_net_hdr gso_type values.</summary>
public enum VirtioNetGsoType : byte
{
    None = 0,
    TcpV4 = 1,
    Udp = 3,
    TcpV6 = 4,
    UdpL4 = 5,
    Ecn = 0x80,
}

/// <summary>
/// The header in front of every frame (struct virtio_net_hdr_v1, 12 bytes, little endian).
/// Frames inside PciVirtio always carry the 12-byte form, the one a TAP uses with a vnet
/// header size of 12; a legacy driver without VERSION_1 or MRG_RXBUF uses the first 10 bytes.
/// </summary>
public static class VirtioNetHeader
{
    /// <summary>Header size with num_buffers (VERSION_1 or MRG_RXBUF).</summary>
    public const int Size = 12;

    /// <summary>Header size of a legacy driver without MRG_RXBUF.</summary>
    public const int LegacySize = 10;

    public const int FlagsOffset = 0;
    public const int GsoTypeOffset = 1;
    public const int HdrLenOffset = 2;
    public const int GsoSizeOffset = 4;
    public const int CsumStartOffset = 6;
    public const int CsumOffsetOffset = 8;
    public const int NumBuffersOffset = 10;

    /// <summary>Largest frame we move: a 64 KiB GSO packet plus its Ethernet and VLAN headers.</summary>
    public const int MaxPacket = 65535 + 14 + 4;

    /// <summary>Largest frame including the header.</summary>
    public const int MaxFrame = Size + MaxPacket;

    /// <summary>Header size a driver with <paramref name="features"/> uses.</summary>
    public static int SizeFor(ulong features) =>
        (features & ((ulong)Ring.VirtioFeatures.Version1 | (ulong)VirtioNetFeatures.MrgRxbuf)) != 0 ? Size : LegacySize;

    public static VirtioNetGsoType GsoType(ReadOnlySpan<byte> header) => (VirtioNetGsoType)header[GsoTypeOffset];

    public static VirtioNetHeaderFlags Flags(ReadOnlySpan<byte> header) => (VirtioNetHeaderFlags)header[FlagsOffset];

    public static void SetNumBuffers(Span<byte> header, ushort count) =>
        BinaryPrimitives.WriteUInt16LittleEndian(header[NumBuffersOffset..], count);

    /// <summary>The header's bytes 8..11 as one little-endian value (csum_offset, then
    /// num_buffers), with num_buffers set to <paramref name="count"/>: for a header carried in
    /// registers rather than staged in memory.</summary>
    public static uint WithNumBuffers(uint high, ushort count) => (high & 0xffff) | ((uint)count << 16);

    /// <summary>
    /// True when a receiving driver that negotiated <paramref name="features"/> can take a
    /// frame with this header: a partial checksum needs GUEST_CSUM, each GSO kind its
    /// GUEST_TSO4/6/ECN/UFO bit (a driver must never see a frame it did not ask for).
    /// </summary>
    public static bool AcceptableFor(ReadOnlySpan<byte> header, VirtioNetFeatures features) =>
        AcceptableFor(Flags(header), GsoType(header), features);

    /// <summary><see cref="AcceptableFor(ReadOnlySpan{byte}, VirtioNetFeatures)"/> from the
    /// header's flags and gso_type.</summary>
    public static bool AcceptableFor(VirtioNetHeaderFlags flags, VirtioNetGsoType gso, VirtioNetFeatures features)
    {
        if ((flags & VirtioNetHeaderFlags.NeedsCsum) != 0 && (features & VirtioNetFeatures.GuestCsum) == 0)
        {
            return false;
        }

        if (gso == VirtioNetGsoType.None)
        {
            return true;
        }

        if ((gso & VirtioNetGsoType.Ecn) != 0 && (features & VirtioNetFeatures.GuestEcn) == 0)
        {
            return false;
        }

        return (gso & ~VirtioNetGsoType.Ecn) switch
        {
            VirtioNetGsoType.TcpV4 => (features & VirtioNetFeatures.GuestTso4) != 0,
            VirtioNetGsoType.TcpV6 => (features & VirtioNetFeatures.GuestTso6) != 0,
            VirtioNetGsoType.Udp => (features & VirtioNetFeatures.GuestUfo) != 0,
            _ => false,
        };
    }
}
