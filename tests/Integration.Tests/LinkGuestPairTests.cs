using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using PciVirtio.Bridge.Hardware;
using PciVirtio.Bridge.Link;
using PciVirtio.HwSim.Ivshmem;
using PciVirtio.Tests.Guest;
using Xunit.Abstractions;

namespace PciVirtio.Integration.Tests;

/// <summary>
/// The link on its second hardware, the real (emulated) one: two QEMU guests (TCG, q35 +
/// intel-iommu) are the two hosts, joined by one ivshmem-doorbell device that
/// <see cref="IvshmemServer"/> serves to both. Each guest binds its device to vfio-pci and runs
/// the NativeAOT build of <c>pcivirtio link --hw vfio:BDF --tap ntb0 --address 10.88.0.N/24</c>
/// (<see cref="IvshmemVfioHardware"/> under <see cref="NtbLink"/>, a TAP in the guest), driven by
/// tests/guest/link-guest.sh. Over the link: guest A pings guest B (every echo answered), 16 MiB
/// of random data cross from A to B through TCP (busybox nc; the MD5 on both sides agrees), and B
/// pings A with 8000-byte packets (IP fragments); both ends stay up throughout. Then A stops on
/// SIGTERM (its detach reaches B through the link area and vector 0: B's link goes down) and B
/// stops too, both with status 0 and a summary that counts the data.
/// </summary>
public sealed partial class LinkGuestPairTests(PcivirtioAotProgram program, ITestOutputHelper output) : IClassFixture<PcivirtioAotProgram>
{
    private const string AddressA = "10.88.0.1";
    private const string AddressB = "10.88.0.2";
    private const int PingCount = 5;
    private const int BigPingCount = 3;
    private const int BigPingSize = 8000;
    private const int BulkKiB = 16384;
    private const int BulkPort = 5001;

    /// <summary>Vector 0 carries link events, 1 and 2 the two doorbell bits of the one queue pair.</summary>
    private const int Vectors = 3;

    /// <summary>32 MiB: two halves of 16 MiB, each a 4 KiB link area and a window that holds
    /// the default layout (1 pair, 4096 slots of 2048 B and the rings: 8,499,200 bytes).</summary>
    private const ulong SharedMemorySize = 32 << 20;

    private const string Marker = "LINK-GUEST: ";

    /// <summary>The test body, both boots included; xunit's Timeout is the backstop.</summary>
    private static readonly TimeSpan Budget = TimeSpan.FromMinutes(3);

    /// <summary>Both guests boot at once on 2 cores under TCG, next to other work.</summary>
    private static readonly TimeSpan BootTimeout = TimeSpan.FromMinutes(2);

    /// <summary>From the program's start to both ends up: the handshake ticks every 100 ms.</summary>
    private static readonly TimeSpan LinkUpTimeout = TimeSpan.FromSeconds(60);

    private static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(60);

    /// <summary>The bulk transfer (the guest's own nc is bounded by 90 s).</summary>
    private static readonly TimeSpan BulkTimeout = TimeSpan.FromSeconds(100);

    private static readonly TimeSpan ShutdownTimeout = TimeSpan.FromSeconds(60);

