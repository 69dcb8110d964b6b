using System.Buffers.Binary;
using System.Runtime.InteropServices;
using PciVirtio.Mmio.EventLoop;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Sockets;
using PciVirtio.Mmio.VhostUser;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.VhostUser;

namespace PciVirtio.Mmio.Tests.VhostUser;

[Collection("fd-counting")]
public sealed class VhostUserBackendTests
{
    private const ulong Features = (1UL << 32) | VhostUserConstants.ProtocolFeaturesBit;

    private sealed class NullDevice : IVhostUserDevice
    {
        public ulong Features => VhostUserBackendTests.Features;

        public VhostUserProtocolFeatures ProtocolFeatures => VhostUserSession.SupportedProtocolFeatures;

        public int QueueCount => 2;

        public ulong QueueNum => 1;

        public bool TryGetConfig(uint offset, Span<byte> destination) => false;

        public bool TrySetConfig(uint offset, ReadOnlySpan<byte> source, uint flags) => false;

        public bool StartQueue(int index, in QueueState state, GuestMemory<RamAccessor> memory, SafeHandle? kick, SafeHandle? call) => true;

        public QueueState StopQueue(int index) => default;

        public bool UpdateMemory(int index, GuestMemory<RamAccessor> memory) => true;

        public void OnFeatures(ulong features)
        {
        }

        public void OnStatus(byte status)
        {
        }

        public void OnRarp(ReadOnlySpan<byte> mac)
        {
        }

        public bool OnMtu(uint mtu) => true;

        public void Reset()
        {
        }
    }

    private static Func<VhostUserSession> Sessions(string name) =>
        () => new VhostUserSession(name, new NullDevice(), SharedMemoryRegionMapper.Instance);

