using System.Globalization;
using System.Net;
using System.Net.Sockets;
using PciVirtio.Bridge.Hardware;
using PciVirtio.Bridge.Link;

namespace PciVirtio.Host.Daemon;

/// <summary>
/// Checks the daemon's settings before anything starts, so a mistake is reported at once
/// with the key it is under (<c>PciVirtio:Backends:1:Queues: 0 is not in 1..64</c>), not as
/// a failure halfway through bringing devices up. The flag commands (<c>serve</c>,
/// <c>link</c>) use the same checks, naming their flags instead of keys.
/// </summary>
public static class SettingsValidator
{
    public const int MaxQueuePairs = 64;

    /// <summary>The smallest MTU an IPv4 host must take (RFC 791).</summary>
    public const int MinMtu = 68;

    /// <summary>The largest MTU of a TAP: its frames, Ethernet header included, stay within
    /// 65535 bytes.</summary>
    public const int MaxTapMtu = 65521;

    /// <summary>The largest MTU of two devices joined port to port (no TAP to refuse more).</summary>
    public const int MaxMtu = 65535;

    /// <summary>Bounds of a link's receive buffer per ring slot (a multiple of 64).</summary>
    public const int MinBufferSize = 256;

    public const int MaxBufferSize = 1 << 20;

    /// <summary>The longest linger a link takes, in microseconds.</summary>
    public static readonly int MaxLingerMicroseconds = (int)Bridge.Link.LinkOptions.MaxLinger.TotalMicroseconds;

    /// <summary>Linux interface names are at most 15 bytes (IFNAMSIZ - 1).</summary>
    public const int MaxInterfaceName = 15;

    /// <summary>Every problem of <paramref name="settings"/>; empty when it can start.</summary>
    public static List<string> Validate(DaemonSettings settings)
    {
        var errors = new List<string>();
        string root = DaemonSettings.Section;
        if (settings.ControlSocket is { Length: > 0 } control && CheckSocketPath(control, mustHaveDirectory: false) is { } bad)
        {
            errors.Add($"{root}:ControlSocket: {bad}");
        }

        if (settings.ShutdownSeconds is <= 0 or > 600 || double.IsNaN(settings.ShutdownSeconds))
        {
            errors.Add($"{root}:ShutdownSeconds: {settings.ShutdownSeconds.ToString(CultureInfo.InvariantCulture)} is not in (0, 600]");
        }

        var names = new Dictionary<string, string>(StringComparer.Ordinal);
        var sockets = new Dictionary<string, string>(StringComparer.Ordinal);
        var taps = new Dictionary<string, string>(StringComparer.Ordinal);
        void Unique(Dictionary<string, string> seen, string? value, string key, string what)
        {
            if (string.IsNullOrEmpty(value))
            {
                return;
            }

            if (seen.TryGetValue(value, out string? first))
            {
                errors.Add($"{key}: {what} '{value}' is already used by {first}");
            }
            else
            {
                seen[value] = key;
            }
        }

        for (int i = 0; i < settings.Backends.Count; i++)
        {
            string prefix = $"{root}:Backends:{i}";
            var b = settings.Backends[i];
            errors.AddRange(ValidateBackend(b, k => $"{prefix}:{k}"));
            Unique(names, BackendName(b, i), $"{prefix}:Name", "name");
            for (int s = 0; s < b.AllSockets.Count; s++)
            {
                Unique(sockets, b.AllSockets[s], $"{prefix}:{SocketSetting(b, s)}", "socket");
            }

            Unique(taps, b.Tap, $"{prefix}:Tap", "TAP");
        }

        for (int i = 0; i < settings.Links.Count; i++)
        {
            string prefix = $"{root}:Links:{i}";
            var l = settings.Links[i];
            errors.AddRange(ValidateLink(l, k => $"{prefix}:{k}"));
            Unique(names, LinkName(l, i), $"{prefix}:Name", "name");
            Unique(taps, l.Tap, $"{prefix}:Tap", "TAP");
        }

        if (settings.Backends.Count == 0 && settings.Links.Count == 0)
        {
            errors.Add($"{root}: names no Backends and no Links; there is nothing to run (see docs/operations.md for an example)");
        }

        return errors;
    }

    // The settable properties of the settings classes (a test keeps these lists whole).
    internal static readonly string[] DaemonKeys =
        [nameof(DaemonSettings.ControlSocket), nameof(DaemonSettings.Backends), nameof(DaemonSettings.Links), nameof(DaemonSettings.ShutdownSeconds)];

    internal static readonly string[] BackendKeys =
    [
        nameof(VhostBackendSettings.Name), nameof(VhostBackendSettings.Socket), nameof(VhostBackendSettings.Sockets), nameof(VhostBackendSettings.Client),
        nameof(VhostBackendSettings.Queues), nameof(VhostBackendSettings.Tap), nameof(VhostBackendSettings.Mtu), nameof(VhostBackendSettings.Mergeable),
        nameof(VhostBackendSettings.Poll),
    ];

