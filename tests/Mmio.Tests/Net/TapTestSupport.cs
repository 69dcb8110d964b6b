using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Net;
using Tmds.Linux;

namespace PciVirtio.Mmio.Tests.Net;

/// <summary>Whether this machine lets the tests create TAP interfaces, and if not, why.</summary>
internal static class TapEnvironment
{
    private static readonly Lazy<string?> TapReason = new(ProbeTap);
    private static readonly Lazy<string?> NamespaceReason = new(ProbeNamespaces);

    /// <summary>Null when TAPs can be created; otherwise the reason the tests skip.</summary>
    public static string? SkipReason => TapReason.Value;

    /// <summary>Null when the round-trip tests can also create network namespaces.</summary>
    public static string? NamespaceSkipReason => NamespaceReason.Value;

    private static string? ProbeTap()
    {
        if (!OperatingSystem.IsLinux())
        {
            return "TAP interfaces are Linux-only";
        }

        if (!File.Exists(TapDevice.ClonePath))
        {
            return $"{TapDevice.ClonePath} is missing (no tun driver)";
        }

        if (!Environment.IsPrivilegedProcess)
        {
            return "creating TAP interfaces needs root (CAP_NET_ADMIN)";
        }

        try
        {
            using var probe = TapDevice.Create(new TapOptions());
        }
        catch (NativeCallException e)
        {
            return $"this machine refuses TAP interfaces: {e.Message}";
        }

        return null;
    }

    private static string? ProbeNamespaces()
    {
        if (SkipReason is { } reason)
        {
            return reason;
        }

        try
        {
            Command.Run("ip", "-V");
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            return $"the ip tool (iproute2) is not usable: {e.Message}";
        }

        return null;
    }
}

/// <summary>A fact that needs a TAP interface: skipped, with the reason, when there is none.</summary>
public sealed class TapFactAttribute : FactAttribute
{
    public TapFactAttribute()
    {
        Skip = TapEnvironment.SkipReason;
    }
}

/// <summary>A fact that moves a TAP into a network namespace of its own (ip netns).</summary>
public sealed class NetnsFactAttribute : FactAttribute
{
    public NetnsFactAttribute()
    {
        Skip = TapEnvironment.NamespaceSkipReason;
    }
}

/// <summary>Runs a program with a time limit; throws with its output when it fails.</summary>
internal static class Command
{
    public static readonly TimeSpan Limit = TimeSpan.FromSeconds(10);

    public static string Run(string program, params string[] arguments)
    {
        var (code, output, error) = TryRun(program, arguments);
        return code == 0
            ? output
            : throw new InvalidOperationException($"{program} {string.Join(' ', arguments)} exited with {code}: {error.Trim()}");
    }

    public static (int Code, string Output, string Error) TryRun(string program, params string[] arguments)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using Process process = Process.Start(start) ?? throw new InvalidOperationException($"{program} did not start");
        Task<string> output = process.StandardOutput.ReadToEndAsync();
        Task<string> error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(Limit))
        {
            process.Kill();
            process.WaitForExit(Limit);
            throw new TimeoutException($"{program} {string.Join(' ', arguments)} did not finish within {Limit}");
        }

        process.WaitForExit();
        return (process.ExitCode, output.Result, error.Result);
    }
}

/// <summary>Names no other test (or run) uses: interfaces "pvt" + 8 hex digits (11 bytes,
/// within IFNAMSIZ), namespaces "pvtap-" + 8 hex digits.</summary>
internal static class UniqueName
{
    public static string Interface() => $"pvt{Random.Shared.Next():x8}";

    public static string Namespace() => $"pvtap-{Random.Shared.Next():x8}";
}

/// <summary>/sys/class/net/NAME/...: the kernel's own view of an interface in our namespace.</summary>
internal static class SysNet
{
    public static string Path(string name, string attribute = "") => System.IO.Path.Combine("/sys/class/net", name, attribute);

    public static bool Exists(string name) => Directory.Exists(Path(name));

    public static string Read(string name, string attribute) => File.ReadAllText(Path(name, attribute)).Trim();

    public static int ReadInt(string name, string attribute) =>
        (int)Convert.ToUInt32(Read(name, attribute), Read(name, attribute).StartsWith("0x", StringComparison.Ordinal) ? 16 : 10);

    /// <summary>Waits (bounded) until the interface has gone from sysfs.</summary>
    public static bool WaitGone(string name, TimeSpan limit) => SpinWait.SpinUntil(() => !Exists(name), limit);
}

