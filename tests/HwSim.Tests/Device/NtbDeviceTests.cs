using System.Runtime.InteropServices;
using PciVirtio.HwSim.Client;
using PciVirtio.HwSim.Device;
using PciVirtio.HwSim.Ivshmem;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Signals;

namespace PciVirtio.HwSim.Tests.Device;

public sealed class NtbDeviceTests : IDisposable
{
    private const ulong WindowSize = 64 * 1024;
    private readonly HwSimDevice _device = HwSimDevice.Create(windows: 2, windowSize: WindowSize);
    private readonly SimNtbPort _a;
    private readonly SimNtbPort _b;

    public NtbDeviceTests()
    {
        _a = _device.OpenPort(0);
        _b = _device.OpenPort(1);
    }

    public void Dispose()
    {
        _a.Dispose();
        _b.Dispose();
        _device.Dispose();
    }

    private static bool Signalled(EventFd e, int timeoutMs = 2000) => UnixSocket.WaitReadable(e.Handle, timeoutMs);

    [Fact]
    public void Registers_identify_the_device_and_each_port()
    {
        Assert.Equal(NtbRegisters.IdValue, _a.Registers.Read32(NtbRegisters.Id));
        Assert.Equal(NtbRegisters.VersionValue, _b.Registers.Read32(NtbRegisters.Version));
        Assert.Equal(0u, _a.Registers.Read32(NtbRegisters.PortIndex));
        Assert.Equal(1u, _b.Registers.Read32(NtbRegisters.PortIndex));
        Assert.Equal(2, _a.MemoryWindowCount);
        Assert.Equal(16, _a.DoorbellCount);
        Assert.Equal(0xFFFFUL, _a.DoorbellValidMask);
        Assert.True(_a.ScratchpadCount >= 8);
        Assert.Equal(WindowSize, _a.WindowMaxSize(1));
        Assert.Equal(2 * WindowSize, _a.LocalMemory.Length);
        Assert.True(_a.LinkIsUp);
        Assert.True(_b.LinkIsUp);
    }

    [Fact]
    public void Writes_through_the_peer_window_land_at_the_peers_translation()
    {
        Assert.Throws<InvalidOperationException>(() => _a.MapPeerWindow(0));
        Assert.Equal(WindowSize, _b.SetTranslation(1, WindowSize, WindowSize));
        Assert.Equal((WindowSize, WindowSize), _b.Translation(1));
        Assert.Equal(WindowSize, _a.PeerWindowSize(1));
        using MemoryMapping window = _a.MapPeerWindow(1);
        SimWindowAccessor acc = _a.PeerWindowAccessor;
        byte[] data = new byte[1000];
        new Random(7).NextBytes(data);
        acc.CopyTo(window.Address + 24, data);
        acc.StoreU32(window.Address + 4, 0xDEADBEEF);

        Span<byte> local = _b.LocalMemory.Span;
        Assert.True(local.Slice((int)WindowSize + 24, data.Length).SequenceEqual(data));
        Assert.Equal(0xDEADBEEFu, MemoryMarshal.Read<uint>(local[((int)WindowSize + 4)..]));
        Assert.True(local[..(int)WindowSize].IndexOfAnyExcept((byte)0) < 0, "nothing lands outside the translation");
        // Nothing reached A's own local memory.
        Assert.True(_a.LocalMemory.Span.IndexOfAnyExcept((byte)0) < 0);

        // The other way.
        _a.SetTranslation(0, 0, 4096);
        using MemoryMapping back = _b.MapPeerWindow(0);
        _b.PeerWindowAccessor.StoreU64(back.Address + 8, 0x0102030405060708);
        Assert.Equal(0x0102030405060708UL, MemoryMarshal.Read<ulong>(_a.LocalMemory.Span[8..]));
    }

    [Fact]
    public void Translations_are_validated()
    {
        Assert.Throws<ArgumentException>(() => _b.SetTranslation(0, 100, 4096));
        Assert.Throws<ArgumentOutOfRangeException>(() => _b.SetTranslation(0, 0, 2 * WindowSize));
        Assert.Throws<ArgumentOutOfRangeException>(() => _b.SetTranslation(0, 2 * WindowSize, 4096));
        Assert.Throws<ArgumentOutOfRangeException>(() => _b.SetTranslation(2, 0, 4096));
        _b.SetTranslation(0, 0, 4096);
        _b.ClearTranslation(0);
        Assert.Equal(0UL, _a.PeerWindowSize(0));
    }

