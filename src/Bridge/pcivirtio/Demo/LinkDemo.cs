using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using PciVirtio.Bridge.Hardware;
using PciVirtio.Bridge.Link;
using PciVirtio.HwSim.Device;
using PciVirtio.Host.LinkEnd;
using PciVirtio.Mmio.EventLoop;
using PciVirtio.VhostCore.Net;

namespace PciVirtio.Host.Demo;

/// <summary>
/// The README's main job: two hosts linked by an emulated NTB (hw-sim, in this process),
/// each end with its own link protocol instance. As root, each end is a TAP in a network
/// namespace of its own (created here and removed at the end), and the demo pings across
/// and runs iperf3 between them while showing the link's live throughput; otherwise the two
/// ends exchange numbered frames through the in-process packet API and every frame is checked.
/// </summary>
internal sealed class LinkDemo(TextWriter output, TimeSpan duration, bool forcePackets)
{
    private const ulong WindowSize = 16 << 20;

    public int Run()
    {
        using var device = HwSimDevice.Create(windows: 1, windowSize: WindowSize);
        bool root = Tmds.Linux.LibC.geteuid() == 0;
        if (!forcePackets && root && File.Exists("/dev/net/tun") && Which("ip") is not null)
        {
            return RunWithTaps(device);
        }

        if (!forcePackets)
        {
            output.WriteLine("(not root, or no /dev/net/tun or ip: running the packet-API demo; as root each end becomes a TAP in its own namespace)");
        }

        return RunWithPackets(device);
    }

