using System.Diagnostics;
using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;

namespace PciVirtio.Integration.Tests;

/// <summary>
/// Class fixture base: publishes one project of the repository with NativeAOT for linux-x64
/// once, for programs that run in QEMU guests. The publish runs in a temporary directory of its own — output and intermediate files (<c>--artifacts-path</c>) — so
/// it never collides with a build of the solution running at the same time, with a time limit
/// (the whole <c>dotnet publish</c> process tree is killed when it passes) and no build server
/// left behind. A failed publish, or one that reports trimming or AOT analysis warnings
/// (IL2xxx/IL3xxx), fails the tests with its output.
/// </summary>
public abstract partial class NativeAotProgram : IAsyncLifetime
{
    private readonly string[] _project;
    private readonly string _executable;
    private readonly string _tempPrefix;

    /// <param name="project">The project's path from the repository root, one part each.</param>
    /// <param name="executable">The published executable's name.</param>
    /// <param name="tempPrefix">Prefix of the temporary directory.</param>
    protected NativeAotProgram(string[] project, string executable, string tempPrefix)
    {
        _project = project;
        _executable = executable;
        _tempPrefix = tempPrefix;
    }

    /// <summary>~60 s on a busy 2-core machine; a fresh machine restores the ILCompiler packages first.</summary>
    public static readonly TimeSpan PublishTimeout = TimeSpan.FromMinutes(5);

    private DirectoryInfo? _work;

    /// <summary>The NativeAOT executable.</summary>
    public string ExecutablePath { get; private set; } = "";

    public string PublishCommand { get; private set; } = "";

    public TimeSpan PublishDuration { get; private set; }

    public string PublishOutput { get; private set; } = "";

    public string RepositoryRoot { get; private set; } = "";

    /// <summary>The warning lines of the publish (none expected: warnings are errors here).</summary>
    public IReadOnlyList<string> Warnings { get; private set; } = [];

    public async Task InitializeAsync()
    {
        string root = FindRepositoryRoot();
        RepositoryRoot = root;
        string project = Path.Combine([root, .. _project]);
        _work = Directory.CreateTempSubdirectory(_tempPrefix);
        string output = Path.Combine(_work.FullName, "publish");
        string artifacts = Path.Combine(_work.FullName, "artifacts");

        var start = new ProcessStartInfo(DotnetHost())
        {
            WorkingDirectory = root, // global.json picks the SDK
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (string argument in new[]
                 {
                     "publish", project, "-c", "Release", "-r", "linux-x64", "-p:PublishAot=true",
                     "-o", output, "--artifacts-path", artifacts, "--disable-build-servers", "--nologo", "-v", "minimal",
                 })
        {
            start.ArgumentList.Add(argument);
        }

        // `dotnet test` hands its MSBuild variables to the test host; the nested publish must find
        // its own SDK and leave no node or server running.
        foreach (string name in start.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase)).ToList())
        {
            start.Environment.Remove(name);
        }

        start.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        start.Environment["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0";
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        start.Environment["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1";
        PublishCommand = $"{start.FileName} {string.Join(' ', start.ArgumentList)}";

        var text = new StringBuilder();
        void Append(string? line)
        {
            if (line is not null)
            {
                lock (text)
                {
                    text.AppendLine(line);
                }
            }
        }

        var clock = Stopwatch.StartNew();
        using var process = new Process { StartInfo = start };
        process.OutputDataReceived += (_, e) => Append(e.Data);
        process.ErrorDataReceived += (_, e) => Append(e.Data);
        process.Start();
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var limit = new CancellationTokenSource(PublishTimeout);
        try
        {
            await process.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true); // the dotnet publish we started, and its children
            await process.WaitForExitAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));
            throw new TimeoutException($"{PublishCommand} did not finish within {PublishTimeout}; its output:\n{Snapshot(text)}");
        }

        process.WaitForExit(); // drains the redirected streams
        PublishDuration = clock.Elapsed;
        PublishOutput = Snapshot(text);
        Warnings = [.. PublishOutput.Split('\n').Where(l => WarningLine().IsMatch(l)).Select(l => l.Trim()).Distinct()];
        ExecutablePath = Path.Combine(output, _executable);
        if (process.ExitCode != 0 || !File.Exists(ExecutablePath))
        {
            throw new InvalidOperationException(
                $"{PublishCommand} failed (exit code {process.ExitCode}, {ExecutablePath} {(File.Exists(ExecutablePath) ? "exists" : "missing")}) " +
                $"after {PublishDuration.TotalSeconds:0.0} s. NativeAOT needs gcc (or clang) and libc6-dev; its output:\n{PublishOutput}");
        }

        if (Warnings.Any(w => AnalysisWarning().IsMatch(w)))
        {
            throw new InvalidOperationException($"{PublishCommand} reported trimming/AOT warnings:\n{string.Join('\n', Warnings)}");
        }
    }

    public Task DisposeAsync()
    {
        _work?.Delete(recursive: true);
        return Task.CompletedTask;
    }

    /// <summary>$PCIVIRTIO_REPO_ROOT, else the directory recorded at build time, else the first
    /// directory above this assembly or the working directory that holds PciVirtio.sln and the
    /// project.</summary>
    private string FindRepositoryRoot()
    {
        var candidates = new List<string>();
        if (Environment.GetEnvironmentVariable("PCIVIRTIO_REPO_ROOT") is { Length: > 0 } fromEnvironment)
        {
            candidates.Add(fromEnvironment);
        }

        candidates.AddRange(typeof(NativeAotProgram).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Where(a => a.Key == "PciVirtio.RepositoryRoot" && a.Value is not null)
            .Select(a => a.Value!));
        foreach (string start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
        {
            for (var directory = new DirectoryInfo(start); directory is not null; directory = directory.Parent)
            {
                candidates.Add(directory.FullName);
            }
        }

        foreach (string candidate in candidates)
        {
            if (File.Exists(Path.Combine(candidate, "PciVirtio.sln")) && File.Exists(Path.Combine([candidate, .. _project])))
            {
                return Path.GetFullPath(candidate);
            }
        }

        throw new DirectoryNotFoundException(
            $"no directory with PciVirtio.sln and {string.Join('/', _project)} among: {string.Join(", ", candidates.Distinct())} (set PCIVIRTIO_REPO_ROOT)");
    }

    /// <summary>The dotnet that runs these tests ($DOTNET_HOST_PATH, set by the CLI), else the one on PATH.</summary>
    private static string DotnetHost() =>
        Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";

    private static string Snapshot(StringBuilder text)
    {
        lock (text)
        {
            return text.ToString();
        }
    }

    [GeneratedRegex(@"\bwarning [A-Z]+[0-9]+\b")]
    private static partial Regex WarningLine();

    [GeneratedRegex(@"\bwarning IL[23][0-9]{3}\b")]
    private static partial Regex AnalysisWarning();
}
