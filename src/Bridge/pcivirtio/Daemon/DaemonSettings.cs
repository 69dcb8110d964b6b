namespace PciVirtio.Host.Daemon;

/// <summary>
/// The <c>PciVirtio</c> section of the daemon's configuration: the VM backends and the links
/// it runs, and where its control socket is. Bound from appsettings.json, the file given to
/// <c>run --config</c>, environment variables (<c>PciVirtio__Backends__0__Socket</c>) and
/// <c>--PciVirtio:Key=value</c> flags, in that order of precedence (later wins).
/// </summary>
public sealed class DaemonSettings
{
    public const string Section = "PciVirtio";

    /// <summary>Unix socket <c>pcivirtio stats</c> reads the counters from; default
    /// <see cref="DefaultControlSocket"/>. An empty string turns it off.</summary>
    public string? ControlSocket { get; set; }

    /// <summary>vhost-user virtio-net backends, one per VM network card (or a pair joined
    /// port to port).</summary>
    public List<VhostBackendSettings> Backends { get; set; } = [];

    /// <summary>Ends of host-to-host links over an NTB, each as a TAP.</summary>
    public List<LinkEndSettings> Links { get; set; } = [];

    /// <summary>How long a graceful stop may take before the daemon gives up on it.</summary>
    public double ShutdownSeconds { get; set; } = 10;

    /// <summary>/run/pcivirtio/control.sock for root; otherwise under $XDG_RUNTIME_DIR (a
    /// directory the user owns), falling back to /tmp/pcivirtio-UID.</summary>
    public static string DefaultControlSocket
    {
        get
        {
            if (Environment.IsPrivilegedProcess)
            {
                return "/run/pcivirtio/control.sock";
            }

            string? runtime = Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR");
            return string.IsNullOrEmpty(runtime)
                ? $"/tmp/pcivirtio-{Environment.UserName}/control.sock"
                : Path.Combine(runtime, "pcivirtio", "control.sock");
        }
    }

    public string ResolvedControlSocket => ControlSocket ?? DefaultControlSocket;
}

/// <summary>One vhost-user virtio-net backend.</summary>
public sealed class VhostBackendSettings
{
    /// <summary>Name in logs, metrics and stats; unique. Default: net0, net1, … by position.</summary>
    public string? Name { get; set; }

    /// <summary>The vhost-user socket; with <see cref="Tap"/> (or none) the device is bridged
    /// to a TAP.</summary>
    public string? Socket { get; set; }

    /// <summary>Instead of <see cref="Socket"/>: two sockets whose devices are joined port to
    /// port (frames from one guest go to the other).</summary>
    public List<string> Sockets { get; set; } = [];

    /// <summary>Connect to the frontend's socket (QEMU <c>server=on</c>) and reconnect when it
    /// restarts, instead of listening.</summary>
    public bool Client { get; set; }

    /// <summary>Queue pairs offered (VIRTIO_NET_F_MQ when above 1), 1..64.</summary>
    public int Queues { get; set; } = 1;

    /// <summary>The TAP to create or attach to; null: the kernel names one.</summary>
    public string? Tap { get; set; }

    /// <summary>MTU of the TAP and in the device's config space, 68..65535.</summary>
    public int? Mtu { get; set; }

    /// <summary>Offer VIRTIO_NET_F_MRG_RXBUF.</summary>
    public bool Mergeable { get; set; } = true;

    /// <summary>Busy-poll the rings (one core spins) instead of waiting for kicks.</summary>
    public bool Poll { get; set; }

    /// <summary>The socket paths in order (one, or two for a port-to-port pair).</summary>
    public IReadOnlyList<string> AllSockets => Socket is { Length: > 0 } s ? [s, .. Sockets] : Sockets;
}

/// <summary>One end of a host-to-host link.</summary>
public sealed class LinkEndSettings
{
    /// <summary>Name in logs, metrics and stats; unique. Default: the TAP's name, else link0, ….</summary>
    public string? Name { get; set; }

    /// <summary><c>hw-sim:SOCKET[#PORT]</c> or <c>vfio:BDF</c>.</summary>
    public string? Hardware { get; set; }

    /// <summary>The TAP to create; null: the kernel names one.</summary>
    public string? Tap { get; set; }

    /// <summary>MTU of the TAP, 68..65521.</summary>
    public int Mtu { get; set; } = 1500;

    /// <summary>Address to give the TAP (CIDR, e.g. 10.77.0.1/24), through <c>ip addr add</c>.</summary>
    public string? Address { get; set; }

    /// <summary>Queue pairs offered to the peer.</summary>
    public int Queues { get; set; } = 1;

    /// <summary>Ring size offered, a power of two (the default is LinkParameters').</summary>
    public int QueueSize { get; set; } = Bridge.Link.LinkParameters.DefaultQueueSize;

    /// <summary>Receive buffer bytes per ring slot (the default is LinkParameters').</summary>
    public int BufferSize { get; set; } = Bridge.Link.LinkParameters.DefaultBufferSize;

    /// <summary>Busy-poll the rings instead of doorbells.</summary>
    public bool Poll { get; set; }

    /// <summary>Doorbells mode: microseconds a receive ring that ran dry, or a transmit ring
    /// out of space, is still watched before the peer is asked for a doorbell, 0..1000 (0: at
    /// once).</summary>
    public int LingerMicroseconds { get; set; } = (int)Bridge.Link.LinkOptions.DefaultLinger.TotalMicroseconds;

    /// <summary><c>vfio:</c> only: the other side's ivshmem IVPosition, when the two ends are
    /// not the server's first two peers (ids 0 and 1).</summary>
    public uint? PeerId { get; set; }

    /// <summary><c>vfio:</c> only: accept vfio-pci's no-IOMMU mode (a machine without an
    /// IOMMU, where the module was loaded with enable_unsafe_noiommu_mode=1). The device can
    /// then reach all memory; only for machines dedicated to it.</summary>
    public bool NoIommu { get; set; }

    /// <summary>What <see cref="Bridge.Hardware.NtbHardware.Open"/> needs for this end.</summary>
    public Bridge.Hardware.NtbOpenOptions OpenOptions(Microsoft.Extensions.Logging.ILogger? logger) => new()
    {
        Ivshmem = new Bridge.Hardware.IvshmemNtbOptions
        {
            PeerId = PeerId,
            Vfio = NoIommu ? new Mmio.Vfio.VfioOpenOptions { AllowNoIommu = true } : null,
            Logger = logger,
        },
    };
}
