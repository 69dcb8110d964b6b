using PciVirtio.Bridge.Hardware;
using PciVirtio.Mmio.Signals;

namespace PciVirtio.Bridge.Tests.Hardware;

/// <summary>
/// What the link protocol relies on from any <see cref="INtbHardware"/>, run over each
/// implementation with two ends A and B: scratchpads, doorbells with latch, clear and mask,
/// link changes seen through the notification and the state, the windows, and the remote
/// access counter. Each test gets a fresh pair.
/// </summary>
public abstract class NtbHardwareContractTests : IDisposable
{
    protected const int NoSignalMs = 150;
    protected const int SignalMs = 5000;

    protected abstract INtbHardware A { get; }

    protected abstract INtbHardware B { get; }

    public abstract void Dispose();

    /// <summary>Takes the link down as the hardware would (fault injection, a peer that leaves).</summary>
    protected abstract void TakeLinkDown();

    /// <summary>Brings it back (B may be a new object afterwards).</summary>
    protected abstract void BringLinkUp();

    /// <summary>An end with nobody on the other side (its own world, disposed by the caller).</summary>
    protected abstract INtbHardware OpenWithoutPeer();

    protected static bool Signalled(INotificationSource source, int timeoutMs = SignalMs)
    {
        using var waiter = new SignalWaiter(source);
        return waiter.Wait(timeoutMs) == SignalWaitResult.Signalled;
    }

    protected static void WaitUntil(Func<bool> condition, string what, int timeoutMs = SignalMs)
    {
        long deadline = Environment.TickCount64 + timeoutMs;
        while (!condition())
        {
            Assert.True(Environment.TickCount64 < deadline, $"timed out waiting for {what}");
            Thread.Sleep(5);
        }
    }

    protected void WaitLinkUp()
    {
        WaitUntil(() => A.RefreshLinkState() && B.RefreshLinkState(), "link up at both ends");
    }

    [Fact]
    public void Both_ends_come_up_with_what_the_link_protocol_needs()
    {
        WaitLinkUp();
        foreach (INtbHardware end in new[] { A, B })
        {
            Assert.True(end.IsLinkUp);
            Assert.True(end.ScratchpadCount >= 10, "the handshake uses scratchpads 0..9");
            Assert.True(end.DoorbellCount >= 2, "a queue pair uses two doorbell bits");
            Assert.Equal((1UL << end.DoorbellCount) - 1, end.DoorbellValidMask);
            Assert.Equal(0UL, end.ReadDoorbell());
            Assert.Equal(0UL, end.DoorbellMask);
            Assert.True(end.LocalWindow.Size >= 4096);
            Assert.False(string.IsNullOrEmpty(end.Name));
        }
    }

    [Fact]
    public void A_scratchpad_written_at_the_peer_is_read_locally_there()
    {
        WaitLinkUp();
        RemoteAccessCounts before = A.RemoteAccesses;
        A.WritePeerScratchpad(3, 0xC0FFEE01);
        B.WritePeerScratchpad(0, 0x50560001);
        B.WritePeerScratchpad(A.ScratchpadCount - 1, 7);

        Assert.Equal(0xC0FFEE01u, B.ReadScratchpad(3));
        Assert.Equal(0u, A.ReadScratchpad(3));
        Assert.Equal(0x50560001u, A.ReadScratchpad(0));
        Assert.Equal(7u, A.ReadScratchpad(A.ScratchpadCount - 1));
        Assert.Equal(0u, B.ReadScratchpad(0));

        A.WritePeerScratchpad(3, 0);
        Assert.Equal(0u, B.ReadScratchpad(3));
        Assert.Equal(default, A.RemoteAccesses.Since(before));
    }