/// <summary>
/// A network namespace of the test's own, deleted on Dispose whatever happened. IPv6 is off in
/// it so no router solicitation or MLD report lands on the queues unasked: every frame we read
/// is an answer to one we wrote.
/// </summary>
internal sealed class TestNamespace : IDisposable
{
    private TestNamespace(string name)
    {
        Name = name;
    }

    public string Name { get; }

    public static TestNamespace Create()
    {
        var ns = new TestNamespace(UniqueName.Namespace());
        Command.Run("ip", "netns", "add", ns.Name);
        try
        {
            // Best effort: a kernel without IPv6 has nothing to turn off.
            Command.TryRun("ip", "netns", "exec", ns.Name, "sysctl", "-q", "-w",
                "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1");
            return ns;
        }
        catch
        {
            ns.Dispose();
            throw;
        }
    }

    /// <summary>Runs <c>ip -n NS ...</c>.</summary>
    public string Ip(params string[] arguments) => Command.Run("ip", ["-n", Name, .. arguments]);

    public void Dispose() => Command.TryRun("ip", "netns", "del", Name);
}

/// <summary>
/// A TAP whose interface lives in a <see cref="TestNamespace"/> with address
/// <see cref="TapAddress"/>/24 and is up there, while its queue fds stay with us: we play the
/// peer at <see cref="PeerAddress"/> with <see cref="PeerMac"/>, the guest of a vhost-user
/// backend. Only that namespace ever sees our frames.
/// </summary>
internal sealed class NamespacedTap : IDisposable
{
    public static readonly IPAddress TapAddress = IPAddress.Parse("10.213.0.1");
    public static readonly IPAddress PeerAddress = IPAddress.Parse("10.213.0.2");
    public static readonly byte[] PeerMac = [0x02, 0x50, 0x56, 0x00, 0x00, 0x02];

    private NamespacedTap(TapDevice tap, TestNamespace ns)
    {
        Tap = tap;
        Namespace = ns;
    }

    public TapDevice Tap { get; }

    public TestNamespace Namespace { get; }

    public TapQueue Queue => Tap.Queues[0];

    public static NamespacedTap Create(TapOptions? options = null)
    {
        var tap = TapDevice.Create(options ?? new TapOptions { Name = UniqueName.Interface() });
        TestNamespace? ns = null;
        try
        {
            ns = TestNamespace.Create();
            Command.Run("ip", "link", "set", tap.Name, "netns", ns.Name);
            ns.Ip("addr", "add", $"{TapAddress}/24", "dev", tap.Name);
            ns.Ip("link", "set", tap.Name, "up");
            return new NamespacedTap(tap, ns);
        }
        catch
        {
            tap.Dispose();
            ns?.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        try
        {
            Tap.Dispose();
        }
        finally
        {
            Namespace.Dispose();
        }
    }
}

/// <summary>Builds and recognises the few frames the round trips use (all allocation-free).</summary>
internal static class Frames
{
    public const int EthernetHeader = 14;
    public const int ArpLength = EthernetHeader + 28;
    public const ushort EtherTypeIpv4 = 0x0800;
    public const ushort EtherTypeArp = 0x0806;

