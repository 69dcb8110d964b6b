using System.Buffers.Binary;
using System.Runtime.InteropServices;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Signals;
using PciVirtio.Mmio.VhostUser;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.VhostUser;

namespace PciVirtio.VhostCore.Tests.VhostUser;

/// <summary>A whole QEMU-like negotiation over real memfd memory, then traffic from our
/// driver (the same memfd mapped a second time) through the queue the session started.</summary>
[Collection(VhostUserFdCollection.Name)]
public sealed class VhostUserSessionTests
{
    private const ulong Gpa = 0x4000_0000;
    private const ulong GuestSize = 1 << 20;
    private const ulong UserBase = 0x7f12_3400_0000;
    private const int QueueSize = 256;

    internal sealed class Guest : IDisposable
    {
        public Guest(string name)
        {
            Name = name;
            MemFd = PciVirtio.Mmio.Memory.MemFd.Create(name, GuestSize);
            Mapping = SharedMemoryRegion.Map(MemFd, Gpa, GuestSize, UserBase, 0);
            Memory = new GuestMemory<RamAccessor>(MemoryTable.Create(Mapping.Region), default);
            Kick = new EventFd();
            Call = new EventFd();
        }

        public string Name { get; }

        public FileDescriptor MemFd { get; }

        public SharedMemoryRegion Mapping { get; }

        public GuestMemory<RamAccessor> Memory { get; }

        public EventFd Kick { get; }

        public EventFd Call { get; }

        public static ulong RingGpa(int queue) => Gpa + (ulong)queue * 0x10000;

        public static VringAddress UserAddress(int queue)
        {
            var s = QueueState.AtBase(QueueSize, RingGpa(queue), VirtioFeatures.None);
            return new VringAddress((uint)queue, 0, UserBase + (s.DescTable - Gpa), UserBase + (s.UsedRing - Gpa), UserBase + (s.AvailRing - Gpa), 0);
        }

        public VhostUserMemoryRegion Region => new(Gpa, GuestSize, UserBase, 0);

        public void Dispose()
        {
            Mapping.Dispose();
            MemFd.Dispose();
            Kick.Dispose();
            Call.Dispose();
        }
    }

    internal static void SetUpRing(TestFrontend f, Guest g, int queue, ushort nextAvail = 0)
    {
        Assert.True(f.SendState(VhostUserRequest.VHOST_USER_SET_VRING_NUM, (uint)queue, QueueSize), f.Session.FailureReason);
        Assert.True(f.SendState(VhostUserRequest.VHOST_USER_SET_VRING_BASE, (uint)queue, nextAvail), f.Session.FailureReason);
        Assert.True(f.SendAddr(Guest.UserAddress(queue)), f.Session.FailureReason);
        Assert.True(f.SendU64(VhostUserRequest.VHOST_USER_SET_VRING_KICK, (ulong)queue, [Fds.Dup(g.Kick.Handle)]), f.Session.FailureReason);
        Assert.True(f.SendU64(VhostUserRequest.VHOST_USER_SET_VRING_CALL, (ulong)queue, [Fds.Dup(g.Call.Handle)]), f.Session.FailureReason);
    }

    [Fact]
    public void Ring_enable_before_set_features_is_accepted_as_qemu_sends_it()
    {
        // QEMU's virtio-net enables and disables queue pairs as soon as it has read
        // GET_FEATURES (before its own SET_FEATURES); the enabled state then holds.
        using var g = new Guest("vu-early-enable");
        var device = new TestVhostDevice();
        using var session = new VhostUserSession("early", device, SharedMemoryRegionMapper.Instance);
        var f = new TestFrontend(session);
        Assert.Equal(TestVhostDevice.Offered, f.Get(VhostUserRequest.VHOST_USER_GET_FEATURES));
        Assert.True(f.SendU64(VhostUserRequest.VHOST_USER_SET_PROTOCOL_FEATURES, (ulong)VhostUserSession.SupportedProtocolFeatures));
        Assert.True(f.SendState(VhostUserRequest.VHOST_USER_SET_VRING_ENABLE, 0, 1), session.FailureReason);
        Assert.True(f.SendU64(VhostUserRequest.VHOST_USER_SET_FEATURES, TestVhostDevice.Offered));
        Assert.True(f.SendMemTable([g.Region], [Fds.Dup(g.MemFd)]), session.FailureReason);
        SetUpRing(f, g, 0);
        Assert.True(session.IsQueueRunning(0));
        Assert.False(session.IsFailed);
    }

