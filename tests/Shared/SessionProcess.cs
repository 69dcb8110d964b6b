using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

namespace PciVirtio.Tests.Shared;

/// <summary>What a program run by <see cref="SessionProcess"/> left: its command line (quoted
/// as a shell would need it), exit code, stdout and stderr interleaved, and how long it took.</summary>
internal sealed record SessionResult(string Command, int ExitCode, string Output, TimeSpan Duration);

/// <summary>
/// Runs a program in a session of its own (<c>setsid --wait</c>) with a time limit: the program
/// and whatever it starts (dpkg and its scripts, a script's cpio) form one process group, so a
/// timeout or a cancellation ends all of them by that group's id instead of leaving children
/// behind. Compiled into each test-support assembly that starts such programs.
/// </summary>
internal static partial class SessionProcess
{
    private const int SIGKILL = 9;

    public static async Task<SessionResult> RunAsync(string program, IEnumerable<string> arguments, TimeSpan timeout,
        IReadOnlyDictionary<string, string>? environment, CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo("setsid")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add("--wait");
        start.ArgumentList.Add(program);
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }

        string command = string.Join(' ', start.ArgumentList.Skip(1).Select(Quote));
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
            KillSession(process);
            await process.WaitForExitAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10), CancellationToken.None).ConfigureAwait(false);
            string why = cancellationToken.IsCancellationRequested ? "was cancelled" : $"did not finish within {timeout}";
            throw new TimeoutException($"{command} {why}; its output:\n{Snapshot(output)}");
        }

        process.WaitForExit(); // drains the redirected streams
        return new SessionResult(command, process.ExitCode, Snapshot(output), stopwatch.Elapsed);
    }

    /// <summary>An argument as a shell would need it to read it back unchanged.</summary>
    public static string Quote(string argument) =>
        argument.Length > 0 && argument.All(c => char.IsAsciiLetterOrDigit(c) || "/._-=:,+@".Contains(c, StringComparison.Ordinal))
            ? argument
            : "'" + argument.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

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
    /// id equals its pid: kill that group, then whatever of the tree is left.</summary>
    private static void KillSession(Process process)
    {
        try
        {
            if (!process.HasExited)
            {
                _ = Kill(-process.Id, SIGKILL);
                process.Kill(entireProcessTree: true);
            }
        }
        catch (InvalidOperationException)
        {
            // exited meanwhile
        }
    }

    /// <summary>kill(2): a negative pid names a process group.</summary>
    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
