using PciVirtio.Bridge.Link;

namespace PciVirtio.Bridge.Tests.Link;

/// <summary>
/// What two offers agree on: the smaller of each size, then a ring halved until the layout
/// fits the smaller of the two windows the offers name. Both ends compute it on their own, so
/// it must not depend on which offer is whose.
/// </summary>
public sealed class LinkAgreementTests
{
    [Theory]
    [InlineData(16UL << 20, 4096)] // the default window holds the default ring
    [InlineData(8UL << 20, 2048)]
    [InlineData(4UL << 20, 1024)]
    [InlineData(1UL << 20, 256)]
    [InlineData(256UL << 10, 64)] // 64 entries of 2048 B and their rings: 135,168 bytes
    public void The_default_ring_is_halved_until_its_layout_fits_the_smaller_window(ulong smaller, int queueSize)
    {
        var a = new LinkParameters { WindowSize = smaller };
        var b = new LinkParameters { WindowSize = 64UL << 20 };

        var agreed = LinkParameters.Agree(a, b);

        Assert.Equal(queueSize, agreed.QueueSize);
        Assert.Equal(a.BufferSize, agreed.BufferSize);
        Assert.True(LinkLayout.Compute(agreed).Size <= smaller, $"{LinkLayout.Compute(agreed).Size} bytes in a {smaller}-byte window");
        Assert.True(agreed.QueueSize == a.QueueSize || LinkLayout.Compute(agreed with { QueueSize = agreed.QueueSize * 2 }).Size > smaller, "halved once too often");
        Assert.Equal(agreed, LinkParameters.Agree(b, a));
    }

    [Fact]
    public void A_window_too_small_even_for_the_smallest_ring_gets_the_smallest_ring_and_no_fit()
    {
        var a = new LinkParameters { WindowSize = 64UL << 10 };
        var b = new LinkParameters { WindowSize = 64UL << 10 };

        var agreed = LinkParameters.Agree(a, b);

        Assert.Equal(LinkParameters.MinQueueSize, agreed.QueueSize);
        Assert.True(LinkLayout.Compute(agreed).Size > a.WindowSize); // the link refuses it, naming the sizes
    }

    [Fact]
    public void Offers_that_fit_agree_on_the_smaller_of_each_size_as_before()
    {
        var a = new LinkParameters { QueuePairs = 2, QueueSize = 512, BufferSize = 4096, Mtu = 9000, WindowSize = 64UL << 20 };
        var b = new LinkParameters { QueuePairs = 4, QueueSize = 256, BufferSize = 8192, Mtu = 1500, WindowSize = 32UL << 20, Features = LinkFeatures.EventIdx };

        var agreed = LinkParameters.Agree(a, b);

        Assert.Equal((2, 256, 4096, 1500, LinkFeatures.EventIdx), (agreed.QueuePairs, agreed.QueueSize, agreed.BufferSize, agreed.Mtu, agreed.Features));
        Assert.Equal(agreed, LinkParameters.Agree(b, a));
    }

    [Fact]
    public void Offers_without_window_sizes_are_not_fitted()
    {
        var agreed = LinkParameters.Agree(new LinkParameters(), new LinkParameters());

        Assert.Equal(new LinkParameters().QueueSize, agreed.QueueSize);
    }
}
