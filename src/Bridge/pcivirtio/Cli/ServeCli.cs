using System.CommandLine;
using System.CommandLine.Parsing;
using PciVirtio.Host.Daemon;
using PciVirtio.Host.Serve;

namespace PciVirtio.Host.Cli;

/// <summary><c>pcivirtio serve</c>: one vhost-user backend from flags.</summary>
internal static class ServeCli
{
    public static Command Create(TextWriter output)
    {
        var socket = new Option<string[]>("--socket")
        {
            Description = "vhost-user socket; one: bridged to a TAP, two (the option twice): joined to each other port to port",
            Required = true,
            Arity = ArgumentArity.OneOrMore,
        };
        var name = CliOptions.Text("--name", "Device name in logs and counters (default net0, net1)");
        var client = CliOptions.Flag("--client", "Connect to the frontend's socket (and reconnect) instead of listening");
        var queues = CliOptions.Int("--queues", "Queue pairs (a multiqueue TAP when above 1)", 1, SettingsValidator.MaxQueuePairs, 1);
        var tap = CliOptions.Text("--tap", "TAP interface to create or attach to (default: the kernel names one)");
        var mtu = CliOptions.OptionalInt("--mtu", "MTU of the TAP and in the device's config space", SettingsValidator.MinMtu, SettingsValidator.MaxMtu);
        var noMrg = CliOptions.Flag("--no-mrg", "Do not offer mergeable receive buffers");
        var poll = CliOptions.Flag("--poll", "Busy-poll the rings (one core spins) instead of waiting for kicks");
        var sink = CliOptions.Flag("--sink", "No TAP: discard what the guest sends (for measurements)");
        var source = CliOptions.Flag("--source", "No TAP: also fill the guest's receive queue with frames");
        var frameSize = CliOptions.Int("--frame-size", "Frame size of --source in bytes", 60, 65535, 64);
        var duration = CliOptions.OptionalSeconds("--duration", "Stop after this many seconds (default: on SIGINT/SIGTERM)");
        var stats = CliOptions.Seconds("--stats", "Print counters every this many seconds (0: never)", 1, zeroAllowed: true);
        var verbose = CliOptions.Flag("--verbose", "Debug logging");
        var command = new Command("serve", "vhost-user virtio-net backend(s) for a VM or DPDK virtio-user, bridged to a TAP or joined port to port")
        {
            socket, name, client, queues, tap, mtu, noMrg, poll, sink, source, frameSize, duration, stats, verbose,
        };
        IEnumerable<string> Problems(CommandResult r)
        {
            var problems = new List<string>();
            string[] sockets = r.GetValue(socket) ?? [];
            bool traffic = r.GetValue(sink) || r.GetValue(source);
            if (r.GetValue(sink) && r.GetValue(source))
            {
                problems.Add("--sink and --source: one or the other");
            }

            if (traffic && (sockets.Length != 1 || r.GetValue(tap) is not null))
            {
                problems.Add("--sink/--source go with one --socket and no --tap");
            }

            var settings = new VhostBackendSettings
            {
                Name = r.GetValue(name),
                Sockets = [.. sockets],
                Client = r.GetValue(client),
                Queues = r.GetValue(queues),
                Tap = r.GetValue(tap),
                Mtu = r.GetValue(mtu),
            };
            problems.AddRange(SettingsValidator.ValidateBackend(settings, Flag));
            return problems;
        }

        command.SetAction(parse =>
        {
            if (CliOptions.Refuse(parse, Problems(parse.CommandResult)))
            {
                return PciVirtioCli.UsageError;
            }

            var options = new ServeOptions
            {
                Name = parse.GetValue(name),
                Sockets = [.. parse.GetValue(socket) ?? []],
                Client = parse.GetValue(client),
                QueuePairs = parse.GetValue(queues),
                Tap = parse.GetValue(tap),
                Mtu = parse.GetValue(mtu),
                Mergeable = !parse.GetValue(noMrg),
                Poll = parse.GetValue(poll),
                Traffic = parse.GetValue(sink) ? TrafficMode.Sink : parse.GetValue(source) ? TrafficMode.Source : null,
                FrameSize = parse.GetValue(frameSize),
                Duration = parse.GetValue(duration) is { } d ? TimeSpan.FromSeconds(d) : null,
                StatsInterval = parse.GetValue(stats) is > 0 and var s ? TimeSpan.FromSeconds(s) : null,
                Verbose = parse.GetValue(verbose),
            };
            return ServeCommand.Run(options, output);
        });
        return command;
    }

    /// <summary>The flag a setting comes from, for the shared checks' messages.</summary>
    private static string Flag(string setting) =>
        setting.StartsWith("Socket", StringComparison.Ordinal) ? "--socket" // Socket, Sockets, Sockets:N: one flag, given once per socket
            : "--" + setting.ToLowerInvariant();
}
