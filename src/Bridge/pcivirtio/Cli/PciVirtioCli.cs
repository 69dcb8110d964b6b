using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;

namespace PciVirtio.Host.Cli;

/// <summary>
/// The command line of <c>pcivirtio</c>: <c>run</c> (the daemon), <c>serve</c>, <c>link</c>,
/// <c>sim</c>, <c>stats</c> and <c>demo</c>, each with <c>--help</c>. With no command it runs
/// the demo, the README's main job.
/// </summary>
public static class PciVirtioCli
{
    /// <summary>Exit code of a command line or configuration the program refuses.</summary>
    public const int UsageError = 2;

    public static RootCommand Create(TextWriter output)
    {
        var demo = DemoCli.Create(output);
        var run = RunCli.Create(output);
        var root = new RootCommand("""
            PciVirtio: virtio-net over vhost-user for VMs, and host-to-host links over a
            non-transparent PCIe bridge. With no command: the demo (two hosts linked by an
            emulated NTB, live throughput).
            """)
        {
            run,
            ServeCli.Create(output),
            LinkCli.Create(output),
            SimCli.Create(output),
            StatsCli.Create(output),
            demo,
        };
        root.SetAction(_ => DemoCli.RunDefault(output));
        var help = root.Options.OfType<HelpOption>().Single();
        if (help.Action is SynchronousCommandLineAction library)
        {
            help.Action = new RunHelpAction(library, run);
        }

        return root;
    }

    /// <summary>Parses and runs <paramref name="args"/>; the exit code.</summary>
    public static int Invoke(string[] args, TextWriter output, TextWriter error)
    {
        var root = Create(output);
        var result = root.Parse(args);
        var configuration = new InvocationConfiguration
        {
            Output = output,
            Error = error,

            // Every command handles SIGINT/SIGTERM itself (the daemon through the host),
            // so the parser must not take them.
            ProcessTerminationTimeout = null,
        };
        if (result.Errors.Count > 0)
        {
            foreach (var e in result.Errors)
            {
                error.WriteLine($"pcivirtio: {e.Message}");
            }

            error.WriteLine($"(pcivirtio {string.Join(' ', CommandPath(result.CommandResult.Command, root))} --help lists the options)");
            return UsageError;
        }

        return result.Invoke(configuration);
    }

    private static Stack<string> CommandPath(Command command, RootCommand root)
    {
        // The parse result knows the command; its parents give the path for the hint.
        var names = new Stack<string>();
        for (Command? c = command; c is not null && c != root; c = c.Parents.OfType<Command>().FirstOrDefault())
        {
            names.Push(c.Name);
        }

        return names;
    }
}
