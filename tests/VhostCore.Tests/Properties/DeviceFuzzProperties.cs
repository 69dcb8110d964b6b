using CsCheck;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;
using Xunit.Abstractions;

namespace PciVirtio.VhostCore.Tests.Properties;

/// <summary>
/// The device against a hostile driver: the descriptor table, an indirect area and the
/// avail ring filled with random (biased) bytes. Whatever is there, the device must not
/// throw, every PopAvail must terminate, every segment it returns must lie inside the
/// memory table where the table maps it, and a broken queue must say why.
/// </summary>
public class DeviceFuzzProperties(ITestOutputHelper output)
{
    private const ulong MemorySize = 0x100000;
    private const int IndirectDescs = 64;
    private static readonly ulong[] RegionSizes = [0, 0x1000, 0x2000, 0x10000];
    private static readonly int[] SegmentBufferSizes = [1, 2, 3, 8, 64, 512];

    /// <summary>How many descriptors in ten are well formed, per hostility level of a case.</summary>
    private static readonly int[] Sanity = [10, 9, 6, 0];

    /// <summary>A raw descriptor. With probability <paramref name="sanity"/>/10 a well-formed
    /// one (a buffer inside memory, NEXT/WRITE flags, next inside the table, now and then an
    /// indirect descriptor naming a slice of the indirect area); otherwise biased towards
    /// the interesting bad cases: addresses at the edges of and outside guest memory,
    /// lengths zero, indirect-table shaped or huge, any flags, next near or past the table.</summary>
    public readonly record struct RawDesc(ulong Addr, uint Len, ushort Flags, ushort Next);

    private static Gen<RawDesc> GenDesc(int tableSize, int sanity, bool allowIndirect, int writeMode) =>
        Gen.Select(Gen.Int[0, 6], Gen.ULong, Gen.Int[0, 5], Gen.UInt, Gen.Int[0, 9], Gen.UShort, Gen.Int[0, 4], Gen.UShort, Gen.Int[0, 9],
            (addrKind, r, lenKind, lr, flagKind, rawFlags, nextKind, rawNext, roll) =>
            {
                if (roll < sanity)
                {
                    if (flagKind == 9 && allowIndirect)
                    {
                        ulong first = r % (IndirectDescs - 1);
                        ulong count = 1 + (lr % (IndirectDescs - first));
                        return new RawDesc(RingHarness.GuestBase + RingHarness.IndirectAreaOffset + (first * 16), (uint)(count * 16), (ushort)VirtqDescFlags.Indirect, 0);
                    }

                    // writeMode 0: all readable, 1: all writable, 2: mixed (readable-after-writable happens).
                    bool write = writeMode == 2 ? rawFlags % 2 == 0 : writeMode == 1;
                    var flags = (flagKind % 3 == 0 ? VirtqDescFlags.Next : VirtqDescFlags.None) | (write ? VirtqDescFlags.Write : VirtqDescFlags.None);
                    return new RawDesc(RingHarness.GuestBase + 0x20000 + (r % (MemorySize - 0x20000 - 4096)), lr % 4096, (ushort)flags, (ushort)(rawNext % tableSize));
                }

                ulong addr = addrKind switch
                {
                    0 => r,
                    1 => RingHarness.GuestBase + 0x20000 + (r % (MemorySize - 0x20000)),
                    2 => RingHarness.GuestBase + MemorySize - (r % 64),            // straddles the end
                    3 => RingHarness.GuestBase + RingHarness.IndirectAreaOffset + ((r % IndirectDescs) * 16),
                    4 => RingHarness.GuestBase - (r % 64),                         // just below memory
                    5 => ulong.MaxValue - (r % 4096),                              // overflows
                    _ => RingHarness.GuestBase + (r % MemorySize),                 // anywhere, even the ring
                };
                uint len = lenKind switch
                {
                    0 => lr,
                    1 => lr % 4096,
                    2 => ((lr % 8) + 1) * 16,
                    3 => 0,
                    4 => (lr % 0x30000) + 1,
                    _ => lr % 64,
                };
                ushort flagBits = flagKind < 8 ? (ushort)flagKind : rawFlags;
                ushort next = nextKind < 4 ? (ushort)(rawNext % (tableSize + 2)) : rawNext;
                return new RawDesc(addr, len, flagBits, next);
            });