    [Fact]
    public void Qemu_like_negotiation_starts_a_queue_that_carries_driver_buffers()
    {
        using var g = new Guest("vu-full");
        int fdsBefore = Fds.OpenCount();
        int mapsBefore = Fds.MappedLines("vu-full");
        var device = new TestVhostDevice();
        var session = new VhostUserSession("full", device, SharedMemoryRegionMapper.Instance);
        var f = new TestFrontend(session);

        Assert.Equal(TestVhostDevice.Offered, f.Get(VhostUserRequest.VHOST_USER_GET_FEATURES));
        Assert.Equal((ulong)VhostUserSession.SupportedProtocolFeatures, f.Get(VhostUserRequest.VHOST_USER_GET_PROTOCOL_FEATURES));
        Assert.True(f.SendU64(VhostUserRequest.VHOST_USER_SET_PROTOCOL_FEATURES, (ulong)VhostUserSession.SupportedProtocolFeatures));
        Assert.Equal(1UL, f.Get(VhostUserRequest.VHOST_USER_GET_QUEUE_NUM));
        Assert.Equal(509UL, f.Get(VhostUserRequest.VHOST_USER_GET_MAX_MEM_SLOTS));
        Assert.True(f.Send(VhostUserRequest.VHOST_USER_SET_OWNER, []));
        Assert.True(f.SendU64(VhostUserRequest.VHOST_USER_SET_FEATURES, TestVhostDevice.Offered));
        Assert.True(f.SendMemTable([g.Region], [Fds.Dup(g.MemFd)]), session.FailureReason);
        Assert.Equal(1, session.Memory.Count);
        Assert.Equal(mapsBefore + 1, Fds.MappedLines("vu-full"));

        SetUpRing(f, g, 0);
        Assert.False(session.IsQueueRunning(0)); // protocol features negotiated: disabled until ENABLE
        Assert.True(f.SendState(VhostUserRequest.VHOST_USER_SET_VRING_ENABLE, 0, 1), session.FailureReason);
        Assert.True(session.IsQueueRunning(0));
        Assert.NotNull(device.Kicks[0]);
        Assert.NotNull(device.Calls[0]);

        // Our driver on the same memory, mapped at another address.
        var driver = new SplitQueueDriver<RamAccessor>("drv");
        Assert.True(driver.Start(QueueState.AtBase(QueueSize, Guest.RingGpa(0), (VirtioFeatures)TestVhostDevice.Offered), g.Memory));
        for (int i = 0; i < 3; i++)
        {
            ulong buf = Gpa + 0x80000 + ((ulong)i * 0x1000);
            Assert.True(g.Memory.TryWrite(buf, "hello, vhost-user"u8.ToArray().Append((byte)i).ToArray()));
            Assert.True(driver.TryAdd([new GuestBuffer(buf, 18)], [], (ulong)i));
        }

        driver.Publish();
        var queue = device.Queues[0]!;
        Span<IoSegment> segments = stackalloc IoSegment[8];
        for (int i = 0; i < 2; i++)
        {
            Assert.True(queue.TryPopAvail(out var chain, segments));
            var bytes = new byte[chain.ReadableBytes];
            Assert.Equal(18, queue.Memory.Gather(chain.Readable(segments), 0, bytes));
            Assert.Equal("hello, vhost-user"u8.ToArray().Append((byte)i).ToArray(), bytes);
            queue.PushUsed(chain.Head, 0);
        }

        queue.FlushUsed();
        var used = new UsedBuffer[4];
        Assert.Equal(2, driver.Reap(used));
        Assert.Equal(0UL, used[0].Token);
        Assert.Equal(1UL, used[1].Token);

        // GET_VRING_BASE stops the ring and reports the next avail entry to serve.
        var body = new byte[8];
        new VringState(0, 0).Write(body);
        Assert.True(f.Send(VhostUserRequest.VHOST_USER_GET_VRING_BASE, body), session.FailureReason);
        Assert.Equal(new VringState(0, 2), VringState.Read(f.ReplyBody));
        Assert.False(session.IsQueueRunning(0));

        // Restart from that base: the third buffer is served, none replayed.
        SetUpRing(f, g, 0, nextAvail: 2);
        Assert.True(session.IsQueueRunning(0));
        Assert.True(queue.TryPopAvail(out var third, segments));
        var thirdBytes = new byte[18];
        queue.Memory.Gather(third.Readable(segments), 0, thirdBytes);
        Assert.Equal(2, thirdBytes[17]);
        Assert.False(queue.TryPopAvail(out _, segments));

        session.Dispose();
        Assert.Equal(fdsBefore, Fds.OpenCount());
        Assert.Equal(mapsBefore, Fds.MappedLines("vu-full"));
    }