    public static ReadOnlySpan<byte> Broadcast => [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

    /// <summary>A zeroed vnet header (no checksum or GSO work) then an ARP request from the
    /// peer asking who has <paramref name="target"/>. Returns the length written.</summary>
    public static int ArpRequest(Span<byte> frame, int vnetHeaderSize, IPAddress target) =>
        Arp(frame, vnetHeaderSize, operation: 1, Broadcast, target, default);

    /// <summary>The peer's answer to the kernel asking who has the peer address.</summary>
    public static int ArpReply(Span<byte> frame, int vnetHeaderSize, ReadOnlySpan<byte> askerMac, IPAddress asker) =>
        Arp(frame, vnetHeaderSize, operation: 2, askerMac, asker, askerMac);

    /// <summary>An ICMP echo request from the peer to <see cref="NamespacedTap.TapAddress"/>,
    /// with <paramref name="payloadLength"/> bytes of a pattern derived from <paramref name="sequence"/>.</summary>
    public static int EchoRequest(Span<byte> frame, int vnetHeaderSize, ReadOnlySpan<byte> tapMac, ushort identifier, ushort sequence, int payloadLength)
    {
        frame[..vnetHeaderSize].Clear();
        Span<byte> eth = frame[vnetHeaderSize..];
        tapMac.CopyTo(eth);
        NamespacedTap.PeerMac.CopyTo(eth[6..]);
        BinaryPrimitives.WriteUInt16BigEndian(eth[12..], EtherTypeIpv4);

        Span<byte> ip = eth[EthernetHeader..];
        int ipLength = 20 + 8 + payloadLength;
        ip[..20].Clear();
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)ipLength);
        BinaryPrimitives.WriteUInt16BigEndian(ip[4..], sequence);
        ip[8] = 64;
        ip[9] = 1; // ICMP
        NamespacedTap.PeerAddress.TryWriteBytes(ip[12..], out _);
        NamespacedTap.TapAddress.TryWriteBytes(ip[16..], out _);
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], Checksum(ip[..20]));

        Span<byte> icmp = ip[20..ipLength];
        icmp.Clear();
        icmp[0] = 8; // echo request
        BinaryPrimitives.WriteUInt16BigEndian(icmp[4..], identifier);
        BinaryPrimitives.WriteUInt16BigEndian(icmp[6..], sequence);
        for (int i = 0; i < payloadLength; i++)
        {
            icmp[8 + i] = (byte)(sequence + i);
        }

        BinaryPrimitives.WriteUInt16BigEndian(icmp[2..], Checksum(icmp));
        return vnetHeaderSize + EthernetHeader + ipLength;
    }

    /// <summary>Whether <paramref name="frame"/> is the kernel's ARP reply telling the peer
    /// where <see cref="NamespacedTap.TapAddress"/> is.</summary>
    public static bool IsArpReplyToPeer(ReadOnlySpan<byte> frame, int vnetHeaderSize)
    {
        if (frame.Length < vnetHeaderSize + ArpLength)
        {
            return false;
        }

        ReadOnlySpan<byte> eth = frame[vnetHeaderSize..];
        ReadOnlySpan<byte> arp = eth[EthernetHeader..];
        return eth[..6].SequenceEqual(NamespacedTap.PeerMac)
            && BinaryPrimitives.ReadUInt16BigEndian(eth[12..]) == EtherTypeArp
            && BinaryPrimitives.ReadUInt16BigEndian(arp[6..]) == 2
            && Is(arp[14..18], NamespacedTap.TapAddress)
            && arp[18..24].SequenceEqual(NamespacedTap.PeerMac)
            && Is(arp[24..28], NamespacedTap.PeerAddress);
    }

    /// <summary>Whether <paramref name="frame"/> is the kernel asking who has the peer address.</summary>
    public static bool IsArpRequestForPeer(ReadOnlySpan<byte> frame, int vnetHeaderSize)
    {
        if (frame.Length < vnetHeaderSize + ArpLength)
        {
            return false;
        }

        ReadOnlySpan<byte> arp = frame[(vnetHeaderSize + EthernetHeader)..];
        return BinaryPrimitives.ReadUInt16BigEndian(frame[(vnetHeaderSize + 12)..]) == EtherTypeArp
            && BinaryPrimitives.ReadUInt16BigEndian(arp[6..]) == 1
            && Is(arp[24..28], NamespacedTap.PeerAddress);
    }

    /// <summary>Whether <paramref name="frame"/> is the echo reply to
    /// <paramref name="request"/> (same identifier, sequence and payload, addresses swapped,
    /// valid IP and ICMP checksums).</summary>
    public static bool IsEchoReplyTo(ReadOnlySpan<byte> frame, ReadOnlySpan<byte> request, int vnetHeaderSize)
    {
        int ipStart = vnetHeaderSize + EthernetHeader;
        if (frame.Length < ipStart + 28 || frame.Length != request.Length
            || BinaryPrimitives.ReadUInt16BigEndian(frame[(vnetHeaderSize + 12)..]) != EtherTypeIpv4)
        {
            return false;
        }

        ReadOnlySpan<byte> ip = frame[ipStart..];
        ReadOnlySpan<byte> icmp = ip[20..];
        ReadOnlySpan<byte> sent = request[(ipStart + 20)..];
        return ip[9] == 1
            && Checksum(ip[..20]) == 0
            && Is(ip[12..16], NamespacedTap.TapAddress)
            && Is(ip[16..20], NamespacedTap.PeerAddress)
            && icmp[0] == 0
            && Checksum(icmp) == 0
            && icmp[4..8].SequenceEqual(sent[4..8])
            && icmp[8..].SequenceEqual(sent[8..]);
    }

    /// <summary>The Internet checksum (RFC 1071); 0 over data that carries a valid one.</summary>
    public static ushort Checksum(ReadOnlySpan<byte> data)
    {
        uint sum = 0;
        for (int i = 0; i + 1 < data.Length; i += 2)
        {
            sum += BinaryPrimitives.ReadUInt16BigEndian(data[i..]);
        }

        if ((data.Length & 1) != 0)
        {
            sum += (uint)data[^1] << 8;
        }

        while (sum > 0xffff)
        {
            sum = (sum & 0xffff) + (sum >> 16);
        }

        return (ushort)~sum;
    }

    private static int Arp(Span<byte> frame, int vnetHeaderSize, ushort operation, ReadOnlySpan<byte> destination, IPAddress target, ReadOnlySpan<byte> targetMac)
    {
        frame[..vnetHeaderSize].Clear();
        Span<byte> eth = frame[vnetHeaderSize..];
        destination.CopyTo(eth);
        NamespacedTap.PeerMac.CopyTo(eth[6..]);
        BinaryPrimitives.WriteUInt16BigEndian(eth[12..], EtherTypeArp);
        Span<byte> arp = eth[EthernetHeader..];
        BinaryPrimitives.WriteUInt16BigEndian(arp, 1);                 // Ethernet
        BinaryPrimitives.WriteUInt16BigEndian(arp[2..], EtherTypeIpv4); // IPv4
        arp[4] = 6;
        arp[5] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(arp[6..], operation);
        NamespacedTap.PeerMac.CopyTo(arp[8..]);
        NamespacedTap.PeerAddress.TryWriteBytes(arp[14..], out _);
        arp[18..24].Clear();
        targetMac.CopyTo(arp[18..]);
        target.TryWriteBytes(arp[24..], out _);
        return vnetHeaderSize + ArpLength;
    }

    private static bool Is(ReadOnlySpan<byte> bytes, IPAddress address)
    {
        Span<byte> expected = stackalloc byte[4];
        address.TryWriteBytes(expected, out _);
        return bytes.SequenceEqual(expected);
    }
}

