using PciVirtio.VhostCore.Memory;

namespace PciVirtio.VhostCore.Tests.MemoryModel;

public class NativeMemoryBlockTests
{
    [Fact]
    public void Block_is_page_aligned_and_zeroed()
    {
        using var block = new NativeMemoryBlock(3 * 4096 + 5);
        Assert.Equal(0, block.Address % 4096);
        Assert.Equal(3UL * 4096 + 5, block.Size);
        Assert.Equal(3 * 4096 + 5, block.Span.Length);
        Assert.DoesNotContain(block.Span.ToArray(), b => b != 0);
    }

    [Fact]
    public void Zero_size_is_rejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new NativeMemoryBlock(0));
    }

    [Fact]
    public void Region_describes_the_whole_block_or_a_slice()
    {
        using var block = new NativeMemoryBlock(0x4000);
        var whole = block.Region(0x1_0000_0000);
        Assert.Equal(new MemoryRegion(0x1_0000_0000, 0x4000, (ulong)block.Address, block.Address), whole);

        var slice = block.Region(0x2000, offset: 0x1000, length: 0x2000, userAddr: 0x7f00_0000_0000);
        Assert.Equal(new MemoryRegion(0x2000, 0x2000, 0x7f00_0000_0000, block.Address + 0x1000), slice);
        Assert.Equal(0x3fffUL, slice.GuestLast);
        Assert.Equal(0x7f00_0000_1fffUL, slice.UserLast);

        var tail = block.Region(0, offset: 0x3000);
        Assert.Equal(0x1000UL, tail.Size);

        Assert.Throws<ArgumentOutOfRangeException>(() => block.Region(0, offset: 0x1000, length: 0x3001));
        Assert.Throws<ArgumentOutOfRangeException>(() => block.Region(0, offset: 0x4001));
    }

    [Fact]
    public void Disposed_block_refuses_access_and_dispose_is_idempotent()
    {
        var block = new NativeMemoryBlock(4096);
        block.Span[0] = 1;
        block.Dispose();
        Assert.Throws<ObjectDisposedException>(() => block.Address);
        Assert.Throws<ObjectDisposedException>(() => block.Span.Length);
        block.Dispose();
    }
}
