using PciVirtio.Bridge.Hardware;
using PciVirtio.Mmio.Memory;

namespace PciVirtio.Bridge.Tests.Hardware;

/// <summary>
/// The contract over the ivshmem implementation with the device seam faked (two plain memory
/// BAR0s, one shared memfd as BAR2, doorbell writes routed to the peer's vector eventfds),
/// plus what is particular to it: the halves and link areas, the doorbell register value,
/// vector routing for masks, heartbeat loss, peer restarts, and refusing devices that do not
/// fit. The real device needs the QEMU guest pair (tests/Integration.Tests).
/// </summary>
public sealed class IvshmemVfioHardwareTests : NtbHardwareContractTests
{
    private static readonly IvshmemNtbOptions Options = new()
    {
        HeartbeatInterval = TimeSpan.FromMilliseconds(20),
        LinkTimeout = TimeSpan.FromSeconds(3),
    };

    private readonly FakeIvshmemFabric _fabric = new();
    private readonly FakeIvshmemDevice _deviceA;
    private readonly IvshmemVfioHardware _a;
    private FakeIvshmemDevice _deviceB;
    private IvshmemVfioHardware? _b;

    public IvshmemVfioHardwareTests()
    {
        _deviceA = _fabric.Connect(0);
        _a = new IvshmemVfioHardware(_deviceA, Options);
        _deviceB = _fabric.Connect(1);
        _b = new IvshmemVfioHardware(_deviceB, Options);
    }

    protected override INtbHardware A => _a;

    protected override INtbHardware B => _b ?? throw new InvalidOperationException("B is detached");

    public override void Dispose()
    {
        _a.Dispose();
        _b?.Dispose();
        _fabric.Dispose();
    }

    /// <summary>ivshmem has no link of its own: the link goes down when the peer detaches.</summary>
    protected override void TakeLinkDown()
    {
        _b?.Dispose();
        _b = null;
    }

    protected override void BringLinkUp()
    {
        _deviceB = _fabric.Connect(1);
        _b = new IvshmemVfioHardware(_deviceB, Options);
    }

    protected override INtbHardware OpenWithoutPeer()
    {
        var fabric = new FakeIvshmemFabric();
        try
        {
            return new IvshmemVfioHardware(fabric.Connect(0), Options);
        }
        finally
        {
            // The device holds its own mapping of the memfd.
            fabric.Dispose();
        }
    }

    [Fact]
    public void The_lower_id_owns_the_lower_half_and_each_window_follows_its_link_area()
    {
        WaitLinkUp();
        ulong half = _fabric.SharedSize / 2;
        nint barA = _deviceA.SharedMemory.Address;
        nint barB = _deviceB.SharedMemory.Address;
        Assert.Equal(barA + IvshmemLinkArea.Size, _a.LocalWindow.Address);
        Assert.Equal(half - IvshmemLinkArea.Size, _a.LocalWindow.Size);
        Assert.Equal(NtbMemoryKind.IoMemory, _a.LocalWindow.Kind);
        Assert.Equal(barB + (nint)half + IvshmemLinkArea.Size, _b!.LocalWindow.Address);
        Assert.Equal(barA + (nint)half + IvshmemLinkArea.Size, _a.PeerWindow.Address);
        Assert.Equal(barB + IvshmemLinkArea.Size, _b.PeerWindow.Address);
        Assert.Equal((0u, 1u), (_a.Id, _a.PeerId));
        Assert.Equal((1u, 0u), (_b.Id, _b.PeerId));
        Assert.Equal(_fabric.Vectors - 1, _a.DoorbellCount);
        Assert.Equal("fake ivshmem 0 id 0", _a.Name);

        // Each end's attach record sits in the other's half.
        using MemoryMapping bar = _fabric.MapShared();
        var io = new IoMemoryAccessor(null);
        Assert.Equal(IvshmemLinkArea.MagicValue, io.LoadU32(bar.Address + IvshmemLinkArea.Magic));
        Assert.Equal(1u, io.LoadU32(bar.Address + IvshmemLinkArea.WriterId));
        Assert.Equal(0u, io.LoadU32(bar.Address + (nint)half + IvshmemLinkArea.WriterId));
        Assert.Equal((uint)IvshmemPeerState.Attached, io.LoadU32(bar.Address + (nint)half + IvshmemLinkArea.State));
    }

    [Fact]
    public void A_doorbell_is_one_register_write_naming_the_peer_and_the_vector_after_the_link_vector()
    {
        long before = _deviceA.Doorbells;
        _a.RingPeerDoorbell(2);
        Assert.Equal(before + 1, _deviceA.Doorbells);
        Assert.Equal((1u << 16) | 3u, _deviceA.LastDoorbell);
        _b!.RingPeerDoorbell(0);
        Assert.Equal((0u << 16) | 1u, _deviceB.LastDoorbell);
        Assert.True(Signalled(_a.DoorbellEvent(0)));
    }

