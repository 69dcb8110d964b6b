using System.Globalization;

namespace PciVirtio.Host.Serve;

/// <summary>The options of <c>pcivirtio serve</c>: vhost-user virtio-net backends on unix
/// sockets, bridged to a TAP (one socket) or to each other (two sockets, port-to-port).</summary>
public sealed record ServeOptions
{
    public List<string> Sockets { get; init; } = [];

    /// <summary>Connect to the frontends' sockets (and reconnect) instead of listening.</summary>
    public bool Client { get; init; }

    public int QueuePairs { get; init; } = 1;

    /// <summary>The TAP to bridge to (created if missing); null with one socket: the kernel names it.</summary>
    public string? Tap { get; init; }

    public int? Mtu { get; init; }

    public bool Mergeable { get; init; } = true;

    /// <summary>Stop after this long (for scripted runs); null: until SIGINT/SIGTERM.</summary>
    public TimeSpan? Duration { get; init; }

    /// <summary>Print a counters line this often; null: never.</summary>
    public TimeSpan? StatsInterval { get; init; } = TimeSpan.FromSeconds(1);

    public bool Verbose { get; init; }

    /// <summary>Busy-poll the rings on the data-plane thread (lowest latency, one core
    /// spinning) instead of waiting for kicks.</summary>
    public bool Poll { get; init; }

    /// <summary>Instead of a TAP: discard the driver's frames (sink) or also feed it frames
    /// (source), for measurements.</summary>
    public TrafficMode? Traffic { get; init; }

    /// <summary>Frame size of the source.</summary>
    public int FrameSize { get; init; } = 64;

    /// <summary>Two sockets: the devices are joined by the port-to-port switch.</summary>
    public bool IsSwitch => Sockets.Count == 2;

    public static bool TryParse(ReadOnlySpan<string> args, out ServeOptions options, out string? error)
    {
        options = new ServeOptions();
        error = null;
        var sockets = new List<string>();
        bool client = false, mergeable = true, verbose = false, poll = false;
        TrafficMode? traffic = null;
        int frameSize = 64;
        int pairs = 1;
        int? mtu = null;
        string? tap = null;
        TimeSpan? duration = null;
        TimeSpan? stats = TimeSpan.FromSeconds(1);
        for (int i = 0; i < args.Length; i++)
        {
            string a = args[i];
            string? next = i + 1 < args.Length ? args[i + 1] : null;
            string? Value()
            {
                i++;
                return next;
            }

            switch (a)
            {
                case "--socket":
                    if (Value() is not { Length: > 0 } s)
                    {
                        error = "--socket needs a path";
                        return false;
                    }

                    sockets.Add(s);
                    break;
                case "--client":
                    client = true;
                    break;
                case "--no-mrg":
                    mergeable = false;
                    break;
                case "--verbose":
                    verbose = true;
                    break;
                case "--poll":
                    poll = true;
                    break;
                case "--sink":
                    traffic = TrafficMode.Sink;
                    break;
                case "--source":
                    traffic = TrafficMode.Source;
                    break;
                case "--frame-size":
                    if (!int.TryParse(Value(), NumberStyles.None, CultureInfo.InvariantCulture, out frameSize) || frameSize is < 60 or > 65535)
                    {
                        error = "--frame-size needs a number of bytes, 60..65535";
                        return false;
                    }

                    break;
                case "--queues":
                    if (!int.TryParse(Value(), NumberStyles.None, CultureInfo.InvariantCulture, out pairs) || pairs is < 1 or > 64)
                    {
                        error = "--queues needs a number of queue pairs, 1..64";
                        return false;
                    }

                    break;
                case "--mtu":
                    if (!int.TryParse(Value(), NumberStyles.None, CultureInfo.InvariantCulture, out int m) || m is < 68 or > 65535)
                    {
                        error = "--mtu needs a number, 68..65535";
                        return false;
                    }

                    mtu = m;
                    break;
                case "--tap":
                    tap = Value();
                    if (string.IsNullOrEmpty(tap))
                    {
                        error = "--tap needs an interface name";
                        return false;
                    }

                    break;
                case "--duration":
                    if (!double.TryParse(Value(), NumberStyles.Float, CultureInfo.InvariantCulture, out double d) || d <= 0)
                    {
                        error = "--duration needs a positive number of seconds";
                        return false;
                    }

                    duration = TimeSpan.FromSeconds(d);
                    break;
                case "--stats":
                    if (!double.TryParse(Value(), NumberStyles.Float, CultureInfo.InvariantCulture, out double st) || st < 0)
                    {
                        error = "--stats needs a number of seconds (0: no counter lines)";
                        return false;
                    }

                    stats = st == 0 ? null : TimeSpan.FromSeconds(st);
                    break;
                default:
                    error = $"unknown serve option '{a}'";
                    return false;
            }
        }

        if (sockets.Count is < 1 or > 2)
        {
            error = "serve needs one --socket (bridged to a TAP) or two (joined to each other)";
            return false;
        }

        if (traffic is not null && (sockets.Count != 1 || tap is not null))
        {
            error = "--sink/--source go with one --socket and no --tap";
            return false;
        }

        if (sockets.Count == 2 && tap is not null)
        {
            error = "--tap goes with one --socket; two sockets are joined to each other";
            return false;
        }

        options = new ServeOptions
        {
            Sockets = sockets, Client = client, QueuePairs = pairs, Tap = tap, Mtu = mtu, Mergeable = mergeable,
            Duration = duration, StatsInterval = stats, Verbose = verbose, Poll = poll, Traffic = traffic, FrameSize = frameSize,
        };
        return true;
    }
}
