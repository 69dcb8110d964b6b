using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using PciVirtio.Mmio.Interop;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.VhostUser;
using Tmds.Linux;

namespace PciVirtio.VhostCore.Tests.VhostUser;

/// <summary>A small device: queues are real <see cref="SplitQueueDevice{TAccess}"/>s the
/// tests drive directly; everything else is recorded.</summary>
public sealed class TestVhostDevice(int queueCount = 2) : IVhostUserDevice
{
    public const ulong Offered = (1UL << 32) | (1UL << 29) | VhostUserConstants.ProtocolFeaturesBit | (1UL << 5);

    public ulong Features { get; set; } = Offered;

    public VhostUserProtocolFeatures ProtocolFeatures { get; set; } = VhostUserSession.SupportedProtocolFeatures;

    public int QueueCount { get; } = queueCount;

    public ulong QueueNum => (ulong)QueueCount / 2;

    public SplitQueueDevice<RamAccessor>?[] Queues { get; } = new SplitQueueDevice<RamAccessor>?[queueCount];

    public SafeHandle?[] Kicks { get; } = new SafeHandle?[queueCount];

    public SafeHandle?[] Calls { get; } = new SafeHandle?[queueCount];

    public byte[] Config { get; } = Enumerable.Range(0, 256).Select(i => (byte)(0xa0 + i)).ToArray();

    public List<string> Events { get; } = [];

    public bool RefuseConfig { get; set; }

    public bool TryGetConfig(uint offset, Span<byte> destination)
    {
        if (RefuseConfig || offset + (uint)destination.Length > (uint)Config.Length)
        {
            return false;
        }

        Config.AsSpan((int)offset, destination.Length).CopyTo(destination);
        return true;
    }

    public bool TrySetConfig(uint offset, ReadOnlySpan<byte> source, uint flags)
    {
        if (offset + (uint)source.Length > (uint)Config.Length)
        {
            return false;
        }

        source.CopyTo(Config.AsSpan((int)offset));
        return true;
    }

    public bool StartQueue(int index, in QueueState state, GuestMemory<RamAccessor> memory, SafeHandle? kick, SafeHandle? call)
    {
        var q = Queues[index] ??= new SplitQueueDevice<RamAccessor>($"test-q{index}");
        Kicks[index] = kick;
        Calls[index] = call;
        Events.Add($"start {index} avail {state.NextAvail}");
        return q.Start(state, memory);
    }

    public QueueState StopQueue(int index)
    {
        Events.Add($"stop {index}");
        Kicks[index] = Calls[index] = null;
        return Queues[index]!.Stop();
    }

    public bool UpdateMemory(int index, GuestMemory<RamAccessor> memory)
    {
        Events.Add($"memory {index}");
        return Queues[index]!.UpdateMemory(memory);
    }

    public void OnFeatures(ulong features) => Events.Add($"features 0x{features:x}");

    public void OnStatus(byte status) => Events.Add($"status {status}");

    public void OnRarp(ReadOnlySpan<byte> mac) => Events.Add($"rarp {Convert.ToHexString(mac)}");

    public bool OnMtu(uint mtu)
    {
        Events.Add($"mtu {mtu}");
        return mtu <= 9000;
    }

    public void Reset() => Events.Add("reset");
}

/// <summary>A front-end talking to a session in memory: builds messages, hands over
/// duplicated descriptors (the session owns what it receives) and decodes replies.</summary>
public sealed class TestFrontend(VhostUserSession session)
{
    private readonly ArrayBufferWriter<byte> _reply = new();

    public VhostUserSession Session { get; } = session;

    public VhostUserHeader ReplyHeader { get; private set; }

    public byte[] ReplyBody { get; private set; } = [];

    public bool HasReply { get; private set; }

    public bool Send(VhostUserRequest request, ReadOnlySpan<byte> payload, SafeHandle[]? fds = null,
        VhostUserHeaderFlags flags = VhostUserHeaderFlags.Version1, uint? size = null)
    {
        _reply.Clear();
        var header = new VhostUserHeader(request, flags, size ?? (uint)payload.Length);
        bool ok = Session.Handle(header, payload, fds ?? [], _reply);
        HasReply = _reply.WrittenCount > 0;
        if (HasReply)
        {
            var written = _reply.WrittenSpan;
            ReplyHeader = VhostUserHeader.Read(written);
            ReplyBody = written[VhostUserConstants.HeaderSize..].ToArray();
            Assert.Equal((int)ReplyHeader.Size, ReplyBody.Length);
            Assert.Equal(request, ReplyHeader.Request);
            Assert.Equal(VhostUserHeaderFlags.Version1 | VhostUserHeaderFlags.Reply, ReplyHeader.Flags);
        }

        return ok;
    }