    [Fact]
    public void A_doorbell_signals_its_own_bit_and_latches_until_cleared()
    {
        WaitLinkUp();
        A.RingPeerDoorbell(1);
        Assert.True(Signalled(B.DoorbellEvent(1)));
        Assert.False(Signalled(B.DoorbellEvent(0), 0));
        Assert.False(Signalled(A.DoorbellEvent(1), 0), "ringing the peer does not ring us");
        Assert.Equal(1UL << 1, B.ReadDoorbell());
        Assert.Equal(0UL, A.ReadDoorbell());

        Assert.Equal(1UL, B.DoorbellEvent(1).Consume());
        Assert.Equal(1UL << 1, B.ReadDoorbell());
        B.ClearDoorbell(1UL << 1);
        Assert.Equal(0UL, B.ReadDoorbell());

        // Two rings before anyone looks: one latched bit, the notification counts both.
        A.RingPeerDoorbell(0);
        A.RingPeerDoorbell(0);
        Assert.True(Signalled(B.DoorbellEvent(0)));
        Assert.Equal(1UL, B.ReadDoorbell());
        Assert.Equal(2UL, B.DoorbellEvent(0).Consume());
        B.ClearDoorbell(ulong.MaxValue);
        Assert.Equal(0UL, B.ReadDoorbell());
    }

    [Fact]
    public void Every_doorbell_bit_reaches_its_own_notification_both_ways()
    {
        WaitLinkUp();
        foreach ((INtbHardware from, INtbHardware to) in new[] { (A, B), (B, A) })
        {
            for (int bit = 0; bit < to.DoorbellCount; bit++)
            {
                from.RingPeerDoorbell(bit);
                Assert.True(Signalled(to.DoorbellEvent(bit)), $"bit {bit}");
                Assert.Equal(1UL, to.DoorbellEvent(bit).Consume());
            }

            Assert.Equal(to.DoorbellValidMask, to.ReadDoorbell());
            to.ClearDoorbell(to.DoorbellValidMask);
            Assert.Equal(0UL, to.ReadDoorbell());
        }
    }

    [Fact]
    public void A_masked_doorbell_latches_silently_and_signals_when_unmasked()
    {
        WaitLinkUp();
        B.MaskDoorbell(1UL << 0);
        Assert.Equal(1UL, B.DoorbellMask);
        A.RingPeerDoorbell(0);
        A.RingPeerDoorbell(1);
        Assert.True(Signalled(B.DoorbellEvent(1)), "an unmasked bit still signals");
        Assert.False(Signalled(B.DoorbellEvent(0), NoSignalMs));
        Assert.Equal(0b11UL, B.ReadDoorbell());

        B.UnmaskDoorbell(1UL << 0);
        Assert.Equal(0UL, B.DoorbellMask);
        Assert.True(Signalled(B.DoorbellEvent(0), 0), "unmasking a pending bit signals it at once");
        B.DoorbellEvent(0).Consume();
        B.DoorbellEvent(1).Consume();
        B.ClearDoorbell(0b11);

        // Cleared while masked: nothing left to signal on unmask.
        B.MaskDoorbell(1UL << 0);
        A.RingPeerDoorbell(0);
        WaitUntil(() => B.ReadDoorbell() == 1, "the masked bit to latch");
        B.ClearDoorbell(1);
        B.UnmaskDoorbell(1);
        Assert.False(Signalled(B.DoorbellEvent(0), NoSignalMs));

        // Unmasked again, it signals as before.
        A.RingPeerDoorbell(0);
        Assert.True(Signalled(B.DoorbellEvent(0)));
    }

    [Fact]
    public void Link_down_and_up_are_seen_through_the_notification_and_the_state()
    {
        WaitLinkUp();
        A.LinkEvent.Consume();
        Assert.True(A.PeerWindowSize > 0);

        TakeLinkDown();
        Assert.True(Signalled(A.LinkEvent), "link event on link down");
        A.LinkEvent.Consume();
        Assert.False(A.RefreshLinkState());
        Assert.False(A.IsLinkUp);
        Assert.Equal(0UL, A.PeerWindowSize);

        BringLinkUp();
        Assert.True(Signalled(A.LinkEvent), "link event on link up");
        A.LinkEvent.Consume();
        WaitLinkUp();
        Assert.True(A.IsLinkUp);
        Assert.Equal(B.LocalWindow.Size, A.PeerWindowSize);
    }

