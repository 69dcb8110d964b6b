using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;
using static PciVirtio.VhostCore.Tests.Validation.HostileRing;

namespace PciVirtio.VhostCore.Tests.Validation;

/// <summary>Queue states from an untrusted frontend (SET_VRING_NUM / SET_VRING_ADDR):
/// sizes and ring placement are re-validated when a queue starts.</summary>
public abstract class QueueSizeValidationTests<TAccess, TMemory> : RingMemoryTests<TAccess, TMemory>
    where TAccess : struct, IMemoryAccessor
    where TMemory : IRingMemory<TAccess>, new()
{
    private const ulong MemorySize = 4 << 20;

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(-256)]
    [InlineData(int.MinValue)]
    [InlineData(3)]
    [InlineData(6)]
    [InlineData(100)]
    [InlineData(255)]
    [InlineData(32767)]
    [InlineData(32769)]
    [InlineData(65536)]
    public void Bad_queue_sizes_are_rejected(int size)
    {
        using var h = NewHarness(queueSize: 8);
        var state = h.State with { Size = size };

        Assert.Equal(QueueError.BadQueueSize, state.Validate(h.Table, out string reason, out var ring));
        Assert.Contains($"queue size {size}", reason, StringComparison.Ordinal);
        Assert.Equal(default(RingPointers), ring);

        var device = new SplitQueueDevice<TAccess>("bad-size");
        Assert.False(device.Start(state, h.Memory));
        Assert.True(device.IsBroken);
        Assert.False(device.IsRunning);
        Assert.Equal(QueueError.BadQueueSize, device.Error);
        Assert.Contains($"queue size {size}", device.BrokenReason, StringComparison.Ordinal);
        Assert.Equal(0, Pop(device, new DescriptorChain[4], new IoSegment[4]));

        // The harness device, running, is stopped by a bad restart.
        Assert.False(h.Device.Start(state, h.Memory));
        Assert.Equal(QueueError.BadQueueSize, h.Device.Error);
        Assert.False(h.Device.IsRunning);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(256)]
    [InlineData(32768)]
    public void Legal_queue_sizes_including_1_and_32768_are_accepted_and_work(int size)
    {
        using var h = NewHarness(queueSize: size, memorySize: 8 << 20);
        Assert.Equal(QueueError.None, h.State.Validate(h.Table, out _, out var ring));
        Assert.Equal(size, ring.Size);
        Assert.True(h.Device.IsRunning);
        Assert.Equal(size, h.Device.Size);

        // The highest descriptor index and the last avail slot both work, three times round.
        ulong data = HarnessLayout.GuestBase + (4 << 20);
        var chains = new DescriptorChain[1];
        var segs = new IoSegment[2];
        for (int round = 0; round < 3; round++)
        {
            ushort idx = (ushort)((size - 1 + round) & 0xffff);
            Assert.True(h.Device.Start(h.State with { NextAvail = idx, NextUsed = idx }, h.Memory));
            h.WriteDesc(size - 1, data + (ulong)(round * 64), 64, VirtqDescFlags.Write, 0);
            h.PublishRawAvail(idx, (ushort)(size - 1));
            Assert.Equal(1, Pop(h.Device, chains, segs));
            Assert.Equal(size - 1, chains[0].Head);
            Assert.Equal(data + (ulong)(round * 64), segs[0].Guest);
            h.Device.PushUsed(chains[0].Head, 64);
            h.Device.FlushUsed();
            Assert.Equal((ushort)(idx + 1), UsedIdx(h));
            var used = ReadUsed(h, idx);
            Assert.Equal((uint)(size - 1), used.Id);
            Assert.Equal(64u, used.Length);
        }
    }

    [Fact]
    public void Queue_size_32768_needs_room_for_its_rings()
    {
        // 512 KiB of descriptors, 64 KiB of avail and 256 KiB of used ring: not in 512 KiB of memory.
        using var small = RingMemory.Allocate("small", 512 << 10);
        var table = MemoryTable.Create(small.Region(0x4000_0000));
        var state = QueueState.AtBase(32768, 0x4000_0000, VirtioFeatures.Version1);
        Assert.Equal(QueueError.RingOutOfMemory, state.Validate(table, out string reason, out _));
        Assert.Contains("avail ring", reason, StringComparison.Ordinal);
        var device = new SplitQueueDevice<TAccess>("too-small");
        Assert.False(device.Start(state, new GuestMemory<TAccess>(table, small.Access)));
        Assert.Equal(QueueError.RingOutOfMemory, device.Error);

        using var bigger = RingMemory.Allocate("bigger", 1 << 20);
        var biggerTable = MemoryTable.Create(bigger.Region(0x4000_0000));
        Assert.Equal(QueueError.None, state.Validate(biggerTable, out _, out _));
        Assert.True(device.Start(state, new GuestMemory<TAccess>(biggerTable, bigger.Access)), device.BrokenReason);
        Assert.Equal(0, device.AvailPending());
    }

    [Theory]
    [InlineData(8UL, 0UL, 0UL)]   // descriptor table 16-byte aligned
    [InlineData(0UL, 1UL, 0UL)]   // avail ring 2-byte aligned
    [InlineData(0UL, 0UL, 2UL)]   // used ring 4-byte aligned
    public void Misaligned_ring_areas_are_rejected(ulong descShift, ulong availShift, ulong usedShift)
    {
        using var h = NewHarness(queueSize: 64);
        var state = h.State with
        {
            DescTable = h.State.DescTable + descShift,
            AvailRing = h.State.AvailRing + availShift,
            UsedRing = h.State.UsedRing + usedShift,
        };
        Assert.Equal(QueueError.RingOutOfMemory, state.Validate(h.Table, out string reason, out _));
        Assert.Contains("misaligned", reason, StringComparison.Ordinal);
        Assert.Contains($"desc 0x{state.DescTable:x} (16), avail 0x{state.AvailRing:x} (2), used 0x{state.UsedRing:x} (4)", reason, StringComparison.Ordinal);
        Assert.False(h.Device.Start(state, h.Memory));
        Assert.Equal(QueueError.RingOutOfMemory, h.Device.Error);
    }

    [Theory]
    [InlineData(0, 0x1000UL, "descriptor table")]                                         // below memory
    [InlineData(1, 0x1000UL, "avail ring")]
    [InlineData(2, 0x1000UL, "used ring")]
    [InlineData(0, HarnessLayout.GuestBase + MemorySize - 0x200, "descriptor table")]      // crosses the end of memory
    [InlineData(1, HarnessLayout.GuestBase + MemorySize - 0x40, "avail ring")]
    [InlineData(2, HarnessLayout.GuestBase + MemorySize - 0x100, "used ring")]
    [InlineData(2, HarnessLayout.GuestBase + MemorySize, "used ring")]                    // just past it
    [InlineData(0, ulong.MaxValue - 0xf, "descriptor table")]                             // wraps
    public void Ring_areas_outside_memory_are_rejected(int area, ulong addr, string named)
    {
        using var h = NewHarness(queueSize: 64, memorySize: MemorySize);
        var state = area switch
        {
            0 => h.State with { DescTable = addr },
            1 => h.State with { AvailRing = addr },
            _ => h.State with { UsedRing = addr },
        };
        Assert.Equal(QueueError.RingOutOfMemory, state.Validate(h.Table, out string reason, out _));
        Assert.Contains(named, reason, StringComparison.Ordinal);
        Assert.Contains("not inside one memory region", reason, StringComparison.Ordinal);

        Assert.False(h.Device.Start(state, h.Memory));
        Assert.Equal(QueueError.RingOutOfMemory, h.Device.Error);
        Assert.Contains(named, h.Device.BrokenReason, StringComparison.Ordinal);
        Assert.Equal(0, Pop(h));
    }

    [Fact]
    public void Ring_area_crossing_a_region_boundary_is_rejected_even_if_both_sides_are_mapped()
    {
        using var h = NewHarness(queueSize: 64, memorySize: MemorySize, regionSize: 0x10000);
        var state = h.State with { DescTable = HarnessLayout.GuestBase + 0x20000 - 0x200 }; // 1 KiB table
        Assert.True(h.Memory.IsMapped(state.DescTable, 64 * 16));
        Assert.Equal(QueueError.RingOutOfMemory, state.Validate(h.Table, out string reason, out _));
        Assert.Contains("descriptor table", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Memory_update_that_unmaps_the_ring_breaks_the_queue()
    {
        using var h = NewHarness(queueSize: 64);
        var elsewhere = h.Table.Regions[0] with { GuestPhysAddr = 0x9_0000_0000 };
        Assert.False(h.Device.UpdateMemory(new GuestMemory<TAccess>(MemoryTable.Create(elsewhere), h.Memory.Access)));
        Assert.Equal(QueueError.RingOutOfMemory, h.Device.Error);
        Assert.Equal(0, Pop(h));
    }

    [Fact]
    public void Packed_ring_feature_is_refused_for_a_split_ring_state()
    {
        using var h = NewHarness(queueSize: 64);
        var state = h.State with { Features = h.State.Features | VirtioFeatures.RingPacked };
        Assert.Equal(QueueError.UnsupportedFeature, state.Validate(h.Table, out string reason, out _));
        Assert.Contains("packed", reason, StringComparison.Ordinal);
    }
}

/// <summary>QueueSizeValidationTests over ordinary RAM (<see cref="RamAccessor"/>).</summary>
public sealed class QueueSizeValidationTests_Ram : QueueSizeValidationTests<RamAccessor, RamRingMemory>;

/// <summary>QueueSizeValidationTests over a PCI BAR stand-in through <see cref="IoMemoryAccessor"/> (accesses counted).</summary>
public sealed class QueueSizeValidationTests_Io : QueueSizeValidationTests<IoMemoryAccessor, IoRingMemory>;