    [Fact]
    public void A_shrunk_window_grants_less_than_asked()
    {
        _device.ShrinkWindows(8192);
        Assert.Equal(8192UL, _b.SetTranslation(0, 0, WindowSize));
        Assert.Equal(8192UL, _a.PeerWindowSize(0));
        _device.ShrinkWindows(0);
        Assert.Equal(WindowSize, _b.SetTranslation(0, 0, WindowSize));
    }

    [Fact]
    public void A_doorbell_sets_the_peers_bit_and_raises_its_interrupt()
    {
        Assert.False(Signalled(_b.DoorbellEvent(3), 0));
        _a.PeerDoorbellSet(1UL << 3);
        Assert.True(Signalled(_b.DoorbellEvent(3)));
        Assert.Equal(1UL, _b.DoorbellEvent(3).Consume());
        Assert.False(Signalled(_b.DoorbellEvent(2), 0));
        Assert.Equal(1UL << 3, _b.DoorbellRead());
        Assert.Equal(0UL, _a.DoorbellRead());

        _a.PeerDoorbellSet((1UL << 5) | (1UL << 40));
        Assert.Equal((1UL << 3) | (1UL << 5), _b.DoorbellRead());
        _b.DoorbellClear(1UL << 3);
        Assert.Equal(1UL << 5, _b.DoorbellRead());
        _b.DoorbellClear(ulong.MaxValue);
        Assert.Equal(0UL, _b.DoorbellRead());

        PortCounters a = _a.Counters;
        PortCounters b = _b.Counters;
        Assert.Equal(2, a.DoorbellsSent);
        Assert.Equal(2, b.DoorbellsReceived);
        Assert.Equal(2, b.InterruptsRaised);
        Assert.Equal(0, a.InterruptsRaised);
    }

    [Fact]
    public void A_masked_doorbell_latches_without_interrupt_until_unmasked()
    {
        _b.DoorbellMask(1UL << 1);
        Assert.Equal(1UL << 1, _b.DoorbellMaskRead());
        _a.PeerDoorbellSet(1UL << 1);
        Assert.Equal(1UL << 1, _b.DoorbellRead());
        Assert.False(Signalled(_b.DoorbellEvent(1), 50));
        Assert.Equal(0, _b.Counters.InterruptsRaised);
        _b.DoorbellUnmask(1UL << 1);
        Assert.Equal(0UL, _b.DoorbellMaskRead());
        Assert.True(Signalled(_b.DoorbellEvent(1)));
        Assert.Equal(1, _b.Counters.InterruptsRaised);
    }

    [Fact]
    public void Scratchpads_are_readable_and_writable_from_both_ends()
    {
        _a.ScratchpadWrite(0, 0x11);
        _a.PeerScratchpadWrite(1, 0x22);
        _b.PeerScratchpadWrite(2, 0x33);
        _b.ScratchpadWrite(15, 0x44);
        Assert.Equal(0x11u, _a.ScratchpadRead(0));
        Assert.Equal(0x11u, _b.PeerScratchpadRead(0));
        Assert.Equal(0x22u, _b.ScratchpadRead(1));
        Assert.Equal(0u, _a.ScratchpadRead(1));
        Assert.Equal(0x33u, _a.ScratchpadRead(2));
        Assert.Equal(0x44u, _a.PeerScratchpadRead(15));
        Assert.Throws<ArgumentOutOfRangeException>(() => _a.ScratchpadRead(16));
    }

