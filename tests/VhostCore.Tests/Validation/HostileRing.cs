using System.Buffers.Binary;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;

namespace PciVirtio.VhostCore.Tests.Validation;

/// <summary>Helpers for tests that feed the device rings built by hand.</summary>
internal static class HostileRing
{
    public const VirtioFeatures WithIndirect = VirtioFeatures.Version1 | VirtioFeatures.RingIndirectDesc;

    /// <summary>Guest address of an indirect table used by hand-built chains.</summary>
    public const ulong Table = HarnessLayout.GuestBase + HarnessLayout.IndirectAreaOffset;

    public static ulong Buf(int i) => HarnessLayout.Buffer(i);

    /// <summary>
    /// Pops on a separate thread and waits a bounded time, so a chain walk that never ends
    /// fails the test instead of hanging the run, and an exception is reported as such.
    /// </summary>
    public static int Pop<TAccess>(SplitQueueDevice<TAccess> device, DescriptorChain[] chains, IoSegment[] segments)
        where TAccess : struct, IMemoryAccessor
    {
        int result = -1;
        Exception? thrown = null;
        var worker = new Thread(() =>
        {
            try
            {
                result = device.PopAvail(chains, segments);
            }
#pragma warning disable CA1031 // any exception out of the data path is the failure being tested for
            catch (Exception e)
#pragma warning restore CA1031
            {
                thrown = e;
            }
        })
        { IsBackground = true };
        worker.Start();
        Assert.True(worker.Join(TimeSpan.FromSeconds(10)), "PopAvail did not return: the chain walk does not terminate");
        Assert.Null(thrown);
        return result;
    }

    /// <summary>Pops with a segment buffer larger than any loop-free chain of the queue can
    /// fill, so a loop is caught by the chain-length check, not by the segment limit.</summary>
    public static int Pop<TAccess>(RingHarness<TAccess> h, int maxChains = 8)
        where TAccess : struct, IMemoryAccessor
        => Pop(h.Device, new DescriptorChain[maxChains], new IoSegment[(2 * h.State.Size) + 8]);

    /// <summary>
    /// Asserts that popping breaks the queue with exactly <paramref name="error"/>, a reason
    /// containing every one of <paramref name="reasonParts"/>, nothing handed out and
    /// nothing published; and that popping again still yields nothing.
    /// </summary>
    public static void AssertPopBreaks<TAccess>(RingHarness<TAccess> h, QueueError error, params string[] reasonParts)
        where TAccess : struct, IMemoryAccessor
    {
        ushort usedIdx = h.ReadU16(h.State.UsedRing + 2);
        long popped = h.Device.ChainsPopped;
        Assert.False(h.Device.IsBroken);
        Assert.Equal(0, Pop(h));
        Assert.True(h.Device.IsBroken);
        Assert.False(h.Device.IsRunning);
        Assert.Equal(error, h.Device.Error);
        Assert.NotNull(h.Device.BrokenReason);
        foreach (var part in reasonParts)
        {
            Assert.Contains(part, h.Device.BrokenReason, StringComparison.Ordinal);
        }

        Assert.Equal(0, Pop(h));
        Assert.Equal(error, h.Device.Error);
        Assert.Equal(usedIdx, h.ReadU16(h.State.UsedRing + 2));
        Assert.Equal(popped, h.Device.ChainsPopped);
    }

    /// <summary>Reads used ring slot <paramref name="slot"/> (id, len).</summary>
    public static (uint Id, uint Length) ReadUsed<TAccess>(RingHarness<TAccess> h, int slot)
        where TAccess : struct, IMemoryAccessor
    {
        Span<byte> b = stackalloc byte[8];
        Assert.True(h.Memory.TryRead(h.State.UsedRing + 4 + (8 * (ulong)(slot & (h.State.Size - 1))), b));
        return (BinaryPrimitives.ReadUInt32LittleEndian(b), BinaryPrimitives.ReadUInt32LittleEndian(b[4..]));
    }

    public static ushort UsedIdx<TAccess>(RingHarness<TAccess> h)
        where TAccess : struct, IMemoryAccessor
        => h.ReadU16(h.State.UsedRing + 2);

    /// <summary>Writes indirect table entry <paramref name="entry"/> of the table at <paramref name="table"/>.</summary>
    public static void WriteIndirect<TAccess>(RingHarness<TAccess> h, ulong table, int entry, ulong addr, uint len, VirtqDescFlags flags, ushort next)
        where TAccess : struct, IMemoryAccessor
        => h.WriteDescAt(table + (16 * (ulong)entry), addr, len, flags, next);
}