    [Fact]
    public void Masking_parks_the_vector_and_unmasking_routes_it_home()
    {
        _b!.MaskDoorbell(0b101);
        Assert.NotNull(_deviceB.RouteOf(1));
        Assert.Null(_deviceB.RouteOf(2));
        Assert.Same(_deviceB.RouteOf(1), _deviceB.RouteOf(3));
        Assert.Null(_deviceB.RouteOf(0));

        _b.UnmaskDoorbell(0b001);
        Assert.Null(_deviceB.RouteOf(1));
        Assert.NotNull(_deviceB.RouteOf(3));
        Assert.Equal(0b100UL, _b.DoorbellMask);
    }

    [Fact]
    public void A_peer_that_stops_heartbeating_is_timed_out_and_reported()
    {
        var fabric = new FakeIvshmemFabric();
        using var alone = new IvshmemVfioHardware(fabric.Connect(0), new IvshmemNtbOptions
        {
            HeartbeatInterval = TimeSpan.FromMilliseconds(20),
            LinkTimeout = TimeSpan.FromMilliseconds(200),
        });
        Assert.False(alone.RefreshLinkState());

        // A peer that attached and then hung: a valid record whose heartbeat never moves.
        using (MemoryMapping bar = fabric.MapShared())
        {
            var io = new IoMemoryAccessor(null);
            nint area = bar.Address;
            io.StoreU64(area + IvshmemLinkArea.Session, 0x1234567);
            io.StoreU32(area + IvshmemLinkArea.HeartbeatIntervalMs, 10);
            io.StoreU32(area + IvshmemLinkArea.WriterId, 1);
            io.StoreU32(area + IvshmemLinkArea.Version, IvshmemLinkArea.VersionValue);
            io.StoreU32(area + IvshmemLinkArea.Magic, IvshmemLinkArea.MagicValue);
            io.StoreU32(area + IvshmemLinkArea.State, (uint)IvshmemPeerState.Attached);
        }

        fabric.Dispose();
        Assert.True(alone.RefreshLinkState());
        alone.LinkEvent.Consume();
        Assert.True(Signalled(alone.LinkEvent), "the heartbeat check reports the silent peer");
        Assert.False(alone.IsLinkUp);
        Assert.False(alone.RefreshLinkState());
    }

    [Fact]
    public void Time_nothing_watched_the_peer_is_not_held_against_it_and_a_dead_peer_still_times_out()
    {
        using var fabric = new FakeIvshmemFabric();
        var timeA = new ManualTime();
        var timeB = new ManualTime();
        static IvshmemNtbOptions On(ManualTime time) => new()
        {
            HeartbeatInterval = TimeSpan.FromMilliseconds(100),
            LinkTimeout = TimeSpan.FromSeconds(1),
            TimeProvider = time,
        };

        using var a = new IvshmemVfioHardware(fabric.Connect(0), On(timeA));
        using var b = new IvshmemVfioHardware(fabric.Connect(1), On(timeB));
        static void Beat(ManualTime time)
        {
            time.Advance(TimeSpan.FromMilliseconds(100));
            time.Timer!.Fire();
        }

        Beat(timeA);
        Beat(timeB);
        Assert.True(a.RefreshLinkState());
        Assert.True(b.RefreshLinkState());

        // Both hosts stand still for 5 s (paused guests, an overloaded machine). A looks
        // first and finds B's heartbeat where it was 5 s ago: not held against B.
        timeA.Advance(TimeSpan.FromSeconds(5));
        timeB.Advance(TimeSpan.FromSeconds(5));
        timeA.Timer!.Fire();
        Assert.True(a.IsLinkUp, "A held the time nobody watched against B");
        Beat(timeB);
        Beat(timeA);
        Assert.True(a.IsLinkUp);
        Assert.True(b.IsLinkUp);

        // B dies while A keeps watching: down once its heartbeat has not moved for the timeout.
        for (int i = 1; i <= 10; i++)
        {
            Beat(timeA);
            Assert.True(a.IsLinkUp, $"down after {i * 100} ms of silence");
        }

        Beat(timeA);
        Assert.False(a.IsLinkUp);
    }

    [Fact]
    public void A_peer_without_heartbeat_is_not_timed_out()
    {
        using var fabric = new FakeIvshmemFabric();
        using var watching = new IvshmemVfioHardware(fabric.Connect(0), new IvshmemNtbOptions
        {
            HeartbeatInterval = TimeSpan.FromMilliseconds(10),
            LinkTimeout = TimeSpan.FromMilliseconds(50),
        });
        using var quiet = new IvshmemVfioHardware(fabric.Connect(1), new IvshmemNtbOptions { HeartbeatInterval = TimeSpan.Zero });
        Assert.True(watching.RefreshLinkState());
        Thread.Sleep(300);
        Assert.True(watching.IsLinkUp);
        Assert.True(watching.RefreshLinkState());
        Assert.True(quiet.RefreshLinkState());
    }

