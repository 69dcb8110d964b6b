using System.Buffers.Binary;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Signals;

namespace PciVirtio.Mmio.Tests.Signals;

public class MmioDoorbellTests
{
    private const ulong BarSize = 4096;

    [Fact]
    public void Notify_writes_the_value_at_the_offset_after_a_barrier_and_is_counted()
    {
        using var fd = MemFd.Create("doorbell-bar", BarSize);
        using var bar = MemoryMapping.Map(fd, 0, BarSize);
        using var device = MemoryMapping.Map(fd, 0, BarSize); // the "device" view of the same BAR
        bar.Span.Fill(0xAA);
        var counters = new AccessCounters(bar.Address, BarSize);
        using var doorbell = new MmioDoorbell(bar, 0x40, 0xDEADBEEF, DoorbellWidth.Bits32, counters);

        doorbell.Notify();

        Assert.Equal(0xDEADBEEFu, BinaryPrimitives.ReadUInt32LittleEndian(device.Span[0x40..]));
        Assert.Equal(0xAA, device.Span[0x3F]);
        Assert.Equal(0xAA, device.Span[0x44]);
        Assert.Equal(1, counters.Writes);
        Assert.Equal(4, counters.WrittenBytes);
        Assert.Equal(1, counters.Barriers);
        Assert.Equal(0, counters.Reads);
        Assert.Equal(1, doorbell.Notifications);

        doorbell.Notify();
        Assert.Equal(2, counters.Writes);
        Assert.Equal(2, counters.Barriers);
        Assert.Equal(2, doorbell.Notifications);
    }

