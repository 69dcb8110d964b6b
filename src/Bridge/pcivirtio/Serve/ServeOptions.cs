namespace PciVirtio.Host.Serve;

/// <summary>The options of <c>pcivirtio serve</c>: vhost-user virtio-net backends on unix
/// sockets, bridged to a TAP (one socket) or to each other (two sockets, port-to-port).</summary>
public sealed record ServeOptions
{
    public List<string> Sockets { get; init; } = [];

    /// <summary>The backend's name; null: its devices are net0 (and net1).</summary>
    public string? Name { get; init; }

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

    /// <summary>The device on socket <paramref name="index"/>: net0/net1, or the backend's
    /// name (name.0/name.1 for a joined pair).</summary>
    public string DeviceName(int index) => Name is null ? $"net{index}" : IsSwitch ? $"{Name}.{index}" : Name;

    /// <summary>Two sockets: the devices are joined by the port-to-port switch.</summary>
    public bool IsSwitch => Sockets.Count == 2;
}
