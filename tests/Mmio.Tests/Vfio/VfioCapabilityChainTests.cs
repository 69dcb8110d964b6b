using System.Buffers.Binary;
using PciVirtio.Mmio.Vfio;

namespace PciVirtio.Mmio.Tests.Vfio;

public class VfioCapabilityChainTests
{
    private static void Header(Span<byte> b, int at, ushort id, ushort version, uint next)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(b[at..], id);
        BinaryPrimitives.WriteUInt16LittleEndian(b[(at + 2)..], version);
        BinaryPrimitives.WriteUInt32LittleEndian(b[(at + 4)..], next);
    }

    private static byte[] RegionBuffer()
    {
        // 32-byte vfio_region_info, then sparse mmap (48 bytes), MSI-X mappable (8), type (16).
        var b = new byte[32 + 48 + 8 + 16];
        Header(b, 32, id: 1, version: 1, next: 80);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(40), 2);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(48), 0);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(56), 0x1000);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(64), 0x3000);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(72), 0x1000);
        Header(b, 80, id: 3, version: 1, next: 88);
        Header(b, 88, id: 2, version: 1, next: 0);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(96), 0x80008086);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(100), 3);
        return b;
    }

    [Fact]
    public void Region_capabilities_are_decoded()
    {
        var info = new VfioRegionInfo(VfioRegionIndex.Bar1, VfioRegionFlags.Read | VfioRegionFlags.Mmap | VfioRegionFlags.Caps, 0x4000, 1UL << 40);
        VfioRegionInfo result = VfioCapabilityChain.ApplyRegionCaps(info, RegionBuffer(), 32);
        Assert.Equal([new VfioSparseMmapArea(0, 0x1000), new VfioSparseMmapArea(0x3000, 0x1000)], result.SparseMmapAreas);
        Assert.True(result.MsixMappable);
        Assert.Equal(new VfioRegionType(0x80008086, 3), result.RegionType);
        Assert.Equal(info.Offset, result.Offset);
    }

    [Fact]
    public void A_chain_that_loops_back_is_rejected()
    {
        byte[] b = RegionBuffer();
        Header(b, 88, id: 2, version: 1, next: 32);
        Assert.Throws<VfioException>(() => VfioCapabilityChain.Walk(b, 32, 32));
    }

    [Theory]
    [InlineData(8u)]    // inside the fixed struct
    [InlineData(100u)]  // header would run past the end
    [InlineData(34u)]   // misaligned
    public void Offsets_outside_the_buffer_are_rejected(uint first)
    {
        byte[] b = RegionBuffer();
        Assert.Throws<VfioException>(() => VfioCapabilityChain.Walk(b, first, 32));
    }

    [Fact]
    public void A_count_larger_than_the_buffer_is_rejected()
    {
        byte[] b = RegionBuffer();
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(40), 1000);
        Assert.Throws<VfioException>(() => VfioCapabilityChain.ReadPairs(b, 32));
    }

    [Fact]
    public void No_chain_is_an_empty_walk() => Assert.Empty(VfioCapabilityChain.Walk(new byte[32], 0, 32));

    [Fact]
    public void Iova_ranges_are_decoded()
    {
        var b = new byte[24 + 16 + 32];
        Header(b, 24, id: 1, version: 1, next: 0);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(32), 2);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(40), 0);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(48), 0xfedfffff);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(56), 0xfef00000);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(64), 0x7fffffffff);
        VfioIommuInfo info = VfioCapabilityChain.ApplyIommuCaps(new VfioIommuInfo(VfioIommuInfoFlags.Caps, 0x1000), b, 24);
        Assert.Equal([new VfioIovaRange(0, 0xfedfffff), new VfioIovaRange(0xfef00000, 0x7fffffffff)], info.IovaRanges);
    }

    [Fact]
    public void Region_info_prints_one_line_for_logs()
    {
        var plain = new VfioRegionInfo(VfioRegionIndex.Config, VfioRegionFlags.Read | VfioRegionFlags.Write, 0x100, 0x70000000000);
        Assert.Equal("Config: 0x100 bytes at fd offset 0x70000000000 (Read, Write)", plain.ToString());
        VfioRegionInfo rich = VfioCapabilityChain.ApplyRegionCaps(plain with { Index = VfioRegionIndex.Bar1 }, RegionBuffer(), 32);
        Assert.Equal(
            "Bar1: 0x100 bytes at fd offset 0x70000000000 (Read, Write), mmappable parts 0x0+0x1000, 0x3000+0x1000, MSI-X table mappable, type 0x80008086/0x3",
            rich.ToString());
    }
}
