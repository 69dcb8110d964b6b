using System.CommandLine;
using System.Globalization;
using HwSimProgram = PciVirtio.HwSim.HwSimCommandLine;

namespace PciVirtio.Host.Cli;

/// <summary>
/// <c>pcivirtio sim</c>: the emulated NTB (hw-sim) inside the one program operators have
/// installed. The typed options here are passed on to hw-sim's own command line, so there
/// is one implementation of each subcommand (the standalone <c>pcivirtio-hwsim</c>).
/// </summary>
internal static class SimCli
{
    public static Command Create(TextWriter output)
    {
        return new Command("sim", "The emulated NTB (hw-sim): two ports with memory windows, doorbells, scratchpads and MSI, an ivshmem server for QEMU guests, and fault injection")
        {
            Serve(),
            Fault(),
            Stats(),
        };
    }

    private static Option<string> Socket(string description) => new("--socket") { Description = description, Required = true };

    private static Command Serve()
    {
        var socket = Socket("Unix socket the link ends connect to (link --hw hw-sim:SOCKET#PORT)");
        var windows = CliOptions.Int("--windows", "Memory windows per port", 1, 8, 2);
        var windowSize = new Option<ulong>("--window-size") { Description = "Bytes per window", DefaultValueFactory = _ => 16UL << 20 }; // holds the link's default layout (8.1 MiB)
        windowSize.Validators.Add(r =>
        {
            if (CliOptions.Converted(r.GetValueOrDefault<ulong>, out ulong v) && (v < 4096 || v > (1UL << 30) || (v & (v - 1)) != 0))
            {
                r.AddError($"--window-size: {v} is not a power of two in 4096..1073741824");
            }
        });
        var ivshmem = CliOptions.Text("--ivshmem-socket", "Also serve QEMU ivshmem-doorbell devices on this socket (two guests as the two hosts)");
        var vectors = CliOptions.Int("--ivshmem-vectors", "MSI-X vectors per ivshmem peer", 1, 64, 2);
        var peers = CliOptions.Int("--ivshmem-max-peers", "ivshmem peers at most", 2, 64, 16);
        var duration = CliOptions.OptionalSeconds("--duration", "Stop after this many seconds (default: on SIGINT/SIGTERM)");
        var command = new Command("serve", "Run the emulated NTB until SIGINT/SIGTERM")
        {
            socket, windows, windowSize, ivshmem, vectors, peers, duration,
        };
        command.SetAction(parse =>
        {
            var args = new List<string>
            {
                "serve", "--socket", parse.GetValue(socket)!, "--windows", Text(parse.GetValue(windows)), "--window-size", parse.GetValue(windowSize).ToString(CultureInfo.InvariantCulture),
            };
            if (parse.GetValue(ivshmem) is { } iv)
            {
                args.AddRange(["--ivshmem-socket", iv, "--ivshmem-vectors", Text(parse.GetValue(vectors)), "--ivshmem-max-peers", Text(parse.GetValue(peers))]);
            }

            if (parse.GetValue(duration) is { } d)
            {
                args.AddRange(["--duration", d.ToString(CultureInfo.InvariantCulture)]);
            }

            return HwSimProgram.Run([.. args]);
        });
        return command;
    }

    private static Command Fault()
    {
        var socket = Socket("The running hw-sim's socket");
        var command = new Command("fault", "Inject a fault into a running hw-sim") { socket };
        void Add(string name, string description, string? valueName = null)
        {
            var sub = new Command(name, description);
            Argument<long>? value = null;
            if (valueName is not null)
            {
                value = new Argument<long>(valueName) { Description = valueName };
                value.Validators.Add(r =>
                {
                    if (CliOptions.Converted(r.GetValueOrDefault<long>, out long v) && v < 0)
                    {
                        r.AddError($"{name}: {valueName} must not be negative");
                    }
                });
                sub.Add(value);
            }

            sub.SetAction(parse =>
            {
                var args = new List<string> { "fault", "--socket", parse.GetValue(socket)!, name };
                if (value is not null)
                {
                    args.Add(parse.GetValue(value).ToString(CultureInfo.InvariantCulture));
                }

                return HwSimProgram.Run([.. args]);
            });
            command.Add(sub);
        }

        socket.Recursive = true;
        Add("link-down", "Take the link down (both ports see it)");
        Add("link-up", "Bring the link up again");
        Add("drop-doorbells", "Drop the next N doorbells", "N");
        Add("delay-doorbells", "Deliver doorbells this many milliseconds late", "MS");
        Add("read-delay", "Make every remote read take this many nanoseconds longer", "NS");
        Add("shrink-window", "Shrink the windows to this many bytes", "BYTES");
        return command;
    }

    private static Command Stats()
    {
        var socket = Socket("The running hw-sim's socket");
        var json = CliOptions.Flag("--json", "As JSON");
        var command = new Command("stats", "A running hw-sim's counters: remote reads and writes, doorbells, interrupts, link changes") { socket, json };
        command.SetAction(parse => HwSimProgram.Run(parse.GetValue(json) ? ["stats", "--socket", parse.GetValue(socket)!, "--json"] : ["stats", "--socket", parse.GetValue(socket)!]));
        return command;
    }

    private static string Text(int n) => n.ToString(CultureInfo.InvariantCulture);
}