    [Fact]
    public void Peer_window_writes_land_in_the_peers_local_window()
    {
        WaitLinkUp();
        NtbPeerWindow window = A.PeerWindow;
        Assert.Same(window, A.PeerWindow);
        Assert.Equal(B.LocalWindow.Size, window.Size);
        Assert.Equal(window.Size, A.PeerWindowSize);
        NtbMemoryAccessor remote = window.Accessor;
        byte[] payload = new byte[3000];
        new Random(11).NextBytes(payload);
        remote.CopyTo(window.Address + 1001, payload);
        remote.FullBarrier();
        remote.StoreU64(window.Address + 64, 0x0102030405060708);
        remote.StoreU16(window.Address + 72, 0xBEEF);
        remote.StoreReleaseU16(window.Address + 74, 0x1234);
        remote.StoreU32(window.Address + (nint)window.Size - 4, 0xFEEDFACE);

        NtbLocalWindow inbound = B.LocalWindow;
        NtbMemoryAccessor local = inbound.Accessor;
        Assert.False(local.IsRemote(inbound.Address));
        Assert.Equal(0x0102030405060708UL, local.LoadU64(inbound.Address + 64));
        Assert.Equal((ushort)0xBEEF, local.LoadU16(inbound.Address + 72));
        Assert.Equal((ushort)0x1234, local.LoadAcquireU16(inbound.Address + 74));
        Assert.Equal(0xFEEDFACEu, local.LoadU32(inbound.Address + (nint)inbound.Size - 4));
        byte[] landed = new byte[payload.Length];
        local.CopyFrom(inbound.Address + 1001, landed);
        Assert.Equal(payload, landed);

        // Nothing reached A's own window.
        byte[] own = new byte[A.LocalWindow.Size];
        A.LocalWindow.Accessor.CopyFrom(A.LocalWindow.Address, own);
        Assert.True(own.AsSpan().IndexOfAnyExcept((byte)0) < 0);

        // And the other way.
        NtbPeerWindow back = B.PeerWindow;
        back.Accessor.StoreU32(back.Address + 8, 0xA5A5A5A5);
        Assert.Equal(0xA5A5A5A5u, A.LocalWindow.Accessor.LoadU32(A.LocalWindow.Address + 8));
    }

    [Fact]
    public void The_remote_read_counter_counts_exactly_the_reads_made_through_the_peer_window()
    {
        WaitLinkUp();
        NtbPeerWindow window = A.PeerWindow;
        NtbMemoryAccessor access = window.Accessor;
        RemoteAccessCounts start = A.RemoteAccesses;

        // Writes only: the data path of the link.
        access.StoreU32(window.Address, 1);
        access.StoreU32(window.Address + 4, 2);
        access.StoreU64(window.Address + 8, 3);
        access.CopyTo(window.Address + 64, new byte[100]);
        access.StoreReleaseU16(window.Address + 16, 4);
        RemoteAccessCounts writes = A.RemoteAccesses.Since(start);
        Assert.Equal(0, writes.Reads);
        Assert.Equal(0, writes.ReadBytes);
        Assert.Equal(4 + 4 + 8 + 100 + 2, writes.WrittenBytes);
        Assert.True(writes.Writes >= 5);

        // The same accessor on our own window is local: not counted.
        nint mine = A.LocalWindow.Address;
        Assert.False(access.IsRemote(mine));
        Assert.True(access.IsRemote(window.Address + (nint)window.Size - 1));
        Assert.False(access.IsRemote(window.Address + (nint)window.Size));
        access.StoreU64(mine + 8, 5);
        Assert.Equal(5UL, access.LoadU64(mine + 8));
        access.CopyFrom(mine, new byte[256]);
        Assert.Equal(writes, A.RemoteAccesses.Since(start));

        // The peer reading what we wrote is local at its end: nobody's remote read.
        RemoteAccessCounts peerStart = B.RemoteAccesses;
        Assert.Equal(3UL, B.LocalWindow.Accessor.LoadU64(B.LocalWindow.Address + 8));
        Assert.Equal(default, B.RemoteAccesses.Since(peerStart));
        Assert.Equal(writes, A.RemoteAccesses.Since(start));

        // Now reads: each scalar load is one, a copy adds its bytes.
        for (int i = 0; i < 5; i++)
        {
            Assert.Equal(1u, access.LoadU32(window.Address));
        }

        Assert.Equal((ushort)4, access.LoadAcquireU16(window.Address + 16));
        RemoteAccessCounts reads = A.RemoteAccesses.Since(start);
        Assert.Equal(6, reads.Reads);
        Assert.Equal((5 * 4) + 2, reads.ReadBytes);
        access.CopyFrom(window.Address + 64, new byte[64]);
        Assert.Equal((5 * 4) + 2 + 64, A.RemoteAccesses.Since(start).ReadBytes);
        Assert.Equal(writes.Writes, A.RemoteAccesses.Since(start).Writes);
    }

