using System.Globalization;
using System.Text;

namespace PciVirtio.Tests.Peers;

/// <summary>
/// Builds the <c>--vdev</c> strings of the DPDK virtual devices the tests use. Each device gets
/// one ethdev port, numbered in the order of the <c>--vdev</c> arguments.
/// </summary>
public static class Vdev
{
    /// <summary>
    /// DPDK's virtio-user frontend (<c>net_virtio_userN</c>): it drives the vhost-user backend at
    /// <paramref name="path"/>. As a client (the default) the socket must exist when testpmd
    /// starts, or the device fails to probe; with <paramref name="server"/> testpmd creates the
    /// socket and blocks in its start-up until a backend connects (start it with
    /// <see cref="Testpmd.Launch"/>, then connect the backend, then <see cref="Testpmd.WaitUntilReadyAsync"/>).
    /// Null leaves a feature at DPDK's default (mergeable rx buffers on, split ring, in-order off).
    /// </summary>
    public static string VirtioUser(string path, int queues = 1, bool server = false, bool? mrgRxbuf = null,
        bool? packedVq = null, bool? inOrder = null, int? queueSize = null, string? mac = null, int index = 0)
    {
        CheckPath(path, nameof(path));
        ArgumentOutOfRangeException.ThrowIfLessThan(queues, 1);
        var text = new StringBuilder(string.Create(CultureInfo.InvariantCulture, $"net_virtio_user{index},path={path},queues={queues}"));
        if (server)
        {
            text.Append(",server=1");
        }

        AppendFlag(text, "mrg_rxbuf", mrgRxbuf);
        AppendFlag(text, "packed_vq", packedVq);
        AppendFlag(text, "in_order", inOrder);
        if (queueSize is { } size)
        {
            text.Append(CultureInfo.InvariantCulture, $",queue_size={size}");
        }

        if (mac is not null)
        {
            text.Append(CultureInfo.InvariantCulture, $",mac={mac}");
        }

        return text.ToString();
    }

    /// <summary>
    /// DPDK's vhost PMD (<c>net_vhostN</c>), the reference vhost-user backend. As a server (the
    /// default) it creates the socket <paramref name="iface"/> at start-up and the port's link comes
    /// up once a frontend has connected and started its queues; with <paramref name="client"/> it
    /// connects to a frontend's socket and keeps retrying in the background.
    /// </summary>
    public static string Vhost(string iface, int queues = 1, bool client = false, int index = 0)
    {
        CheckPath(iface, nameof(iface));
        ArgumentOutOfRangeException.ThrowIfLessThan(queues, 1);
        string text = string.Create(CultureInfo.InvariantCulture, $"net_vhost{index},iface={iface},queues={queues}");
        return client ? text + ",client=1" : text;
    }

    /// <summary>A TAP interface named <paramref name="iface"/> as a port (<c>net_tapN</c>); needs
    /// root and /dev/net/tun.</summary>
    public static string Tap(string iface, int index = 0)
    {
        ArgumentException.ThrowIfNullOrEmpty(iface);
        if (iface.Length > 15 || iface.Any(c => c is ',' or '=' || char.IsWhiteSpace(c)))
        {
            throw new ArgumentException($"not an interface name: \"{iface}\"", nameof(iface));
        }

        return string.Create(CultureInfo.InvariantCulture, $"net_tap{index},iface={iface}");
    }

    private static void AppendFlag(StringBuilder text, string key, bool? value)
    {
        if (value is { } on)
        {
            text.Append(CultureInfo.InvariantCulture, $",{key}={(on ? 1 : 0)}");
        }
    }

    /// <summary>Devargs are split at commas, and a unix socket path has at most 107 bytes.</summary>
    private static void CheckPath(string path, string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(path, name);
        if (path.Contains(',', StringComparison.Ordinal) || path.Contains('=', StringComparison.Ordinal))
        {
            throw new ArgumentException($"a vdev path cannot hold ',' or '=': \"{path}\"", name);
        }

        if (Encoding.UTF8.GetByteCount(path) > 107)
        {
            throw new ArgumentException($"a unix socket path has at most 107 bytes: \"{path}\"", name);
        }
    }
}
