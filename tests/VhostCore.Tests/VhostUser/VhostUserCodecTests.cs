using PciVirtio.VhostCore.VhostUser;

namespace PciVirtio.VhostCore.Tests.VhostUser;

public sealed class VhostUserCodecTests
{
    [Fact]
    public void Request_numbers_match_the_specification()
    {
        Assert.Equal(1u, (uint)VhostUserRequest.VHOST_USER_GET_FEATURES);
        Assert.Equal(17u, (uint)VhostUserRequest.VHOST_USER_GET_QUEUE_NUM);
        Assert.Equal(18u, (uint)VhostUserRequest.VHOST_USER_SET_VRING_ENABLE);
        Assert.Equal(19u, (uint)VhostUserRequest.VHOST_USER_SEND_RARP);
        Assert.Equal(20u, (uint)VhostUserRequest.VHOST_USER_NET_SET_MTU);
        Assert.Equal(24u, (uint)VhostUserRequest.VHOST_USER_GET_CONFIG);
        Assert.Equal(34u, (uint)VhostUserRequest.VHOST_USER_RESET_DEVICE);
        Assert.Equal(36u, (uint)VhostUserRequest.VHOST_USER_GET_MAX_MEM_SLOTS);
        Assert.Equal(38u, (uint)VhostUserRequest.VHOST_USER_REM_MEM_REG);
        Assert.Equal(40u, (uint)VhostUserRequest.VHOST_USER_GET_STATUS);
        Assert.Equal(1UL << 15, (ulong)VhostUserProtocolFeatures.ConfigureMemSlots);
        Assert.Equal(1UL << 16, (ulong)VhostUserProtocolFeatures.Status);
        Assert.Equal(1UL << 30, VhostUserConstants.ProtocolFeaturesBit);
    }

    [Fact]
    public void Header_is_little_endian_request_flags_size()
    {
        var bytes = new byte[12];
        new VhostUserHeader(VhostUserRequest.VHOST_USER_SET_VRING_ADDR, VhostUserHeaderFlags.Version1 | VhostUserHeaderFlags.NeedReply, 40).Write(bytes);
        Assert.Equal(new byte[] { 9, 0, 0, 0, 9, 0, 0, 0, 40, 0, 0, 0 }, bytes);
        var back = VhostUserHeader.Read(bytes);
        Assert.True(back.NeedReply);
        Assert.True(back.Validate(out _));
    }

    [Fact]
    public void Vring_address_layout_is_index_flags_desc_used_avail_log()
    {
        var bytes = new byte[VringAddress.Size];
        new VringAddress(1, 0, 0x1111, 0x2222, 0x3333, 0x4444).Write(bytes);
        Assert.Equal(0x11, bytes[8]);
        Assert.Equal(0x22, bytes[16]);
        Assert.Equal(0x33, bytes[24]);
        Assert.Equal(0x44, bytes[32]);
        Assert.Equal(new VringAddress(1, 0, 0x1111, 0x2222, 0x3333, 0x4444), VringAddress.Read(bytes));
        Assert.False(new VringAddress(0, 2, 0, 0, 0, 0).Validate(2, out string? error));
        Assert.Contains("unknown vring address flags", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Memory_table_round_trips_and_rejects_bad_counts()
    {
        var table = new VhostUserMemoryTable([new(0, 0x1000, 0x7000, 0), new(0x1000, 0x2000, 0x9000, 0x1000)]);
        var bytes = new byte[VhostUserMemoryTable.WireSize(2)];
        Assert.Equal(72, table.Write(bytes));
        Assert.True(VhostUserMemoryTable.TryRead(bytes, 2, out var back, out _));
        Assert.Equal(table.Regions, back!.Regions);
        Assert.False(VhostUserMemoryTable.TryRead(bytes, 1, out _, out string? error));
        Assert.Contains("1 descriptors for 2 regions", error, StringComparison.Ordinal);
        Assert.False(VhostUserMemoryTable.TryRead(bytes.AsSpan(0, 40), 2, out _, out error));
        Assert.Contains("does not match 2 regions", error, StringComparison.Ordinal);
        bytes[0] = 9;
        Assert.False(VhostUserMemoryTable.TryRead(bytes, 9, out _, out error));
        Assert.Contains("region count 9", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Config_checks_size_range_and_flags()
    {
        var bytes = new byte[12 + 4];
        new VhostUserConfig(250, 0, new byte[4]).Write(bytes);
        Assert.True(VhostUserConfig.TryRead(bytes, out _, out _));
        new VhostUserConfig(253, 0, new byte[4]).Write(bytes);
        Assert.False(VhostUserConfig.TryRead(bytes, out _, out string? error));
        Assert.Contains("exceeds 256", error, StringComparison.Ordinal);
        new VhostUserConfig(0, 2, new byte[4]).Write(bytes);
        Assert.False(VhostUserConfig.TryRead(bytes, out _, out error));
        Assert.Contains("unknown config flags", error, StringComparison.Ordinal);
        Assert.False(VhostUserConfig.TryRead(bytes.AsSpan(0, 15), out _, out error));
        Assert.Contains("does not match config size 4", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Region_validation_catches_every_overflow()
    {
        Assert.True(new VhostUserMemoryRegion(0, 0x1000, 0x1000, 0).Validate(out _));
        Assert.False(new VhostUserMemoryRegion(0, 0, 0, 0).Validate(out _));
        Assert.False(new VhostUserMemoryRegion(ulong.MaxValue, 2, 0, 0).Validate(out _));
        Assert.False(new VhostUserMemoryRegion(0, 2, ulong.MaxValue, 0).Validate(out _));
        Assert.False(new VhostUserMemoryRegion(0, 2, 0, ulong.MaxValue).Validate(out _));
    }
}