    internal static readonly string[] LinkKeys =
    [
        nameof(LinkEndSettings.Name), nameof(LinkEndSettings.Hardware), nameof(LinkEndSettings.Tap), nameof(LinkEndSettings.Mtu), nameof(LinkEndSettings.Address),
        nameof(LinkEndSettings.Queues), nameof(LinkEndSettings.QueueSize), nameof(LinkEndSettings.BufferSize), nameof(LinkEndSettings.Poll),
        nameof(LinkEndSettings.LingerMicroseconds), nameof(LinkEndSettings.PeerId), nameof(LinkEndSettings.NoIommu),
    ];

    /// <summary>Keys under <paramref name="section"/> (the PciVirtio section) that no setting
    /// has, each as an error naming its full path.</summary>
    public static List<string> UnknownKeys(Microsoft.Extensions.Configuration.IConfigurationSection section)
    {
        var errors = new List<string>();
        void Check(Microsoft.Extensions.Configuration.IConfigurationSection s, string[] known)
        {
            foreach (var child in s.GetChildren())
            {
                if (!known.Contains(child.Key, StringComparer.OrdinalIgnoreCase))
                {
                    errors.Add($"{child.Path}: unknown key (known here: {string.Join(", ", known)})");
                }
            }
        }

        void Items(Microsoft.Extensions.Configuration.IConfigurationSection list, string[] known)
        {
            foreach (var item in list.GetChildren())
            {
                if (!int.TryParse(item.Key, NumberStyles.None, CultureInfo.InvariantCulture, out _))
                {
                    errors.Add($"{item.Path}: a list is expected here (entries 0, 1, …), not the key '{item.Key}'");
                    continue;
                }

                Check(item, known);
            }
        }

        Check(section, DaemonKeys);
        Items(section.GetSection("Backends"), BackendKeys);
        Items(section.GetSection("Links"), LinkKeys);
        return errors;
    }

    /// <summary>The name a backend goes by: its own, else net0, net1, … by position.</summary>
    public static string BackendName(VhostBackendSettings b, int index) => b.Name is { Length: > 0 } n ? n : $"net{index}";

    /// <summary>The name a link goes by: its own, else its TAP's, else link0, link1, ….</summary>
    public static string LinkName(LinkEndSettings l, int index) => l.Name is { Length: > 0 } n ? n : l.Tap is { Length: > 0 } t ? t : $"link{index}";

    /// <summary>Problems of one backend; <paramref name="key"/> turns a setting's name into
    /// the key or flag the user wrote.</summary>
    public static IEnumerable<string> ValidateBackend(VhostBackendSettings b, Func<string, string> key)
    {
        var all = b.AllSockets;
        if (all.Count == 0)
        {
            yield return $"{key("Socket")}: required (the vhost-user socket path)";
        }
        else if (all.Count > 2)
        {
            yield return $"{key("Sockets")}: {all.Count} sockets given; one bridges to a TAP, two are joined port to port";
        }

        if (all.Count == 2 && all[0] == all[1])
        {
            yield return $"{key("Sockets")}: both sockets are '{all[0]}'";
        }

        for (int i = 0; i < all.Count; i++)
        {
            if (CheckSocketPath(all[i], mustHaveDirectory: !b.Client) is { } bad)
            {
                yield return $"{key(SocketSetting(b, i))}: {bad}";
            }
        }

        if (all.Count == 2 && b.Tap is not null)
        {
            yield return $"{key("Tap")}: a TAP goes with one socket; two sockets are joined to each other";
        }

        if (b.Queues is < 1 or > MaxQueuePairs)
        {
            yield return $"{key("Queues")}: {b.Queues} is not in 1..{MaxQueuePairs}";
        }

        int maxMtu = all.Count == 2 ? MaxMtu : MaxTapMtu;
        if (b.Mtu is { } mtu && (mtu < MinMtu || mtu > maxMtu))
        {
            yield return $"{key("Mtu")}: {mtu} is not in {MinMtu}..{maxMtu}";
        }

        if (CheckInterfaceName(b.Tap) is { } tap)
        {
            yield return $"{key("Tap")}: {tap}";
        }

        if (b.Name is not null && CheckName(b.Name) is { } name)
        {
            yield return $"{key("Name")}: {name}";
        }
    }

    /// <summary>The setting a backend's socket <paramref name="index"/> came from: Socket,
    /// or an entry of Sockets (Sockets:N).</summary>
    private static string SocketSetting(VhostBackendSettings b, int index) =>
        b.Socket is { Length: > 0 }
            ? index == 0 ? "Socket" : $"Sockets:{index - 1}"
            : $"Sockets:{index}";

