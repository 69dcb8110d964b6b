using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;
using static PciVirtio.VhostCore.Tests.Validation.HostileRing;

namespace PciVirtio.VhostCore.Tests.Validation;

/// <summary>
/// Records every byte the device loads from watched ranges (the descriptor table and an
/// indirect table) and, when <see cref="Tamper"/> is set, overwrites each byte with 0xFF right
/// after it was read: a guest racing the device. A device that reads a descriptor twice
/// (validate one copy, use another) either counts a second read or sees the garbage.
/// </summary>
public sealed class DescriptorReadSpy
{
    private readonly List<(nint Start, int[] Reads)> _ranges = [];

    public bool Tamper { get; set; }

    public void Watch(nint start, int length) => _ranges.Add((start, new int[length]));

    public int ReadsOf(int range, int offset) => _ranges[range].Reads[offset];

    public int MaxReads => _ranges.Max(r => r.Reads.Max());

    public unsafe void OnRead(nint address, int length)
    {
        foreach (var (start, reads) in _ranges)
        {
            for (int i = 0; i < length; i++)
            {
                long offset = (long)(address - start) + i;
                if (offset >= 0 && offset < reads.Length)
                {
                    reads[offset]++;
                    if (Tamper)
                    {
                        *(byte*)(address + i) = 0xff;
                    }
                }
            }
        }
    }
}

/// <summary>Ordinary RAM access, reporting loads to a <see cref="DescriptorReadSpy"/>.</summary>
public readonly struct SpyAccessor(DescriptorReadSpy spy) : IMemoryAccessor
{
    private static RamAccessor Ram => default;

    public ushort LoadU16(nint address)
    {
        ushort v = Ram.LoadU16(address);
        spy.OnRead(address, 2);
        return v;
    }

    public uint LoadU32(nint address)
    {
        uint v = Ram.LoadU32(address);
        spy.OnRead(address, 4);
        return v;
    }

    public ulong LoadU64(nint address)
    {
        ulong v = Ram.LoadU64(address);
        spy.OnRead(address, 8);
        return v;
    }

    public ushort LoadAcquireU16(nint address)
    {
        ushort v = Ram.LoadAcquireU16(address);
        spy.OnRead(address, 2);
        return v;
    }

    public void StoreU16(nint address, ushort value) => Ram.StoreU16(address, value);

    public void StoreU32(nint address, uint value) => Ram.StoreU32(address, value);

    public void StoreU64(nint address, ulong value) => Ram.StoreU64(address, value);

    public void StoreU64Pair(nint address, ulong first, ulong second) => Ram.StoreU64Pair(address, first, second);

    public void StoreReleaseU16(nint address, ushort value) => Ram.StoreReleaseU16(address, value);

    public void FullBarrier() => Ram.FullBarrier();

    public void CopyFrom(nint source, Span<byte> destination)
    {
        Ram.CopyFrom(source, destination);
        spy.OnRead(source, destination.Length);
    }

    public void CopyTo(nint destination, ReadOnlySpan<byte> source) => Ram.CopyTo(destination, source);
}

public class NoDoubleFetchTests
{
    private static (ulong Guest, uint Length)[] Describe(ReadOnlySpan<IoSegment> segs)
    {
        var result = new (ulong, uint)[segs.Length];
        for (int i = 0; i < segs.Length; i++)
        {
            result[i] = (segs[i].Guest, segs[i].Length);
        }

        return result;
    }

