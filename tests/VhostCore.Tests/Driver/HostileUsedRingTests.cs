using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;

namespace PciVirtio.VhostCore.Tests.Driver;

/// <summary>
/// The device at the other end may be a hostile peer host: the driver validates every used
/// element it reads. These tests write used elements by hand into the used ring (no device
/// involved) and check that SplitQueueDriver breaks with the right error, and only then.
/// </summary>
public abstract class HostileUsedRingTests<TAccess, TMemory> : RingMemoryTests<TAccess, TMemory>
    where TAccess : struct, IMemoryAccessor
    where TMemory : IRingMemory<TAccess>, new()
{
    private static void WriteUsedElement(RingHarness<TAccess> h, ushort usedIndex, uint id, uint length)
    {
        Span<byte> e = stackalloc byte[8];
        BitConverter.TryWriteBytes(e, id);
        BitConverter.TryWriteBytes(e[4..], length);
        ulong at = h.State.UsedRing + 4 + (8 * (ulong)(usedIndex & (h.State.Size - 1)));
        Assert.True(h.Memory.TryWrite(at, e));
    }

    private static void SetUsedIdx(RingHarness<TAccess> h, ushort value) => h.WriteU16(h.State.UsedRing + 2, value);

    /// <summary>Writes used elements from used index <paramref name="start"/> and publishes them.</summary>
    private static void PublishUsed(RingHarness<TAccess> h, ushort start, params (uint Id, uint Len)[] elements)
    {
        for (int i = 0; i < elements.Length; i++)
        {
            WriteUsedElement(h, (ushort)(start + i), elements[i].Id, elements[i].Len);
        }

        SetUsedIdx(h, (ushort)(start + elements.Length));
    }

    /// <summary>Adds a chain with one readable buffer of 100 bytes and writable buffers of the
    /// given lengths; returns its head, computed from what the device would see.</summary>
    private static ushort Add(RingHarness<TAccess> h, ulong token, params uint[] writable)
    {
        var w = new GuestBuffer[writable.Length];
        for (int i = 0; i < writable.Length; i++)
        {
            w[i] = new GuestBuffer(HarnessLayout.Buffer(((int)token * 4) + i + 1), writable[i]);
        }

        ushort availIdx = h.Driver.State.NextAvail;
        Assert.True(h.Driver.TryAdd([new GuestBuffer(HarnessLayout.Buffer((int)token * 4), 100)], w, token));
        h.Driver.Publish();

        // The head the driver put on the avail ring.
        return h.ReadU16(h.State.AvailRing + 4 + (2 * (ulong)(availIdx & (h.State.Size - 1))));
    }

    private static void AssertBroken(RingHarness<TAccess> h, QueueError expected)
    {
        Assert.True(h.Driver.IsBroken);
        Assert.False(h.Driver.IsRunning);
        Assert.Equal(expected, h.Driver.Error);
        Assert.False(string.IsNullOrEmpty(h.Driver.BrokenReason));

        // Once broken, the driver neither reaps nor adds.
        var used = new UsedBuffer[8];
        Assert.Equal(0, h.Driver.Reap(used));
        Assert.False(h.Driver.TryAdd([new GuestBuffer(HarnessLayout.Buffer(100), 8)], [], 1));
    }

    [Fact]
    public void Used_index_moving_past_the_buffers_in_flight_is_UsedIndexJump()
    {
        using var h = NewHarness(queueSize: 8);
        ushort a = Add(h, 1, 64);
        ushort b = Add(h, 2, 64);
        PublishUsed(h, 0, (a, 1), (b, 1), (a, 1));
        var used = new UsedBuffer[8];
        Assert.Equal(0, h.Driver.Reap(used));
        AssertBroken(h, QueueError.UsedIndexJump);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(0x8000)]
    [InlineData(0xFFFF)]
    public void Used_index_moving_with_nothing_in_flight_is_UsedIndexJump(int usedIdx)
    {
        using var h = NewHarness(queueSize: 8);
        SetUsedIdx(h, (ushort)usedIdx);
        var used = new UsedBuffer[8];
        Assert.Equal(0, h.Driver.Reap(used));
        AssertBroken(h, QueueError.UsedIndexJump);
    }

    [Fact]
    public void Used_index_jump_is_detected_after_earlier_entries_were_reaped()
    {
        using var h = NewHarness(queueSize: 8);
        ushort a = Add(h, 1, 64);
        ushort b = Add(h, 2, 64);
        PublishUsed(h, 0, (a, 10));
        var used = new UsedBuffer[8];
        Assert.Equal(1, h.Driver.Reap(used));
        Assert.Equal(new UsedBuffer(1, 10), used[0]);

        // One buffer in flight, but used.idx moves by two.
        PublishUsed(h, 1, (b, 1), (b, 1));
        Assert.Equal(0, h.Driver.Reap(used));
        AssertBroken(h, QueueError.UsedIndexJump);
    }

    [Theory]
    [InlineData(8u)]        // == queue size
    [InlineData(9u)]
    [InlineData(0xFFFFu)]
    [InlineData(0x10000u)]  // an id that only looks valid in its low 16 bits
    [InlineData(0x10001u)]
    [InlineData(uint.MaxValue)]
    public void Used_id_outside_the_queue_is_UsedIdNotInFlight(uint id)
    {
        using var h = NewHarness(queueSize: 8);
        Add(h, 1, 64);
        PublishUsed(h, 0, (id, 0));
        var used = new UsedBuffer[8];
        Assert.Equal(0, h.Driver.Reap(used));
        AssertBroken(h, QueueError.UsedIdNotInFlight);
    }

    [Fact]
    public void Used_id_of_a_free_descriptor_is_UsedIdNotInFlight()
    {
        using var h = NewHarness(queueSize: 8);
        ushort head = Add(h, 1, 64);
        uint other = (uint)((head + 5) % 8);
        PublishUsed(h, 0, (other, 0));
        var used = new UsedBuffer[8];
        Assert.Equal(0, h.Driver.Reap(used));
        AssertBroken(h, QueueError.UsedIdNotInFlight);
    }

    [Fact]
    public void Used_id_of_a_descriptor_inside_a_chain_but_not_its_head_is_UsedIdNotInFlight()
    {
        using var h = NewHarness(queueSize: 8);

        // A chain of three descriptors: head plus two more that are in flight but are no head.
        ushort head = Add(h, 1, 64, 64);
        Span<byte> d = stackalloc byte[16];
        Assert.True(h.Memory.TryRead(h.State.DescTable + (16 * (ulong)head), d));
        ushort second = BitConverter.ToUInt16(d[14..]);
        Assert.NotEqual(head, second);
        PublishUsed(h, 0, (second, 0));
        var used = new UsedBuffer[8];
        Assert.Equal(0, h.Driver.Reap(used));
        AssertBroken(h, QueueError.UsedIdNotInFlight);
    }

    [Fact]
    public void The_same_id_returned_twice_is_UsedIdNotInFlight_and_the_first_return_counts()
    {
        using var h = NewHarness(queueSize: 8);
        ushort a = Add(h, 1, 64);
        Add(h, 2, 64);
        PublishUsed(h, 0, (a, 5), (a, 5));
        var used = new UsedBuffer[8];
        Assert.Equal(1, h.Driver.Reap(used));
        Assert.Equal(new UsedBuffer(1, 5), used[0]);
        AssertBroken(h, QueueError.UsedIdNotInFlight);
    }

    [Fact]
    public void The_same_id_returned_again_in_a_later_batch_is_UsedIdNotInFlight()
    {
        using var h = NewHarness(queueSize: 8);
        ushort a = Add(h, 1, 64);
        Add(h, 2, 64);
        PublishUsed(h, 0, (a, 5));
        var used = new UsedBuffer[8];
        Assert.Equal(1, h.Driver.Reap(used));
        Assert.False(h.Driver.IsBroken);
        PublishUsed(h, 1, (a, 5));
        Assert.Equal(0, h.Driver.Reap(used));
        AssertBroken(h, QueueError.UsedIdNotInFlight);
    }

    [Fact]
    public void An_id_legitimately_reused_after_it_was_added_again_is_accepted()
    {
        using var h = NewHarness(queueSize: 2);
        ushort a = Add(h, 1, 64);
        Assert.Equal(0, a);
        PublishUsed(h, 0, (a, 5));
        var used = new UsedBuffer[8];
        Assert.Equal(1, h.Driver.Reap(used));

        // Descriptor 0 is free, added again with a new token, and returned again.
        Assert.Equal(0, Add(h, 2, 32));
        PublishUsed(h, 1, (0, 32));
        Assert.Equal(1, h.Driver.Reap(used));
        Assert.Equal(new UsedBuffer(2, 32), used[0]);
        Assert.False(h.Driver.IsBroken);
    }

    [Theory]
    [InlineData(new uint[] { 100 }, 101u)]
    [InlineData(new uint[] { 100, 50 }, 151u)]
    [InlineData(new uint[] { 100 }, uint.MaxValue)]
    [InlineData(new uint[0], 1u)] // a readable-only chain cannot have been written at all
    public void Used_length_beyond_the_writable_bytes_is_UsedLengthTooLong(uint[] writable, uint length)
    {
        using var h = NewHarness(queueSize: 8);
        ushort head = Add(h, 1, writable);
        PublishUsed(h, 0, (head, length));
        var used = new UsedBuffer[8];
        Assert.Equal(0, h.Driver.Reap(used));
        AssertBroken(h, QueueError.UsedLengthTooLong);
    }

    [Theory]
    [InlineData(new uint[] { 100 }, 100u)]
    [InlineData(new uint[] { 100, 50 }, 150u)]
    [InlineData(new uint[] { 100, 50 }, 0u)]
    [InlineData(new uint[0], 0u)]
    public void Used_length_up_to_the_writable_bytes_is_accepted(uint[] writable, uint length)
    {
        using var h = NewHarness(queueSize: 8);
        ushort head = Add(h, 42, writable);
        PublishUsed(h, 0, (head, length));
        var used = new UsedBuffer[8];
        Assert.Equal(1, h.Driver.Reap(used));
        Assert.Equal(new UsedBuffer(42, length), used[0]);
        Assert.False(h.Driver.IsBroken);
        Assert.Equal(8, h.Driver.FreeDescriptors);
    }

    [Fact]
    public void Used_length_too_long_is_checked_against_the_chain_it_names_not_a_neighbour()
    {
        using var h = NewHarness(queueSize: 8);
        ushort small = Add(h, 1, 10);
        Add(h, 2, 1000);
        PublishUsed(h, 0, (small, 11));
        var used = new UsedBuffer[8];
        Assert.Equal(0, h.Driver.Reap(used));
        AssertBroken(h, QueueError.UsedLengthTooLong);
    }

    [Fact]
    public void Indirect_chain_length_is_checked_against_its_writable_bytes()
    {
        using var h = NewHarness(queueSize: 4, features: VirtioFeatures.Version1 | VirtioFeatures.RingIndirectDesc, indirectEntries: 8);
        ushort head = Add(h, 1, 30, 40);
        Assert.Equal(3, h.Driver.FreeDescriptors); // one descriptor for the whole chain
        PublishUsed(h, 0, (head, 71));
        var used = new UsedBuffer[8];
        Assert.Equal(0, h.Driver.Reap(used));
        AssertBroken(h, QueueError.UsedLengthTooLong);
    }

    [Fact]
    public void Elements_before_a_bad_one_are_returned_and_the_bad_one_stops_the_batch()
    {
        using var h = NewHarness(queueSize: 8);
        ushort a = Add(h, 1, 64);
        ushort b = Add(h, 2, 64);
        ushort c = Add(h, 3, 64);
        PublishUsed(h, 0, (b, 2), (a, 65), (c, 3));
        var used = new UsedBuffer[8];
        Assert.Equal(1, h.Driver.Reap(used));
        Assert.Equal(new UsedBuffer(2, 2), used[0]);
        AssertBroken(h, QueueError.UsedLengthTooLong);
    }
}

/// <summary>HostileUsedRingTests over ordinary RAM (<see cref="RamAccessor"/>).</summary>
public sealed class HostileUsedRingTests_Ram : HostileUsedRingTests<RamAccessor, RamRingMemory>;

/// <summary>HostileUsedRingTests over a PCI BAR stand-in through <see cref="IoMemoryAccessor"/> (accesses counted).</summary>
public sealed class HostileUsedRingTests_Io : HostileUsedRingTests<IoMemoryAccessor, IoRingMemory>;
