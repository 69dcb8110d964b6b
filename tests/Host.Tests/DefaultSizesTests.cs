using System.Globalization;
using System.Text.RegularExpressions;
using PciVirtio.Bridge.Link;
using PciVirtio.Host.Tests.Support;

namespace PciVirtio.Host.Tests;

/// <summary>
/// The sizes the commands use when none are given fit together: `pcivirtio link` offers the
/// protocol's defaults, and the windows `pcivirtio sim serve` makes by default hold the layout
/// of that offer, so the two run the full default ring without a size on either command line.
/// Raising the ring's defaults without the window (or the other way round) would have every
/// handshake halve the ring to fit (LinkParameters.Agree); it fails here instead.
/// </summary>
public sealed partial class DefaultSizesTests
{
    [Fact]
    public void Sim_serve_makes_windows_that_hold_what_link_offers_by_default()
    {
        var link = CommandLine.Run("link", "--help");
        var serve = CommandLine.Run("sim", "serve", "--help");
        Assert.True(link.ExitCode == 0, link.ToString());
        Assert.True(serve.ExitCode == 0, serve.ToString());

        var defaults = new LinkParameters();
        var offer = new LinkParameters { QueueSize = (int)Default(link.Output, "--queue-size"), BufferSize = (int)Default(link.Output, "--buffer-size") };
        Assert.Equal((defaults.QueueSize, defaults.BufferSize), (offer.QueueSize, offer.BufferSize));

        ulong window = Default(serve.Output, "--window-size");
        ulong layout = LinkLayout.Compute(offer).Size;
        Assert.True(layout <= window, $"link's default offer needs a {layout}-byte window; sim serve makes {window}-byte ones");
    }

    /// <summary>The "[default: N]" that help shows for <paramref name="option"/>.</summary>
    private static ulong Default(string help, string option)
    {
        foreach (string line in help.Split('\n'))
        {
            if (line.TrimStart().StartsWith(option + " ", StringComparison.Ordinal) && DefaultValue().Match(line) is { Success: true } m)
            {
                return ulong.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
            }
        }

        Assert.Fail($"no default shown for {option} in:\n{help}");
        return 0;
    }

    [GeneratedRegex(@"\[default: (\d+)\]")]
    private static partial Regex DefaultValue();
}
