using System.Globalization;

namespace PciVirtio.Tests.Guest;

/// <summary>A program for the VFIO guest to run (see <see cref="VfioGuest"/>): a host
/// executable, e.g. a NativeAOT build (linux-x64), and its arguments.</summary>
public sealed record GuestProgram(string HostPath, IReadOnlyList<string> Arguments);

/// <summary>What a VFIO guest reported once its ivshmem device was bound to vfio-pci.</summary>
/// <param name="Group">The VFIO group device, e.g. /dev/vfio/1.</param>
/// <param name="Bdf">The ivshmem device's PCI address, e.g. 0000:00:01.0.</param>
/// <param name="IvPosition">The device's IVPosition register: the peer id the ivshmem server
/// gave this guest (null when it could not be read).</param>
/// <param name="GuestUptime">Seconds since the guest kernel started.</param>
/// <param name="At">When the line arrived, since QEMU started.</param>
public sealed record VfioGuestReady(string Group, string Bdf, int? IvPosition, double GuestUptime, TimeSpan At);

/// <summary>
/// Guests that bind their ivshmem-doorbell device to vfio-pci: tests/guest/vfio-guest.sh as
/// /test.sh (see that script), on a q35 machine with intel-iommu, connected to an ivshmem server.
/// <para>
/// The hook for a guest program: pass a <see cref="GuestProgram"/> to
/// <see cref="BuildInitramfsAsync"/>. It is copied (with the libraries <c>ldd</c> lists) to
/// /bin/vfio-guest, its arguments go to /etc/vfio-guest.args (one per line), and after the bind
/// the guest runs it with VFIO_GROUP, VFIO_BDF and IVSHMEM_ID in its environment and the serial
/// console as stdin (<see cref="GuestVm.SendLineAsync"/> writes to it). Each line it prints
/// (stdout and stderr) reaches the host as "PCIVIRTIO-PROG: line" — read them with
/// <see cref="ProgramLines"/> or <see cref="WaitForProgramLineAsync"/> — and its exit status as
/// "PCIVIRTIO-VFIO: program exit rc=N" (<see cref="WaitForProgramExitAsync"/>). Then the guest
/// waits for one line from the host (send "poweroff") and powers off.
/// </para>
/// </summary>
public static class VfioGuest
{
    public const string ReadyMarker = "PCIVIRTIO-VFIO: ready ";
    public const string ErrorMarker = "PCIVIRTIO-VFIO: error ";
    public const string ProgramLinePrefix = "PCIVIRTIO-PROG: ";
    public const string ProgramExitMarker = "PCIVIRTIO-VFIO: program exit ";
    public const string ProgramGuestPath = "/bin/vfio-guest";
    public const string ProgramArgumentsGuestPath = "/etc/vfio-guest.args";

    /// <summary>Builds the VFIO guest's initramfs, with <paramref name="program"/> when given.</summary>
    public static Task<string> BuildInitramfsAsync(GuestEnvironment environment, string outputPath, GuestProgram? program = null,
        IEnumerable<GuestFile>? extraFiles = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(environment);
        var files = new List<GuestFile>(extraFiles ?? []);
        if (program is not null)
        {
            if (program.Arguments.Any(a => a.Contains('\n', StringComparison.Ordinal)))
            {
                throw new ArgumentException("guest program arguments cannot contain newlines", nameof(program));
            }

            files.Add(GuestFile.Program(program.HostPath, ProgramGuestPath));
            files.Add(GuestFile.FromText(ProgramArgumentsGuestPath, string.Concat(program.Arguments.Select(a => a + "\n"))));
        }

        return environment.BuildInitramfsAsync(environment.Script("vfio-guest.sh"), files, outputPath, cancellationToken);
    }

    /// <summary>Options for a VFIO guest on the ivshmem server at <paramref name="ivshmemSocket"/>.</summary>
    public static GuestVmOptions Options(string name, string initramfs, string ivshmemSocket, int vectors = 2) => new()
    {
        Name = name,
        Initramfs = initramfs,
        Machine = "q35",
        Iommu = true,
        IvshmemSocket = ivshmemSocket,
        IvshmemVectors = vectors,
    };

    /// <summary>Waits for the ready line; throws <see cref="GuestVmException"/> with the guest's
    /// reason when it printed an error instead.</summary>
    public static async Task<VfioGuestReady> WaitForReadyAsync(GuestVm vm, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(vm);
        var line = await vm.WaitForLineAsync(
            t => t.Contains(ReadyMarker, StringComparison.Ordinal) || t.Contains(ErrorMarker, StringComparison.Ordinal),
            timeout, 0, $"\"{ReadyMarker.Trim()}\"", cancellationToken).ConfigureAwait(false);
        if (line.From(ErrorMarker) is { } error)
        {
            throw new GuestVmException($"{vm.Name}: {error}; log {vm.LogPath}\n{vm.Tail()}");
        }

        var fields = GuestMarkers.Fields(line.From(ReadyMarker)!);
        return new VfioGuestReady(
            fields["group"],
            fields["bdf"],
            int.TryParse(fields.GetValueOrDefault("ivposition"), NumberStyles.Integer, CultureInfo.InvariantCulture, out int id) ? id : null,
            double.Parse(fields["uptime"], CultureInfo.InvariantCulture),
            line.At);
    }

    /// <summary>The lines the guest program printed so far (without the prefix).</summary>
    public static IReadOnlyList<string> ProgramLines(GuestVm vm)
    {
        ArgumentNullException.ThrowIfNull(vm);
        return [.. vm.Lines.Select(l => l.From(ProgramLinePrefix)).OfType<string>().Select(t => t[ProgramLinePrefix.Length..])];
    }

    /// <summary>Waits for a program line that <paramref name="match"/> accepts (from console
    /// line <paramref name="fromIndex"/>); returns it without the prefix.</summary>
    public static async Task<string> WaitForProgramLineAsync(GuestVm vm, Func<string, bool> match, TimeSpan timeout, int fromIndex = 0,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(vm);
        ArgumentNullException.ThrowIfNull(match);
        var line = await vm.WaitForLineAsync(
            t => t.Contains(ProgramLinePrefix, StringComparison.Ordinal) && match(ProgramText(t)),
            timeout, fromIndex, "a matching program line", cancellationToken).ConfigureAwait(false);
        return ProgramText(line.Text);
    }

    /// <summary>Waits for the program's exit status.</summary>
    public static async Task<int> WaitForProgramExitAsync(GuestVm vm, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(vm);
        var line = await vm.WaitForMarkerAsync(ProgramExitMarker, timeout, 0, cancellationToken).ConfigureAwait(false);
        return int.Parse(GuestMarkers.Fields(line.From(ProgramExitMarker)!)["rc"], CultureInfo.InvariantCulture);
    }

    private static string ProgramText(string text) =>
        text[(text.IndexOf(ProgramLinePrefix, StringComparison.Ordinal) + ProgramLinePrefix.Length)..];
}
