using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using PciVirtio.HwSim.Client;
using PciVirtio.HwSim.Device;
using PciVirtio.HwSim.Server;

namespace PciVirtio.HwSim;

/// <summary>
/// The command line of hw-sim, shared by the standalone <c>pcivirtio-hwsim</c> (hw-sim/Cli)
/// and <c>pcivirtio sim</c>: <c>serve</c> runs the emulated NTB, <c>fault</c> injects a fault,
/// <c>stats</c> prints the counters, <c>peer</c> is one end of a data exchange (tests, demos).
/// </summary>
public static class HwSimCommandLine
{
    private const string Usage = """
        usage:
          pcivirtio-hwsim serve --socket PATH [--windows N] [--window-size BYTES] [--ivshmem-socket PATH [--ivshmem-vectors N] [--ivshmem-max-peers N]] [--duration SECONDS]
          pcivirtio-hwsim fault --socket PATH <link-down|link-up|drop-doorbells N|delay-doorbells MS|read-delay NS|shrink-window BYTES>
          pcivirtio-hwsim stats --socket PATH [--json]
          pcivirtio-hwsim peer --socket PATH --port 0|1 [--bytes N] [--chunk BYTES] [--seed S] [--timeout SECONDS]
        """;

    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(10);

    public static int Run(string[] args)
    {
        try
        {
            return args.Length == 0 ? Fail(Usage) : args[0] switch
            {
                "serve" => Serve(new Options(args)),
                "fault" => Fault(new Options(args)),
                "stats" => Stats(new Options(args)),
                "peer" => Peer(new Options(args)),
                "--help" or "-h" or "help" => Print(Usage),
                _ => Fail(Usage),
            };
        }
        catch (Exception e) when (e is ArgumentException or FormatException or IOException or InvalidOperationException or TimeoutException or InvalidDataException)
        {
            Console.Error.WriteLine($"pcivirtio-hwsim: {e.Message}");
            return 1;
        }
    }

    private static int Serve(Options o)
    {
        int windows = o.Int("--windows", 2);
        ulong windowSize = o.ULong("--window-size", 16 << 20); // holds the link's default layout (8.1 MiB)
        using var device = HwSimDevice.Create(windows, windowSize);
        using var server = new HwSimServer(o.Required("--socket"), device, o.Get("--ivshmem-socket"), o.Int("--ivshmem-vectors", 2), o.Int("--ivshmem-max-peers", 16));
        using var stop = new ManualResetEventSlim();
        void OnSignal(PosixSignalContext context)
        {
            context.Cancel = true;
            stop.Set();
        }

        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        Console.WriteLine($"hw-sim: serving on {server.SocketPath} ({windows} windows of {windowSize} B per port)" +
            (server.Ivshmem is null ? string.Empty : $", ivshmem on {server.Ivshmem.SocketPath}"));
        Console.Out.Flush();
        double duration = o.Double("--duration", 0);
        _ = duration > 0 ? stop.Wait(TimeSpan.FromSeconds(duration)) : stop.Wait(Timeout.Infinite);
        return 0;
    }

    private static int Fault(Options o)
    {
        using HwSimDevice device = HwSimClient.Control(o.Required("--socket"), ConnectTimeout);
        string what = o.Positional(0) ?? throw new ArgumentException("fault: which fault?\n" + Usage);
        string? arg = o.Positional(1);
        long Arg() => long.Parse(arg ?? throw new ArgumentException($"fault {what}: a value is required"), CultureInfo.InvariantCulture);
        switch (what)
        {
            case "link-down": device.SetLink(false); break;
            case "link-up": device.SetLink(true); break;
            case "drop-doorbells": device.DropDoorbells(Arg()); break;
            case "delay-doorbells": device.DelayDoorbells(Arg()); break;
            case "read-delay": device.SetReadDelay(Arg()); break;
            case "shrink-window": device.ShrinkWindows((ulong)Arg()); break;
            default: return Fail($"unknown fault '{what}'\n{Usage}");
        }

        Console.WriteLine($"hw-sim: {what}{(arg is null ? string.Empty : " " + arg)} applied");
        return 0;
    }

