using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;

namespace PciVirtio.VhostCore.Tests.Driver;

/// <summary>
/// VIRTIO_F_IN_ORDER with one descriptor per buffer, as the host-to-host link runs it:
/// <see cref="SplitQueueDriver{TAccess}.TryAddInOrder"/> and <see cref="SplitQueueDriver{TAccess}.ReapInOrder"/>
/// against <see cref="SplitQueueDevice{TAccess}.PopSingleReadable"/>, and what each side does
/// with a peer that breaks the rules.
/// </summary>
public abstract class InOrderRingTests<TAccess, TMemory> : RingMemoryTests<TAccess, TMemory>
    where TAccess : struct, IMemoryAccessor
    where TMemory : IRingMemory<TAccess>, new()
{
    private const VirtioFeatures InOrder = VirtioFeatures.Version1 | VirtioFeatures.InOrder;

    private static GuestBuffer Buf(int slot, uint length) => new(HarnessLayout.Buffer(slot), length);

    private static void WriteUsed(RingHarness<TAccess> h, ushort usedIndex, uint id, uint length)
    {
        Span<byte> e = stackalloc byte[8];
        BitConverter.TryWriteBytes(e, id);
        BitConverter.TryWriteBytes(e[4..], length);
        Assert.True(h.Memory.TryWrite(h.State.UsedRing + 4 + (8 * (ulong)(usedIndex & (h.State.Size - 1))), e));
        h.WriteU16(h.State.UsedRing + 2, (ushort)(usedIndex + 1));
    }

    [Fact]
    public void Buffers_cross_in_ring_order_and_one_used_element_returns_a_batch()
    {
        using var h = NewHarness(queueSize: 8, features: InOrder);
        var d = h.Driver;
        var heads = new ushort[8];
        var frames = new IoSegment[8];
        int sent = 0;
        for (int round = 0; round < 5; round++)
        {
            // 5 buffers a round over 8 descriptors: the ring wraps in the second round.
            for (int i = 0; i < 5; i++, sent++)
            {
                Assert.True(d.TryAddInOrder(Buf(sent % 16, (uint)(100 + sent))));
            }

            d.Publish();
            Assert.Equal(3, d.FreeDescriptors);
            int n = h.Device.PopSingleReadable(heads, frames);
            Assert.False(h.Device.IsBroken, h.Device.BrokenReason);
            Assert.Equal(5, n);
            for (int i = 0; i < n; i++)
            {
                int index = sent - 5 + i;
                Assert.Equal(index % 8, heads[i]);
                Assert.Equal((uint)(100 + index), frames[i].Length);
                Assert.Equal(HarnessLayout.Buffer(index % 16), frames[i].Guest);
            }

            // Two used elements for five buffers: the third names buffer 2, then the last.
            h.Device.PushUsed(heads[2], 0);
            h.Device.FlushUsed();
            Assert.Equal(3, d.ReapInOrder());
            Assert.Equal(2, d.InFlight);
            h.Device.PushUsed(heads[4], 0);
            h.Device.FlushUsed();
            Assert.Equal(2, d.ReapInOrder());
            Assert.Equal(0, d.ReapInOrder());
            Assert.Equal(8, d.FreeDescriptors);
        }

        Assert.False(d.IsBroken, d.BrokenReason);
    }

    [Fact]
    public void The_avail_entries_are_written_once_at_start()
    {
        using var h = NewHarness(queueSize: 8, features: InOrder);
        for (int i = 0; i < 8; i++)
        {
            Assert.Equal(i, h.ReadU16(h.State.AvailRing + 4 + (2 * (ulong)i)));
        }

        // Scribbled over (as a confused device might): the driver does not write them again,
        // so the device sees the damage and breaks rather than serving the wrong buffer.
        h.WriteU16(h.State.AvailRing + 4, 3);
        Assert.True(h.Driver.TryAddInOrder(Buf(0, 64)));
        h.Driver.Publish();
        Assert.Equal(0, h.Device.PopSingleReadable(new ushort[4], new IoSegment[4]));
        Assert.Equal(QueueError.OutOfOrder, h.Device.Error);
    }

    [Fact]
    public void A_descriptor_that_already_names_the_buffer_is_not_stored_again_until_a_restart()
    {
        using var h = NewHarness(queueSize: 4, features: InOrder);
        var heads = new ushort[4];
        var frames = new IoSegment[4];

        // A lap: descriptors 0..3 name buffers 0..3, 64 bytes each.
        for (int i = 0; i < 4; i++)
        {
            Assert.True(h.Driver.TryAddInOrder(Buf(i, 64)));
        }

        h.Driver.Publish();
        Assert.Equal(4, h.Device.PopSingleReadable(heads, frames));
        h.Device.PushUsed(heads[3], 0);
        h.Device.FlushUsed();
        Assert.Equal(4, h.Driver.ReapInOrder());

        // Descriptor 0 changed behind the driver's back (only the device, whose memory it is,
        // could do that): the next lap gives descriptor 0 the same buffer, so the driver does
        // not store it and the device reads back its own bytes. Descriptor 1 gets a new
        // length and is stored.
        h.WriteDesc(0, HarnessLayout.Buffer(9), 77, VirtqDescFlags.None, 0);
        long storesBefore = h.Counters?.Writes ?? 0;
        Assert.True(h.Driver.TryAddInOrder(Buf(0, 64)));
        Assert.Equal(storesBefore, h.Counters?.Writes ?? 0);
        Assert.True(h.Driver.TryAddInOrder(Buf(1, 100)));
        Assert.True(h.Counters is null || h.Counters.Writes == storesBefore + 1, "descriptor 1 is one store");
        h.Driver.Publish();
        Assert.Equal(2, h.Device.PopSingleReadable(heads, frames));
        Assert.Equal((HarnessLayout.Buffer(9), 77u), (frames[0].Guest, frames[0].Length));
        Assert.Equal((HarnessLayout.Buffer(1), 100u), (frames[1].Guest, frames[1].Length));

        // After a restart nothing is assumed about the ring's memory: the first lap stores
        // every descriptor, the same buffer included.
        h.Driver.Stop();
        h.Device.Stop();
        Assert.True(h.Driver.Start(h.State, h.Memory), h.Driver.BrokenReason);
        Assert.True(h.Device.Start(h.State, h.Memory), h.Device.BrokenReason);
        Assert.True(h.Driver.TryAddInOrder(Buf(0, 64)));
        h.Driver.Publish();
        Assert.Equal(1, h.Device.PopSingleReadable(heads, frames));
        Assert.Equal((HarnessLayout.Buffer(0), 64u), (frames[0].Guest, frames[0].Length));
        Assert.False(h.Device.IsBroken || h.Driver.IsBroken);
    }

    [Fact]
    public void A_full_ring_refuses_the_next_buffer()
    {
        using var h = NewHarness(queueSize: 4, features: InOrder);
        for (int i = 0; i < 4; i++)
        {
            Assert.True(h.Driver.TryAddInOrder(Buf(i, 64)));
        }

        Assert.False(h.Driver.TryAddInOrder(Buf(4, 64)));
        Assert.Equal(4, h.Driver.InFlight);
    }

    [Theory]
    [InlineData(VirtqDescFlags.Next, QueueError.NotSingleDescriptor)]
    [InlineData(VirtqDescFlags.Indirect, QueueError.NotSingleDescriptor)]
    [InlineData(VirtqDescFlags.Write, QueueError.WrongDirection)]
    public void The_device_breaks_on_a_descriptor_that_is_not_one_readable_buffer(VirtqDescFlags flags, QueueError expected)
    {
        using var h = NewHarness(queueSize: 8, features: InOrder);
        Assert.True(h.Driver.TryAddInOrder(Buf(0, 64)));
        Assert.True(h.Driver.TryAddInOrder(Buf(1, 64)));
        h.WriteDesc(1, HarnessLayout.Buffer(1), 64, flags, 2);
        h.Driver.Publish();
        Assert.Equal(0, h.Device.PopSingleReadable(new ushort[8], new IoSegment[8]));
        Assert.True(h.Device.IsBroken);
        Assert.Equal(expected, h.Device.Error);
        Assert.Contains("descriptor chain 1", h.Device.BrokenReason);
    }

    [Fact]
    public void The_device_breaks_on_a_buffer_outside_memory()
    {
        using var h = NewHarness(queueSize: 8, features: InOrder);
        Assert.True(h.Driver.TryAddInOrder(new GuestBuffer(0x10, 64)));
        h.Driver.Publish();
        Assert.Equal(0, h.Device.PopSingleReadable(new ushort[8], new IoSegment[8]));
        Assert.Equal(QueueError.BufferOutOfMemory, h.Device.Error);
    }

    [Fact]
    public void Without_in_order_the_device_takes_single_buffers_in_any_order()
    {
        using var h = NewHarness(queueSize: 8);
        h.WriteDesc(5, HarnessLayout.Buffer(5), 80, VirtqDescFlags.None, 0);
        h.WriteDesc(2, HarnessLayout.Buffer(2), 90, VirtqDescFlags.None, 0);
        h.PublishRawAvail(0, 5, 2);
        var heads = new ushort[8];
        var frames = new IoSegment[8];
        Assert.Equal(2, h.Device.PopSingleReadable(heads, frames));
        Assert.Equal([5, 2], heads[..2]);
        Assert.Equal([80u, 90u], frames[..2].Select(f => f.Length));

        h.PublishRawAvail(2, 8);
        Assert.Equal(0, h.Device.PopSingleReadable(heads, frames));
        Assert.Equal(QueueError.HeadOutOfRange, h.Device.Error);
    }

    [Theory]
    [InlineData(9u)]  // not a descriptor of the ring
    [InlineData(5u)]  // a descriptor that is not out
    public void The_driver_breaks_on_a_used_element_naming_a_buffer_not_out(uint id)
    {
        using var h = NewHarness(queueSize: 8, features: InOrder);
        for (int i = 0; i < 3; i++)
        {
            Assert.True(h.Driver.TryAddInOrder(Buf(i, 64)));
        }

        h.Driver.Publish();
        WriteUsed(h, 0, id, 0);
        Assert.Equal(0, h.Driver.ReapInOrder());
        Assert.Equal(QueueError.UsedIdNotInFlight, h.Driver.Error);
        Assert.Equal(3, h.Driver.InFlight);
    }

    [Fact]
    public void The_driver_breaks_on_bytes_written_into_a_readable_buffer()
    {
        using var h = NewHarness(queueSize: 8, features: InOrder);
        Assert.True(h.Driver.TryAddInOrder(Buf(0, 64)));
        h.Driver.Publish();
        WriteUsed(h, 0, 0, 16);
        Assert.Equal(0, h.Driver.ReapInOrder());
        Assert.Equal(QueueError.UsedLengthTooLong, h.Driver.Error);
    }

    [Fact]
    public void The_driver_breaks_on_more_used_elements_than_buffers_out()
    {
        using var h = NewHarness(queueSize: 8, features: InOrder);
        Assert.True(h.Driver.TryAddInOrder(Buf(0, 64)));
        h.Driver.Publish();
        h.WriteU16(h.State.UsedRing + 2, 2);
        Assert.Equal(0, h.Driver.ReapInOrder());
        Assert.Equal(QueueError.UsedIndexJump, h.Driver.Error);
    }

    [Fact]
    public void In_order_and_general_calls_do_not_mix()
    {
        using (var h = NewHarness(queueSize: 8))
        {
            Assert.Throws<InvalidOperationException>(() => h.Driver.TryAddInOrder(Buf(0, 64)));
        }

        using (var h = NewHarness(queueSize: 8, features: InOrder))
        {
            Assert.True(h.Driver.TryAddInOrder(Buf(0, 64)));
            Assert.Throws<InvalidOperationException>(() => h.Driver.TryAddReadable(Buf(1, 64), 1));
            Assert.Throws<InvalidOperationException>(() => h.Driver.Reap(new UsedBuffer[4]));
        }

        using (var h = NewHarness(queueSize: 8, features: InOrder))
        {
            Assert.True(h.Driver.TryAddReadable(Buf(1, 64), 1));
            Assert.Throws<InvalidOperationException>(() => h.Driver.TryAddInOrder(Buf(0, 64)));
        }
    }
}

/// <summary>InOrderRingTests over ordinary RAM (<see cref="RamAccessor"/>).</summary>
public sealed class InOrderRingTests_Ram : InOrderRingTests<RamAccessor, RamRingMemory>;

/// <summary>InOrderRingTests over a PCI BAR stand-in through <see cref="IoMemoryAccessor"/>.</summary>
public sealed class InOrderRingTests_Io : InOrderRingTests<IoMemoryAccessor, IoRingMemory>;
