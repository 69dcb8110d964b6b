using System.Globalization;
using PciVirtio.HwSim.Client;

namespace PciVirtio.Bridge.Hardware;

/// <summary>Knobs of <see cref="NtbHardware.Open"/>.</summary>
public sealed class NtbOpenOptions
{
    public static NtbOpenOptions Default { get; } = new();

    /// <summary>How long to wait for an hw-sim server's reply.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>For <c>vfio:</c> specs.</summary>
    public IvshmemNtbOptions Ivshmem { get; init; } = IvshmemNtbOptions.Default;
}

/// <summary>Opens the link hardware a spec names, so programs and tests choose it with one string.</summary>
public static class NtbHardware
{
    /// <summary>The spec forms, for messages and help text.</summary>
    public const string SpecForms = "hw-sim:SOCKET[#PORT] (a running 'pcivirtio sim serve'; port 0 or 1, default 0) or vfio:BDF (an ivshmem-doorbell device bound to vfio-pci, e.g. vfio:0000:00:04.0)";

    private const string HwSimPrefix = "hw-sim:";
    private const string VfioPrefix = "vfio:";

    /// <summary>
    /// Opens <paramref name="spec"/>: <c>hw-sim:/run/ntb.sock#1</c> connects to an hw-sim
    /// server and opens port 1 (<see cref="SimNtbHardware"/>); <c>vfio:0000:00:04.0</c>
    /// opens that ivshmem device through vfio-pci (<see cref="IvshmemVfioHardware"/>).
    /// </summary>
    /// <exception cref="ArgumentException">The spec is not one of <see cref="SpecForms"/>.</exception>
    public static INtbHardware Open(string spec, NtbOpenOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(spec);
        options ??= NtbOpenOptions.Default;
        if (spec.StartsWith(HwSimPrefix, StringComparison.Ordinal))
        {
            (string socket, int port) = ParseHwSim(spec);
            return new SimNtbHardware(HwSimClient.OpenPort(socket, port, options.ConnectTimeout), $"hw-sim {socket} port {port}");
        }

        if (spec.StartsWith(VfioPrefix, StringComparison.Ordinal))
        {
            string bdf = spec[VfioPrefix.Length..];
            if (bdf.Length == 0)
            {
                throw new ArgumentException($"'{spec}' names no PCI device; expected {SpecForms}", nameof(spec));
            }

            return IvshmemVfioHardware.Open(bdf, options.Ivshmem);
        }

        throw new ArgumentException($"'{spec}' is not a link hardware spec; expected {SpecForms}", nameof(spec));
    }

    /// <summary>Checks the form of <paramref name="spec"/> without opening anything (for
    /// validating configuration at start); null when well formed, else what is wrong.</summary>
    public static string? CheckSpec(string? spec)
    {
        if (string.IsNullOrEmpty(spec))
        {
            return $"no hardware given; expected {SpecForms}";
        }

        if (spec.StartsWith(HwSimPrefix, StringComparison.Ordinal))
        {
            try
            {
                _ = ParseHwSim(spec);
                return null;
            }
            catch (ArgumentException e)
            {
                return e.Message.Split(" (Parameter", 2)[0];
            }
        }

        if (spec.StartsWith(VfioPrefix, StringComparison.Ordinal))
        {
            return spec.Length > VfioPrefix.Length ? null : $"'{spec}' names no PCI device; expected {SpecForms}";
        }

        return $"'{spec}' is not a link hardware spec; expected {SpecForms}";
    }

    /// <summary>Splits <c>hw-sim:SOCKET[#PORT]</c>.</summary>
    internal static (string Socket, int Port) ParseHwSim(string spec)
    {
        string rest = spec[HwSimPrefix.Length..];
        int port = 0;
        int hash = rest.LastIndexOf('#');
        if (hash >= 0)
        {
            string number = rest[(hash + 1)..];
            if (!int.TryParse(number, NumberStyles.None, CultureInfo.InvariantCulture, out port) || port is not (0 or 1))
            {
                throw new ArgumentException($"'{spec}': the port after '#' must be 0 or 1; expected {SpecForms}", nameof(spec));
            }

            rest = rest[..hash];
        }

        if (rest.Length == 0)
        {
            throw new ArgumentException($"'{spec}' names no socket; expected {SpecForms}", nameof(spec));
        }

        return (rest, port);
    }
}