    [Fact]
    public void Each_descriptor_byte_is_read_once_and_a_racing_rewrite_is_not_seen()
    {
        using var h = new RingHarness(queueSize: 16, features: WithIndirect);

        // Direct chain 0 -> 1 -> 2, and an indirect chain at head 3 with three entries.
        h.WriteDesc(0, Buf(0), 100, VirtqDescFlags.Next, 1);
        h.WriteDesc(1, Buf(1), 200, VirtqDescFlags.Next, 2);
        h.WriteDesc(2, Buf(2), 300, VirtqDescFlags.Write, 0);
        WriteIndirect(h, Table, 0, Buf(3), 64, VirtqDescFlags.Next, 1);
        WriteIndirect(h, Table, 1, Buf(4), 64, VirtqDescFlags.Write | VirtqDescFlags.Next, 2);
        WriteIndirect(h, Table, 2, Buf(5), 64, VirtqDescFlags.Write, 0);
        h.WriteDesc(3, Table, 48, VirtqDescFlags.Indirect, 0);
        h.PublishRawAvail(0, 0, 3);

        var spy = new DescriptorReadSpy { Tamper = true };
        Assert.True(h.Table.TryTranslate(h.State.DescTable, 16 * 16, out nint descHost));
        Assert.True(h.Table.TryTranslate(Table, 48, out nint tableHost));
        spy.Watch(descHost, 16 * 16);
        spy.Watch(tableHost, 48);

        var device = new SplitQueueDevice<SpyAccessor>("spied");
        Assert.True(device.Start(h.State, new GuestMemory<SpyAccessor>(h.Table, new SpyAccessor(spy))));
        var chains = new DescriptorChain[4];
        var segs = new IoSegment[8];
        Assert.Equal(2, Pop(device, chains, segs));
        Assert.False(device.IsBroken, device.BrokenReason);

        Assert.Equal([(Buf(0), 100u), (Buf(1), 200u)], Describe(chains[0].Readable(segs)));
        Assert.Equal([(Buf(2), 300u)], Describe(chains[0].Writable(segs)));
        Assert.Equal([(Buf(3), 64u)], Describe(chains[1].Readable(segs)));
        Assert.Equal([(Buf(4), 64u), (Buf(5), 64u)], Describe(chains[1].Writable(segs)));

        // Every byte of descriptors 0..3 and of the three table entries read exactly once.
        Assert.Equal(1, spy.MaxReads);
        for (int b = 0; b < 4 * 16; b++)
        {
            Assert.Equal(1, spy.ReadsOf(0, b));
        }

        for (int b = 0; b < 48; b++)
        {
            Assert.Equal(1, spy.ReadsOf(1, b));
        }

        Assert.Equal(0, spy.ReadsOf(0, 4 * 16)); // descriptor 4 is in no chain

        // The tampering did happen: the table in memory is garbage now.
        Assert.Equal(0xffff, h.ReadU16(h.State.DescTable + 12));
    }

    [Fact]
    public void Rewriting_the_table_after_pop_does_not_change_returned_segments_and_the_next_pop_reads_afresh()
    {
        using var h = new RingHarness(queueSize: 16);
        h.WriteDesc(0, Buf(0), 100, VirtqDescFlags.Next, 1);
        h.WriteDesc(1, Buf(1), 200, VirtqDescFlags.Write, 0);
        h.PublishRawAvail(0, 0);

        var chains = new DescriptorChain[1];
        var segs = new IoSegment[4];
        Assert.Equal(1, Pop(h.Device, chains, segs));
        var first = chains[0];
        var snapshot = Describe(segs.AsSpan(0, 2));

        // The guest reuses the same descriptors for something else (hostile: while in flight).
        h.WriteDesc(0, Buf(7), 10, VirtqDescFlags.None, 0);
        h.WriteDesc(1, 0x1000, 20, VirtqDescFlags.Write, 0);
        Assert.Equal(snapshot, Describe(segs.AsSpan(0, 2)));
        Assert.Equal(100u, first.ReadableBytes);
        Assert.Equal(200u, first.WritableBytes);
        Assert.False(h.Device.IsBroken);

        // A later avail entry naming head 0 sees the new descriptor, not a cached one.
        h.PublishRawAvail(1, 0);
        Assert.Equal(1, Pop(h.Device, chains, segs));
        Assert.Equal([(Buf(7), 10u)], Describe(chains[0].Readable(segs)));
        Assert.Equal(0, chains[0].WritableSegments);
    }
}
