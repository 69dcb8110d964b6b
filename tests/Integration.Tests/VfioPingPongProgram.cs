using System.Diagnostics;
using System.Reflection;
using System.Text;

namespace PciVirtio.Integration.Tests;

/// <summary>
/// Class fixture: publishes tests/VfioPingPong with NativeAOT (linux-x64) once, into a temporary
/// directory of its own — output and intermediate files alike (<c>--artifacts-path</c>), so it
/// never collides with a build of the solution running at the same time — with a time limit,
/// killing the whole <c>dotnet publish</c> process tree when it passes, and no build servers
/// left behind (<c>--disable-build-servers</c>). A failed publish fails the tests with its output.
/// </summary>
public sealed class VfioPingPongProgram : IAsyncLifetime
{
    /// <summary>A fresh machine restores the ILCompiler packages first (~15 s publish otherwise,
    /// ~35 s with a cold build next to other work).</summary>
    public static readonly TimeSpan PublishTimeout = TimeSpan.FromMinutes(5);

    private DirectoryInfo? _work;

    /// <summary>The NativeAOT executable.</summary>
    public string ExecutablePath { get; private set; } = "";

    public string RepositoryRoot { get; private set; } = "";

    public string PublishCommand { get; private set; } = "";

    public TimeSpan PublishDuration { get; private set; }

    public string PublishOutput { get; private set; } = "";

    public async Task InitializeAsync()
    {
        RepositoryRoot = FindRepositoryRoot();
        string project = Path.Combine(RepositoryRoot, "tests", "VfioPingPong", "VfioPingPong.csproj");
        _work = Directory.CreateTempSubdirectory("pcivirtio-pingpong-aot-");
        string output = Path.Combine(_work.FullName, "publish");
        string artifacts = Path.Combine(_work.FullName, "artifacts");

        var start = new ProcessStartInfo(DotnetHost())
        {
            WorkingDirectory = RepositoryRoot, // global.json picks the SDK
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

        // The test host inherits the variables `dotnet test` set for its own MSBuild; a nested
        // build must find its SDK by itself, and must leave no node or server running.
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
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));
            throw new TimeoutException($"{PublishCommand} did not finish within {PublishTimeout}; its output:\n{Snapshot(text)}");
        }

        process.WaitForExit(); // drains the redirected streams
        PublishDuration = clock.Elapsed;
        PublishOutput = Snapshot(text);
        ExecutablePath = Path.Combine(output, "vfio-pingpong");
        if (process.ExitCode != 0 || !File.Exists(ExecutablePath))
        {
            throw new InvalidOperationException(
                $"{PublishCommand} failed (exit code {process.ExitCode}, {ExecutablePath} {(File.Exists(ExecutablePath) ? "exists" : "missing")}) " +
                $"after {PublishDuration.TotalSeconds:0.0} s. NativeAOT needs gcc (or clang) and libc6-dev; its output:\n{PublishOutput}");
        }
    }

    public Task DisposeAsync()
    {
        _work?.Delete(recursive: true);
        return Task.CompletedTask;
    }

    /// <summary>$PCIVIRTIO_REPO_ROOT, else the directory recorded at build time, else the first
    /// directory above this assembly or the working directory that holds PciVirtio.sln and
    /// tests/VfioPingPong.</summary>
    private static string FindRepositoryRoot()
    {
        var candidates = new List<string>();
        if (Environment.GetEnvironmentVariable("PCIVIRTIO_REPO_ROOT") is { Length: > 0 } fromEnvironment)
        {
            candidates.Add(fromEnvironment);
        }

        candidates.AddRange(typeof(VfioPingPongProgram).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
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
            if (File.Exists(Path.Combine(candidate, "PciVirtio.sln")) && File.Exists(Path.Combine(candidate, "tests", "VfioPingPong", "VfioPingPong.csproj")))
            {
                return Path.GetFullPath(candidate);
            }
        }

        throw new DirectoryNotFoundException(
            $"no directory with PciVirtio.sln and tests/VfioPingPong/VfioPingPong.csproj among: {string.Join(", ", candidates.Distinct())} (set PCIVIRTIO_REPO_ROOT)");
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
}