    private int RunWithTaps(HwSimDevice device)
    {
        string tag = Environment.ProcessId.ToString(CultureInfo.InvariantCulture);
        string nsA = $"pcv-demo-a-{tag}", nsB = $"pcv-demo-b-{tag}";
        string tapA = $"pvda{tag}", tapB = $"pvdb{tag}";
        tapA = tapA[..Math.Min(15, tapA.Length)];
        tapB = tapB[..Math.Min(15, tapB.Length)];
        var started = new List<Process>();
        TapLinkEnd? a = null, b = null;
        try
        {
            Ip($"netns add {nsA}");
            Ip($"netns add {nsB}");
            a = TapLinkEnd.Start(new SimNtbHardware(device.OpenPort(0)), tapA, 9000, new LinkOptions { Name = "a" });
            b = TapLinkEnd.Start(new SimNtbHardware(device.OpenPort(1)), tapB, 9000, new LinkOptions { Name = "b" });
            foreach (var (ns, tap, ip) in new[] { (nsA, tapA, "10.99.0.1/24"), (nsB, tapB, "10.99.0.2/24") })
            {
                Ip($"link set {tap} netns {ns}");
                Ip($"-n {ns} link set lo up");
                Ip($"-n {ns} addr add {ip} dev {tap}");
                Ip($"-n {ns} link set {tap} up");
            }

            output.WriteLine($"hw-sim NTB with a {WindowSize >> 20} MiB window each way; host A = namespace {nsA} ({tapA}, 10.99.0.1), host B = namespace {nsB} ({tapB}, 10.99.0.2), MTU 9000");
            // Up in a snapshot, the link may still go down before its parameters are read (a
            // renegotiation at start): wait for it again then, within the same time.
            var upBy = Stopwatch.StartNew();
            LinkParameters? agreed = null;
            while (agreed is null && WaitUp(a, b, TimeSpan.FromSeconds(10) - upBy.Elapsed))
            {
                agreed = a.Invoke(() => a.Link.Agreed);
            }

            if (agreed is null)
            {
                output.WriteLine($"the link did not come up: {a.Snapshot().Problem} / {b.Snapshot().Problem}");
                return 1;
            }

            output.WriteLine($"link up: {agreed.QueuePairs} queue pair, rings of {agreed.QueueSize}, {agreed.BufferSize}-byte buffer slots, features {agreed.Features}");
            var ping = Exec("ip", $"netns exec {nsA} ping -c 3 -i 0.2 -W 2 10.99.0.2", TimeSpan.FromSeconds(10));
            output.WriteLine(ping.Split('\n').FirstOrDefault(l => l.Contains("packets transmitted", StringComparison.Ordinal)) ?? ping);
            var before = a.Hardware.RemoteAccesses;
            var beforeB = b.Hardware.RemoteAccesses;
            var first = (a.Snapshot(), b.Snapshot());
            var clock = Stopwatch.StartNew();
            if (Which("iperf3") is not null)
            {
                var server = StartIn(nsB, "iperf3 -s -1", started);
                Thread.Sleep(300);
                int secs = (int)Math.Max(1, duration.TotalSeconds);
                var client = StartIn(nsA, $"iperf3 -c 10.99.0.2 -t {secs} -f g", started);
                output.WriteLine($"iperf3 TCP from A to B for {secs} s:");
                ShowLive(a, () => client.HasExited, duration + TimeSpan.FromSeconds(10));
                client.WaitForExit(10_000);
                string report = client.StandardOutput.ReadToEnd();
                foreach (string line in report.Split('\n').Where(l => l.Contains("sender", StringComparison.Ordinal) || l.Contains("receiver", StringComparison.Ordinal)))
                {
                    output.WriteLine("  iperf3: " + line.Trim());
                }

                server.WaitForExit(5_000);
            }
            else
            {
                output.WriteLine("iperf3 is not installed: pinging for the duration instead");
                var flood = StartIn(nsA, $"ping -q -i 0.01 -w {(int)duration.TotalSeconds} 10.99.0.2", started);
                ShowLive(a, () => flood.HasExited, duration + TimeSpan.FromSeconds(5));
            }

            var (endA, endB) = (a.Snapshot(), b.Snapshot());
            double seconds = clock.Elapsed.TotalSeconds;
            long bytes = endA.Stats.TxBytes - first.Item1.Stats.TxBytes;
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"summary: A sent {endA.Stats.TxFrames - first.Item1.Stats.TxFrames} frames, {bytes / 1e6:0.0} MB ({bytes * 8 / seconds / 1e9:0.00} Gbit/s over {seconds:0.0} s); B received {endB.Stats.RxFrames - first.Item2.Stats.RxFrames} frames"));
            output.WriteLine($"remote reads on the data path: A {a.Hardware.RemoteAccesses.Since(before).Reads}, B {b.Hardware.RemoteAccesses.Since(beforeB).Reads} (every ring part and payload lives where it is read)");
            output.WriteLine($"A: {endA.Stats}");
            output.WriteLine($"B: {endB.Stats}");
            return 0;
        }
        finally
        {
            foreach (var p in started)
            {
                if (!p.HasExited)
                {
                    p.Kill();
                }

                p.Dispose();
            }

            a?.Dispose();
            b?.Dispose();
            TryIp($"netns delete {nsA}");
            TryIp($"netns delete {nsB}");
        }
    }

    private int RunWithPackets(HwSimDevice device)
    {
        using var loopA = new EpollEventLoop("demo-a");
        using var loopB = new EpollEventLoop("demo-b");
        var sender = new PacketEndpoint();
        var receiver = new PacketEndpoint();
        long received = 0, bytes = 0, bad = 0;
        int expected = 0;
        receiver.FrameArrived = (_, frame) =>
        {
            int seq = BinaryPrimitives.ReadInt32LittleEndian(frame[(VirtioNetHeader.Size + 14)..]);
            if (seq != expected || frame[^1] != (byte)seq)
            {
                bad++;
            }

            expected = seq + 1;
            received++;
            bytes += frame.Length - VirtioNetHeader.Size;
            return true;
        };
        using var hwA = new SimNtbHardware(device.OpenPort(0));
        using var hwB = new SimNtbHardware(device.OpenPort(1));
        using var linkA = new NtbLink(hwA, sender, loopA, new LinkOptions { Name = "a" });
        using var linkB = new NtbLink(hwB, receiver, loopB, new LinkOptions { Name = "b" });
        loopA.Start("demo-a");
        loopB.Start("demo-b");
        loopA.Post(linkA.Start);
        loopB.Post(linkB.Start);
        var frame = new byte[VirtioNetHeader.Size + 1500];
        frame.AsSpan(VirtioNetHeader.Size, 6).Fill(0xff);
        int seq = 0;
        bool sending = true;
        void Pump()
        {
            if (!sending)
            {
                return;
            }

            for (int i = 0; i < 64; i++)
            {
                BinaryPrimitives.WriteInt32LittleEndian(frame.AsSpan(VirtioNetHeader.Size + 14), seq);
                frame[^1] = (byte)seq;
                if (sender.Send(0, frame) != ReceiveResult.Delivered)
                {
                    break;
                }

                seq++;
            }

            sender.Flush(0);
            loopA.Post(Pump);
        }

        var clock = Stopwatch.StartNew();
        while (linkA.State != LinkState.Up || linkB.State != LinkState.Up)
        {
            if (clock.Elapsed > TimeSpan.FromSeconds(10))
            {
                output.WriteLine($"the link did not come up: {linkA.Problem} / {linkB.Problem}");
                return 1;
            }

            Thread.Sleep(20);
        }

        output.WriteLine("link up over hw-sim; host A sends numbered 1500-byte frames through the packet API, host B checks each one");
        loopA.Post(Pump);
        long lastBytes = 0;
        clock.Restart();
        while (clock.Elapsed < duration)
        {
            Thread.Sleep(1000);
            long now = Interlocked.Read(ref bytes);
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {(now - lastBytes) * 8 / 1e9:0.00} Gbit/s, {Interlocked.Read(ref received)} frames so far"));
            lastBytes = now;
        }

        loopA.Post(() => sending = false);
        Thread.Sleep(200);
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"summary: {received} frames ({bytes / 1e6:0.0} MB) received in order, {bad} bad; {bytes * 8 / clock.Elapsed.TotalSeconds / 1e9:0.00} Gbit/s; remote reads A {hwA.RemoteAccesses.Reads}, B {hwB.RemoteAccesses.Reads}"));
        loopA.Stop();
        loopB.Stop();
        return bad == 0 && received > 0 ? 0 : 1;
    }

    private static bool WaitUp(TapLinkEnd a, TapLinkEnd b, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            if (a.Snapshot().State == LinkState.Up && b.Snapshot().State == LinkState.Up)
            {
                return true;
            }

            Thread.Sleep(20);
        }

        return false;
    }

    private void ShowLive(TapLinkEnd end, Func<bool> done, TimeSpan limit)
    {
        var clock = Stopwatch.StartNew();
        var last = end.Snapshot();
        var lastAt = clock.Elapsed;
        while (!done() && clock.Elapsed < limit)
        {
            Thread.Sleep(1000);
            var now = end.Snapshot();
            var at = clock.Elapsed;
            output.WriteLine("  " + LinkCommand.Describe(now, last, (at - lastAt).TotalSeconds));
            last = now;
            lastAt = at;
        }
    }

    private static Process StartIn(string ns, string command, List<Process> started)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string part in $"netns exec {ns} {command}".Split(' '))
        {
            psi.ArgumentList.Add(part);
        }

        var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {command}");
        started.Add(p);
        return p;
    }

    private static string Exec(string program, string args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string part in args.Split(' '))
        {
            psi.ArgumentList.Add(part);
        }

        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {program}");
        if (!p.WaitForExit(timeout))
        {
            p.Kill();
        }

        return p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
    }

    private static void Ip(string args)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardError = true, UseShellExecute = false };
        foreach (string part in args.Split(' '))
        {
            psi.ArgumentList.Add(part);
        }

        using var p = Process.Start(psi) ?? throw new InvalidOperationException("could not run ip");
        string error = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0)
        {
            throw new InvalidOperationException($"ip {args}: {error.Trim()}");
        }
    }

    private static void TryIp(string args)
    {
        try
        {
            Ip(args);
        }
        catch (InvalidOperationException)
        {
            // already gone
        }
    }

    private static string? Which(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':').Select(d => Path.Combine(d, program)).FirstOrDefault(File.Exists);
}