/// <summary>Waits for frames on a queue: poll(2) on its fd, then a non-blocking Read, until a
/// frame matches or the bound passes.</summary>
internal static unsafe class QueueWait
{
    public static readonly TimeSpan Limit = TimeSpan.FromSeconds(5);

    public delegate bool FrameMatch(ReadOnlySpan<byte> frame);

    /// <summary>
    /// Reads frames from <paramref name="queues"/> into <paramref name="buffer"/> until one
    /// matches; returns its length (the frame is then at the start of the buffer). Frames that
    /// do not match are skipped, except the kernel asking for the peer's MAC, which is answered
    /// so its replies can leave.
    /// </summary>
    public static int ForFrame(IReadOnlyList<TapQueue> queues, int vnet, Span<byte> buffer, FrameMatch match, string what)
    {
        var clock = Stopwatch.StartNew();
        Span<byte> answer = stackalloc byte[vnet + Frames.ArpLength];
        while (true)
        {
            foreach (TapQueue queue in queues)
            {
                int n;
                while ((n = queue.Read(buffer)) > 0)
                {
                    ReadOnlySpan<byte> frame = buffer[..n];
                    if (match(frame))
                    {
                        return n;
                    }

                    if (Frames.IsArpRequestForPeer(frame, vnet))
                    {
                        ReadOnlySpan<byte> asker = frame.Slice(vnet + 6, 6);
                        var asking = new IPAddress(frame.Slice(vnet + Frames.EthernetHeader + 14, 4));
                        int length = Frames.ArpReply(answer, vnet, asker, asking);
                        Assert.Equal(TapWriteResult.Written, queue.Write(answer[..length], out _));
                    }
                }
            }

            TimeSpan left = Limit - clock.Elapsed;
            Assert.True(left > TimeSpan.Zero, $"no {what} within {Limit}");
            WaitReadable(queues, (int)Math.Ceiling(left.TotalMilliseconds));
        }
    }

    public static int ForFrame(TapQueue queue, int vnet, Span<byte> buffer, FrameMatch match, string what) =>
        ForFrame([queue], vnet, buffer, match, what);

    /// <summary>poll(2) for POLLIN on every queue, up to <paramref name="timeoutMs"/>.</summary>
    public static void WaitReadable(IReadOnlyList<TapQueue> queues, int timeoutMs)
    {
        pollfd* entries = stackalloc pollfd[queues.Count];
        for (int i = 0; i < queues.Count; i++)
        {
            entries[i].fd = queues[i].Handle.Value;
            entries[i].events = LibC.POLLIN;
        }

        int rc = LibC.poll(entries, (ulong_t)(ulong)queues.Count, timeoutMs);
        if (rc < 0 && LibC.errno != Errno.EINTR)
        {
            throw new NativeCallException("poll", LibC.errno);
        }
    }
}