    public sealed record Case(
        int Level,
        int Size,
        VirtioFeatures Features,
        ulong RegionSize,
        ChainErrorPolicy Policy,
        RawDesc[] Table,
        RawDesc[] Indirect,
        ushort AvailIdx,
        ushort[] AvailRing,
        int[] Actions)
    {
        public override string ToString() =>
            $"level {Level} size {Size} {Features} region 0x{RegionSize:x} {Policy} avail.idx {AvailIdx} ring [{string.Join(",", AvailRing)}] " +
            $"table [{string.Join(" ", Table)}] indirect [{string.Join(" ", Indirect)}] actions [{string.Join(",", Actions)}]";
    }

    private static Gen<Case> GenCase(ChainErrorPolicy policy) =>
        from sizeLog2 in Gen.Int[0, 8]
        let size = 1 << sizeLog2
        from level in Gen.Int[0, Sanity.Length - 1]
        from eventIdx in Gen.Bool
        from indirect in Gen.Int[0, 3]
        from region in Gen.Int[0, RegionSizes.Length - 1]
        from writeMode in Gen.Int[0, 2]
        from table in GenDesc(size, Sanity[level], indirect > 0 || level > 0, writeMode).Array[size]
        from ind in GenDesc(IndirectDescs, Sanity[level], level > 0, writeMode).Array[IndirectDescs]
        from idxKind in Gen.Int[0, 3]
        from idxSmall in Gen.Int[0, size + 1]
        from idxAny in Gen.UShort
        from ring in Gen.Select(Gen.Int[0, 4], Gen.UShort)
            .Select(t => level == 0 ? (ushort)(t.Item2 % size) : t.Item1 < 4 ? (ushort)(t.Item2 % (size + 1)) : t.Item2).Array[size]
        from actions in Gen.Int[0, 1 << 20].Array[4, 40]
        from loop in Gen.Int[0, 11]
        from loopAt in Gen.Int[0, size - 1]
        let rings = InjectLoop(table, ind, loop, loopAt, size)
        select new Case(
            level,
            size,
            VirtioFeatures.Version1
                | (eventIdx ? VirtioFeatures.RingEventIdx : VirtioFeatures.None)
                | (indirect > 0 ? VirtioFeatures.RingIndirectDesc : VirtioFeatures.None),
            RegionSizes[region],
            policy,
            rings.Table,
            rings.Indirect,
            level == 0 ? (ushort)Math.Min(idxSmall, size) : idxKind < 3 ? (ushort)idxSmall : idxAny,
            loop is 1 or 2 or 4 or 5 ? [(ushort)loopAt, .. ring[1..]] : ring,
            actions);

    /// <summary>Makes a chain that would loop forever without consuming segments, so only
    /// the chain limit stops a walk through it: zero-length readable descriptors with NEXT
    /// back to themselves (kind 1) or to each other (kind 2) in the descriptor table, or the
    /// same inside an indirect table that descriptor <paramref name="at"/> points to (kinds 4
    /// and 5). Other kinds leave the rings as generated. The avail ring's first entry then
    /// names <paramref name="at"/>.</summary>
    private static (RawDesc[] Table, RawDesc[] Indirect) InjectLoop(RawDesc[] table, RawDesc[] indirect, int kind, int at, int size)
    {
        if (kind is not (1 or 2 or 4 or 5))
        {
            return (table, indirect);
        }

        var t = (RawDesc[])table.Clone();
        var ind = (RawDesc[])indirect.Clone();
        ulong data = RingHarness.GuestBase + 0x20000;
        var next = (ushort)VirtqDescFlags.Next;
        if (kind is 1 or 2)
        {
            int other = kind == 1 ? at : (at + 1) % size;
            t[at] = new RawDesc(data, 0, next, (ushort)other);
            t[other] = new RawDesc(data, 0, next, (ushort)at);
        }
        else
        {
            t[at] = new RawDesc(RingHarness.GuestBase + RingHarness.IndirectAreaOffset, 16 * 4, (ushort)VirtqDescFlags.Indirect, 0);
            ind[0] = new RawDesc(data, 0, next, kind == 4 ? (ushort)0 : (ushort)1);
            ind[1] = new RawDesc(data, 0, next, 0);
        }

        return (t, ind);
    }

