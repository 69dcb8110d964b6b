using System.Globalization;

namespace PciVirtio.Tests.Peers;

/// <summary>
/// What <c>show port info N</c> prints, as "Name: value" fields, with the ones tests use as
/// properties. <see cref="LinkUp"/> is the ethdev link state: a vhost PMD port is up once a
/// frontend has connected and started its queues ("virtio is now ready for processing"); a
/// virtio-user port is up while its backend connection stands, and goes down when the backend
/// closes it.
/// </summary>
public sealed record PortInfo(int Port, IReadOnlyDictionary<string, string> Fields)
{
    public string? DeviceName => Field("Device name");

    public string? DriverName => Field("Driver name");

    public string? MacAddress => Field("MAC address");

    public string? Devargs => Field("Devargs");

    /// <summary>"up" or "down".</summary>
    public string LinkStatus => Field("Link status") ?? throw new TestpmdException($"port {Port}: no \"Link status\" field");

    public bool LinkUp => string.Equals(LinkStatus, "up", StringComparison.Ordinal);

    /// <summary>E.g. "10 Gbps" (vhost), "Unknown" (virtio-user up), "None" (down).</summary>
    public string? LinkSpeed => Field("Link speed");

    public int? RxQueues => Number("Current number of RX queues");

    public int? TxQueues => Number("Current number of TX queues");

    public string? Field(string name) => Fields.TryGetValue(name, out string? value) ? value : null;

    /// <summary>Reads the output of <c>show port info N</c>; lines without a colon are left out.</summary>
    public static PortInfo Parse(int port, string output)
    {
        ArgumentNullException.ThrowIfNull(output);
        var fields = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string raw in output.Split('\n'))
        {
            string line = raw.Trim();
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                continue;
            }

            string name = line[..colon].Trim();
            fields.TryAdd(name, line[(colon + 1)..].Trim());
        }

        if (!fields.ContainsKey("Link status"))
        {
            throw new TestpmdException($"no port info for port {port}:\n{output}");
        }

        return new PortInfo(port, fields);
    }

    private int? Number(string name) =>
        int.TryParse(Field(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) ? value : null;
}
