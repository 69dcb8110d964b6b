using PciVirtio.Host.Demo;
using Xunit.Abstractions;

namespace PciVirtio.VhostCore.Tests.Demo;

/// <summary>The README's main job runs and reports a healthy link.</summary>
public class LinkDemoTests(ITestOutputHelper output)
{
    [Fact]
    public void Packet_demo_moves_checked_frames_with_no_remote_read()
    {
        var writer = new StringWriter();
        int rc = new LinkDemo(writer, TimeSpan.FromSeconds(1), forcePackets: true).Run();
        output.WriteLine(writer.ToString());
        Assert.Equal(0, rc);
        Assert.Contains(", 0 bad;", writer.ToString(), StringComparison.Ordinal);
        Assert.Contains("remote reads A 0, B 0", writer.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Tap_demo_pings_and_moves_tcp_across_the_link_and_leaves_no_namespace()
    {
        if (Tmds.Linux.LibC.geteuid() != 0 || !File.Exists("/dev/net/tun"))
        {
            output.WriteLine("skipped: the TAP demo needs root and /dev/net/tun");
            return;
        }

        var writer = new StringWriter();
        int rc = new LinkDemo(writer, TimeSpan.FromSeconds(2), forcePackets: false).Run();
        string text = writer.ToString();
        output.WriteLine(text);
        Assert.Equal(0, rc);
        Assert.Contains("3 received, 0% packet loss", text, StringComparison.Ordinal);
        Assert.Contains("remote reads on the data path: A 0, B 0", text, StringComparison.Ordinal);
        Assert.False(File.Exists($"/var/run/netns/pcv-demo-a-{Environment.ProcessId}"), "namespace A removed");
        Assert.False(File.Exists($"/var/run/netns/pcv-demo-b-{Environment.ProcessId}"), "namespace B removed");
    }
}
