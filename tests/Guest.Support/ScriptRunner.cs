using PciVirtio.Tests.Shared;

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
        // In a session of its own: the script and its children (apt-get, dpkg, cpio) end
        // together on a timeout.
        var r = await SessionProcess.RunAsync("bash", [script, .. arguments], timeout, environment, cancellationToken).ConfigureAwait(false);
        return new ScriptResult(string.Join(' ', new[] { script }.Concat(arguments).Select(SessionProcess.Quote)), r.ExitCode, r.Output, r.Duration);
    }
}