    [Fact]
    public void Reply_ack_answers_need_reply_and_reports_refusals()
    {
        var device = new TestVhostDevice();
        var f = new TestFrontend(new VhostUserSession("ack", device, new FakeMapper()));
        f.Negotiate();
        Assert.True(f.SendU64(VhostUserRequest.VHOST_USER_NET_SET_MTU, 1500, flags: VhostUserHeaderFlags.Version1 | VhostUserHeaderFlags.NeedReply));
        Assert.True(f.HasReply);
        Assert.Equal(0UL, BinaryPrimitives.ReadUInt64LittleEndian(f.ReplyBody));
        Assert.True(f.SendU64(VhostUserRequest.VHOST_USER_NET_SET_MTU, 9100, flags: VhostUserHeaderFlags.Version1 | VhostUserHeaderFlags.NeedReply));
        Assert.Equal(1UL, BinaryPrimitives.ReadUInt64LittleEndian(f.ReplyBody));
        Assert.True(f.SendU64(VhostUserRequest.VHOST_USER_NET_SET_MTU, 1500));
        Assert.False(f.HasReply);
        Assert.Equal(["mtu 1500", "mtu 9100", "mtu 1500"], device.Events.Where(e => e.StartsWith("mtu", StringComparison.Ordinal)));
    }

    [Fact]
    public void Config_status_rarp_and_reset_reach_the_device()
    {
        var device = new TestVhostDevice();
        var f = new TestFrontend(new VhostUserSession("misc", device, new FakeMapper()));
        f.Negotiate();

        var config = new byte[12 + 4];
        new VhostUserConfig(2, 0, new byte[4]).Write(config);
        Assert.True(f.Send(VhostUserRequest.VHOST_USER_GET_CONFIG, config));
        Assert.Equal(new byte[] { 0xa2, 0xa3, 0xa4, 0xa5 }, f.ReplyBody[12..]);

        var full = new byte[12 + 256];
        new VhostUserConfig(0, 0, new byte[256]).Write(full);
        Assert.True(f.Send(VhostUserRequest.VHOST_USER_GET_CONFIG, full), f.Session.FailureReason);
        Assert.Equal(12 + 256, f.ReplyBody.Length);
        Assert.Equal(0x9f, f.ReplyBody[^1]);

        device.RefuseConfig = true;
        int length = new VhostUserConfig(1, 0, new byte[255]).Write(full);
        Assert.True(f.Send(VhostUserRequest.VHOST_USER_GET_CONFIG, full.AsSpan(0, length)), f.Session.FailureReason);
        device.RefuseConfig = false;
        Assert.Empty(f.ReplyBody); // the device refuses: zero-length reply, session continues

        new VhostUserConfig(0, 0, [1, 2]).Write(config);
        Assert.True(f.Send(VhostUserRequest.VHOST_USER_SET_CONFIG, config.AsSpan(0, 14)));
        Assert.Equal(1, device.Config[0]);

        Assert.True(f.SendU64(VhostUserRequest.VHOST_USER_SET_STATUS, 0x0f));
        Assert.Equal(0x0fUL, f.Get(VhostUserRequest.VHOST_USER_GET_STATUS));
        Assert.True(f.SendU64(VhostUserRequest.VHOST_USER_SEND_RARP, 0x0000_5634_1200_5452));
        Assert.Contains("rarp 525400123456", device.Events);
        Assert.True(f.Send(VhostUserRequest.VHOST_USER_RESET_DEVICE, []));
        Assert.Contains("reset", device.Events);
        Assert.Equal(0UL, f.Session.AckedFeatures);
    }