    [Fact(Timeout = 240_000)]
    public async Task Two_guests_link_over_ivshmem_through_vfio_ping_and_move_data_over_TCP()
    {
        var clock = Stopwatch.StartNew();
        using var budget = new CancellationTokenSource(Budget);
        output.WriteLine($"NativeAOT publish: {program.PublishDuration.TotalSeconds:0.0} s ({program.PublishCommand}); " +
                         $"{program.ExecutablePath} has {new FileInfo(program.ExecutablePath).Length} bytes; " +
                         $"warnings: {(program.Warnings.Count == 0 ? "none" : string.Join("; ", program.Warnings))}");
        var environment = GuestEnvironment.Get();
        output.WriteLine($"guest kernel {environment.KernelPackage} ({environment.Kernel}); prepare.sh took {environment.PrepareResult.Duration.TotalSeconds:0.0} s");

        // The device must hold what pcivirtio link offers by default, in each direction.
        var defaults = new LinkParameters();
        ulong layout = LinkLayout.Compute(defaults).Size;
        ulong window = (SharedMemorySize / 2) - IvshmemLinkArea.Size;
        Assert.True(layout <= window, $"the default layout needs {layout} bytes; each window of {SharedMemorySize} bytes of shared memory has {window}");

        var work = Directory.CreateTempSubdirectory("pcivirtio-link-");
        var pids = new List<int>();
        try
        {
            string socket = Path.Combine(work.FullName, "ivshmem.sock");
            using var server = new IvshmemServer(socket, SharedMemorySize, Vectors, maxPeers: 2);
            var script = new GuestProgram(environment.Script("link-guest.sh"), []);
            string initramfs = await VfioGuest.BuildInitramfsAsync(environment, Path.Combine(work.FullName, "link.cpio"), script,
                [GuestFile.Program(program.ExecutablePath, "/bin/pcivirtio"), OpenSsl()], budget.Token);
            var setupDone = clock.Elapsed;

            await using var a = GuestVm.Start(environment, Options("link-a", initramfs, socket, AddressA), output.WriteLine);
            pids.Add(a.Pid);
            await using var b = GuestVm.Start(environment, Options("link-b", initramfs, socket, AddressB), output.WriteLine);
            pids.Add(b.Pid);
            output.WriteLine($"QEMU pids: {a.Name} {a.Pid}, {b.Name} {b.Pid}");

            var ready = await Task.WhenAll(
                VfioGuest.WaitForReadyAsync(a, BootTimeout, budget.Token),
                VfioGuest.WaitForReadyAsync(b, BootTimeout, budget.Token));
            Assert.Equal([0, 1], server.PeerIds);
            Assert.Equal([0, 1], ready.Select(r => r.IvPosition ?? -1).Order());

            // Both ends up: the handshake (over the scratchpads of the link areas: agreed, up with
            // one pair) and pcivirtio's own status line.
            var linkUp = await Task.WhenAll(WaitForLinkUpAsync(a, budget.Token), WaitForLinkUpAsync(b, budget.Token));
            var upDone = clock.Elapsed;
            foreach (var vm in new[] { a, b })
            {
                string[] lines = [.. VfioGuest.ProgramLines(vm)];
                Assert.Contains(lines, l => l.StartsWith(Marker + "started ", StringComparison.Ordinal) && l.Contains($"hw=vfio:{ready[vm == a ? 0 : 1].Bdf}", StringComparison.Ordinal));
                Assert.Contains(lines, l => l.Contains($"link ntb0: agreed 1 queue pair(s) of {defaults.QueueSize}, {defaults.BufferSize}-byte buffers", StringComparison.Ordinal));
                Assert.Contains(lines, l => l.Contains("link ntb0: up with 1 queue pair(s)", StringComparison.Ordinal));
            }

            // A pings B: every echo answered.
            var ping = await CommandAsync(a, $"ping {AddressB} {PingCount}", "ping ", CommandTimeout, budget.Token);
            Assert.True(Number(ping, "sent") == PingCount && Number(ping, "received") == PingCount, $"{a.Name}: ping {AddressB}: {Describe(ping)}\n{Program(a)}\n{Program(b)}");
            var pingDone = clock.Elapsed;

            // Bulk: 16 MiB of random data from A to B over TCP (busybox nc), checked by MD5.
            var listening = await CommandAsync(b, $"listen {BulkPort}", "listening ", CommandTimeout, budget.Token);
            Assert.Equal(BulkPort.ToString(CultureInfo.InvariantCulture), listening["port"]);
            var sent = await CommandAsync(a, $"send {AddressB} {BulkPort} {BulkKiB}", "sent ", BulkTimeout, budget.Token);
            var received = await CommandAsync(b, "received", "received ", CommandTimeout, budget.Token);
            Assert.True(sent["rc"] == "0", $"{a.Name}: nc to {AddressB}:{BulkPort}: {Describe(sent)}\n{Program(a)}\n{Program(b)}");
            Assert.True(received["rc"] == "0", $"{b.Name}: nc server: {Describe(received)}\n{Program(b)}");
            Assert.Equal(BulkKiB * 1024L, Number(sent, "bytes"));
            Assert.Equal(BulkKiB * 1024L, Number(received, "bytes"));
            Assert.Equal(sent["md5"], received["md5"]);
            double bulkSeconds = double.Parse(sent["seconds"], CultureInfo.InvariantCulture);
            var bulkDone = clock.Elapsed;

            // B pings A with 8000-byte packets: each echo crosses as six fragments each way.
            var bigPing = await CommandAsync(b, $"ping {AddressA} {BigPingCount} {BigPingSize}", "ping ", CommandTimeout, budget.Token);
            Assert.True(Number(bigPing, "sent") == BigPingCount && Number(bigPing, "received") == BigPingCount,
                $"{b.Name}: ping -s {BigPingSize} {AddressA}: {Describe(bigPing)}\n{Program(a)}\n{Program(b)}");
            var trafficDone = clock.Elapsed;

            // Up all along: no link-down of either layer before the ends were told to stop.
            // (Before it came up, the status lines say Down or Offered.)
            foreach (var (vm, up) in new[] { (a, linkUp[0]), (b, linkUp[1]) })
            {
                var since = vm.Lines.Skip(up.Index).Select(l => ProgramText(l.Text)).OfType<string>().ToList();
                Assert.True(!since.Any(IsLinkDown), $"{vm.Name}: the link went down\n{Program(vm)}");
            }

            // The link's own view while it carried the data: peak rates from its status lines.
            double peakOutA = StatusLines(a).Select(s => s.OutMbps).DefaultIfEmpty().Max();
            double peakInB = StatusLines(b).Select(s => s.InMbps).DefaultIfEmpty().Max();
            Assert.True(peakOutA > 0 && peakInB > 0, $"the status lines show the bulk transfer (A out {peakOutA} Mbit/s, B in {peakInB} Mbit/s)");

            // A stops on SIGTERM: its detach (link area, then B's vector 0) takes B's link down.
            // Then B stops. Each prints its final summary line.
            int fromB = b.Lines.Count;
            var stoppedA = await CommandAsync(a, "stop", "stopped ", ShutdownTimeout, budget.Token);
            Assert.True(stoppedA["rc"] == "0", $"{a.Name}: {Describe(stoppedA)}\n{Program(a)}");
            string downB = await VfioGuest.WaitForProgramLineAsync(b, l => l.Contains(": down (was Up): ", StringComparison.Ordinal), ShutdownTimeout, fromB, budget.Token);
            var downAt = clock.Elapsed;
            var stoppedB = await CommandAsync(b, "stop", "stopped ", ShutdownTimeout, budget.Token);
            Assert.True(stoppedB["rc"] == "0", $"{b.Name}: {Describe(stoppedB)}\n{Program(b)}");
            var exitCodes = await Task.WhenAll(
                VfioGuest.WaitForProgramExitAsync(a, ShutdownTimeout, budget.Token),
                VfioGuest.WaitForProgramExitAsync(b, ShutdownTimeout, budget.Token));
            Assert.Equal([0, 0], exitCodes);
            var summaryA = Summary(a);
            var summaryB = Summary(b);
            Assert.True(summaryA.TxBytes >= BulkKiB * 1024L && summaryB.RxBytes >= BulkKiB * 1024L,
                $"the link carried the bulk data: A {summaryA.Text}; B {summaryB.Text}");
            Assert.Equal((1, 0), (summaryA.Ups, summaryA.Downs));
            Assert.Equal((1, 1), (summaryB.Ups, summaryB.Downs));
            Assert.Equal(0, summaryA.RxDropped + summaryB.RxDropped);
            var stopDone = clock.Elapsed;

            await Task.WhenAll(a.SendLineAsync("poweroff"), b.SendLineAsync("poweroff"));
            foreach (var vm in new[] { a, b })
            {
                Assert.True(await vm.WaitForExitAsync(ShutdownTimeout, budget.Token), $"{vm.Name} (pid {vm.Pid}) powers off");
                Assert.Equal(0, vm.ExitCode);
                var exit = await vm.WaitForMarkerAsync(GuestMarkers.Exit, TimeSpan.Zero);
                Assert.Equal("0", GuestMarkers.Fields(exit.From(GuestMarkers.Exit)!)["rc"]);
            }

            Assert.True(server.WaitForPeerCount(0, TimeSpan.FromSeconds(10)), "the server saw both guests leave");
            foreach (var (vm, r, up) in new[] { (a, ready[0], linkUp[0]), (b, ready[1], linkUp[1]) })
            {
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"times {vm.Name} (since QEMU started): vfio-pci bound {r.At.TotalSeconds:0.00} s (bdf {r.Bdf}, IVPosition {r.IvPosition}), link up {up.At.TotalSeconds:0.00} s; log {vm.LogPath}"));
            }

