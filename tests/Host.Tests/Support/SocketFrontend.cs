using System.Buffers.Binary;
using System.Runtime.InteropServices;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Signals;
using PciVirtio.Mmio.Sockets;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Net;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.VhostUser;

namespace PciVirtio.Host.Tests.Support;

/// <summary>
/// A minimal vhost-user frontend, in this process, for one virtio-net device on a real
/// socket: guest memory in a memfd handed over with SET_MEM_TABLE, our split-ring driver on
/// queue 0 (rx) and 1 (tx), eventfds for kicks and calls. VIRTIO_F_VERSION_1 only (no
/// protocol features, so a ring starts on its kick; a 12-byte header per frame).
/// </summary>
public sealed class SocketFrontend : IDisposable
{
    private const ulong GuestBase = 0x4000_0000;
    private const ulong UserBase = 0x7100_0000_0000;
    private const ulong MemorySize = 4 << 20;
    private const ulong RingStride = 0x10000;
    private const ulong DataStart = 0x40000;
    private const int QueueSize = 256;
    private const ulong Features = (ulong)VirtioFeatures.Version1;

    private readonly UnixStreamSocket _socket;
    private readonly FileDescriptor _memfd;
    private readonly SharedMemoryRegion _region;
    private readonly GuestMemory<RamAccessor> _memory;
    private readonly SplitQueueDriver<RamAccessor>[] _drivers = new SplitQueueDriver<RamAccessor>[2];
    private readonly EventFd[] _kicks = [new(), new()];
    private readonly EventFd[] _calls = [new(), new()];
    private ulong _next = DataStart;

    public SocketFrontend(string path)
    {
        _socket = UnixStreamSocket.Connect(path);
        _memfd = MemFd.Create("pvh-frontend", MemorySize);
        _region = SharedMemoryRegion.Map(_memfd, GuestBase, MemorySize, UserBase, 0);
        _memory = new GuestMemory<RamAccessor>(MemoryTable.Create(_region.Region), default);

        Send(VhostUserRequest.VHOST_USER_SET_OWNER, []);
        ulong offered = GetU64(VhostUserRequest.VHOST_USER_GET_FEATURES);
        Assert.True((offered & Features) == Features, $"the device does not offer VERSION_1 (0x{offered:x})");
        SendU64(VhostUserRequest.VHOST_USER_SET_FEATURES, Features);

        var table = new byte[VhostUserMemoryTable.WireSize(1)];
        new VhostUserMemoryTable([new VhostUserMemoryRegion(GuestBase, MemorySize, UserBase, 0)]).Write(table);
        Send(VhostUserRequest.VHOST_USER_SET_MEM_TABLE, table, _memfd);

        for (int q = 0; q < 2; q++)
        {
            var state = QueueState.AtBase(QueueSize, GuestBase + ((ulong)(q + 1) * RingStride), (VirtioFeatures)Features);
            _drivers[q] = new SplitQueueDriver<RamAccessor>($"frontend-q{q}");
            Assert.True(_drivers[q].Start(state, _memory), _drivers[q].BrokenReason);
            SendState(VhostUserRequest.VHOST_USER_SET_VRING_NUM, (uint)q, QueueSize);
            SendState(VhostUserRequest.VHOST_USER_SET_VRING_BASE, (uint)q, 0);
            var address = new byte[VringAddress.Size];
            new VringAddress((uint)q, 0, User(state.DescTable), User(state.UsedRing), User(state.AvailRing), 0).Write(address);
            Send(VhostUserRequest.VHOST_USER_SET_VRING_ADDR, address);
            SendU64(VhostUserRequest.VHOST_USER_SET_VRING_CALL, (ulong)q, _calls[q].Handle);
            SendU64(VhostUserRequest.VHOST_USER_SET_VRING_KICK, (ulong)q, _kicks[q].Handle);
        }

        // A request with a reply: every message before it has been handled.
        _ = GetU64(VhostUserRequest.VHOST_USER_GET_FEATURES);
    }

    public static int HeaderSize => VirtioNetHeader.SizeFor(Features);

    /// <summary>Queues frames for transmission (each behind a zeroed header) and kicks.</summary>
    public void Send(IEnumerable<byte[]> frames)
    {
        foreach (var frame in frames)
        {
            ulong at = Alloc(HeaderSize + frame.Length);
            Write(at + (ulong)HeaderSize, frame);
            Assert.True(_drivers[1].TryAdd([new GuestBuffer(at, (uint)(HeaderSize + frame.Length))], [], at));
        }

        _drivers[1].Publish();
        _kicks[1].Signal();
    }