    /// <summary>Problems of one link end.</summary>
    public static IEnumerable<string> ValidateLink(LinkEndSettings l, Func<string, string> key)
    {
        if (NtbHardware.CheckSpec(l.Hardware) is { } hw)
        {
            yield return $"{key("Hardware")}: {hw}";
        }

        if (l.Mtu is < MinMtu or > MaxTapMtu)
        {
            yield return $"{key("Mtu")}: {l.Mtu} is not in {MinMtu}..{MaxTapMtu}";
        }

        if (l.Queues is < 1 or > LinkParameters.MaxQueuePairs)
        {
            yield return $"{key("Queues")}: {l.Queues} is not in 1..{LinkParameters.MaxQueuePairs}";
        }

        if (l.QueueSize is < LinkParameters.MinQueueSize or > LinkParameters.MaxQueueSize || (l.QueueSize & (l.QueueSize - 1)) != 0)
        {
            yield return $"{key("QueueSize")}: {l.QueueSize} is not a power of two in {LinkParameters.MinQueueSize}..{LinkParameters.MaxQueueSize}";
        }

        if (l.BufferSize < MinBufferSize || l.BufferSize % 64 != 0 || l.BufferSize > MaxBufferSize)
        {
            yield return $"{key("BufferSize")}: {l.BufferSize} is not a multiple of 64 in {MinBufferSize}..{MaxBufferSize}";
        }

        if (l.LingerMicroseconds < 0 || l.LingerMicroseconds > MaxLingerMicroseconds)
        {
            yield return $"{key("LingerMicroseconds")}: {l.LingerMicroseconds} is outside 0..{MaxLingerMicroseconds}";
        }

        bool vfio = l.Hardware?.StartsWith("vfio:", StringComparison.Ordinal) == true;
        if (!vfio && l.PeerId is not null)
        {
            yield return $"{key("PeerId")}: only for vfio: hardware (ivshmem)";
        }

        if (!vfio && l.NoIommu)
        {
            yield return $"{key("NoIommu")}: only for vfio: hardware";
        }

        if (l.Address is not null && CheckCidr(l.Address) is { } address)
        {
            yield return $"{key("Address")}: {address}";
        }

        if (CheckInterfaceName(l.Tap) is { } tap)
        {
            yield return $"{key("Tap")}: {tap}";
        }

        if (l.Name is not null && CheckName(l.Name) is { } name)
        {
            yield return $"{key("Name")}: {name}";
        }
    }

    /// <summary>An address with a prefix length, as <c>ip addr add</c> takes it.</summary>
    public static string? CheckCidr(string value)
    {
        int slash = value.IndexOf('/', StringComparison.Ordinal);
        if (slash < 0 || !IPAddress.TryParse(value.AsSpan(0, slash), out IPAddress? ip))
        {
            return $"'{value}' is not an address with a prefix length, e.g. 10.77.0.1/24";
        }

        int max = ip.AddressFamily == AddressFamily.InterNetworkV6 ? 128 : 32;
        return int.TryParse(value.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int prefix) && prefix <= max
            ? null
            : $"'{value}': the prefix length must be 0..{max}";
    }

    private static string? CheckInterfaceName(string? name)
    {
        if (name is null)
        {
            return null;
        }

        if (name.Length is 0 or > MaxInterfaceName)
        {
            return $"'{name}' is not 1..{MaxInterfaceName} characters (a Linux interface name)";
        }

        foreach (char c in name)
        {
            if (c is '/' or ':' || char.IsWhiteSpace(c) || c > 0x7e)
            {
                return $"'{name}' holds '{c}', which an interface name cannot";
            }
        }

        return name is "." or ".." ? $"'{name}' is not an interface name" : null;
    }

    private static string? CheckName(string name)
    {
        if (name.Length is 0 or > 64)
        {
            return "a name is 1..64 characters";
        }

        foreach (char c in name)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
            {
                return $"'{name}' holds '{c}'; names are letters, digits, '-', '_' and '.'";
            }
        }

        return null;
    }

    /// <summary>A unix socket path fits sun_path (107 bytes and a NUL); a listening socket's
    /// directory must exist (the daemon does not create directories for vhost-user sockets:
    /// their owner and mode are the operator's decision).</summary>
    private static string? CheckSocketPath(string path, bool mustHaveDirectory)
    {
        if (path.Length == 0)
        {
            return "an empty path";
        }

        if (System.Text.Encoding.UTF8.GetByteCount(path) > 107)
        {
            return $"'{path}' is longer than a unix socket path may be (107 bytes)";
        }

        if (mustHaveDirectory)
        {
            string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
            if (dir is not null && !Directory.Exists(dir))
            {
                return $"the directory of '{path}' ({dir}) does not exist";
            }
        }

        return null;
    }
}
