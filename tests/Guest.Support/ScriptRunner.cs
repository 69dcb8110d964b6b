using System.Diagnostics;
using System.Text;

namespace PciVirtio.Tests.Guest;

/// <summary>The outcome of a finished script: its exit code and its stdout and stderr interleaved.</summary>
public sealed record ScriptResult(string Command, int ExitCode, string Output, TimeSpan Duration)
{
    public bool Succeeded => ExitCode == 0;
}

/// <summary>Runs the bash scripts of tests/guest with a time limit, killing the script's process
/// group (it was started by us, via setsid) when the limit passes.</summary>
public static class ScriptRunner
{
    public static async Task<ScriptResult> RunAsync(string script, IEnumerable<string> arguments, TimeSpan timeout,
        IReadOnlyDictionary<string, string>? environment = null, CancellationToken cancellationToken = default)
    {
        // setsid: the script and its children (apt-get, dpkg, cpio) form a process group of their
        // own, so a timeout ends all of them, by that group's id.
        var start = new ProcessStartInfo("setsid")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add("--wait");
        start.ArgumentList.Add("bash");
        start.ArgumentList.Add(script);
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        if (environment is not null)
        {
            foreach (var (key, value) in environment)
            {
                start.Environment[key] = value;
            }
        }

        string command = string.Join(' ', start.ArgumentList.Skip(2).Select(Quote));
        var output = new StringBuilder();
        var stopwatch = Stopwatch.StartNew();
        using var process = new Process { StartInfo = start };
        process.OutputDataReceived += (_, e) => Append(output, e.Data);
        process.ErrorDataReceived += (_, e) => Append(output, e.Data);
        process.Start();
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        limit.CancelAfter(timeout);
        try
        {
            await process.WaitForExitAsync(limit.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            KillGroup(process);
            await process.WaitForExitAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10), CancellationToken.None).ConfigureAwait(false);
            string why = cancellationToken.IsCancellationRequested ? "was cancelled" : $"did not finish within {timeout}";
            throw new TimeoutException($"{command} {why}; its output:\n{Snapshot(output)}");
        }

        process.WaitForExit(); // drains the redirected streams
        return new ScriptResult(command, process.ExitCode, Snapshot(output), stopwatch.Elapsed);
    }

    private static void Append(StringBuilder output, string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (output)
        {
            output.AppendLine(line);
        }
    }

    private static string Snapshot(StringBuilder output)
    {
        lock (output)
        {
            return output.ToString();
        }
    }

    /// <summary>setsid made the child (our process id) the leader of a new process group whose
    /// id equals its pid: kill that group.</summary>
    private static void KillGroup(Process process)
    {
        try
        {
            if (!process.HasExited)
            {
                _ = NativeMethods.Kill(-process.Id, NativeMethods.SIGKILL);
                process.Kill(entireProcessTree: true);
            }
        }
        catch (InvalidOperationException)
        {
            // exited meanwhile
        }
    }

    internal static string Quote(string argument) =>
        argument.Length > 0 && argument.All(c => char.IsAsciiLetterOrDigit(c) || "/._-=:,+@".Contains(c, StringComparison.Ordinal))
            ? argument
            : "'" + argument.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
}
