using System.CommandLine;
using System.Runtime.InteropServices;
using PciVirtio.Host.Control;
using PciVirtio.Host.Daemon;
using PciVirtio.Host.Stats;

namespace PciVirtio.Host.Cli;

/// <summary><c>pcivirtio stats</c>: a running daemon's counters.</summary>
internal static class StatsCli
{
    public static Command Create(TextWriter output)
    {
        var control = CliOptions.Text("--control", $"The daemon's control socket (default {DaemonSettings.DefaultControlSocket})");
        var json = CliOptions.Flag("--json", "Print the counters once as JSON and exit");
        var interval = CliOptions.Seconds("--interval", "Refresh the table every this many seconds", 1, zeroAllowed: false);
        var count = CliOptions.Int("--count", "Print the table this many times, then exit (0: until Ctrl-C)", 0, int.MaxValue, 0);
        var command = new Command("stats", "Live per-device, per-queue and per-link counters of a running 'pcivirtio run', as a table that refreshes, or JSON once")
        {
            control, json, interval, count,
        };
        command.SetAction(parse => Run(parse.GetValue(control) ?? DaemonSettings.DefaultControlSocket, parse.GetValue(json), TimeSpan.FromSeconds(parse.GetValue(interval)), parse.GetValue(count), output));
        return command;
    }

    public static int Run(string path, bool json, TimeSpan interval, int count, TextWriter output)
    {
        var timeout = TimeSpan.FromSeconds(5);
        try
        {
            if (json)
            {
                output.WriteLine(ControlClient.Ask(path, "stats", timeout));
                return 0;
            }

            using var stop = new ManualResetEventSlim();
            using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c =>
            {
                c.Cancel = true;
                stop.Set();
            });

            // On a terminal the table redraws in place; into a pipe or file, readings follow
            // one another.
            bool redraw = output == Console.Out && !Console.IsOutputRedirected;
            DaemonStatus? before = null;
            for (int shown = 0; count == 0 || shown < count; shown++)
            {
                if (shown > 0 && stop.Wait(interval))
                {
                    break;
                }

                var now = ControlClient.Status(path, timeout);
                string table = StatsTable.Render(now, before);
                output.Write(redraw ? "\u001b[H\u001b[2J" + table : (shown > 0 ? Environment.NewLine : "") + table);
                output.Flush();
                before = now;
            }

            return 0;
        }
        catch (IOException e)
        {
            output.WriteLine($"pcivirtio stats: {e.Message}");
            return 1;
        }
    }
}
