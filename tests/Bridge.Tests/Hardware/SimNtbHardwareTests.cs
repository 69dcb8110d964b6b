using PciVirtio.Bridge.Hardware;
using PciVirtio.HwSim.Device;

namespace PciVirtio.Bridge.Tests.Hardware;

/// <summary>The contract over an in-process hw-sim device (port 0 = A, port 1 = B), plus what
/// only hw-sim has: its fabric (link faults acting on the window accessor) and its counters.</summary>
public sealed class SimNtbHardwareTests : NtbHardwareContractTests
{
    private const ulong WindowSize = 64 * 1024;
    private readonly HwSimDevice _device = HwSimDevice.Create(windows: 2, windowSize: WindowSize);
    private readonly SimNtbHardware _a;
    private readonly SimNtbHardware _b;

    public SimNtbHardwareTests()
    {
        _a = new SimNtbHardware(_device.OpenPort(0));
        _b = new SimNtbHardware(_device.OpenPort(1));
    }

    protected override INtbHardware A => _a;

    protected override INtbHardware B => _b;

    public override void Dispose()
    {
        _a.Dispose();
        _b.Dispose();
        _device.Dispose();
    }

    protected override void TakeLinkDown() => _device.SetLink(false);

    protected override void BringLinkUp() => _device.SetLink(true);

    protected override INtbHardware OpenWithoutPeer()
    {
        // A device of its own whose port 1 never opens, so nobody translates a window for us.
        HwSimDevice device = HwSimDevice.Create(windows: 1, windowSize: WindowSize);
        return new SimNtbHardware(device.OpenPort(0, ownsDevice: true));
    }

    [Fact]
    public void Each_end_exposes_its_whole_window_0_at_open_and_withdraws_it_at_close()
    {
        Assert.Equal((0UL, WindowSize), _b.Port.Translation(0));
        Assert.Equal(WindowSize, _a.PeerWindowSize);
        Assert.Equal(_b.Port.LocalMemory.Address, _b.LocalWindow.Address);
        Assert.Equal(NtbMemoryKind.Ram, _b.LocalWindow.Kind);
        Assert.Equal("hw-sim port 1", _b.Name);

        _b.Dispose();
        Assert.Equal(0UL, _a.PeerWindowSize);
        _b.Dispose();
    }

    [Fact]
    public void Remote_accesses_are_hw_sims_own_counters()
    {
        NtbPeerWindow window = _a.PeerWindow;
        window.Accessor.StoreU64(window.Address, 9);
        window.Accessor.CopyTo(window.Address + 8, new byte[40]);
        Assert.Equal(9UL, window.Accessor.LoadU64(window.Address));

        PortCounters counters = _device.Counters(0);
        Assert.Equal(new RemoteAccessCounts(counters.RemoteReads, counters.RemoteWrites, counters.RemoteReadBytes, counters.RemoteWrittenBytes), _a.RemoteAccesses);
        Assert.Equal(new RemoteAccessCounts(1, 2, 8, 48), _a.RemoteAccesses);
        Assert.Equal(default, _b.RemoteAccesses);
    }

    [Fact]
    public void With_the_link_down_the_window_drops_writes_and_reads_all_ones_like_pcie()
    {
        NtbPeerWindow window = _a.PeerWindow;
        NtbMemoryAccessor access = window.Accessor;
        access.StoreU32(window.Address + 16, 0x11111111);
        _device.SetLink(false);

        access.StoreU32(window.Address + 16, 0x22222222);
        Assert.Equal(uint.MaxValue, access.LoadU32(window.Address + 16));
        _a.WritePeerScratchpad(1, 5);
        _a.RingPeerDoorbell(2);
        Assert.False(Signalled(_b.DoorbellEvent(2), NoSignalMs));

        // Our own window stays ours.
        access.StoreU32(_a.LocalWindow.Address, 3);
        Assert.Equal(3u, access.LoadU32(_a.LocalWindow.Address));

        _device.SetLink(true);
        Assert.Equal(0x11111111u, _b.LocalWindow.Accessor.LoadU32(_b.LocalWindow.Address + 16));
        Assert.Equal(0u, _b.ReadScratchpad(1));
        PortCounters counters = _device.Counters(0);
        Assert.Equal(1, counters.DroppedWrites);
        Assert.Equal(1, counters.FailedReads);
        Assert.Equal(1, counters.DoorbellsDropped);
        Assert.Equal(0, _a.RemoteAccesses.Reads);
    }

    [Fact]
    public void Doorbells_are_the_ports_doorbell_register()
    {
        _a.RingPeerDoorbell(5);
        Assert.Equal(1UL << 5, _b.Port.DoorbellRead());
        _b.MaskDoorbell(1UL << 4);
        Assert.Equal(1UL << 4, _b.Port.DoorbellMaskRead());
        _b.ClearDoorbell(1UL << 5);
        Assert.Equal(0UL, _b.Port.DoorbellRead());
        Assert.Equal(1, _device.Counters(0).DoorbellsSent);
    }
}
