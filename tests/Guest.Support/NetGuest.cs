using System.Globalization;

namespace PciVirtio.Tests.Guest;

/// <summary>Who listens on the vhost-user socket.</summary>
public enum VhostUserSocketMode
{
    /// <summary>The backend listens, QEMU connects once at start (it fails when nobody listens).</summary>
    Client,

    /// <summary>The backend listens, QEMU connects and retries every second (<c>reconnect=1</c>),
    /// also after the backend went away.</summary>
    ClientReconnect,

    /// <summary>QEMU listens (<c>server=on,wait=off</c>) and the backend connects to it.</summary>
    Server,
}

/// <summary>What the net guest's iperf3 step does (kernel argument <c>pcivirtio.net.iperf=</c>).</summary>
public enum NetGuestIperfMode
{
    None,

    /// <summary><c>iperf3 -c HOST -t SECS</c>: the guest sends to a server on the host side.</summary>
    Client,

    /// <summary><c>iperf3 -s -1</c>: the guest serves one test from a client on the host side.</summary>
    Server,
}

/// <summary>The guest's NIC: a virtio-net-pci device on a vhost-user netdev.</summary>
public sealed record NetGuestNic
{
    /// <summary>The vhost-user socket.</summary>
    public required string Socket { get; init; }

    public VhostUserSocketMode SocketMode { get; init; } = VhostUserSocketMode.Client;

    public string Mac { get; init; } = "52:54:00:12:34:56";

    /// <summary>Queue pairs. More than one adds <c>queues=N</c> to the netdev and <c>mq=on</c> to
    /// the device; Linux then uses min(N, guest CPUs) pairs, so give the guest as many CPUs
    /// (<see cref="GuestVmOptions.Cpus"/>) to have every pair carry traffic.</summary>
    public int Queues { get; init; } = 1;

    /// <summary>More virtio-net-pci properties, e.g. "packed=on", "mrg_rxbuf=off".</summary>
    public IReadOnlyList<string> DeviceProperties { get; init; } = [];
}

/// <summary>What tests/guest/net-guest.sh does, passed as <c>pcivirtio.net.KEY=VALUE</c>
/// kernel arguments (so one initramfs serves every configuration).</summary>
public sealed record NetGuestSettings
{
    public string Interface { get; init; } = "eth0";

    /// <summary>The guest's address with its prefix length, e.g. 10.1.2.2/24.</summary>
    public required string Address { get; init; }

    /// <summary>The host side's address (what the guest pings and runs iperf3 against).</summary>
    public required string HostAddress { get; init; }

    /// <summary>Pings of the host address right after the ready line (0: none).</summary>
    public int PingCount { get; init; }

    public NetGuestIperfMode Iperf { get; init; } = NetGuestIperfMode.None;

