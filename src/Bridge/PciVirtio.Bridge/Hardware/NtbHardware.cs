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
        if (CheckSpec(spec) is { } problem)
        {
            throw new ArgumentException(problem, nameof(spec));
        }

        options ??= NtbOpenOptions.Default;
        if (spec.StartsWith(HwSimPrefix, StringComparison.Ordinal))
        {
            (string socket, int port) = ParseHwSim(spec);
            return new SimNtbHardware(HwSimClient.OpenPort(socket, port, options.ConnectTimeout), $"hw-sim {socket} port {port}");
        }

        // The check admitted the two forms only: this is vfio:BDF.
        return IvshmemVfioHardware.Open(spec[VfioPrefix.Length..], options.Ivshmem);
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
            return TrySplitHwSim(spec, out _, out _);
        }

        if (spec.StartsWith(VfioPrefix, StringComparison.Ordinal))
        {
            return spec.Length > VfioPrefix.Length ? null : $"'{spec}' names no PCI device; expected {SpecForms}";
        }

        return $"'{spec}' is not a link hardware spec; expected {SpecForms}";
    }

    /// <summary>Splits <c>hw-sim:SOCKET[#PORT]</c>.</summary>
    /// <exception cref="ArgumentException">It is malformed.</exception>
    internal static (string Socket, int Port) ParseHwSim(string spec) =>
        TrySplitHwSim(spec, out string socket, out int port) is { } problem
            ? throw new ArgumentException(problem, nameof(spec))
            : (socket, port);

    /// <summary>Splits <c>hw-sim:SOCKET[#PORT]</c>; null when well formed, else what is wrong.</summary>
    private static string? TrySplitHwSim(string spec, out string socket, out int port)
    {
        string rest = spec[HwSimPrefix.Length..];
        socket = string.Empty;
        port = 0;
        int hash = rest.LastIndexOf('#');
        if (hash >= 0)
        {
            string number = rest[(hash + 1)..];
            if (!int.TryParse(number, NumberStyles.None, CultureInfo.InvariantCulture, out port) || port is not (0 or 1))
            {
                return $"'{spec}': the port after '#' must be 0 or 1; expected {SpecForms}";
            }

            rest = rest[..hash];
        }

        if (rest.Length == 0)
        {
            return $"'{spec}' names no socket; expected {SpecForms}";
        }

        socket = rest;
        return null;
    }
}
