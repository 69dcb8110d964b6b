using PciVirtio.Host.Cli;

namespace PciVirtio.Host.Tests.Support;

/// <summary>What one command line printed and returned.</summary>
public sealed record CliResult(int ExitCode, string Output, string Error)
{
    /// <summary>Both streams, for checks that do not care which one a message went to.</summary>
    public string All => Output + Error;

    public override string ToString() => $"exit {ExitCode}\n--- stdout ---\n{Output}\n--- stderr ---\n{Error}";
}

public static class CommandLine
{
    /// <summary>Runs <c>pcivirtio <paramref name="args"/></c> in this process. Every command
    /// line the tests give either only parses, or is refused, or checks a configuration, so
    /// it must finish quickly; one that starts something by mistake fails the test here
    /// instead of hanging the run.</summary>
    public static CliResult Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        var run = Task.Factory.StartNew(() => PciVirtioCli.Invoke(args, output, error), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        Assert.True(run.Wait(TimeSpan.FromSeconds(60)), $"pcivirtio {string.Join(' ', args)} did not finish within 60 s");
        return new CliResult(run.Result, output.ToString(), error.ToString());
    }
}