    /// <summary>How long an iperf3 client sends (whole seconds).</summary>
    public TimeSpan IperfDuration { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>More iperf3 options for the scripted run, e.g. "-R" or "-P", "2" (no spaces or commas).</summary>
    public IReadOnlyList<string> IperfArguments { get; init; } = [];

    /// <summary>An MTU to set on the interface (null: the driver's).</summary>
    public int? Mtu { get; init; }

    /// <summary>How long the guest waits for the carrier before it prints the ready line anyway.</summary>
    public TimeSpan CarrierWait { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How long the guest waits for each command before it powers off.</summary>
    public TimeSpan CommandWait { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>The kernel command-line words net-guest.sh reads.</summary>
    public IReadOnlyList<string> KernelArguments()
    {
        foreach (string argument in IperfArguments)
        {
            if (argument.Length == 0 || argument.Any(c => c is ' ' or ',' or '"' || char.IsControl(c)))
            {
                throw new ArgumentException($"iperf3 argument '{argument}' cannot travel on the kernel command line (no spaces, commas or quotes)", nameof(IperfArguments));
            }
        }

        var words = new List<string>
        {
            $"pcivirtio.net.iface={Interface}",
            $"pcivirtio.net.addr={Address}",
            $"pcivirtio.net.host={HostAddress}",
            $"pcivirtio.net.ping={PingCount}",
            $"pcivirtio.net.iperf={Iperf switch { NetGuestIperfMode.Client => "client", NetGuestIperfMode.Server => "server", _ => "none" }}",
            $"pcivirtio.net.iperf_secs={Seconds(IperfDuration)}",
            $"pcivirtio.net.carrier_wait={Seconds(CarrierWait)}",
            $"pcivirtio.net.wait={Seconds(CommandWait)}",
        };
        if (IperfArguments.Count > 0)
        {
            words.Add($"pcivirtio.net.iperf_args={string.Join(',', IperfArguments)}");
        }

        if (Mtu is { } mtu)
        {
            words.Add($"pcivirtio.net.mtu={mtu.ToString(CultureInfo.InvariantCulture)}");
        }

        if (words.FirstOrDefault(w => w.Any(char.IsWhiteSpace)) is { } spaced)
        {
            throw new InvalidOperationException($"the kernel argument '{spaced}' holds a space");
        }

        return words;
    }

    internal static string Seconds(TimeSpan span) =>
        Math.Max(1, (int)Math.Ceiling(span.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
}

/// <summary>The guest's interface is up: "PCIVIRTIO-NET: ready ...".</summary>
/// <param name="Features">The virtio feature bits the guest driver negotiated (null when the
/// device's sysfs has no "features" file).</param>
/// <param name="GuestUptime">Seconds since the guest kernel started.</param>
/// <param name="At">When the line arrived, since QEMU started.</param>
public sealed record NetGuestReady(string Interface, string Mac, string Address, string HostAddress, bool Carrier, int Mtu,
    ulong? Features, double GuestUptime, TimeSpan At)
{
    /// <summary>Whether feature bit <paramref name="bit"/> was negotiated (false when unknown).</summary>
    public bool HasFeature(int bit) => Features is { } f && bit is >= 0 and < 64 && (f & (1UL << bit)) != 0;
}

/// <summary>A ping run in the guest: "PCIVIRTIO-NET: ping ...".</summary>
/// <param name="AverageMilliseconds">The average round trip (null when no reply came).</param>
/// <param name="Seconds">How long the run took in the guest.</param>
/// <param name="ExitCode">ping's exit status (0 when replies came).</param>
public sealed record NetGuestPing(string Host, int Sent, int Received, double LossPercent, double? AverageMilliseconds, double Seconds,
    int ExitCode, TimeSpan At);

/// <summary>An iperf3 run in the guest: "PCIVIRTIO-NET: iperf3 mode=...". The figures are the
/// report's totals (end.sum_sent, end.sum_received) as the guest's iperf3 saw them; as a server
/// the guest only receives, so its "sent" figures are 0.</summary>
/// <param name="Error">iperf3's error (spaces as underscores), or null when it reported figures.</param>
/// <param name="Retransmits">TCP retransmits of the sender (null for a server or UDP).</param>
/// <param name="Seconds">How long the run took in the guest (with connecting).</param>
public sealed record NetGuestIperf(string Mode, long SentBitsPerSecond, long ReceivedBitsPerSecond, long SentBytes, long ReceivedBytes,
    int? Retransmits, string? Error, double Seconds, int ExitCode, TimeSpan At)
{
    public bool Succeeded => Error is null && ExitCode == 0;
}

/// <summary>A command run in the guest with <see cref="NetGuest.RunAsync"/>: its exit status and
/// output lines.</summary>
public sealed record NetGuestCommandResult(int ExitCode, IReadOnlyList<string> Output);

/// <summary>
/// Guests whose NIC is a vhost-user virtio-net device: tests/guest/net-guest.sh as /test.sh (see
/// that script), iperf3 in the image, on a pc machine whose RAM is a shared memfd (vhost-user
/// needs it) and a virtio-net-pci device with <c>vectors=0</c> (QEMU 7.2 under TCG segfaults in
/// vhost_net_start when such a device has MSI-X).
/// <code>
/// string image = await NetGuest.BuildInitramfsAsync(env, Path.Combine(work, "net.cpio"));
/// var nic = new NetGuestNic { Socket = socket };
/// var settings = new NetGuestSettings { Address = "10.1.2.2/24", HostAddress = "10.1.2.1", PingCount = 5 };
/// await using var vm = GuestVm.Start(env, NetGuest.Options("net", image, nic, settings), output.WriteLine);
/// var ready = await NetGuest.WaitForReadyAsync(vm, TimeSpan.FromMinutes(1));
/// var ping = await NetGuest.WaitForPingAsync(vm, TimeSpan.FromSeconds(30));
/// var run = await NetGuest.IperfClientAsync(vm, "10.1.2.1", TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(40));
/// await NetGuest.PowerOffAsync(vm, TimeSpan.FromSeconds(30));
/// </code>
/// Every wait is bounded and fails fast with the guest's reason when it printed
/// "PCIVIRTIO-NET: error ...".
/// </summary>
public static class NetGuest
{
    public const string ReadyMarker = "PCIVIRTIO-NET: ready ";
    public const string PingMarker = "PCIVIRTIO-NET: ping ";
    public const string IperfMarker = "PCIVIRTIO-NET: iperf3 mode=";
    public const string IperfListeningMarker = "PCIVIRTIO-NET: iperf3 listening ";
    public const string WaitingMarker = "PCIVIRTIO-NET: waiting for commands ";
    public const string OutputPrefix = "PCIVIRTIO-NET: out ";
    public const string DoneMarker = "PCIVIRTIO-NET: done ";
    public const string ErrorMarker = "PCIVIRTIO-NET: error ";
    public const string IperfGuestPath = "/bin/iperf3";

    /// <summary>The virtio-net driver's memory: QEMU's RAM as a shared memfd of this size.</summary>
    public const int MemoryMiB = 256;

    /// <summary>Builds the net guest's initramfs: net-guest.sh as /test.sh, the host's iperf3
    /// (Debian's, with the libraries ldd lists) as /bin/iperf3, and <paramref name="extraFiles"/>.</summary>
    public static Task<string> BuildInitramfsAsync(GuestEnvironment environment, string outputPath, IEnumerable<GuestFile>? extraFiles = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(environment);
        string iperf = FindProgram("iperf3")
            ?? throw new GuestSetupException("iperf3 is not installed on the host (apt-get install -y iperf3; scripts/test installs it)");
        var files = new List<GuestFile> { GuestFile.Program(iperf, IperfGuestPath) };
        files.AddRange(extraFiles ?? []);
        return environment.BuildInitramfsAsync(environment.Script("net-guest.sh"), files, outputPath, cancellationToken);
    }

    /// <summary>Options for a net guest: <paramref name="nic"/> as its only NIC,
    /// <paramref name="settings"/> on its kernel command line.</summary>
    public static GuestVmOptions Options(string name, string initramfs, NetGuestNic nic, NetGuestSettings settings, int cpus = 1)
    {
        ArgumentNullException.ThrowIfNull(nic);
        ArgumentNullException.ThrowIfNull(settings);
        return new GuestVmOptions
        {
            Name = name,
            Initramfs = initramfs,
            Machine = "pc,memory-backend=mem",
            MemoryMiB = MemoryMiB,
            Cpus = cpus,
            KernelArguments = settings.KernelArguments(),
            QemuArguments = QemuArguments(nic, MemoryMiB),
        };
    }

    /// <summary>The QEMU arguments for the shared RAM and the vhost-user virtio-net NIC (the
    /// machine needs <c>memory-backend=mem</c> and <c>-m</c> equal to <paramref name="memoryMiB"/>).</summary>
    public static IReadOnlyList<string> QemuArguments(NetGuestNic nic, int memoryMiB = MemoryMiB)
    {
        ArgumentNullException.ThrowIfNull(nic);
        if (nic.Socket.Contains(',', StringComparison.Ordinal))
        {
            throw new ArgumentException($"QEMU cannot take a socket path with a comma: {nic.Socket}", nameof(nic));
        }

        if (nic.Queues < 1)
        {
            throw new ArgumentException("a NIC needs at least one queue pair", nameof(nic));
        }

        string chardev = nic.SocketMode switch
        {
            VhostUserSocketMode.Client => $"socket,id=chr0,path={nic.Socket}",
            VhostUserSocketMode.ClientReconnect => $"socket,id=chr0,path={nic.Socket},reconnect=1",
            VhostUserSocketMode.Server => $"socket,id=chr0,path={nic.Socket},server=on,wait=off",
            _ => throw new ArgumentOutOfRangeException(nameof(nic), nic.SocketMode, "unknown socket mode"),
        };
        string netdev = "vhost-user,id=net0,chardev=chr0";
        string device = $"virtio-net-pci,netdev=net0,mac={nic.Mac},romfile=,vectors=0";
        if (nic.Queues > 1)
        {
            netdev += $",queues={nic.Queues.ToString(CultureInfo.InvariantCulture)}";
            device += ",mq=on";
        }

        foreach (string property in nic.DeviceProperties)
        {
            device += "," + property;
        }

        return
        [
            "-object", $"memory-backend-memfd,id=mem,size={memoryMiB.ToString(CultureInfo.InvariantCulture)}M,share=on",
            "-chardev", chardev,
            "-netdev", netdev,
            "-device", device,
        ];
    }

    /// <summary>Waits for the ready line.</summary>
    public static async Task<NetGuestReady> WaitForReadyAsync(GuestVm vm, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        var (line, text) = await WaitForAsync(vm, ReadyMarker, timeout, 0, cancellationToken).ConfigureAwait(false);
        var f = GuestMarkers.Fields(text);
        ulong? features = f.GetValueOrDefault("features") is { } hex && hex.StartsWith("0x", StringComparison.Ordinal)
            && ulong.TryParse(hex.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong value)
            ? value
            : null;
        return new NetGuestReady(f["iface"], f["mac"], f["addr"], f["host"], f.GetValueOrDefault("carrier") == "1",
            Int(f, "mtu") ?? 0, features, Double(f, "uptime") ?? 0, line.At);
    }

    /// <summary>Waits for a ping result (from console line <paramref name="fromIndex"/>).</summary>
    public static async Task<NetGuestPing> WaitForPingAsync(GuestVm vm, TimeSpan timeout, int fromIndex = 0, CancellationToken cancellationToken = default)
    {
        var (line, text) = await WaitForAsync(vm, PingMarker, timeout, fromIndex, cancellationToken).ConfigureAwait(false);
        var f = GuestMarkers.Fields(text);
        return new NetGuestPing(f["host"], Int(f, "sent") ?? 0, Int(f, "received") ?? 0,
            Number(f.GetValueOrDefault("loss")?.TrimEnd('%')) ?? 100, Double(f, "avg_ms"), Double(f, "seconds") ?? 0,
            Int(f, "rc") ?? -1, line.At);
    }

    /// <summary>Waits for an iperf3 result (from console line <paramref name="fromIndex"/>).</summary>
    public static async Task<NetGuestIperf> WaitForIperfAsync(GuestVm vm, TimeSpan timeout, int fromIndex = 0, CancellationToken cancellationToken = default)
    {
        var (line, text) = await WaitForAsync(vm, IperfMarker, timeout, fromIndex, cancellationToken).ConfigureAwait(false);
        var f = GuestMarkers.Fields(text);
        return new NetGuestIperf(f["mode"], Long(f, "sent_bps") ?? 0, Long(f, "received_bps") ?? 0, Long(f, "sent_bytes") ?? 0,
            Long(f, "received_bytes") ?? 0, Int(f, "retransmits"), f.GetValueOrDefault("error"), Double(f, "seconds") ?? 0,
            Int(f, "rc") ?? -1, line.At);
    }

    /// <summary>Waits until the guest's iperf3 server listens (port 5201).</summary>
    public static async Task WaitForIperfListeningAsync(GuestVm vm, TimeSpan timeout, int fromIndex = 0, CancellationToken cancellationToken = default) =>
        _ = await WaitForAsync(vm, IperfListeningMarker, timeout, fromIndex, cancellationToken).ConfigureAwait(false);

    /// <summary>Waits until the scripted steps are done and the guest reads commands.</summary>
    public static async Task WaitForCommandsAsync(GuestVm vm, TimeSpan timeout, CancellationToken cancellationToken = default) =>
        _ = await WaitForAsync(vm, WaitingMarker, timeout, 0, cancellationToken).ConfigureAwait(false);

    /// <summary>Has the guest ping <paramref name="host"/> <paramref name="count"/> times
    /// (waits for the command prompt first).</summary>
    public static async Task<NetGuestPing> PingAsync(GuestVm vm, string host, int count, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        int from = await SendCommandAsync(vm, $"ping {Word(host)} {count.ToString(CultureInfo.InvariantCulture)}", timeout, cancellationToken).ConfigureAwait(false);
        return await WaitForPingAsync(vm, timeout, from, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Has the guest run <c>iperf3 -c HOST -t SECS ARGS</c> and returns its result.</summary>
    public static async Task<NetGuestIperf> IperfClientAsync(GuestVm vm, string host, TimeSpan duration, TimeSpan timeout,
        IEnumerable<string>? arguments = null, CancellationToken cancellationToken = default)
    {
        string command = $"iperf3-client {Word(host)} {NetGuestSettings.Seconds(duration)}";
        foreach (string argument in arguments ?? [])
        {
            command += " " + Word(argument);
        }

        int from = await SendCommandAsync(vm, command, timeout, cancellationToken).ConfigureAwait(false);
        return await WaitForIperfAsync(vm, timeout, from, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Starts a one-off iperf3 server in the guest (<c>iperf3 -s -1 ARGS</c>) and waits
    /// until it listens. Returns the console index to pass to <see cref="WaitForIperfAsync"/> for
    /// its result, once a client on the host side has run.</summary>
    public static async Task<int> StartIperfServerAsync(GuestVm vm, TimeSpan timeout, IEnumerable<string>? arguments = null,
        CancellationToken cancellationToken = default)
    {
        string command = "iperf3-server";
        foreach (string argument in arguments ?? [])
        {
            command += " " + Word(argument);
        }

        int from = await SendCommandAsync(vm, command, timeout, cancellationToken).ConfigureAwait(false);
        await WaitForIperfListeningAsync(vm, timeout, from, cancellationToken).ConfigureAwait(false);
        return from;
    }

    /// <summary>Runs a command in the guest (words split at spaces, no quoting) and returns its
    /// exit status and output lines.</summary>
    public static async Task<NetGuestCommandResult> RunAsync(GuestVm vm, string command, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(command);
        if (command.Contains('\n', StringComparison.Ordinal))
        {
            throw new ArgumentException("a guest command is one line", nameof(command));
        }

        int from = await SendCommandAsync(vm, "run " + command, timeout, cancellationToken).ConfigureAwait(false);
        var (done, text) = await WaitForAsync(vm, DoneMarker, timeout, from, cancellationToken).ConfigureAwait(false);
        var output = vm.Lines.Skip(from).Take(done.Index - from)
            .Select(l => l.From(OutputPrefix)).OfType<string>().Select(t => t[OutputPrefix.Length..]).ToList();
        return new NetGuestCommandResult(Int(GuestMarkers.Fields(text), "rc") ?? -1, output);
    }

    /// <summary>Tells the guest to power off and waits for QEMU to exit; throws
    /// <see cref="GuestVmException"/> when it is still running after <paramref name="timeout"/>.</summary>
    public static async Task PowerOffAsync(GuestVm vm, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(vm);
        if (vm.HasExited)
        {
            return;
        }

        await SendCommandAsync(vm, "poweroff", timeout, cancellationToken).ConfigureAwait(false);
        if (!await vm.WaitForExitAsync(timeout, cancellationToken).ConfigureAwait(false))
        {
            throw new GuestVmException($"{vm.Name}: QEMU (pid {vm.Pid}) still runs {timeout.TotalSeconds:0} s after poweroff; log {vm.LogPath}\n{vm.Tail()}");
        }
    }

    /// <summary>Waits for the command prompt, then sends <paramref name="command"/>; returns
    /// the console index its answer will come after.</summary>
    private static async Task<int> SendCommandAsync(GuestVm vm, string command, TimeSpan timeout, CancellationToken cancellationToken)
    {
        await WaitForCommandsAsync(vm, timeout, cancellationToken).ConfigureAwait(false);
        int from = vm.Lines.Count;
        await vm.SendLineAsync(command).ConfigureAwait(false);
        return from;
    }

    /// <summary>The first line from <paramref name="fromIndex"/> with <paramref name="marker"/>
    /// (and the text from the marker on); an error line before it throws.</summary>
    private static async Task<(GuestLine Line, string Text)> WaitForAsync(GuestVm vm, string marker, TimeSpan timeout, int fromIndex,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(vm);
        var line = await vm.WaitForLineAsync(
            t => t.Contains(marker, StringComparison.Ordinal) || t.Contains(ErrorMarker, StringComparison.Ordinal),
            timeout, fromIndex, $"\"{marker.Trim()}\"", cancellationToken).ConfigureAwait(false);
        if (line.From(marker) is { } text)
        {
            return (line, text);
        }

        throw new GuestVmException($"{vm.Name}: {line.From(ErrorMarker)} (while waiting for \"{marker.Trim()}\"); log {vm.LogPath}\n{vm.Tail()}");
    }

    private static string Word(string word) =>
        word.Length > 0 && !word.Any(c => char.IsWhiteSpace(c) || char.IsControl(c))
            ? word
            : throw new ArgumentException($"'{word}' is not one word (the guest splits commands at spaces)", nameof(word));

    private static int? Int(IReadOnlyDictionary<string, string> fields, string key) =>
        int.TryParse(fields.GetValueOrDefault(key), NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) ? value : null;

    private static long? Long(IReadOnlyDictionary<string, string> fields, string key) =>
        long.TryParse(fields.GetValueOrDefault(key), NumberStyles.Integer, CultureInfo.InvariantCulture, out long value) ? value : null;

    private static double? Double(IReadOnlyDictionary<string, string> fields, string key) => Number(fields.GetValueOrDefault(key));

    private static double? Number(string? text) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) ? value : null;

    private static string? FindProgram(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin")
            .Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(directory => Path.Combine(directory, name))
            .FirstOrDefault(File.Exists);
}
