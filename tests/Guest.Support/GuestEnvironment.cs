namespace PciVirtio.Tests.Guest;

/// <summary>
/// What the guests boot: the kernel and modules tests/guest/prepare.sh put into the cache
/// (${PCIVIRTIO_GUEST_CACHE:-/var/tmp/pcivirtio-guest}), described by its guest.env.
/// <see cref="Get"/> runs prepare.sh once per test process (it installs QEMU, busybox-static and
/// cpio when missing, and fetches the Debian kernel package); when it fails, every caller gets
/// the same <see cref="GuestSetupException"/> with the script's output. Nothing is skipped.
/// </summary>
public sealed class GuestEnvironment
{
    /// <summary>A fresh machine downloads ~70 MB and may install QEMU first.</summary>
    public static readonly TimeSpan PrepareTimeout = TimeSpan.FromMinutes(20);

    private static readonly Lazy<GuestEnvironment> Instance = new(Prepare, LazyThreadSafetyMode.ExecutionAndPublication);

    private GuestEnvironment(string scriptsDirectory, string cacheDirectory, IReadOnlyDictionary<string, string> values, ScriptResult prepare)
    {
        ScriptsDirectory = scriptsDirectory;
        CacheDirectory = cacheDirectory;
        KernelPackage = Required(values, "KERNEL_PACKAGE");
        KernelVersion = Required(values, "KERNEL_VERSION");
        Vmlinuz = Required(values, "VMLINUZ");
        Vmlinux = values.TryGetValue("VMLINUX", out string? vmlinux) && vmlinux.Length > 0 ? vmlinux : null;
        PrepareResult = prepare;

        // PVH boot of the uncompressed vmlinux reaches /init in ~2 s instead of ~5.5 s under TCG;
        // PCIVIRTIO_GUEST_KERNEL=vmlinuz forces the compressed kernel.
        bool forceVmlinuz = string.Equals(Environment.GetEnvironmentVariable("PCIVIRTIO_GUEST_KERNEL"), "vmlinuz", StringComparison.Ordinal);
        Kernel = !forceVmlinuz && Vmlinux is not null ? Vmlinux : Vmlinuz;
        foreach (string file in new[] { Kernel, Required(values, "MODULES_LOAD") })
        {
            if (!File.Exists(file))
            {
                throw new GuestSetupException($"prepare.sh reported {file}, which does not exist; its output:\n{prepare.Output}");
            }
        }
    }

    /// <summary>Where prepare.sh, make-initramfs.sh, init.sh and the guest test scripts are.</summary>
    public string ScriptsDirectory { get; }

    public string CacheDirectory { get; }

    public string KernelPackage { get; }

    public string KernelVersion { get; }

    public string Vmlinuz { get; }

    /// <summary>The uncompressed kernel for PVH boot, when prepare.sh could extract it.</summary>
    public string? Vmlinux { get; }

    /// <summary>The kernel guests boot (<see cref="Vmlinux"/> when present).</summary>
    public string Kernel { get; }

    /// <summary>prepare.sh's run (its output and how long it took).</summary>
    public ScriptResult PrepareResult { get; }

    /// <summary>The prepared environment; runs prepare.sh on first use in this process.</summary>
    public static GuestEnvironment Get() => Instance.Value;

    /// <summary>The path of a script shipped in tests/guest (e.g. "vfio-guest.sh").</summary>
    public string Script(string name)
    {
        string path = Path.Combine(ScriptsDirectory, name);
        return File.Exists(path) ? path : throw new FileNotFoundException($"guest script {name} is not in {ScriptsDirectory}", path);
    }

    /// <summary>
    /// Builds an initramfs (make-initramfs.sh) whose /init runs <paramref name="testScript"/> as
    /// /test.sh, with <paramref name="files"/> added. Returns the image path
    /// (<paramref name="outputPath"/>).
    /// </summary>
    public async Task<string> BuildInitramfsAsync(string testScript, IEnumerable<GuestFile> files, string outputPath,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(files);
        var texts = Directory.CreateTempSubdirectory("pcivirtio-initramfs-files-");
        try
        {
            var arguments = new List<string> { "--output", outputPath, "--script", testScript };
            int n = 0;
            foreach (var file in files)
            {
                string source = file.HostPath ?? Path.Combine(texts.FullName, $"text{n++}");
                if (file.HostPath is null)
                {
                    await File.WriteAllTextAsync(source, file.Text, cancellationToken).ConfigureAwait(false);
                }

                arguments.Add(file.WithLibraries ? "--binary" : "--file");
                arguments.Add($"{source}:{file.GuestPath}");
            }

            var result = await ScriptRunner.RunAsync(Script("make-initramfs.sh"), arguments, TimeSpan.FromMinutes(2), CacheVariables(), cancellationToken)
                .ConfigureAwait(false);
            if (!result.Succeeded)
            {
                throw new GuestSetupException($"{result.Command} failed (exit code {result.ExitCode}):\n{result.Output}");
            }

            return outputPath;
        }
        finally
        {
            texts.Delete(recursive: true);
        }
    }

    /// <summary>The scripts' directory: guest/ next to this assembly (copied at build), or
    /// $PCIVIRTIO_GUEST_SCRIPTS.</summary>
    private static string FindScripts()
    {
        string? fromEnvironment = Environment.GetEnvironmentVariable("PCIVIRTIO_GUEST_SCRIPTS");
        string directory = fromEnvironment ?? Path.Combine(AppContext.BaseDirectory, "guest");
        return File.Exists(Path.Combine(directory, "prepare.sh"))
            ? directory
            : throw new GuestSetupException($"tests/guest/prepare.sh is not in {directory} (set PCIVIRTIO_GUEST_SCRIPTS to the tests/guest directory)");
    }

    private static string CachePath() =>
        Environment.GetEnvironmentVariable("PCIVIRTIO_GUEST_CACHE") is { Length: > 0 } cache ? cache : "/var/tmp/pcivirtio-guest";

    private static Dictionary<string, string> CacheVariables() => new() { ["PCIVIRTIO_GUEST_CACHE"] = CachePath() };

    private static GuestEnvironment Prepare()
    {
        string scripts = FindScripts();
        var result = ScriptRunner.RunAsync(Path.Combine(scripts, "prepare.sh"), [], PrepareTimeout, CacheVariables())
            .GetAwaiter().GetResult();
        if (!result.Succeeded)
        {
            throw new GuestSetupException($"{result.Command} failed (exit code {result.ExitCode}); the guest tests need it. Its output:\n{result.Output}");
        }

        string envFile = Path.Combine(CachePath(), "guest.env");
        if (!File.Exists(envFile))
        {
            throw new GuestSetupException($"prepare.sh succeeded but wrote no {envFile}; its output:\n{result.Output}");
        }

        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string line in File.ReadAllLines(envFile))
        {
            int eq = line.IndexOf('=', StringComparison.Ordinal);
            if (eq > 0)
            {
                values[line[..eq]] = line[(eq + 1)..];
            }
        }

        return new GuestEnvironment(scripts, CachePath(), values, result);
    }

    private static string Required(IReadOnlyDictionary<string, string> values, string key) =>
        values.TryGetValue(key, out string? value) && value.Length > 0
            ? value
            : throw new GuestSetupException($"guest.env has no {key}");
}

/// <summary>The guest environment could not be prepared; the message holds the script's output.</summary>
public sealed class GuestSetupException : Exception
{
    public GuestSetupException()
    {
    }

    public GuestSetupException(string message)
        : base(message)
    {
    }

    public GuestSetupException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
