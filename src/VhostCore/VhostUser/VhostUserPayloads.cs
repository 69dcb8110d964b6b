using System.Buffers.Binary;

namespace PciVirtio.VhostCore.VhostUser;

/// <summary>The 12-byte message header: request, flags, payload size (little-endian).</summary>
public readonly record struct VhostUserHeader(VhostUserRequest Request, VhostUserHeaderFlags Flags, uint Size)
{
    public bool NeedReply => (Flags & VhostUserHeaderFlags.NeedReply) != 0;

    public static VhostUserHeader Read(ReadOnlySpan<byte> source) => new(
        (VhostUserRequest)BinaryPrimitives.ReadUInt32LittleEndian(source),
        (VhostUserHeaderFlags)BinaryPrimitives.ReadUInt32LittleEndian(source[4..]),
        BinaryPrimitives.ReadUInt32LittleEndian(source[8..]));

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, (uint)Request);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], (uint)Flags);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[8..], Size);
    }

    /// <summary>Version 1 is the only one defined; REPLY must not be set on a request.</summary>
    public bool Validate(out string? error)
    {
        if ((Flags & VhostUserHeaderFlags.VersionMask) != VhostUserHeaderFlags.Version1)
        {
            error = $"header version {(uint)(Flags & VhostUserHeaderFlags.VersionMask)} is not 1";
        }
        else if ((Flags & VhostUserHeaderFlags.Reply) != 0)
        {
            error = "REPLY flag set on a request";
        }
        else
        {
            error = null;
            return true;
        }

        return false;
    }
}

/// <summary>A u64 body (features, kick/call/err index+flags, status, MTU, RARP MAC...).</summary>
public readonly record struct VhostUserU64(ulong Value)
{
    public const int Size = 8;

    public static VhostUserU64 Read(ReadOnlySpan<byte> s) => new(BinaryPrimitives.ReadUInt64LittleEndian(s));

    public void Write(Span<byte> d) => BinaryPrimitives.WriteUInt64LittleEndian(d, Value);
}

/// <summary>struct vhost_vring_state: SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE.</summary>
public readonly record struct VringState(uint Index, uint Num)
{
    public const int Size = 8;

    public static VringState Read(ReadOnlySpan<byte> s) =>
        new(BinaryPrimitives.ReadUInt32LittleEndian(s), BinaryPrimitives.ReadUInt32LittleEndian(s[4..]));

    public void Write(Span<byte> d)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(d, Index);
        BinaryPrimitives.WriteUInt32LittleEndian(d[4..], Num);
    }

    public bool ValidateIndex(int queueCount, out string? error)
    {
        error = Index < (uint)queueCount ? null : $"vring index {Index} out of range (queue count {queueCount})";
        return error is null;
    }
}