            output.WriteLine($"ping A -> B: {Describe(ping)}");
            output.WriteLine($"bulk A -> B: {Describe(sent)}; B: {Describe(received)}");
            output.WriteLine($"ping -s {BigPingSize} B -> A: {Describe(bigPing)}");
            output.WriteLine($"B after A stopped: {downB} ({(downAt - trafficDone).TotalSeconds:0.00} s after the stop was sent)");
            output.WriteLine($"link A: {summaryA.Text}");
            output.WriteLine($"link B: {summaryB.Text}");
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"times: NativeAOT publish {program.PublishDuration.TotalSeconds:0.0} s (fixture); test {clock.Elapsed.TotalSeconds:0.0} s = " +
                $"initramfs {setupDone.TotalSeconds:0.0} s + boots to link up {(upDone - setupDone).TotalSeconds:0.0} s + ping {(pingDone - upDone).TotalSeconds:0.0} s + " +
                $"bulk {(bulkDone - pingDone).TotalSeconds:0.0} s + big ping {(trafficDone - bulkDone).TotalSeconds:0.0} s + stop {(stopDone - trafficDone).TotalSeconds:0.0} s + " +
                $"power-off {(clock.Elapsed - stopDone).TotalSeconds:0.0} s; {BulkKiB} KiB in {bulkSeconds:0.00} s = {BulkKiB * 1024 * 8 / Math.Max(bulkSeconds, 0.01) / 1e6:0.0} Mbit/s " +
                $"(status lines: A out {peakOutA:0.0} Mbit/s, B in {peakInB:0.0} Mbit/s at peak)"));
        }
        finally
        {
            // The guests were disposed (killed by pid if still running) when their scope ended,
            // the server too.
            work.Delete(recursive: true);
        }

        foreach (int pid in pids)
        {
            Assert.False(Directory.Exists($"/proc/{pid}"), $"QEMU pid {pid} is gone after the guests were disposed");
        }
    }

    private static GuestVmOptions Options(string name, string initramfs, string socket, string address) =>
        VfioGuest.Options(name, initramfs, socket, Vectors) with
        {
            KernelArguments = [$"pcivirtio.link.addr={address}/24", "pcivirtio.link.wait=180"],
            GuestDeadline = TimeSpan.FromMinutes(4),
        };

    /// <summary>
    /// The host's libssl.so.3 (with libcrypto.so.3, which <c>ldd</c> lists) for the guest's
    /// /lib/x86_64-linux-gnu: .NET's RandomNumberGenerator is OpenSSL's on Linux, and a NativeAOT
    /// program loads libssl with dlopen, so <c>ldd</c> of the program does not name it. Without
    /// it pcivirtio stops at its first random number ("No usable version of libssl was found").
    /// </summary>
    private static GuestFile OpenSsl()
    {
        const string GuestPath = "/lib/x86_64-linux-gnu/libssl.so.3";
        string? host = new[] { "/lib/x86_64-linux-gnu/libssl.so.3", "/usr/lib/x86_64-linux-gnu/libssl.so.3", "/usr/lib64/libssl.so.3" }
            .FirstOrDefault(File.Exists);
        return host is not null
            ? GuestFile.Program(host, GuestPath)
            : throw new FileNotFoundException("libssl.so.3 (Debian package libssl3) is not on this host; pcivirtio needs it in the guest", GuestPath);
    }

    /// <summary>Waits for pcivirtio's first "link Up" status line (its exit or an error line of
    /// the script fails at once).</summary>
    private static async Task<GuestLine> WaitForLinkUpAsync(GuestVm vm, CancellationToken cancellationToken)
    {
        var line = await vm.WaitForLineAsync(
            t => ProgramText(t) is { } p && (p.StartsWith("link Up: out ", StringComparison.Ordinal) || p.StartsWith(Marker + "error ", StringComparison.Ordinal)
                                             || p.StartsWith(Marker + "exited ", StringComparison.Ordinal)),
            LinkUpTimeout, 0, "pcivirtio's \"link Up\" status line", cancellationToken);
        string text = ProgramText(line.Text)!;
        return text.StartsWith("link Up: ", StringComparison.Ordinal)
            ? line
            : throw new GuestVmException($"{vm.Name}: {text}\n{Program(vm)}");
    }

    /// <summary>Sends a command to link-guest.sh and returns the fields of its reply.</summary>
    private static async Task<IReadOnlyDictionary<string, string>> CommandAsync(GuestVm vm, string command, string reply, TimeSpan timeout, CancellationToken cancellationToken)
    {
        int from = vm.Lines.Count;
        await vm.SendLineAsync(command);
        return await ReplyAsync(vm, reply, timeout, from, cancellationToken);
    }

    private static async Task<IReadOnlyDictionary<string, string>> ReplyAsync(GuestVm vm, string reply, TimeSpan timeout, int from, CancellationToken cancellationToken)
    {
        string text = await VfioGuest.WaitForProgramLineAsync(vm,
            l => l.StartsWith(Marker + reply, StringComparison.Ordinal) || l.StartsWith(Marker + "error ", StringComparison.Ordinal),
            timeout, from, cancellationToken);
        return text.StartsWith(Marker + "error ", StringComparison.Ordinal)
            ? throw new GuestVmException($"{vm.Name}: {text}\n{Program(vm)}")
            : GuestMarkers.Fields(text);
    }

    /// <summary>A status line of a link not up, the hardware's "link down" or the link's "down (was ...)".</summary>
    private static bool IsLinkDown(string programLine) =>
        StateLine().IsMatch(programLine)
        || programLine.Contains(": link down (", StringComparison.Ordinal)
        || programLine.Contains(": down (was ", StringComparison.Ordinal);

    private static string? ProgramText(string consoleText)
    {
        int at = consoleText.IndexOf(VfioGuest.ProgramLinePrefix, StringComparison.Ordinal);
        return at < 0 ? null : consoleText[(at + VfioGuest.ProgramLinePrefix.Length)..];
    }

    /// <summary>pcivirtio's per-second status lines ("link Up: out X Mbit/s N frames/s, in Y Mbit/s M frames/s").</summary>
    private static IEnumerable<(double OutMbps, double InMbps)> StatusLines(GuestVm vm) =>
        VfioGuest.ProgramLines(vm).Select(l => StatusLine().Match(l)).Where(m => m.Success).Select(m =>
            (double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture)));

    /// <summary>pcivirtio's last line: "link STATE: tx N frames/B B (D dropped, S stalls), rx ..., link up Ux down Dx".</summary>
    private static (long TxBytes, long RxBytes, long RxDropped, int Ups, int Downs, string Text) Summary(GuestVm vm)
    {
        string? line = VfioGuest.ProgramLines(vm).LastOrDefault(l => SummaryLine().IsMatch(l));
        Assert.True(line is not null, $"{vm.Name}: pcivirtio printed its summary\n{Program(vm)}");
        var m = SummaryLine().Match(line);
        long N(int group) => long.Parse(m.Groups[group].Value, CultureInfo.InvariantCulture);
        return (N(1), N(2), N(3), (int)N(4), (int)N(5), line);
    }

    private static long Number(IReadOnlyDictionary<string, string> fields, string key) =>
        fields.TryGetValue(key, out string? text) && long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out long n)
            ? n
            : throw new KeyNotFoundException($"no number {key}= in {Describe(fields)}");

    private static string Describe(IReadOnlyDictionary<string, string> fields) => string.Join(' ', fields.Select(f => $"{f.Key}={f.Value}"));

    private static string Program(GuestVm vm) =>
        $"{vm.Name} program output so far:\n  {string.Join("\n  ", VfioGuest.ProgramLines(vm))}";

    [GeneratedRegex(@"^link (Down|Offered|Ready)\b")]
    private static partial Regex StateLine();

    [GeneratedRegex(@"^link Up: out ([0-9.]+) Mbit/s [0-9]+ frames/s, in ([0-9.]+) Mbit/s")]
    private static partial Regex StatusLine();

    [GeneratedRegex(@"^link \w+: tx [0-9]+ frames/([0-9]+) B \([0-9]+ dropped, [0-9]+ stalls\), rx [0-9]+ frames/([0-9]+) B \(([0-9]+) dropped, .* link up ([0-9]+)x down ([0-9]+)x$")]
    private static partial Regex SummaryLine();
}