    [Fact]
    public void Without_a_peer_there_is_no_peer_window()
    {
        using INtbHardware alone = OpenWithoutPeer();
        Assert.Equal(0UL, alone.PeerWindowSize);
        Assert.False(alone.TryGetPeerWindow(out NtbPeerWindow? window));
        Assert.Null(window);
        Assert.Throws<InvalidOperationException>(() => alone.PeerWindow);
        Assert.True(alone.LocalWindow.Size > 0);
        Assert.Equal(default, alone.RemoteAccesses);
    }

    [Fact]
    public void Out_of_range_bits_and_scratchpads_are_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => A.RingPeerDoorbell(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => A.RingPeerDoorbell(A.DoorbellCount));
        Assert.Throws<ArgumentOutOfRangeException>(() => A.DoorbellEvent(A.DoorbellCount));
        Assert.Throws<ArgumentOutOfRangeException>(() => A.ReadScratchpad(A.ScratchpadCount));
        Assert.Throws<ArgumentOutOfRangeException>(() => A.WritePeerScratchpad(-1, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => A.LocalWindow.Region(0, A.LocalWindow.Size, 1));

        // Bits beyond the valid mask are ignored, as ntb.h drivers do.
        A.MaskDoorbell(~A.DoorbellValidMask);
        Assert.Equal(0UL, A.DoorbellMask);
        A.ClearDoorbell(ulong.MaxValue);
    }

    [Fact]
    public void Windows_make_memory_table_regions_at_link_addresses()
    {
        WaitLinkUp();
        const ulong PeerBase = 0x0000_0100_0000_0000;
        var local = A.LocalWindow.Region(0);
        var peer = A.PeerWindow.Region(PeerBase, 4096, 8192);
        Assert.Equal(0UL, local.GuestPhysAddr);
        Assert.Equal(A.LocalWindow.Size, local.Size);
        Assert.Equal(A.LocalWindow.Address, local.HostAddr);
        Assert.Equal(PeerBase, peer.GuestPhysAddr);
        Assert.Equal(8192UL, peer.Size);
        Assert.Equal(A.PeerWindow.Address + 4096, peer.HostAddr);
    }

    [Fact]
    public void Calls_after_disposal_throw_instead_of_touching_unmapped_memory()
    {
        WaitLinkUp();
        A.Dispose();
        A.Dispose();
        Assert.Throws<ObjectDisposedException>(() => A.ReadScratchpad(0));
        Assert.Throws<ObjectDisposedException>(() => A.WritePeerScratchpad(0, 1));
        Assert.Throws<ObjectDisposedException>(() => A.RingPeerDoorbell(0));
        Assert.Throws<ObjectDisposedException>(() => A.ReadDoorbell());
        Assert.Throws<ObjectDisposedException>(() => A.ClearDoorbell(1));
        Assert.Throws<ObjectDisposedException>(() => A.MaskDoorbell(1));
        Assert.Throws<ObjectDisposedException>(() => A.UnmaskDoorbell(1));
        Assert.Throws<ObjectDisposedException>(() => A.RefreshLinkState());
        Assert.Throws<ObjectDisposedException>(() => A.TryGetPeerWindow(out _));
    }
}