    [Fact]
    public void A_restarted_peer_starts_its_doorbell_counts_afresh()
    {
        _a.RingPeerDoorbell(0);
        _a.RingPeerDoorbell(0);
        _b!.RingPeerDoorbell(0);
        _b.RingPeerDoorbell(1);
        Assert.Equal(0b11UL, _a.ReadDoorbell());
        _a.ClearDoorbell(0b11);

        _b.Dispose();
        _deviceB = _fabric.Connect(1);
        _b = new IvshmemVfioHardware(_deviceB, Options);
        Assert.Equal(0UL, _b.ReadDoorbell());
        Assert.True(_a.RefreshLinkState());
        Assert.Equal(0UL, _a.ReadDoorbell());

        _b.RingPeerDoorbell(1);
        Assert.Equal(0b10UL, _a.ReadDoorbell());
        _a.RingPeerDoorbell(0);
        Assert.Equal(0b01UL, _b.ReadDoorbell());
    }

    [Fact]
    public void Scratchpads_and_doorbells_live_in_the_link_area_not_the_window()
    {
        RemoteAccessCounts before = _a.RemoteAccesses;
        _a.WritePeerScratchpad(9, 0xABCD);
        _a.RingPeerDoorbell(1);
        using MemoryMapping bar = _fabric.MapShared();
        var io = new IoMemoryAccessor(null);
        nint areaOfB = bar.Address + (nint)(_fabric.SharedSize / 2);
        Assert.Equal(0xABCDu, io.LoadU32(areaOfB + IvshmemLinkArea.Scratchpad(9)));
        Assert.Equal(1u, io.LoadU32(areaOfB + IvshmemLinkArea.DoorbellRing(1)));
        Assert.Equal(before, _a.RemoteAccesses);
    }

    [Fact]
    public void Devices_that_do_not_fit_are_refused_and_closed()
    {
        using var small = new FakeIvshmemFabric(sharedSize: 8192);
        FakeIvshmemDevice tooSmall = small.Connect(0);
        Assert.Throws<InvalidOperationException>(() => new IvshmemVfioHardware(tooSmall, Options));
        Assert.True(tooSmall.IsDisposed);

        using var fabric = new FakeIvshmemFabric();
        FakeIvshmemDevice oneVector = fabric.Connect(0, vectors: 1);
        Assert.Throws<InvalidOperationException>(() => new IvshmemVfioHardware(oneVector, Options));
        Assert.True(oneVector.IsDisposed);

        FakeIvshmemDevice thirdPeer = fabric.Connect(5);
        Assert.Throws<InvalidOperationException>(() => new IvshmemVfioHardware(thirdPeer, Options));
        Assert.True(thirdPeer.IsDisposed);

        FakeIvshmemDevice self = fabric.Connect(1);
        Assert.Throws<InvalidOperationException>(() => new IvshmemVfioHardware(self, new IvshmemNtbOptions { PeerId = 1 }));
    }

    [Fact]
    public void Other_ids_work_when_the_peer_is_named()
    {
        using var fabric = new FakeIvshmemFabric();
        using var seven = new IvshmemVfioHardware(fabric.Connect(7), new IvshmemNtbOptions { PeerId = 3 });
        using var three = new IvshmemVfioHardware(fabric.Connect(3), new IvshmemNtbOptions { PeerId = 7 });
        Assert.True(seven.RefreshLinkState());
        Assert.True(three.RefreshLinkState());

        // 3 < 7, so 3 owns the lower half.
        Assert.True(three.LocalWindow.Address < three.PeerWindow.Address);
        seven.PeerWindow.Accessor.StoreU32(seven.PeerWindow.Address, 77);
        Assert.Equal(77u, three.LocalWindow.Accessor.LoadU32(three.LocalWindow.Address));
        three.RingPeerDoorbell(0);
        Assert.True(Signalled(seven.DoorbellEvent(0)));
    }

    [Fact]
    public void The_doorbell_count_is_capped_by_the_options()
    {
        using var fabric = new FakeIvshmemFabric(vectors: 40);
        using var capped = new IvshmemVfioHardware(fabric.Connect(0), new IvshmemNtbOptions { MaxDoorbells = 4 });
        Assert.Equal(4, capped.DoorbellCount);
        using var full = new IvshmemVfioHardware(fabric.Connect(1));
        Assert.Equal(IvshmemLinkArea.MaxDoorbells, full.DoorbellCount);
    }
}