    /// <summary>Posts receive buffers and kicks.</summary>
    public void PostReceiveBuffers(int count, int size = 2048)
    {
        for (int i = 0; i < count; i++)
        {
            ulong at = Alloc(size);
            Assert.True(_drivers[0].TryAdd([], [new GuestBuffer(at, (uint)size)], at));
        }

        _drivers[0].Publish();
        _kicks[0].Signal();
    }

    /// <summary>Frames delivered to us (header removed), waiting up to <paramref name="within"/>
    /// for <paramref name="count"/> of them.</summary>
    public List<byte[]> Receive(int count, TimeSpan within)
    {
        var frames = new List<byte[]>();
        var used = new UsedBuffer[QueueSize];
        var deadline = DateTime.UtcNow + within;
        while (frames.Count < count && DateTime.UtcNow < deadline)
        {
            int n = _drivers[0].Reap(used);
            Assert.False(_drivers[0].IsBroken, _drivers[0].BrokenReason);
            for (int i = 0; i < n; i++)
            {
                var bytes = Read(used[i].Token, (int)used[i].Length);
                frames.Add(bytes[HeaderSize..]);
            }

            if (n == 0)
            {
                Thread.Sleep(2);
            }
        }

        return frames;
    }

    /// <summary>Transmit buffers the device has given back, waiting for <paramref name="count"/>.</summary>
    public int ReapTransmitted(int count, TimeSpan within)
    {
        var used = new UsedBuffer[QueueSize];
        int total = 0;
        var deadline = DateTime.UtcNow + within;
        while (total < count && DateTime.UtcNow < deadline)
        {
            int n = _drivers[1].Reap(used);
            Assert.False(_drivers[1].IsBroken, _drivers[1].BrokenReason);
            total += n;
            if (n == 0)
            {
                Thread.Sleep(2);
            }
        }

        return total;
    }

    public void Dispose()
    {
        _socket.Dispose();
        foreach (var e in _kicks.Concat(_calls))
        {
            e.Dispose();
        }

        _region.Dispose();
        _memfd.Dispose();
    }

    private static ulong User(ulong guestPhys) => UserBase + (guestPhys - GuestBase);

    private ulong Alloc(int size)
    {
        ulong at = GuestBase + _next;
        _next += (ulong)((size + 63) & ~63);
        Assert.True(_next <= MemorySize, "frontend memory exhausted");
        return at;
    }

    private void Write(ulong guestPhys, ReadOnlySpan<byte> data) => Assert.True(_memory.TryWrite(guestPhys, data));

    private byte[] Read(ulong guestPhys, int length)
    {
        var bytes = new byte[length];
        Assert.True(_memory.TryRead(guestPhys, bytes));
        return bytes;
    }

    private void Send(VhostUserRequest request, ReadOnlySpan<byte> payload, params SafeHandle[] fds)
    {
        var message = new byte[VhostUserConstants.HeaderSize + payload.Length];
        new VhostUserHeader(request, VhostUserHeaderFlags.Version1, (uint)payload.Length).Write(message);
        payload.CopyTo(message.AsSpan(VhostUserConstants.HeaderSize));
        _socket.Send(message, fds);
    }

    private void SendU64(VhostUserRequest request, ulong value, params SafeHandle[] fds)
    {
        var body = new byte[8];
        new VhostUserU64(value).Write(body);
        Send(request, body, fds);
    }

    private void SendState(VhostUserRequest request, uint index, uint num)
    {
        var body = new byte[VringState.Size];
        new VringState(index, num).Write(body);
        Send(request, body);
    }

    private ulong GetU64(VhostUserRequest request)
    {
        Send(request, []);
        var reply = new byte[VhostUserConstants.HeaderSize + 8];
        Assert.True(_socket.ReceiveExactly(reply, [], 10_000), $"no reply to {request}");
        var header = VhostUserHeader.Read(reply);
        Assert.Equal(request, header.Request);
        Assert.Equal(8u, header.Size);
        return BinaryPrimitives.ReadUInt64LittleEndian(reply.AsSpan(VhostUserConstants.HeaderSize));
    }
}
