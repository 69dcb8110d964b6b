using System.Text.Json.Serialization;

namespace PciVirtio.Host.Control;

/// <summary>What <c>pcivirtio stats</c> reads from a running daemon: every device and link
/// with its counters (totals since start; the reader makes rates from two readings).</summary>
public sealed record DaemonStatus
{
    public int ProcessId { get; init; }

    public DateTimeOffset Time { get; init; }

    public double UptimeSeconds { get; init; }

    public List<DeviceStatus> Devices { get; init; } = [];

    public List<LinkStatus> Links { get; init; } = [];
}

/// <summary>One vhost-user virtio-net device.</summary>
public sealed record DeviceStatus
{
    public required string Name { get; init; }

    /// <summary>The backend (configuration entry) it belongs to.</summary>
    public required string Backend { get; init; }

    public required string Socket { get; init; }

    /// <summary>A frontend is connected.</summary>
    public bool Connected { get; init; }

    /// <summary>What the device is bridged to: a TAP's name, or "port-to-port".</summary>
    public string? Attachment { get; init; }

    public ulong AckedFeatures { get; init; }

    public List<QueueStatus> Queues { get; init; } = [];
}

/// <summary>One virtqueue of a device.</summary>
public sealed record QueueStatus
{
    public required string Name { get; init; }

    public bool Running { get; init; }

    /// <summary>Set when bad input from the driver stopped the queue.</summary>
    public string? Error { get; init; }

    public long Packets { get; init; }

    public long Bytes { get; init; }

    public long Drops { get; init; }

    public long Kicks { get; init; }

    public long Interrupts { get; init; }

    /// <summary>Times the queue waited: no receive buffers from the driver, or a full backend.</summary>
    public long RingFull { get; init; }
}

/// <summary>One end of a host-to-host link.</summary>
public sealed record LinkStatus
{
    public required string Name { get; init; }

    public required string Hardware { get; init; }

    public required string Tap { get; init; }

    public required string State { get; init; }

    public string? Problem { get; init; }

    public long TxFrames { get; init; }

    public long TxBytes { get; init; }

    public long TxDropped { get; init; }

    public long TxRingFull { get; init; }

    public long RxFrames { get; init; }

    public long RxBytes { get; init; }

    public long RxDropped { get; init; }

    public long RxRingFull { get; init; }

    public long DoorbellsSent { get; init; }

    public long DoorbellsTaken { get; init; }

    /// <summary>Times the receive ring, dry and its linger over, asked the peer for kicks again.</summary>
    public long RxRearms { get; init; }

    public long LinkUps { get; init; }

    public long LinkDowns { get; init; }

    /// <summary>Reads across the link (non-posted round trips) since start.</summary>
    public long RemoteReads { get; init; }

    public long RemoteWrites { get; init; }
}

/// <summary>An answer of the control socket that is not a status.</summary>
public sealed record ControlError(string Error);

/// <summary>Source-generated JSON for the control socket (no reflection: NativeAOT).</summary>
[JsonSourceGenerationOptions(WriteIndented = false, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, UseStringEnumConverter = true)]
[JsonSerializable(typeof(DaemonStatus))]
[JsonSerializable(typeof(ControlError))]
public sealed partial class ControlJsonContext : JsonSerializerContext
{
}
