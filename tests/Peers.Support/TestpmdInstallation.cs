using System.Diagnostics;
using PciVirtio.Tests.Shared;

namespace PciVirtio.Tests.Peers;

/// <summary>
/// Finds dpdk-testpmd, and installs it as root when it is missing. On Debian 12 the binary is in
/// the <c>dpdk-dev</c> package (the <c>dpdk</c> package has only the runtime tools such as
/// dpdk-devbind.py); its vhost and virtio PMDs come with it.
/// </summary>
public static class TestpmdInstallation
{
    public const string ExecutableName = "dpdk-testpmd";

    /// <summary>The Debian package that holds <see cref="ExecutableName"/>.</summary>
    public const string DebianPackage = "dpdk-dev";

    /// <summary>A fresh machine may download and unpack ~100 packages.</summary>
    public static readonly TimeSpan InstallTimeout = TimeSpan.FromMinutes(15);

    private static readonly SemaphoreSlim InstallGate = new(1, 1);

    /// <summary>dpdk-testpmd's full path when it is on PATH (or in /usr/bin), else null.</summary>
    public static string? FindExecutable()
    {
        var directories = (Environment.GetEnvironmentVariable("PATH") ?? string.Empty)
            .Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Append("/usr/bin")
            .Append("/usr/local/bin");
        foreach (string directory in directories)
        {
            string candidate = Path.Combine(directory, ExecutableName);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    /// <summary>
    /// Why tests that need testpmd cannot run here, or null when they can: it is installed, or
    /// this process is root and <see cref="EnsureInstalledAsync"/> will install it (a failure to
    /// install is then a test failure, not a skip).
    /// </summary>
    public static string? SkipReason =>
        FindExecutable() is not null || Environment.IsPrivilegedProcess
            ? null
            : $"{ExecutableName} is not installed and this is not root (install Debian's {DebianPackage}, or run scripts/test as root)";

    /// <summary>
    /// Returns dpdk-testpmd's path; as root, installs <see cref="DebianPackage"/> with apt-get
    /// first when it is missing (once per process, bounded by <see cref="InstallTimeout"/>).
    /// Throws <see cref="TestpmdException"/> when it is missing and cannot be installed.
    /// </summary>
    public static async Task<string> EnsureInstalledAsync(Action<string>? log = null, CancellationToken cancellationToken = default)
    {
        if (FindExecutable() is { } found)
        {
            return found;
        }

        if (!Environment.IsPrivilegedProcess)
        {
            throw new TestpmdException($"{ExecutableName} is not installed, and only root can install it (apt-get install -y {DebianPackage})");
        }

        await InstallGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (FindExecutable() is { } meanwhile)
            {
                return meanwhile;
            }

            var deadline = Stopwatch.StartNew();
            var install = new[] { "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=300", DebianPackage };
            log?.Invoke($"[peers] {ExecutableName} is missing: apt-get {string.Join(' ', install)}");
            var (code, output) = await RunAsync("apt-get", install, InstallTimeout, cancellationToken).ConfigureAwait(false);
            if (code != 0)
            {
                // Stale or missing package lists: update them once, then try again.
                log?.Invoke("[peers] apt-get install failed; apt-get update, then once more");
                var left = InstallTimeout - deadline.Elapsed;
                (code, output) = await RunAsync("apt-get", ["update", "-qq", "-o", "DPkg::Lock::Timeout=300"], left, cancellationToken).ConfigureAwait(false);
                if (code == 0)
                {
                    left = InstallTimeout - deadline.Elapsed;
                    (code, output) = await RunAsync("apt-get", install, left, cancellationToken).ConfigureAwait(false);
                }
            }

            return FindExecutable()
                ?? throw new TestpmdException($"apt-get install {DebianPackage} (exit code {code}) did not provide {ExecutableName}; its output:\n{output}");
        }
        finally
        {
            InstallGate.Release();
        }
    }

    /// <summary>Runs a program in a session of its own, so a timeout kills it and its children
    /// (dpkg, its scripts) too.</summary>
    private static async Task<(int Code, string Output)> RunAsync(string program, IReadOnlyList<string> arguments, TimeSpan timeout,
        CancellationToken cancellationToken)
    {
        if (timeout <= TimeSpan.Zero)
        {
            throw new TimeoutException($"no time left for {program} {string.Join(' ', arguments)}");
        }

        var r = await SessionProcess.RunAsync(program, arguments, timeout, NonInteractive, cancellationToken).ConfigureAwait(false);
        return (r.ExitCode, r.Output);
    }

    private static readonly Dictionary<string, string> NonInteractive = new() { ["DEBIAN_FRONTEND"] = "noninteractive" };
}