    [Fact]
    public void Link_down_reads_all_ones_drops_writes_and_interrupts_both_ends()
    {
        _b.SetTranslation(0, 0, 4096);
        using MemoryMapping window = _a.MapPeerWindow(0);
        SimWindowAccessor acc = _a.PeerWindowAccessor;
        acc.StoreU32(window.Address, 0x12345678);
        Assert.Equal(0x12345678u, acc.LoadU32(window.Address));

        _device.SetLink(false);
        Assert.True(Signalled(_a.LinkEvent));
        Assert.True(Signalled(_b.LinkEvent));
        _a.LinkEvent.Consume();
        _b.LinkEvent.Consume();
        Assert.False(_a.LinkIsUp);
        Assert.False(_b.LinkIsUp);
        Assert.Equal(0u, _a.Registers.Read32(NtbRegisters.LinkStatus));

        Assert.Equal(uint.MaxValue, acc.LoadU32(window.Address));
        Assert.Equal(ushort.MaxValue, acc.LoadU16(window.Address));
        Assert.Equal(ulong.MaxValue, acc.LoadU64(window.Address));
        byte[] buffer = new byte[13];
        acc.CopyFrom(window.Address, buffer);
        Assert.All(buffer, x => Assert.Equal(0xFF, x));
        acc.StoreU32(window.Address, 0xAAAAAAAA);
        acc.CopyTo(window.Address + 8, new byte[] { 1, 2, 3 });
        Assert.Equal(0x12345678u, MemoryMarshal.Read<uint>(_b.LocalMemory.Span));
        Assert.Equal(0, _b.LocalMemory.Span[8]);
        _a.PeerDoorbellSet(1);
        Assert.Equal(0UL, _b.DoorbellRead());
        _a.PeerScratchpadWrite(0, 9);
        Assert.Equal(0u, _b.ScratchpadRead(0));
        Assert.Equal(uint.MaxValue, _a.PeerScratchpadRead(0));

        PortCounters down = _a.Counters;
        Assert.Equal(4, down.FailedReads);
        Assert.Equal(2, down.DroppedWrites);
        Assert.Equal(1, down.DoorbellsDropped);
        Assert.Equal(1, down.LinkChanges);

        _device.SetLink(true);
        Assert.True(Signalled(_a.LinkEvent));
        Assert.True(Signalled(_b.LinkEvent));
        Assert.True(_a.LinkIsUp);
        Assert.Equal(0x12345678u, acc.LoadU32(window.Address));
        Assert.Equal(2, _b.Counters.LinkChanges);
    }

    [Fact]
    public void Lost_doorbells_are_dropped_and_counted()
    {
        _device.DropDoorbells(2);
        _a.PeerDoorbellSet(1);
        _a.PeerDoorbellSet(2);
        Assert.Equal(0UL, _b.DoorbellRead());
        Assert.False(Signalled(_b.DoorbellEvent(0), 20));
        _a.PeerDoorbellSet(4);
        Assert.Equal(4UL, _b.DoorbellRead());
        Assert.True(Signalled(_b.DoorbellEvent(2)));
        Assert.Equal(2, _a.Counters.DoorbellsDropped);
        Assert.Equal(1, _a.Counters.DoorbellsSent);
    }

    [Fact]
    public void Delayed_doorbells_arrive_later()
    {
        // Generous delay so a descheduled test thread still looks before delivery.
        _device.DelayDoorbells(1000);
        _a.PeerDoorbellSet(1);
        Assert.Equal(0UL, _b.DoorbellRead());
        Assert.True(Signalled(_b.DoorbellEvent(0), 5000));
        Assert.Equal(1UL, _b.DoorbellRead());
        Assert.Equal(1, _b.Counters.DoorbellsReceived);
    }

    [Fact]
    public void Remote_accesses_are_counted_and_local_ones_are_not()
    {
        _b.SetTranslation(0, 0, 8192);
        using MemoryMapping window = _a.MapPeerWindow(0);
        SimWindowAccessor acc = _a.PeerWindowAccessor;
        _device.SetReadDelay(1000);
        acc.StoreU64(window.Address, 1);
        acc.StoreU16(window.Address + 8, 2);
        acc.CopyTo(window.Address + 16, new byte[100]);
        _ = acc.LoadU32(window.Address);
        acc.CopyFrom(window.Address, new byte[64]);
        _ = new IoMemoryAccessor(null).LoadU64(_a.LocalMemory.Address);

        PortCounters a = _a.Counters;
        Assert.Equal(3, a.RemoteWrites);
        Assert.Equal(8 + 2 + 100, a.RemoteWrittenBytes);
        Assert.Equal(2, a.RemoteReads);
        Assert.Equal(4 + 64, a.RemoteReadBytes);
        Assert.Equal(default, _b.Counters);
        _device.ResetCounters();
        Assert.Equal(default, _a.Counters);
    }

    [Fact]
    public async Task A_doorbell_in_flight_when_its_port_closes_is_lost_without_harm()
    {
        using var device = HwSimDevice.Create(windows: 1, windowSize: 4096);
        SimNtbPort a = device.OpenPort(0);
        using SimNtbPort b = device.OpenPort(1);
        device.DelayDoorbells(1000);
        a.PeerDoorbellSet(1);
        a.Dispose();
        await Task.Delay(1500);
        Assert.Equal(0UL, b.DoorbellRead());
        Assert.Equal(0, device.Counters(0).DoorbellsSent);

        // Still delivered when the sender stays open.
        using SimNtbPort a2 = device.OpenPort(0);
        a2.PeerDoorbellSet(2);
        Assert.True(Signalled(b.DoorbellEvent(1), 5000));
        Assert.Equal(2UL, b.DoorbellRead());
    }
}
