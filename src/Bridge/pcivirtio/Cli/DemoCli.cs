using System.CommandLine;
using PciVirtio.Host.Demo;

namespace PciVirtio.Host.Cli;

/// <summary><c>pcivirtio demo</c>: the README's main job.</summary>
internal static class DemoCli
{
    public static Command Create(TextWriter output)
    {
        var seconds = CliOptions.Int("--seconds", "How long traffic runs", 1, 3600, 5);
        var packets = CliOptions.Flag("--packets", "Use the in-process packet API even as root (no TAPs, no namespaces)");
        var rings = CliOptions.Flag("--rings", "The ring demo instead: both hosts' rings in one process, no hw-sim (takes the options below)");
        var frames = new Option<long>("--frames") { Description = "Ring demo: frames to send", DefaultValueFactory = _ => 5_000_000 };
        frames.Validators.Add(r =>
        {
            if (CliOptions.Converted(r.GetValueOrDefault<long>, out long n) && n <= 0)
            {
                r.AddError("--frames: must be positive");
            }
        });
        var size = CliOptions.Int("--size", "Ring demo: frame size in bytes", 16, DemoOptions.MaxFrameSize, 1024);
        var queueSize = CliOptions.Int("--queue-size", "Ring demo: ring size, a power of two", 2, 32768, 256);
        queueSize.Validators.Add(r =>
        {
            if (CliOptions.Converted(r.GetValueOrDefault<int>, out int q) && (q & (q - 1)) != 0)
            {
                r.AddError($"--queue-size: {q} is not a power of two");
            }
        });
        var burst = CliOptions.Int("--burst", "Ring demo: frames per batch", 1, 1024, 32);
        var noEventIdx = CliOptions.Flag("--no-event-idx", "Ring demo: flag-based notification suppression instead of EVENT_IDX");
        var timeout = CliOptions.Int("--timeout", "Ring demo: give up after this many seconds", 1, 86400, 60);
        var command = new Command("demo", "Two hosts linked by an emulated NTB (hw-sim), with live throughput; as root with TAPs in network namespaces (ping, iperf3), otherwise through the packet API")
        {
            seconds, packets, rings, frames, size, queueSize, burst, noEventIdx, timeout,
        };
        command.SetAction(parse =>
        {
            if (parse.GetValue(rings))
            {
                var options = new DemoOptions
                {
                    Frames = parse.GetValue(frames),
                    FrameSize = parse.GetValue(size),
                    QueueSize = parse.GetValue(queueSize),
                    Burst = parse.GetValue(burst),
                    EventIdx = !parse.GetValue(noEventIdx),
                    Timeout = TimeSpan.FromSeconds(parse.GetValue(timeout)),
                };
                return new RingDemo(options, output).Run();
            }

            return new LinkDemo(output, TimeSpan.FromSeconds(parse.GetValue(seconds)), parse.GetValue(packets)).Run();
        });
        return command;
    }

    /// <summary>The demo with every default (what <c>pcivirtio</c> alone runs).</summary>
    public static int RunDefault(TextWriter output) => new LinkDemo(output, TimeSpan.FromSeconds(5), false).Run();
}
