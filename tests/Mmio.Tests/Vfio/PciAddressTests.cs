using PciVirtio.Mmio.Vfio;

namespace PciVirtio.Mmio.Tests.Vfio;

public class PciAddressTests
{
    [Theory]
    [InlineData("0000:00:03.0", "0000:00:03.0")]
    [InlineData("00:03.0", "0000:00:03.0")]
    [InlineData("0000:AF:1F.7", "0000:af:1f.7")]
    [InlineData("10000:01:00.1", "10000:01:00.1")]
    public void Parses_and_prints_the_canonical_form(string text, string canonical)
    {
        PciAddress a = PciAddress.Parse(text);
        Assert.Equal(canonical, a.ToString());
        Assert.Equal(a, PciAddress.Parse(canonical));
    }

    [Theory]
    [InlineData("")]
    [InlineData("0000:00:03")]
    [InlineData("0000:00:20.0")] // device > 0x1f
    [InlineData("0000:00:03.8")] // function > 7
    [InlineData("000:00:03.0")]  // domain too short
    [InlineData("0000:0:03.0")]
    [InlineData("../../../etc")]
    [InlineData("0000:00:03.0/..")]
    [InlineData("+000:00:03.0")]
    [InlineData("0000:00:03.0 ")]
    public void Rejects_malformed_addresses(string text)
    {
        Assert.False(PciAddress.TryParse(text, out _));
        Assert.Throws<FormatException>(() => PciAddress.Parse(text));
    }

    [Fact]
    public void Fields_are_validated()
    {
        var a = new PciAddress(0, 0x3a, 0x1f, 7);
        Assert.Equal("0000:3a:1f.7", a.ToString());
        Assert.Throws<ArgumentOutOfRangeException>(() => new PciAddress(0, 0, 0x20, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PciAddress(0, 0, 0, 8));
    }
}