    /// <summary>What the random rings exercised, so the property cannot pass vacuously.</summary>
    private sealed class Coverage
    {
        public int Cases;
        public int Broken;
        public int Survived;
        public long ChainsPopped;
        public long ChainsDiscarded;
        public long Segments;
        public readonly HashSet<QueueError> Errors = [];
    }

    [Theory]
    [InlineData(ChainErrorPolicy.BreakQueue, 21u)]
    [InlineData(ChainErrorPolicy.DiscardChain, 22u)]
    public void Random_rings_never_make_the_device_throw_hang_or_leave_guest_memory(ChainErrorPolicy policy, uint stream)
    {
        var coverage = new Coverage();
        PropertyRunner.WithTimeout(TimeSpan.FromSeconds(60), () =>
            PropertyRunner.Run(GenCase(policy), c => Exercise(c, coverage), iterations: 200, stream: stream, print: c => c.ToString()));

        output.WriteLine($"{coverage.Cases} rings: {coverage.Broken} broke the queue ({string.Join(", ", coverage.Errors)}), {coverage.Survived} did not; " +
            $"{coverage.ChainsPopped} chains accepted with {coverage.Segments} segments, {coverage.ChainsDiscarded} discarded");
        Assert.Equal(200, coverage.Cases);
        Assert.True(coverage.Broken >= 20, $"only {coverage.Broken} rings broke the queue");
        Assert.True(coverage.Survived >= 5, $"only {coverage.Survived} rings left the queue running");
        Assert.True(coverage.ChainsPopped >= 30, $"only {coverage.ChainsPopped} chains were accepted");
        Assert.True(coverage.Segments >= 30, $"only {coverage.Segments} segments were returned");
        Assert.True(coverage.Errors.Count >= (policy == ChainErrorPolicy.BreakQueue ? 6 : 1), $"only these errors were seen: {string.Join(", ", coverage.Errors)}");
        if (policy == ChainErrorPolicy.DiscardChain)
        {
            Assert.True(coverage.ChainsDiscarded >= 20, $"only {coverage.ChainsDiscarded} chains were discarded");
        }
    }

    private static void Write(RingHarness h, ulong at, RawDesc d)
    {
        Span<byte> b = stackalloc byte[16];
        BitConverter.TryWriteBytes(b, d.Addr);
        BitConverter.TryWriteBytes(b[8..], d.Len);
        BitConverter.TryWriteBytes(b[12..], d.Flags);
        BitConverter.TryWriteBytes(b[14..], d.Next);
        Assert.True(h.Memory.TryWrite(at, b));
    }