    public ulong Get(VhostUserRequest request)
    {
        Assert.True(Send(request, []), Session.FailureReason);
        Assert.True(HasReply);
        return BinaryPrimitives.ReadUInt64LittleEndian(ReplyBody);
    }

    public bool SendU64(VhostUserRequest request, ulong value, SafeHandle[]? fds = null, VhostUserHeaderFlags flags = VhostUserHeaderFlags.Version1)
    {
        var body = new byte[8];
        new VhostUserU64(value).Write(body);
        return Send(request, body, fds, flags);
    }

    public bool SendState(VhostUserRequest request, uint index, uint num)
    {
        var body = new byte[8];
        new VringState(index, num).Write(body);
        return Send(request, body);
    }

    public bool SendAddr(VringAddress address)
    {
        var body = new byte[VringAddress.Size];
        address.Write(body);
        return Send(VhostUserRequest.VHOST_USER_SET_VRING_ADDR, body);
    }

    public bool SendMemTable(VhostUserMemoryRegion[] regions, SafeHandle[] fds)
    {
        var body = new byte[VhostUserMemoryTable.WireSize(regions.Length)];
        new VhostUserMemoryTable(regions).Write(body);
        return Send(VhostUserRequest.VHOST_USER_SET_MEM_TABLE, body, fds);
    }

    public bool SendSingleRegion(VhostUserRequest request, VhostUserMemoryRegion region, SafeHandle[] fds)
    {
        var body = new byte[VhostUserSingleMemoryRegion.Size];
        new VhostUserSingleMemoryRegion(region).Write(body);
        return Send(request, body, fds);
    }

    /// <summary>GET_FEATURES, SET_FEATURES (all offered), GET/SET_PROTOCOL_FEATURES (all offered).</summary>
    public void Negotiate(VhostUserProtocolFeatures? protocol = null)
    {
        ulong features = Get(VhostUserRequest.VHOST_USER_GET_FEATURES);
        Assert.True(SendU64(VhostUserRequest.VHOST_USER_SET_FEATURES, features), Session.FailureReason);
        ulong offered = Get(VhostUserRequest.VHOST_USER_GET_PROTOCOL_FEATURES);
        Assert.True(SendU64(VhostUserRequest.VHOST_USER_SET_PROTOCOL_FEATURES, protocol is { } p ? (ulong)p : offered), Session.FailureReason);
    }

    public void AssertFailed(string expectedFragment)
    {
        Assert.True(Session.IsFailed, "the session should have ended");
        Assert.Contains(expectedFragment, Session.FailureReason, StringComparison.Ordinal);
    }
}

public static class Fds
{
    /// <summary>A duplicate the session may own and close.</summary>
    public static FileDescriptor Dup(SafeHandle fd) =>
        FileDescriptor.FromResult(LibC.fcntl((int)fd.DangerousGetHandle(), 1030 /* F_DUPFD_CLOEXEC */, 0), "fcntl(F_DUPFD_CLOEXEC)");

    /// <summary>Open descriptors, after finalizers ran (a handle another test leaked must not
    /// close in the middle of a count).</summary>
    /// <summary>Open descriptors of the kinds a session holds (memfds, eventfds and other
    /// anonymous inodes, sockets). Pipes and files are left out: the runtime opens assemblies
    /// lazily, and other tests' child processes keep pipes until their streams are collected,
    /// neither of which a session could leak.</summary>
    public static int OpenCount()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        int count = 0;
        foreach (string fd in Directory.GetFiles("/proc/self/fd"))
        {
            string? target = new FileInfo(fd).LinkTarget;
            if (target is not null && (target.StartsWith("/memfd:", StringComparison.Ordinal) || target.StartsWith("anon_inode:", StringComparison.Ordinal) || target.StartsWith("socket:", StringComparison.Ordinal)))
            {
                count++;
            }
        }

        return count;
    }

    public static int MappedLines(string memfdName) =>
        File.ReadAllLines("/proc/self/maps").Count(l => l.Contains($"/memfd:{memfdName} ", StringComparison.Ordinal));
}

/// <summary>Maps nothing: fake host addresses, counting live "mappings" (for limits tests).</summary>
public sealed class FakeMapper : IRegionMapper
{
    public int Live { get; private set; }

    public IMappedRegion Map(SafeHandle fd, in VhostUserMemoryRegion region)
    {
        Live++;
        return new Fake(this, new MemoryRegion(region.GuestPhysAddr, region.Size, region.UserAddr, (nint)0x1000_0000 + (nint)(region.GuestPhysAddr & 0xffff_ffff)));
    }

    private sealed class Fake(FakeMapper owner, MemoryRegion region) : IMappedRegion
    {
        private bool _disposed;

        public MemoryRegion Region { get; } = region;

        public void Dispose()
        {
            if (!_disposed)
            {
                _disposed = true;
                owner.Live--;
            }
        }
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class VhostUserFdCollection
{
    public const string Name = "vhost-user fd counting";
}
