using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using PciVirtio.Mmio.VhostUser;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.VhostUser;
using static PciVirtio.VhostCore.VhostUser.VhostUserRequest;

namespace PciVirtio.VhostCore.Tests.VhostUser;

/// <summary>Each hostile message ends the session with a reason naming the request and the
/// problem, and the session then holds no descriptor and no mapping.</summary>
[Collection(VhostUserFdCollection.Name)]
public sealed class VhostUserHostileTests
{
    public static TheoryData<string> Cases => new()
    {
        "wrong size", "size field mismatch", "too many fds", "too many fds for mem table", "missing kick fd", "nofd with fd",
        "mem table fd count", "missing region fd", "overlapping regions", "size overflow", "zero-size region",
        "vring index out of range", "kick index out of range", "queue size not power of two", "queue size too large",
        "ring not in memory table", "addr before num", "gated request", "enable without protocol features",
        "unknown request", "unsupported request", "bad version", "unoffered feature", "unoffered protocol feature",
        "unknown kick bits", "log flag", "base too large", "remove unknown region", "config too large",
        "region beyond its file",
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Hostile_message_ends_the_session_with_a_reason_and_releases_everything(string name)
    {
        using var g = new VhostUserSessionTests.Guest("vu-hostile");
        int fdsBefore = Fds.OpenCount();
        int mapsBefore = Fds.MappedLines("vu-hostile");
        var logs = new ListLogger();
        var session = new VhostUserSession("hostile", new TestVhostDevice(), SharedMemoryRegionMapper.Instance, logs);
        var f = new TestFrontend(session);
        f.Negotiate();
        Assert.True(f.SendMemTable([g.Region], [Fds.Dup(g.MemFd)]), session.FailureReason);
        Assert.True(f.SendU64(VHOST_USER_SET_VRING_CALL, 0, [Fds.Dup(g.Call.Handle)]), session.FailureReason);
        Assert.Equal(mapsBefore + 1, Fds.MappedLines("vu-hostile"));

        var (sent, expected) = Attack(name, f, g);
        Assert.False(sent, $"{name} was accepted");
        f.AssertFailed(expected);
        Assert.StartsWith(name == "unknown request" ? "request 99:" : "VHOST_USER_", session.FailureReason, StringComparison.Ordinal);
        Assert.Contains(logs.Lines, l => l.Contains(expected, StringComparison.Ordinal) && l.Contains("session ended", StringComparison.Ordinal));

        // Sticky: nothing more is accepted, and descriptors that still arrive are closed.
        Assert.False(f.Send(VHOST_USER_GET_FEATURES, []));
        Assert.False(f.SendU64(VHOST_USER_SET_VRING_KICK, 0, [Fds.Dup(g.Kick.Handle)]));
        Assert.Equal(0, session.LiveMappings);
        Assert.Equal(mapsBefore, Fds.MappedLines("vu-hostile"));
        Assert.Equal(fdsBefore, Fds.OpenCount());
    }

    private static (bool Sent, string Expected) Attack(string name, TestFrontend f, VhostUserSessionTests.Guest g)
    {
        var region = g.Region;
        return name switch
        {
            "wrong size" => (f.Send(VHOST_USER_SET_FEATURES, new byte[4]), "payload size 4, expected 8"),
            "size field mismatch" => (f.Send(VHOST_USER_SET_VRING_ADDR, new byte[8], size: 40), "header size 40 but 8 payload bytes"),
            "too many fds" => (f.SendU64(VHOST_USER_SET_FEATURES, 0, [Fds.Dup(g.Kick.Handle)]), "1 file descriptors attached; this request takes at most 0"),
            "too many fds for mem table" => (f.SendMemTable([region], Enumerable.Range(0, 9).Select(_ => (SafeHandle)Fds.Dup(g.MemFd)).ToArray()),
                "9 file descriptors attached"),
            "missing kick fd" => (f.SendU64(VHOST_USER_SET_VRING_KICK, 0), "missing file descriptor"),
            "nofd with fd" => (f.SendU64(VHOST_USER_SET_VRING_KICK, 0x100, [Fds.Dup(g.Kick.Handle)]), "NOFD flag set but a file descriptor came"),
            "mem table fd count" => (f.SendMemTable([region, region with { GuestPhysAddr = 0 }], [Fds.Dup(g.MemFd)]), "1 descriptors for 2 regions"),
            "missing region fd" => (f.SendSingleRegion(VHOST_USER_ADD_MEM_REG, region with { GuestPhysAddr = 0 }, []), "missing file descriptor"),
            "overlapping regions" => (f.SendMemTable([region, region with { GuestPhysAddr = region.GuestPhysAddr + 0x1000, UserAddr = 0x1000 }],
                [Fds.Dup(g.MemFd), Fds.Dup(g.MemFd)]), "overlaps"),
            "size overflow" => (f.SendMemTable([region with { GuestPhysAddr = ulong.MaxValue - 0xfff }], [Fds.Dup(g.MemFd)]), "guest address 0xfffffffffffff000 + size 0x100000 overflows"),
            "zero-size region" => (f.SendSingleRegion(VHOST_USER_ADD_MEM_REG, region with { Size = 0 }, [Fds.Dup(g.MemFd)]), "region size is zero"),
            "vring index out of range" => (f.SendState(VHOST_USER_SET_VRING_NUM, 2, 256), "vring index 2 out of range (queue count 2)"),
            "kick index out of range" => (f.SendU64(VHOST_USER_SET_VRING_KICK, 7, [Fds.Dup(g.Kick.Handle)]), "vring index 7 out of range"),
            "queue size not power of two" => (f.SendState(VHOST_USER_SET_VRING_NUM, 0, 100), "queue size 100 is not a power of two"),
            "queue size too large" => (f.SendState(VHOST_USER_SET_VRING_NUM, 0, 65536), "queue size 65536 is not a power of two from 1 to 32768"),
            "ring not in memory table" => (f.SendState(VHOST_USER_SET_VRING_NUM, 0, 256) && f.SendAddr(new VringAddress(0, 0, 0x1000, 0x3000, 0x2000, 0)),
                "descriptor table at user address 0x1000 is not in the memory table"),
            "addr before num" => (f.SendAddr(VhostUserSessionTests.Guest.UserAddress(0)), "SET_VRING_ADDR before SET_VRING_NUM"),
            "gated request" => (GatedAttack(f), "requires protocol feature Mq, which was not negotiated"),
            "enable without protocol features" => (f.SendU64(VHOST_USER_SET_FEATURES, 1UL << 32) && f.SendState(VHOST_USER_SET_VRING_ENABLE, 0, 1),
                "requires VHOST_USER_F_PROTOCOL_FEATURES"),
            "unknown request" => (f.Send((VhostUserRequest)99, []), "unknown request 99"),
            "unsupported request" => (f.SendU64(VHOST_USER_SET_LOG_BASE, 0), "not supported"),
            "bad version" => (f.Send(VHOST_USER_GET_FEATURES, [], flags: (VhostUserHeaderFlags)2), "header version 2 is not 1"),
            "unoffered feature" => (f.SendU64(VHOST_USER_SET_FEATURES, 1UL << 26), "were not offered"),
            "unoffered protocol feature" => (f.SendU64(VHOST_USER_SET_PROTOCOL_FEATURES, 1UL << 5), "were not offered"),
            "unknown kick bits" => (f.SendU64(VHOST_USER_SET_VRING_KICK, 0x200, [Fds.Dup(g.Kick.Handle)]), "unknown bits 0x200"),
            "log flag" => (f.SendState(VHOST_USER_SET_VRING_NUM, 0, 256) && f.SendAddr(VhostUserSessionTests.Guest.UserAddress(0) with { Flags = 1 }),
                "dirty logging is not supported"),
            "base too large" => (f.SendState(VHOST_USER_SET_VRING_BASE, 0, 0x10000), "does not fit"),
            "remove unknown region" => (f.SendSingleRegion(VHOST_USER_REM_MEM_REG, region with { GuestPhysAddr = 0 }, []), "no region matches"),
            "config too large" => (f.Send(VHOST_USER_GET_CONFIG, new byte[12 + 257]), "payload size 269, expected 12..268"),
            "region beyond its file" => (f.SendSingleRegion(VHOST_USER_ADD_MEM_REG, new VhostUserMemoryRegion(0, 2 << 20, 0x1000_0000, 0), [Fds.Dup(g.MemFd)]),
                "beyond the end of its file"),
            _ => throw new ArgumentOutOfRangeException(nameof(name)),
        };
    }

    private static bool GatedAttack(TestFrontend f)
    {
        // A fresh negotiation that leaves MQ out.
        Assert.True(f.SendU64(VHOST_USER_SET_PROTOCOL_FEATURES, (ulong)VhostUserProtocolFeatures.ReplyAck));
        return f.Send(VHOST_USER_GET_QUEUE_NUM, []);
    }

    [Fact]
    public void A_region_beyond_509_slots_ends_the_session()
    {
        var mapper = new FakeMapper();
        var session = new VhostUserSession("slots", new TestVhostDevice(), mapper);
        var f = new TestFrontend(session);
        f.Negotiate();
        using var memfd = PciVirtio.Mmio.Memory.MemFd.Create("vu-slots", 4096);
        for (int i = 0; i < 509; i++)
        {
            var r = new VhostUserMemoryRegion((ulong)i * 0x10000, 0x1000, 0x7f00_0000_0000 + ((ulong)i * 0x10000), 0);
            Assert.True(f.SendSingleRegion(VHOST_USER_ADD_MEM_REG, r, [Fds.Dup(memfd)]), session.FailureReason);
        }

        Assert.Equal(509, session.Memory.Count);
        Assert.Equal(509, mapper.Live);
        var extra = new VhostUserMemoryRegion(509UL * 0x10000, 0x1000, 0x7f10_0000_0000, 0);
        Assert.False(f.SendSingleRegion(VHOST_USER_ADD_MEM_REG, extra, [Fds.Dup(memfd)]));
        f.AssertFailed("beyond the 509 memory slots");
        Assert.Equal(0, mapper.Live);
    }

    [Fact]
    public void Ring_size_change_while_running_ends_the_session()
    {
        using var g = new VhostUserSessionTests.Guest("vu-running");
        var session = new VhostUserSession("running", new TestVhostDevice(), SharedMemoryRegionMapper.Instance);
        var f = new TestFrontend(session);
        f.Negotiate();
        Assert.True(f.SendMemTable([g.Region], [Fds.Dup(g.MemFd)]));
        VhostUserSessionTests.SetUpRing(f, g, 0);
        Assert.True(f.SendState(VHOST_USER_SET_VRING_ENABLE, 0, 1), session.FailureReason);
        Assert.False(f.SendState(VHOST_USER_SET_VRING_NUM, 0, 128));
        f.AssertFailed("size change while the ring runs");
        Assert.False(session.IsQueueRunning(0));
        Assert.Equal(0, Fds.MappedLines("vu-running") - 1); // only the test's own mapping left
    }

    private sealed class ListLogger : ILogger
    {
        public List<string> Lines { get; } = [];

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Lines.Add(formatter(state, exception));
    }
}
