using System.CommandLine;
using Microsoft.Extensions.Hosting;
using PciVirtio.Host.Daemon;

namespace PciVirtio.Host.Cli;

/// <summary><c>pcivirtio run</c>: the daemon.</summary>
internal static class RunCli
{
    public static Command Create(TextWriter output)
    {
        var config = new Option<string?>("--config", "-c") { Description = "Configuration file (JSON), read after appsettings.json; see docs/operations.md" };
        var check = CliOptions.Flag("--check", "Read and check the configuration, print what would run, and exit");
        var command = new Command("run", """
            The daemon: every VM backend and link the configuration names, started and
            stopped together, with the control socket for 'pcivirtio stats' and metrics
            (meter PciVirtio). Any setting can also be given as --PciVirtio:Key=value or as
            the environment variable PciVirtio__Key. Stops gracefully on SIGINT/SIGTERM;
            a second signal ends it at once.
            """)
        {
            config, check,
        };

        // Flags we do not know are configuration overrides (--PciVirtio:ControlSocket=…).
        command.TreatUnmatchedTokensAsErrors = false;
        command.SetAction(parse =>
        {
            var overrides = parse.UnmatchedTokens.ToList();
            var error = parse.InvocationConfiguration.Error;
            if (CheckOverrides(overrides) is { } problem)
            {
                error.WriteLine($"pcivirtio run: {problem}");
                return PciVirtioCli.UsageError;
            }

            return Run(parse.GetValue(config), overrides, parse.GetValue(check), output, error);
        });
        return command;
    }

    /// <summary>Settings are <c>--Section:Key=value</c> or <c>--Section:Key value</c>. Every
    /// setting lives in a section (PciVirtio:, Logging:), so a flag without one is a mistyped
    /// option (<c>--chek</c>), which the configuration would silently ignore and the daemon
    /// would start instead of checking.</summary>
    internal static string? CheckOverrides(IReadOnlyList<string> tokens)
    {
        for (int i = 0; i < tokens.Count; i++)
        {
            string token = tokens[i];
            if (!token.StartsWith("--", StringComparison.Ordinal))
            {
                return $"'{token}' is neither an option nor a --Key=value setting";
            }

            int equals = token.IndexOf('=', StringComparison.Ordinal);
            string key = equals < 0 ? token[2..] : token[2..equals];
            if (!key.Contains(':', StringComparison.Ordinal) || key.StartsWith(':') || key.EndsWith(':'))
            {
                return $"'{token}' is not an option of run, nor a setting (--PciVirtio:Key=value)";
            }

            if (equals < 0 && ++i == tokens.Count)
            {
                return $"'{token}' has no value (--{key}=value or --{key} value)";
            }
        }

        return null;
    }

    /// <summary>Problems go to <paramref name="error"/> (standard error), what runs to
    /// <paramref name="output"/>.</summary>
    public static int Run(string? configFile, IReadOnlyList<string> overrides, bool checkOnly, TextWriter output, TextWriter error)
    {
        var (settings, errors, configuration) = DaemonHost.LoadSettings(configFile, overrides);
        if (settings is null)
        {
            error.WriteLine($"pcivirtio run: the configuration has {errors.Count} problem(s):");
            foreach (string e in errors)
            {
                error.WriteLine($"  {e}");
            }

            return PciVirtioCli.UsageError;
        }

        if (checkOnly)
        {
            output.WriteLine($"configuration OK: {settings.Backends.Count} backend(s), {settings.Links.Count} link(s), control socket {(settings.ResolvedControlSocket is { Length: > 0 } c ? c : "off")}");
            for (int i = 0; i < settings.Backends.Count; i++)
            {
                var b = settings.Backends[i];
                output.WriteLine($"  backend {SettingsValidator.BackendName(b, i)}: {string.Join(", ", b.AllSockets)} ({(b.Client ? "client" : "server")}, {b.Queues} queue pair(s), {(b.AllSockets.Count == 2 ? "port to port" : $"TAP {b.Tap ?? "(named by the kernel)"}")})");
            }

            for (int i = 0; i < settings.Links.Count; i++)
            {
                var l = settings.Links[i];
                output.WriteLine($"  link {SettingsValidator.LinkName(l, i)}: {l.Hardware} as TAP {l.Tap ?? "(named by the kernel)"}, MTU {l.Mtu}{(l.Address is null ? "" : $", {l.Address}")}");
            }

            return 0;
        }

        using var secondSignal = new SecondSignalExit();
        using var host = DaemonHost.Build(settings, configuration);
        try
        {
            host.Run();
        }
        catch (DaemonStartException e)
        {
            error.WriteLine($"pcivirtio run: {e.Message}");
            return 1;
        }
        catch (IOException e)
        {
            error.WriteLine($"pcivirtio run: {e.Message}");
            return 1;
        }

        return 0;
    }
}
