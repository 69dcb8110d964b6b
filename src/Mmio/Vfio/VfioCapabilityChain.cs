using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using PciVirtio.Mmio.Vfio.Interop;

namespace PciVirtio.Mmio.Vfio;

/// <summary>
/// Walks the capability chains that VFIO INFO ioctls append after their fixed struct. The buffer
/// comes from the kernel, but it is still parsed defensively (bounds, strictly increasing
/// offsets, a link limit) so a malformed chain gives an error instead of a loop or an
/// out-of-range read.
/// </summary>
internal static class VfioCapabilityChain
{
    private const int MaxLinks = 64;
    private static readonly int HeaderSize = Unsafe.SizeOf<VfioInfoCapHeader>();

    /// <summary>The (id, version, offset) of each capability, starting at <paramref name="first"/>
    /// (0 = no chain).</summary>
    public static List<(ushort Id, ushort Version, int Offset)> Walk(ReadOnlySpan<byte> buffer, uint first, int fixedSize)
    {
        var result = new List<(ushort, ushort, int)>();
        uint offset = first;
        uint previous = 0;
        while (offset != 0)
        {
            if (result.Count == MaxLinks)
            {
                throw new VfioException($"VFIO capability chain has more than {MaxLinks} entries");
            }

            if (offset < (uint)fixedSize || offset <= previous || offset > (uint)(buffer.Length - HeaderSize) || offset % 4 != 0)
            {
                throw new VfioException(
                    $"VFIO capability chain is malformed: offset {offset} (after {previous}) in a {buffer.Length}-byte buffer with a {fixedSize}-byte header");
            }

            ReadOnlySpan<byte> header = buffer[(int)offset..];
            ushort id = BinaryPrimitives.ReadUInt16LittleEndian(header);
            ushort version = BinaryPrimitives.ReadUInt16LittleEndian(header[2..]);
            result.Add((id, version, (int)offset));
            previous = offset;
            offset = BinaryPrimitives.ReadUInt32LittleEndian(header[4..]);
        }

        return result;
    }

    /// <summary>A capability of the form header, u32 count, u32 reserved, count × {u64, u64}
    /// (sparse mmap areas, IOVA ranges).</summary>
    public static List<(ulong First, ulong Second)> ReadPairs(ReadOnlySpan<byte> buffer, int capOffset)
    {
        ReadOnlySpan<byte> cap = buffer[capOffset..];
        if (cap.Length < HeaderSize + 8)
        {
            throw new VfioException($"VFIO capability at offset {capOffset} is truncated");
        }

        uint count = BinaryPrimitives.ReadUInt32LittleEndian(cap[HeaderSize..]);
        int start = HeaderSize + 8;
        if (count > (uint)((cap.Length - start) / 16))
        {
            throw new VfioException($"VFIO capability at offset {capOffset} claims {count} entries but the buffer holds {(cap.Length - start) / 16}");
        }

        var pairs = new List<(ulong, ulong)>((int)count);
        for (int i = 0; i < (int)count; i++)
        {
            ReadOnlySpan<byte> entry = cap[(start + (i * 16))..];
            pairs.Add((BinaryPrimitives.ReadUInt64LittleEndian(entry), BinaryPrimitives.ReadUInt64LittleEndian(entry[8..])));
        }

        return pairs;
    }

    /// <summary>Applies the region capabilities found in <paramref name="buffer"/> to <paramref name="info"/>.</summary>
    public static VfioRegionInfo ApplyRegionCaps(VfioRegionInfo info, ReadOnlySpan<byte> buffer, uint first)
    {
        foreach ((ushort id, _, int offset) in Walk(buffer, first, Unsafe.SizeOf<VfioRegionInfoArg>()))
        {
            switch (id)
            {
                case VfioIoctl.RegionCapSparseMmap:
                    info = info with
                    {
                        SparseMmapAreas = ReadPairs(buffer, offset).ConvertAll(p => new VfioSparseMmapArea(p.First, p.Second)),
                    };
                    break;
                case VfioIoctl.RegionCapType:
                    ReadOnlySpan<byte> cap = buffer[offset..];
                    if (cap.Length < HeaderSize + 8)
                    {
                        throw new VfioException($"VFIO region type capability at offset {offset} is truncated");
                    }

                    info = info with
                    {
                        RegionType = new VfioRegionType(
                            BinaryPrimitives.ReadUInt32LittleEndian(cap[HeaderSize..]),
                            BinaryPrimitives.ReadUInt32LittleEndian(cap[(HeaderSize + 4)..])),
                    };
                    break;
                case VfioIoctl.RegionCapMsixMappable:
                    info = info with { MsixMappable = true };
                    break;
                default:
                    break; // capabilities we do not use (NVLink, ...) are skipped
            }
        }

        return info;
    }

    /// <summary>Applies the type1 IOMMU capabilities found in <paramref name="buffer"/> to <paramref name="info"/>.</summary>
    public static VfioIommuInfo ApplyIommuCaps(VfioIommuInfo info, ReadOnlySpan<byte> buffer, uint first)
    {
        foreach ((ushort id, _, int offset) in Walk(buffer, first, Unsafe.SizeOf<VfioIommuType1InfoArg>()))
        {
            if (id == VfioIoctl.IommuCapIovaRange)
            {
                info = info with { IovaRanges = ReadPairs(buffer, offset).ConvertAll(p => new VfioIovaRange(p.First, p.Second)) };
            }
        }

        return info;
    }
}
