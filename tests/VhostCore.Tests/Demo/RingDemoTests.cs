using PciVirtio.Host.Demo;

namespace PciVirtio.VhostCore.Tests.Demo;

/// <summary>The README's main job, run in-process with small counts.</summary>
public class RingDemoTests
{
    [Theory]
    [InlineData(true, 64, 32)]
    [InlineData(false, 1500, 8)]
    [InlineData(true, 9000, 1)]
    public void Demo_echoes_every_frame_whole_once_and_in_order(bool eventIdx, int size, int burst)
    {
        var options = new DemoOptions { Frames = 20_000, FrameSize = size, Burst = burst, QueueSize = 64, EventIdx = eventIdx, Timeout = TimeSpan.FromSeconds(30) };
        var output = new StringWriter();
        int code = new RingDemo(options, output).Run();
        string text = output.ToString();
        Assert.True(code == 0, text);
        Assert.Contains("20,000 echoed back, 0 corrupted", text);
        Assert.Contains("OK: every frame came back whole, once and in order.", text);
    }

    [Theory]
    [InlineData("--frames 0")]
    [InlineData("--size 8")]
    [InlineData("--queue-size 100")]
    [InlineData("--bogus")]
    public void Bad_options_are_rejected_with_a_reason(string commandLine)
    {
        Assert.False(DemoOptions.TryParse(commandLine.Split(' '), out _, out string? error));
        Assert.False(string.IsNullOrEmpty(error));
    }

    [Fact]
    public void Options_parse()
    {
        Assert.True(DemoOptions.TryParse(["--frames", "10", "--size", "128", "--queue-size", "16", "--burst", "4", "--no-event-idx", "--timeout", "5"], out var o, out _));
        Assert.Equal(new DemoOptions { Frames = 10, FrameSize = 128, QueueSize = 16, Burst = 4, EventIdx = false, Timeout = TimeSpan.FromSeconds(5) }, o);
    }
}