    [Fact]
    public void An_ivshmem_doorbell_writes_peer_and_vector_at_BAR0_offset_12()
    {
        using var fd = MemFd.Create("ivshmem-bar0", 256);
        using var bar0 = MemoryMapping.Map(fd, 0, 256);
        var counters = new AccessCounters();
        using var doorbell = MmioDoorbell.Ivshmem(bar0, peerId: 3, vector: 5, counters);

        doorbell.Notify();
        Assert.Equal(0x0003_0005u, BinaryPrimitives.ReadUInt32LittleEndian(bar0.Span[12..]));
        Assert.Equal(12UL, doorbell.Offset);
        Assert.Equal(0x0003_0005UL, doorbell.Value);

        doorbell.Ring(MmioDoorbell.IvshmemValue(7, 1));
        Assert.Equal(0x0007_0001u, BinaryPrimitives.ReadUInt32LittleEndian(bar0.Span[12..]));
        Assert.Equal(2, counters.Writes);
        Assert.Equal(8, counters.WrittenBytes);
        Assert.Equal(2, counters.Barriers);
        Assert.Equal(0UL, BinaryPrimitives.ReadUInt64LittleEndian(bar0.Span[0..8]));
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(bar0.Span[16..]));
    }

    [Theory]
    [InlineData(DoorbellWidth.Bits16, 0x12, 0xBEEFUL, 2)]
    [InlineData(DoorbellWidth.Bits64, 0x18, 0x0123_4567_89AB_CDEFUL, 8)]
    public void Other_widths_write_that_many_bytes_in_one_access(DoorbellWidth width, ulong offset, ulong value, int bytes)
    {
        using var fd = MemFd.Create("doorbell-width", BarSize);
        using var bar = MemoryMapping.Map(fd, 0, BarSize);
        var counters = new AccessCounters();
        using var doorbell = new MmioDoorbell(bar, offset, value, width, counters);
        doorbell.Notify();
        var written = bar.Span.Slice((int)offset, 8);
        ulong seen = bytes == 2 ? BinaryPrimitives.ReadUInt16LittleEndian(written) : BinaryPrimitives.ReadUInt64LittleEndian(written);
        Assert.Equal(value, seen);
        Assert.Equal(1, counters.Writes);
        Assert.Equal(bytes, counters.WrittenBytes);
        Assert.Equal(1, counters.Barriers);
    }

    [Theory]
    [InlineData(DoorbellWidth.Bits32, 2)]
    [InlineData(DoorbellWidth.Bits32, 13)]
    [InlineData(DoorbellWidth.Bits64, 4)]
    [InlineData(DoorbellWidth.Bits16, 1)]
    public void A_misaligned_register_is_refused(DoorbellWidth width, ulong offset)
    {
        using var fd = MemFd.Create("doorbell-misaligned", BarSize);
        using var bar = MemoryMapping.Map(fd, 0, BarSize);
        var ex = Assert.Throws<ArgumentException>(() => new MmioDoorbell(bar, offset, 1, width));
        Assert.Contains("aligned", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(DoorbellWidth.Bits32, BarSize)]
    [InlineData(DoorbellWidth.Bits32, BarSize - 2)]
    [InlineData(DoorbellWidth.Bits64, BarSize - 4)]
    [InlineData(DoorbellWidth.Bits16, ulong.MaxValue - 1)]
    [InlineData(DoorbellWidth.Bits64, ulong.MaxValue - 7)]
    public void A_register_outside_the_mapping_is_refused(DoorbellWidth width, ulong offset)
    {
        using var fd = MemFd.Create("doorbell-range", BarSize);
        using var bar = MemoryMapping.Map(fd, 0, BarSize);
        Assert.Throws<ArgumentOutOfRangeException>(() => new MmioDoorbell(bar, offset, 1, width));
    }

    [Fact]
    public void The_last_register_of_the_mapping_is_accepted()
    {
        using var fd = MemFd.Create("doorbell-last", BarSize);
        using var bar = MemoryMapping.Map(fd, 0, BarSize);
        using var doorbell = new MmioDoorbell(bar, BarSize - 8, ulong.MaxValue, DoorbellWidth.Bits64);
        doorbell.Notify();
        Assert.Equal(ulong.MaxValue, BinaryPrimitives.ReadUInt64LittleEndian(bar.Span[(int)(BarSize - 8)..]));
    }

    [Fact]
    public void A_value_wider_than_the_register_is_refused()
    {
        using var fd = MemFd.Create("doorbell-value", BarSize);
        using var bar = MemoryMapping.Map(fd, 0, BarSize);
        Assert.Throws<ArgumentOutOfRangeException>(() => new MmioDoorbell(bar, 0, 0x1_0000, DoorbellWidth.Bits16));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MmioDoorbell(bar, 0, 0x1_0000_0000, DoorbellWidth.Bits32));
        using var doorbell = new MmioDoorbell(bar, 0, 1, DoorbellWidth.Bits16);
        Assert.Throws<ArgumentOutOfRangeException>(() => doorbell.Ring(0x1_0000));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MmioDoorbell(bar, 0, 1, (DoorbellWidth)8));
    }

    [Fact]
    public void The_doorbell_keeps_its_mapping_alive_and_refuses_use_after_dispose()
    {
        using var fd = MemFd.Create("doorbell-lifetime", BarSize);
        var bar = MemoryMapping.Map(fd, 0, BarSize);
        using var device = MemoryMapping.Map(fd, 0, BarSize);
        var doorbell = new MmioDoorbell(bar, 8, 0x55, DoorbellWidth.Bits32);

        // The owner disposes the mapping first: the unmap waits for the doorbell.
        bar.Dispose();
        doorbell.Notify();
        Assert.Equal(0x55u, BinaryPrimitives.ReadUInt32LittleEndian(device.Span[8..]));

        doorbell.Dispose();
        doorbell.Dispose();
        Assert.Throws<ObjectDisposedException>(doorbell.Notify);
        Assert.Throws<ObjectDisposedException>(() => new MmioDoorbell(bar, 8, 1));
    }

    [Fact]
    public void Dispose_racing_notify_never_lets_a_store_reach_unmapped_memory()
    {
        // The owner has disposed the mapping, so the doorbell's release unmaps it: a Notify
        // storing after that would fault and take the process down.
        using var fd = MemFd.Create("doorbell-race", BarSize);
        int refused = 0;
        for (int round = 0; round < 200; round++)
        {
            var bar = MemoryMapping.Map(fd, 0, BarSize);
            var doorbell = new MmioDoorbell(bar, 8, 0x55, DoorbellWidth.Bits32);
            bar.Dispose();
            int notified = 0;
            var ringer = new Thread(() =>
            {
                try
                {
                    while (true)
                    {
                        doorbell.Notify();
                        Interlocked.Increment(ref notified);
                    }
                }
                catch (ObjectDisposedException)
                {
                    Interlocked.Increment(ref refused);
                }
            });
            ringer.Start();

            // Dispose while the ringer is in its loop (a started thread may not run for a
            // while on a loaded machine), at a point that moves from round to round.
            Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref notified) > 0, TimeSpan.FromSeconds(10)), $"round {round}: the ringer never rang");
            Thread.SpinWait(50 * (round % 20));
            doorbell.Dispose();
            Assert.True(ringer.Join(TimeSpan.FromSeconds(10)));
        }

        Assert.Equal(200, refused);
    }

    [Fact]
    public void It_is_a_notifier()
    {
        using var fd = MemFd.Create("doorbell-notifier", BarSize);
        using var bar = MemoryMapping.Map(fd, 0, BarSize);
        using var doorbell = new MmioDoorbell(bar, 0, 9);
        Assert.IsAssignableFrom<INotifier>(doorbell).Notify();
        Assert.Equal(9u, BinaryPrimitives.ReadUInt32LittleEndian(bar.Span));
    }
}
