namespace PciVirtio.Host.Demo;

/// <summary>Settings of the ring demo; every one has a default so the demo runs with no arguments.</summary>
internal sealed record DemoOptions
{
    public long Frames { get; init; } = 5_000_000;

    public int FrameSize { get; init; } = 1024;

    public int QueueSize { get; init; } = 256;

    public int Burst { get; init; } = 32;

    public bool EventIdx { get; init; } = true;

    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(60);

    public const int MaxFrameSize = 65536;

    /// <summary>Parses <c>--frames N --size B --queue-size Q --burst N --no-event-idx --timeout S</c>.</summary>
    public static bool TryParse(ReadOnlySpan<string> args, out DemoOptions options, out string? error)
    {
        options = new DemoOptions();
        error = null;
        for (int i = 0; i < args.Length; i++)
        {
            string a = args[i];
            if (a == "--no-event-idx")
            {
                options = options with { EventIdx = false };
                continue;
            }

            if (i + 1 >= args.Length)
            {
                error = $"option '{a}' needs a value or is unknown";
                return false;
            }

            string v = args[++i];
            switch (a)
            {
                case "--frames" when long.TryParse(v, out long n) && n > 0:
                    options = options with { Frames = n };
                    break;
                case "--size" when int.TryParse(v, out int s) && s is >= 16 and <= MaxFrameSize:
                    options = options with { FrameSize = s };
                    break;
                case "--queue-size" when int.TryParse(v, out int q) && q is >= 2 and <= 32768 && (q & (q - 1)) == 0:
                    options = options with { QueueSize = q };
                    break;
                case "--burst" when int.TryParse(v, out int b) && b is >= 1 and <= 1024:
                    options = options with { Burst = b };
                    break;
                case "--timeout" when int.TryParse(v, out int t) && t > 0:
                    options = options with { Timeout = TimeSpan.FromSeconds(t) };
                    break;
                default:
                    error = $"bad value '{v}' for option '{a}' (--frames N>0, --size 16..{MaxFrameSize}, --queue-size power of two 2..32768, --burst 1..1024, --timeout seconds)";
                    return false;
            }
        }

        return true;
    }
}