    [Fact]
    public void Add_and_remove_regions_keep_mappings_until_no_queue_uses_them()
    {
        using var g = new Guest("vu-addrem");
        int mapsBefore = Fds.MappedLines("vu-addrem");
        int fdsBefore = Fds.OpenCount();
        var device = new TestVhostDevice();
        var session = new VhostUserSession("addrem", device, SharedMemoryRegionMapper.Instance);
        var f = new TestFrontend(session);
        f.Negotiate();
        Assert.True(f.SendSingleRegion(VhostUserRequest.VHOST_USER_ADD_MEM_REG, g.Region, [Fds.Dup(g.MemFd)]), session.FailureReason);
        SetUpRing(f, g, 0);
        Assert.True(f.SendState(VhostUserRequest.VHOST_USER_SET_VRING_ENABLE, 0, 1), session.FailureReason);
        Assert.True(session.IsQueueRunning(0));

        // A second region, then removing the first: the running queue's ring lives there, so
        // it cannot move and keeps the old mappings alive.
        using var second = PciVirtio.Mmio.Memory.MemFd.Create("vu-second", 0x10000);
        var region2 = new VhostUserMemoryRegion(0x8000_0000, 0x10000, 0x7f99_0000_0000, 0);
        Assert.True(f.SendSingleRegion(VhostUserRequest.VHOST_USER_ADD_MEM_REG, region2, [Fds.Dup(second)]), session.FailureReason);
        Assert.Equal(2, session.Memory.Count);
        Assert.True(f.SendSingleRegion(VhostUserRequest.VHOST_USER_REM_MEM_REG, g.Region, []), session.FailureReason);
        Assert.Equal(1, session.Memory.Count);
        Assert.Equal(2, session.LiveMappings);
        Assert.Equal(mapsBefore + 1, Fds.MappedLines("vu-addrem"));

        // Stopping the queue releases the old table, and with it the removed region.
        var body = new byte[8];
        new VringState(0, 0).Write(body);
        Assert.True(f.Send(VhostUserRequest.VHOST_USER_GET_VRING_BASE, body), session.FailureReason);
        Assert.Equal(1, session.LiveMappings);
        Assert.Equal(mapsBefore, Fds.MappedLines("vu-addrem"));

        session.Dispose();
        Assert.Equal(0, session.LiveMappings);
        Assert.Equal(0, Fds.MappedLines("vu-second"));
        Assert.Equal(fdsBefore + 1, Fds.OpenCount()); // only our own second memfd
    }

    [Fact]
    public void Replacing_the_memory_table_moves_running_queues_and_unmaps_the_old_one()
    {
        using var g = new Guest("vu-replace");
        int mapsBefore = Fds.MappedLines("vu-replace");
        var device = new TestVhostDevice();
        var session = new VhostUserSession("replace", device, SharedMemoryRegionMapper.Instance);
        var f = new TestFrontend(session);
        f.Negotiate();
        Assert.True(f.SendMemTable([g.Region], [Fds.Dup(g.MemFd)]), session.FailureReason);
        SetUpRing(f, g, 0);
        Assert.True(f.SendState(VhostUserRequest.VHOST_USER_SET_VRING_ENABLE, 0, 1), session.FailureReason);
        Assert.True(f.SendMemTable([g.Region], [Fds.Dup(g.MemFd)]), session.FailureReason);
        Assert.Contains("memory 0", device.Events);
        Assert.Equal(1, session.LiveMappings);
        Assert.Equal(mapsBefore + 1, Fds.MappedLines("vu-replace"));
        Assert.True(session.IsQueueRunning(0));
        session.Dispose();
        Assert.Equal(mapsBefore, Fds.MappedLines("vu-replace"));
    }

    [Fact]
    public void Without_protocol_features_a_ring_starts_on_kick_and_nofd_is_accepted()
    {
        using var g = new Guest("vu-legacy");
        var device = new TestVhostDevice { Features = 1UL << 32 };
        var session = new VhostUserSession("legacy", device, SharedMemoryRegionMapper.Instance);
        var f = new TestFrontend(session);
        Assert.True(f.SendU64(VhostUserRequest.VHOST_USER_SET_FEATURES, 1UL << 32));
        Assert.True(f.SendMemTable([g.Region], [Fds.Dup(g.MemFd)]), session.FailureReason);
        Assert.True(f.SendState(VhostUserRequest.VHOST_USER_SET_VRING_NUM, 1, QueueSize));
        Assert.True(f.SendAddr(Guest.UserAddress(1)), session.FailureReason);
        Assert.True(f.SendU64(VhostUserRequest.VHOST_USER_SET_VRING_KICK, 1 | VhostUserConstants.VringNoFdFlag), session.FailureReason);
        Assert.True(session.IsQueueRunning(1));
        Assert.Null(device.Kicks[1]);
        session.Dispose();
    }
}