/// <summary>struct vhost_vring_addr: index, flags, then frontend virtual addresses of the
/// descriptor table, used ring, avail ring, and the log's guest address.</summary>
public readonly record struct VringAddress(uint Index, uint Flags, ulong DescUser, ulong UsedUser, ulong AvailUser, ulong LogGuest)
{
    public const int Size = 40;

    public static VringAddress Read(ReadOnlySpan<byte> s) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(s),
        BinaryPrimitives.ReadUInt32LittleEndian(s[4..]),
        BinaryPrimitives.ReadUInt64LittleEndian(s[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(s[16..]),
        BinaryPrimitives.ReadUInt64LittleEndian(s[24..]),
        BinaryPrimitives.ReadUInt64LittleEndian(s[32..]));

    public void Write(Span<byte> d)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(d, Index);
        BinaryPrimitives.WriteUInt32LittleEndian(d[4..], Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(d[8..], DescUser);
        BinaryPrimitives.WriteUInt64LittleEndian(d[16..], UsedUser);
        BinaryPrimitives.WriteUInt64LittleEndian(d[24..], AvailUser);
        BinaryPrimitives.WriteUInt64LittleEndian(d[32..], LogGuest);
    }

    /// <summary>Index in range; no flag but LOG, and LOG refused (we offer no logging).</summary>
    public bool Validate(int queueCount, out string? error)
    {
        if (Index >= (uint)queueCount)
        {
            error = $"vring index {Index} out of range (queue count {queueCount})";
        }
        else if ((Flags & ~VhostUserConstants.VringFlagLog) != 0)
        {
            error = $"unknown vring address flags 0x{Flags:x}";
        }
        else if ((Flags & VhostUserConstants.VringFlagLog) != 0)
        {
            error = "VHOST_VRING_F_LOG set but dirty logging is not supported";
        }
        else
        {
            error = null;
            return true;
        }

        return false;
    }
}

/// <summary>VhostUserMemoryRegion: guest address, size, frontend virtual address, mmap offset.</summary>
public readonly record struct VhostUserMemoryRegion(ulong GuestPhysAddr, ulong Size, ulong UserAddr, ulong MmapOffset)
{
    public const int WireSize = 32;

    public static VhostUserMemoryRegion Read(ReadOnlySpan<byte> s) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(s),
        BinaryPrimitives.ReadUInt64LittleEndian(s[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(s[16..]),
        BinaryPrimitives.ReadUInt64LittleEndian(s[24..]));

    public void Write(Span<byte> d)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(d, GuestPhysAddr);
        BinaryPrimitives.WriteUInt64LittleEndian(d[8..], Size);
        BinaryPrimitives.WriteUInt64LittleEndian(d[16..], UserAddr);
        BinaryPrimitives.WriteUInt64LittleEndian(d[24..], MmapOffset);
    }

    /// <summary>Non-empty, and no address arithmetic (gpa, uaddr, mmap offset + size) overflows.</summary>
    public bool Validate(out string? error)
    {
        if (Size == 0)
        {
            error = "region size is zero";
        }
        else if (GuestPhysAddr + (Size - 1) < GuestPhysAddr)
        {
            error = $"guest address 0x{GuestPhysAddr:x} + size 0x{Size:x} overflows";
        }
        else if (UserAddr + (Size - 1) < UserAddr)
        {
            error = $"user address 0x{UserAddr:x} + size 0x{Size:x} overflows";
        }
        else if (MmapOffset + (Size - 1) < MmapOffset || MmapOffset + Size > long.MaxValue)
        {
            error = $"mmap offset 0x{MmapOffset:x} + size 0x{Size:x} overflows";
        }
        else
        {
            error = null;
            return true;
        }

        return false;
    }

    public override string ToString() =>
        $"gpa 0x{GuestPhysAddr:x} size 0x{Size:x} uaddr 0x{UserAddr:x} offset 0x{MmapOffset:x}";
}

/// <summary>SET_MEM_TABLE body: nregions u32, padding u32, nregions regions (one fd each).</summary>
public sealed record VhostUserMemoryTable(VhostUserMemoryRegion[] Regions)
{
    public const int HeaderSize = 8;

    public static int WireSize(int regions) => HeaderSize + (regions * VhostUserMemoryRegion.WireSize);

    /// <summary>Decodes and validates: 1..8 regions, the size exactly covering them, one fd
    /// per region, every region well formed.</summary>
    public static bool TryRead(ReadOnlySpan<byte> s, int fdCount, out VhostUserMemoryTable? table, out string? error)
    {
        table = null;
        if (s.Length < HeaderSize)
        {
            error = $"payload of {s.Length} bytes is shorter than the region count";
            return false;
        }

        uint n = BinaryPrimitives.ReadUInt32LittleEndian(s);
        if (n == 0 || n > VhostUserConstants.MaxMemTableRegions)
        {
            error = $"region count {n} is not 1..{VhostUserConstants.MaxMemTableRegions}";
            return false;
        }

        if (s.Length != WireSize((int)n))
        {
            error = $"size {s.Length} does not match {n} regions ({WireSize((int)n)} bytes)";
            return false;
        }

        if (fdCount != n)
        {
            error = $"{fdCount} descriptors for {n} regions";
            return false;
        }

        var regions = new VhostUserMemoryRegion[n];
        for (int i = 0; i < n; i++)
        {
            regions[i] = VhostUserMemoryRegion.Read(s[(HeaderSize + (i * VhostUserMemoryRegion.WireSize))..]);
            if (!regions[i].Validate(out error))
            {
                error = $"region {i} ({regions[i]}): {error}";
                return false;
            }
        }

        table = new VhostUserMemoryTable(regions);
        error = null;
        return true;
    }

    public int Write(Span<byte> d)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(d, (uint)Regions.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(d[4..], 0);
        for (int i = 0; i < Regions.Length; i++)
        {
            Regions[i].Write(d[(HeaderSize + (i * VhostUserMemoryRegion.WireSize))..]);
        }

        return WireSize(Regions.Length);
    }
}

/// <summary>ADD_MEM_REG / REM_MEM_REG body: u64 padding, then one region.</summary>
public readonly record struct VhostUserSingleMemoryRegion(VhostUserMemoryRegion Region)
{
    public const int Size = 8 + VhostUserMemoryRegion.WireSize;

    public static VhostUserSingleMemoryRegion Read(ReadOnlySpan<byte> s) => new(VhostUserMemoryRegion.Read(s[8..]));

    public void Write(Span<byte> d)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(d, 0);
        Region.Write(d[8..]);
    }

    public bool Validate(out string? error) => Region.Validate(out error);
}

/// <summary>GET_CONFIG / SET_CONFIG body: offset, size, flags, then size bytes of config space.</summary>
public sealed record VhostUserConfig(uint Offset, uint Flags, byte[] Payload)
{
    public const int HeaderSize = 12;

    public int WireSize => HeaderSize + Payload.Length;

    public static bool TryRead(ReadOnlySpan<byte> s, out VhostUserConfig? config, out string? error)
    {
        config = null;
        if (s.Length < HeaderSize)
        {
            error = $"payload of {s.Length} bytes is shorter than the config header";
            return false;
        }

        uint offset = BinaryPrimitives.ReadUInt32LittleEndian(s);
        uint size = BinaryPrimitives.ReadUInt32LittleEndian(s[4..]);
        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(s[8..]);
        if (size > VhostUserConstants.MaxConfigSize)
        {
            error = $"config size {size} exceeds {VhostUserConstants.MaxConfigSize}";
        }
        else if (s.Length != HeaderSize + size)
        {
            error = $"message size {s.Length} does not match config size {size} + {HeaderSize}";
        }
        else if (offset > VhostUserConstants.MaxConfigSize || offset + size > VhostUserConstants.MaxConfigSize)
        {
            error = $"config range offset {offset} size {size} exceeds {VhostUserConstants.MaxConfigSize}";
        }
        else if (flags > 1)
        {
            error = $"unknown config flags 0x{flags:x}";
        }
        else
        {
            config = new VhostUserConfig(offset, flags, s.Slice(HeaderSize, (int)size).ToArray());
            error = null;
            return true;
        }

        return false;
    }

    public int Write(Span<byte> d)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(d, Offset);
        BinaryPrimitives.WriteUInt32LittleEndian(d[4..], (uint)Payload.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], Flags);
        Payload.CopyTo(d[HeaderSize..]);
        return WireSize;
    }
}