    private static void Exercise(Case c, Coverage coverage)
    {
        using var h = new RingHarness(queueSize: c.Size, features: c.Features, memorySize: MemorySize, regionSize: c.RegionSize);
        for (int i = 0; i < c.Size; i++)
        {
            Write(h, h.State.DescTable + (16 * (ulong)i), c.Table[i]);
        }

        for (int i = 0; i < IndirectDescs; i++)
        {
            Write(h, RingHarness.GuestBase + RingHarness.IndirectAreaOffset + (16 * (ulong)i), c.Indirect[i]);
        }

        h.PublishRawAvail(0, c.AvailRing);
        h.WriteU16(h.State.AvailRing + 2, c.AvailIdx);

        var memory = new GuestMemory<CheckedAccessor<RamAccessor>>(h.Table, new CheckedAccessor<RamAccessor>(h.Block.Address, h.Block.Size, default));
        var device = new SplitQueueDevice<CheckedAccessor<RamAccessor>>("fuzz-device", c.Policy);
        Assert.True(device.Start(h.State, memory), device.BrokenReason);

        var chains = new DescriptorChain[8];
        var segments = new IoSegment[SegmentBufferSizes[^1]];
        long pushed = 0;
        int popped = 0;
        for (int step = 0; step < c.Actions.Length && !device.IsBroken; step++)
        {
            int a = c.Actions[step];
            int batch = 1 + (a % chains.Length);
            // A well-formed ring (level 0) gets segment buffers big enough for any of its chains.
            int segCount = SegmentBufferSizes[(a >> 3) % SegmentBufferSizes.Length];
            segCount = c.Level == 0 ? Math.Max(segCount, 64) : segCount;
            var segs = segments.AsSpan(0, segCount);
            int n = device.PopAvail(chains.AsSpan(0, batch), segs);
            Assert.InRange(n, 0, batch);
            popped += n;
            int segEnd = 0;
            for (int i = 0; i < n; i++)
            {
                var chain = chains[i];
                Assert.True(chain.Head < c.Size, $"head {chain.Head} outside the queue");
                Assert.True(chain.SegmentStart >= segEnd, "chains share segments");
                segEnd = chain.SegmentStart + chain.ReadableSegments + chain.WritableSegments;
                Assert.True(segEnd <= segCount, "segments beyond the caller's buffer");
                CheckInside(h, chain.Readable(segs), chain.ReadableBytes);
                CheckInside(h, chain.Writable(segs), chain.WritableBytes);
                coverage.Segments += chain.ReadableSegments + chain.WritableSegments;

                // Complete some of them, with lengths the device might report.
                if (((a >> (6 + i)) & 1) == 0)
                {
                    device.PushUsed(chain.Head, chain.WritableBytes);
                    pushed++;
                }
            }

            switch ((a >> 16) % 6)
            {
                case 0:
                    device.FlushUsed();
                    device.NeedsInterrupt();
                    break;
                case 1:
                    device.DisableNotifications();
                    break;
                case 2:
                    device.EnableNotifications();
                    break;
                case 3:
                    Assert.InRange(device.AvailPending(), 0, c.Size);
                    break;
                case 4 when c.Level > 0:
                    // The hostile driver moves avail.idx again.
                    h.WriteU16(h.State.AvailRing + 2, (ushort)(c.AvailIdx + (a % 7)));
                    break;
                default:
                    break;
            }
        }

        coverage.Cases++;
        coverage.ChainsPopped += device.ChainsPopped;
        coverage.ChainsDiscarded += device.ChainsDiscarded;
        if (device.IsBroken)
        {
            coverage.Broken++;
            coverage.Errors.Add(device.Error);
            Assert.NotEqual(QueueError.None, device.Error);
            Assert.False(string.IsNullOrEmpty(device.BrokenReason));
            Assert.False(device.IsRunning);
            Assert.Equal(0, device.PopAvail(chains, segments));
            Assert.False(device.EnableNotifications());
            Assert.False(device.NeedsInterrupt());
        }
        else
        {
            coverage.Survived++;
            Assert.Equal(QueueError.None, device.Error);
            Assert.Null(device.BrokenReason);
            device.FlushUsed();

            // Every avail entry consumed was either handed out or discarded (and returned).
            Assert.Equal((ushort)(device.ChainsPopped + device.ChainsDiscarded), device.State.NextAvail);
            Assert.Equal(popped, device.ChainsPopped);
            Assert.Equal((ushort)(pushed + device.ChainsDiscarded), h.ReadU16(h.State.UsedRing + 2));
        }

        if (c.Policy == ChainErrorPolicy.BreakQueue)
        {
            Assert.Equal(0, device.ChainsDiscarded);
        }
    }

    /// <summary>Every segment is non-empty and lies in one region, mapped where the table
    /// maps its guest address; the segments add up to the chain's byte count.</summary>
    private static void CheckInside(RingHarness h, ReadOnlySpan<IoSegment> segments, uint expectedBytes)
    {
        ulong total = 0;
        ulong blockStart = (ulong)h.Block.Address;
        foreach (var s in segments)
        {
            if (s.Length == 0
                || h.Table.TranslatePiece(s.Guest, s.Length, out nint host) != s.Length
                || host != s.Host
                || (ulong)s.Host < blockStart
                || (ulong)s.Host + s.Length > blockStart + h.Block.Size)
            {
                Assert.Fail($"segment {s} at host 0x{s.Host:x} is empty, outside guest memory, or not where the table maps it");
            }

            total += s.Length;
        }

        Assert.Equal(expectedBytes, total);
    }
}