    private static int Stats(Options o)
    {
        using HwSimDevice device = HwSimClient.Control(o.Required("--socket"), ConnectTimeout);
        if (o.Flag("--json"))
        {
            using var buffer = new MemoryStream();
            using (var json = new Utf8JsonWriter(buffer))
            {
                json.WriteStartObject();
                json.WriteBoolean("link_up", device.LinkIsUp);
                json.WriteNumber("windows", device.WindowCount);
                json.WriteNumber("window_size", device.WindowMaxSize);
                for (int port = 0; port < 2; port++)
                {
                    PortCounters c = device.Counters(port);
                    json.WriteStartObject($"port{port}");
                    json.WriteNumber("RemoteReads", c.RemoteReads);
                    json.WriteNumber("RemoteWrites", c.RemoteWrites);
                    json.WriteNumber("RemoteReadBytes", c.RemoteReadBytes);
                    json.WriteNumber("RemoteWrittenBytes", c.RemoteWrittenBytes);
                    json.WriteNumber("DoorbellsSent", c.DoorbellsSent);
                    json.WriteNumber("DoorbellsReceived", c.DoorbellsReceived);
                    json.WriteNumber("InterruptsRaised", c.InterruptsRaised);
                    json.WriteNumber("DoorbellsDropped", c.DoorbellsDropped);
                    json.WriteNumber("LinkChanges", c.LinkChanges);
                    json.WriteNumber("DroppedWrites", c.DroppedWrites);
                    json.WriteNumber("FailedReads", c.FailedReads);
                    json.WriteEndObject();
                }

                json.WriteEndObject();
            }

            Console.WriteLine(System.Text.Encoding.UTF8.GetString(buffer.ToArray()));
        }
        else
        {
            Console.WriteLine($"link {(device.LinkIsUp ? "up" : "down")}");
            Console.WriteLine($"port 0: {device.Counters(0)}");
            Console.WriteLine($"port 1: {device.Counters(1)}");
        }

        return 0;
    }

    private static int Peer(Options o)
    {
        int port = o.Int("--port", -1);
        long bytes = o.Long("--bytes", 1 << 20);
        int chunk = o.Int("--chunk", 4096);
        int seed = o.Int("--seed", 1);
        TimeSpan timeout = TimeSpan.FromSeconds(o.Double("--timeout", 30));
        using SimNtbPort ntb = HwSimClient.OpenPort(o.Required("--socket"), port, ConnectTimeout);
        var result = PeerExchange.Run(ntb, bytes, chunk, seed, timeout);
        string netns = new FileInfo("/proc/self/ns/net").LinkTarget ?? "?";
        Console.WriteLine($"peer {port}: ok {result.Bytes} bytes in {result.Chunks} chunks, checksum {result.Checksum:x16}, netns {netns}");
        return 0;
    }

    private static int Print(string text)
    {
        Console.WriteLine(text);
        return 0;
    }

    private static int Fail(string text)
    {
        Console.Error.WriteLine(text);
        return 2;
    }

    /// <summary>Tiny argument parser: <c>--name value</c>, <c>--flag</c>, positionals.</summary>
    private sealed class Options
    {
        private readonly Dictionary<string, string?> _named = new(StringComparer.Ordinal);
        private readonly List<string> _positional = [];

        public Options(string[] args)
        {
            for (int i = 1; i < args.Length; i++)
            {
                if (args[i].StartsWith("--", StringComparison.Ordinal))
                {
                    bool hasValue = i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal) && args[i] is not "--json";
                    _named[args[i]] = hasValue ? args[++i] : null;
                }
                else
                {
                    _positional.Add(args[i]);
                }
            }
        }

        public string? Get(string name) => _named.TryGetValue(name, out string? v) ? v : null;

        public string Required(string name) => Get(name) ?? throw new ArgumentException($"{name} is required\n{Usage}");

        public bool Flag(string name) => _named.ContainsKey(name);

        public string? Positional(int index) => index < _positional.Count ? _positional[index] : null;

        public int Int(string name, int fallback) => Get(name) is { } v ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;

        public long Long(string name, long fallback) => Get(name) is { } v ? long.Parse(v, CultureInfo.InvariantCulture) : fallback;

        public ulong ULong(string name, ulong fallback) => Get(name) is { } v ? ulong.Parse(v, CultureInfo.InvariantCulture) : fallback;

        public double Double(string name, double fallback) => Get(name) is { } v ? double.Parse(v, CultureInfo.InvariantCulture) : fallback;
    }
}