    private static string TempSocket() => System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"vu-{Guid.NewGuid():N}.sock");

    private static void Send(UnixStreamSocket s, VhostUserRequest request, ReadOnlySpan<byte> payload, params SafeHandle[] fds)
    {
        var message = new byte[VhostUserConstants.HeaderSize + payload.Length];
        new VhostUserHeader(request, VhostUserHeaderFlags.Version1, (uint)payload.Length).Write(message);
        payload.CopyTo(message.AsSpan(VhostUserConstants.HeaderSize));
        s.Send(message, fds);
    }

    private static ulong GetU64(UnixStreamSocket s, VhostUserRequest request)
    {
        Send(s, request, []);
        var reply = new byte[VhostUserConstants.HeaderSize + 8];
        Assert.True(s.ReceiveExactly(reply, [], 5000));
        var header = VhostUserHeader.Read(reply);
        Assert.Equal(request, header.Request);
        Assert.Equal(VhostUserHeaderFlags.Version1 | VhostUserHeaderFlags.Reply, header.Flags);
        Assert.Equal(8u, header.Size);
        return BinaryPrimitives.ReadUInt64LittleEndian(reply.AsSpan(VhostUserConstants.HeaderSize));
    }

    private static bool WaitUntil(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                return false;
            }

            Thread.Sleep(5);
        }

        return true;
    }

    private static int OpenFds()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        return Directory.GetFiles("/proc/self/fd").Length;
    }

    [Fact]
    public void Two_devices_on_one_loop_and_a_hostile_frontend_ends_only_its_own_session()
    {
        string pathA = TempSocket(), pathB = TempSocket();
        int fdsBefore = OpenFds();
        using (var loop = new EpollEventLoop("vu-test"))
        {
            loop.Start();
            using var a = VhostUserBackend.Listen(loop, pathA, Sessions("a"));
            using var b = VhostUserBackend.Listen(loop, pathB, Sessions("b"));
            using var clientA = UnixStreamSocket.Connect(pathA);
            using var clientB = UnixStreamSocket.Connect(pathB);
            Assert.Equal(Features, GetU64(clientA, VhostUserRequest.VHOST_USER_GET_FEATURES));
            Assert.Equal(Features, GetU64(clientB, VhostUserRequest.VHOST_USER_GET_FEATURES));

            // A memory table with a real memfd crosses the socket and gets mapped.
            using var memfd = MemFd.Create("vu-backend", 1 << 16);
            var table = new byte[VhostUserMemoryTable.WireSize(1)];
            new VhostUserMemoryTable([new VhostUserMemoryRegion(0, 1 << 16, 0x7000_0000, 0)]).Write(table);
            Send(clientA, VhostUserRequest.VHOST_USER_SET_MEM_TABLE, table, memfd);
            Assert.True(WaitUntil(() => a.Session?.Memory.Count == 1));

            // B sends garbage: its connection closes, A is untouched.
            Send(clientB, (VhostUserRequest)77, []);
            Assert.False(clientB.ReceiveExactly(new byte[1], [], 5000));
            Assert.True(WaitUntil(() => b.SessionsEnded == 1));
            Assert.Contains("unknown request 77", b.LastEndReason, StringComparison.Ordinal);
            Assert.Equal(Features, GetU64(clientA, VhostUserRequest.VHOST_USER_GET_FEATURES));
            Assert.Equal(0, a.SessionsEnded);

            // B takes a new frontend afterwards.
            using var clientB2 = UnixStreamSocket.Connect(pathB);
            Assert.Equal(Features, GetU64(clientB2, VhostUserRequest.VHOST_USER_GET_FEATURES));

            // A frontend that disappears ends its session and releases the mapping.
            clientA.Dispose();
            Assert.True(WaitUntil(() => a.SessionsEnded == 1));
            Assert.Equal("frontend closed the connection", a.LastEndReason);
            Assert.DoesNotContain(File.ReadAllLines("/proc/self/maps"), l => l.Contains("memfd:vu-backend", StringComparison.Ordinal));
        }

        UnixStreamSocket.Unlink(pathA);
        UnixStreamSocket.Unlink(pathB);
        Assert.Equal(fdsBefore, OpenFds());
    }

    [Fact]
    public void A_second_frontend_is_turned_away_while_one_is_connected()
    {
        string path = TempSocket();
        using var loop = new EpollEventLoop("vu-test");
        loop.Start();
        using var backend = VhostUserBackend.Listen(loop, path, Sessions("one"));
        using var first = UnixStreamSocket.Connect(path);
        Assert.Equal(Features, GetU64(first, VhostUserRequest.VHOST_USER_GET_FEATURES));
        using var second = UnixStreamSocket.Connect(path);
        Assert.False(second.ReceiveExactly(new byte[1], [], 5000));
        Assert.Equal(Features, GetU64(first, VhostUserRequest.VHOST_USER_GET_FEATURES));
        UnixStreamSocket.Unlink(path);
    }

    [Fact]
    public void Client_mode_connects_when_the_frontend_appears_and_reconnects_after_it_restarts()
    {
        string path = TempSocket();
        using var loop = new EpollEventLoop("vu-test");
        loop.Start();
        using var backend = VhostUserBackend.Connect(loop, path, Sessions("client"), TimeSpan.FromMilliseconds(20));
        Thread.Sleep(50); // the frontend is not there yet: the backend keeps retrying
        Assert.False(backend.IsConnected);

        for (int round = 0; round < 2; round++)
        {
            using var frontend = UnixStreamSocket.Listen(path, nonBlocking: false);
            Assert.True(frontend.WaitReadable(10_000), "the backend did not connect");
            using var connection = frontend.Accept()!;
            Assert.Equal(Features, GetU64(connection, VhostUserRequest.VHOST_USER_GET_FEATURES));
            Assert.True(WaitUntil(() => backend.IsConnected));

            // The frontend "restarts": its connection and listening socket go away.
            connection.Dispose();
            Assert.True(WaitUntil(() => backend.SessionsEnded == round + 1));
        }

        UnixStreamSocket.Unlink(path);
    }

    [Fact]
    public void A_header_announcing_a_huge_payload_ends_the_session_without_reading_it()
    {
        string path = TempSocket();
        using var loop = new EpollEventLoop("vu-test");
        loop.Start();
        using var backend = VhostUserBackend.Listen(loop, path, Sessions("huge"));
        using var client = UnixStreamSocket.Connect(path);
        var header = new byte[VhostUserConstants.HeaderSize];
        new VhostUserHeader(VhostUserRequest.VHOST_USER_SET_MEM_TABLE, VhostUserHeaderFlags.Version1, 100_000).Write(header);
        client.Send(header);
        Assert.False(client.ReceiveExactly(new byte[1], [], 5000));
        Assert.True(WaitUntil(() => backend.SessionsEnded == 1));
        Assert.Contains("payload size 100000, expected 40..264", backend.LastEndReason, StringComparison.Ordinal);
        UnixStreamSocket.Unlink(path);
    }

    [Fact]
    public void Partial_messages_are_assembled_across_reads()
    {
        string path = TempSocket();
        using var loop = new EpollEventLoop("vu-test");
        loop.Start();
        using var backend = VhostUserBackend.Listen(loop, path, Sessions("partial"));
        using var client = UnixStreamSocket.Connect(path);
        var message = new byte[VhostUserConstants.HeaderSize + 8];
        new VhostUserHeader(VhostUserRequest.VHOST_USER_SET_FEATURES, VhostUserHeaderFlags.Version1, 8).Write(message);
        BinaryPrimitives.WriteUInt64LittleEndian(message.AsSpan(12), Features);
        foreach (var piece in new[] { message[..5], message[5..14], message[14..] })
        {
            client.Send(piece);
            Thread.Sleep(20);
        }

        Assert.True(WaitUntil(() => backend.Session?.AckedFeatures == Features));
        UnixStreamSocket.Unlink(path);
    }
}
