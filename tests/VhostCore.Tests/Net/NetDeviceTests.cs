using System.Buffers.Binary;
using PciVirtio.VhostCore.Net;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.VhostUser;

namespace PciVirtio.VhostCore.Tests.Net;

public class NetDeviceTests
{
    private const ulong Modern = (ulong)(VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx | VirtioFeatures.RingIndirectDesc);
    private const ulong Mergeable = Modern | (ulong)VirtioNetFeatures.MrgRxbuf;

    private static (VhostUserNetDevice Device, RecordingBackend Backend, ManualEvents Events) NewDevice(int pairs = 1, VirtioNetFeatures offloads = VirtioNetFeatures.None)
    {
        var backend = new RecordingBackend(offloads);
        var events = new ManualEvents();
        var device = new VhostUserNetDevice("net0", new NetDeviceOptions { QueuePairs = pairs }, backend, events);
        return (device, backend, events);
    }

    [Fact]
    public void Offers_the_virtio_net_feature_set_and_the_backend_offloads()
    {
        var (device, _, _) = NewDevice(pairs: 2, offloads: VirtioNetFeatures.Csum | VirtioNetFeatures.HostTso4 | VirtioNetFeatures.GuestCsum);
        var f = device.Features;
        foreach (var bit in new ulong[]
        {
            (ulong)VirtioFeatures.Version1, (ulong)VirtioFeatures.RingEventIdx, (ulong)VirtioFeatures.RingIndirectDesc,
            (ulong)VirtioNetFeatures.MrgRxbuf, (ulong)VirtioNetFeatures.Status, (ulong)VirtioNetFeatures.Mtu,
            (ulong)VirtioNetFeatures.Mq, (ulong)VirtioNetFeatures.CtrlVq, (ulong)VirtioNetFeatures.Csum,
            (ulong)VirtioNetFeatures.HostTso4, (ulong)VirtioNetFeatures.GuestCsum, VhostUserConstants.ProtocolFeaturesBit,
        })
        {
            Assert.True((f & bit) == bit, $"bit 0x{bit:x} missing from 0x{f:x}");
        }

        Assert.Equal(0UL, f & (ulong)VirtioFeatures.RingPacked);
        Assert.Equal(0UL, f & (ulong)VirtioNetFeatures.HostTso6);
        Assert.Equal(5, device.QueueCount);
        Assert.Equal(2UL, device.QueueNum);
    }

    [Fact]
    public void Config_space_holds_mac_link_up_pairs_and_mtu()
    {
        var backend = new RecordingBackend();
        var device = new VhostUserNetDevice("n", new NetDeviceOptions { QueuePairs = 3, Mac = [0x52, 0x54, 0, 1, 2, 3], Mtu = 9000 }, backend, new ManualEvents());
        var config = new byte[VhostUserNetDevice.ConfigSize];
        Assert.True(device.TryGetConfig(0, config));
        Assert.Equal(new byte[] { 0x52, 0x54, 0, 1, 2, 3 }, config[..6]);
        Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(config.AsSpan(6)));
        Assert.Equal(3, BinaryPrimitives.ReadUInt16LittleEndian(config.AsSpan(8)));
        Assert.Equal(9000, BinaryPrimitives.ReadUInt16LittleEndian(config.AsSpan(10)));
        Assert.False(device.TryGetConfig(10, new byte[8]));
        Assert.True((device.Features & (ulong)VirtioNetFeatures.Mac) != 0);
        Assert.True(device.OnMtu(1280));
        Assert.False(device.OnMtu(20));
        Assert.Equal(1280, device.Mtu);
    }

    [Theory]
    [InlineData(Modern)]
    [InlineData(Mergeable)]
    [InlineData((ulong)VirtioFeatures.RingEventIdx)] // legacy: 10-byte header
    public void Transmit_hands_the_backend_a_12_byte_header_and_the_packet_whatever_the_descriptor_split(ulong features)
    {
        var (device, backend, events) = NewDevice();
        using var guest = new TestNetGuest(device, events, features);
        guest.StartAll();
        int h = guest.HeaderSize;
        var header = new byte[h];
        header[0] = 1;
        header[6] = 34;
        header[8] = 16;
        if (h == 12)
        {
            header[10] = 0x55; // num_buffers is meaningless on transmit: it must not leak
        }

        var packets = new List<byte[]>();
        int[][] splits = [[], [h], [3], [h + 5], [1, 2, h, h + 1, h + 100], [h + 60]];
        for (int i = 0; i < splits.Length; i++)
        {
            var p = TestFrames.Packet(200 + (i * 13), i);
            packets.Add(p);
            guest.AddTx(0, p, header, splits[i]);
        }

        guest.Kick(TestNetGuest.Tx(0));
        Assert.Equal(splits.Length, backend.Sent.Count);
        for (int i = 0; i < splits.Length; i++)
        {
            var frame = backend.Sent[i].Frame;
            Assert.Equal(VirtioNetHeader.Size + packets[i].Length, frame.Length);
            Assert.Equal(header[..10], frame[..10]);
            Assert.Equal(0, BinaryPrimitives.ReadUInt16LittleEndian(frame.AsSpan(10)));
            Assert.Equal(packets[i], frame[12..]);
        }

        Assert.Equal(splits.Length, guest.ReapTx(0));
        Assert.Equal(splits.Length, device.Pairs[0].Tx.Stats.Packets);
        Assert.True(events.Signals(guest.CallOf(TestNetGuest.Tx(0))) >= 1);
    }

    [Fact]
    public void Transmit_chain_with_a_writable_buffer_breaks_only_that_queue()
    {
        var (device, backend, events) = NewDevice(pairs: 2);
        using var guest = new TestNetGuest(device, events, Modern);
        guest.StartAll();
        ulong a = guest.Alloc(100);
        ulong b = guest.Alloc(100);
        Assert.True(guest.Drivers[TestNetGuest.Tx(0)].TryAdd([new GuestBuffer(a, 100)], [new GuestBuffer(b, 100)], a));
        guest.Drivers[TestNetGuest.Tx(0)].Publish();
        guest.Kick(TestNetGuest.Tx(0));
        Assert.True(device.Pairs[0].Tx.Ring.IsBroken);
        Assert.Equal(QueueError.WrongDirection, device.Pairs[0].Tx.Ring.Error);
        Assert.Empty(backend.Sent);

        guest.AddTx(1, TestFrames.Packet(100, 1));
        guest.Kick(TestNetGuest.Tx(1));
        Assert.Single(backend.Sent);
        Assert.Equal(1, backend.Sent[0].Pair);
    }

    [Fact]
    public void Transmit_chain_shorter_than_the_header_breaks_the_queue()
    {
        var (device, backend, events) = NewDevice();
        using var guest = new TestNetGuest(device, events, Modern);
        guest.StartAll();
        ulong a = guest.Alloc(8);
        Assert.True(guest.Drivers[TestNetGuest.Tx(0)].TryAdd([new GuestBuffer(a, 8)], [], a));
        guest.Drivers[TestNetGuest.Tx(0)].Publish();
        guest.Kick(TestNetGuest.Tx(0));
        Assert.Equal(QueueError.ShortHeader, device.Pairs[0].Tx.Ring.Error);
        Assert.Empty(backend.Sent);
    }

    [Fact]
    public void Transmit_runt_and_oversized_frames_are_dropped_and_returned()
    {
        var (device, backend, events) = NewDevice();
        using var guest = new TestNetGuest(device, events, Modern);
        guest.StartAll();
        guest.AddTx(0, new byte[10]);
        guest.AddTx(0, new byte[VirtioNetHeader.MaxPacket + 1]);
        guest.AddTx(0, TestFrames.Packet(60, 3));
        guest.Kick(TestNetGuest.Tx(0));
        Assert.Single(backend.Sent);
        Assert.Equal(2, device.Pairs[0].Tx.Stats.Drops);
        Assert.Equal(3, guest.ReapTx(0));
        Assert.False(device.Pairs[0].Tx.Ring.IsBroken);
    }

    [Fact]
    public void Transmit_waits_while_the_backend_is_full_and_stop_gives_the_waiting_chains_back()
    {
        var (device, backend, events) = NewDevice();
        using var guest = new TestNetGuest(device, events, Modern);
        guest.StartAll();
        for (int i = 0; i < 5; i++)
        {
            guest.AddTx(0, TestFrames.Packet(100, i));
        }

        backend.Full = true;
        guest.Kick(TestNetGuest.Tx(0));
        Assert.Empty(backend.Sent);
        Assert.Equal(5, device.Pairs[0].Tx.HeldChains);

        // GET_VRING_BASE now: the five chains were never used, so the next avail index is 0.
        var state = device.StopQueue(TestNetGuest.Tx(0));
        Assert.Equal(0, state.NextAvail);
        Assert.Equal(0, state.NextUsed);

        // Start again (as after SET_VRING_BASE) and let the backend take frames: all five, in order.
        backend.Full = false;
        Assert.True(device.StartQueue(TestNetGuest.Tx(0), state, guest.Memory, guest.KickOf(TestNetGuest.Tx(0)), guest.CallOf(TestNetGuest.Tx(0))));
        events.Pump();
        Assert.Equal(5, backend.Sent.Count);
        for (int i = 0; i < 5; i++)
        {
            Assert.Equal(i, BinaryPrimitives.ReadInt32LittleEndian(backend.Sent[i].Frame.AsSpan(12 + 14)));
        }
    }

    [Fact]
    public void Transmit_resumes_where_it_stopped_when_the_backend_has_room_again()
    {
        var (device, backend, events) = NewDevice();
        using var guest = new TestNetGuest(device, events, Modern);
        guest.StartAll();
        for (int i = 0; i < 3; i++)
        {
            guest.AddTx(0, TestFrames.Packet(100, i));
        }

        backend.Full = true;
        guest.Kick(TestNetGuest.Tx(0));
        backend.Full = false;
        backend.Ports[0].ResumeTransmit();
        events.Pump();
        Assert.Equal(3, backend.Sent.Count);
        Assert.Equal(3, guest.ReapTx(0));
        Assert.True(device.Pairs[0].Tx.Stats.Stalls >= 1);
    }

    [Fact]
    public void Transmit_yields_after_its_budget_and_finishes_in_deferred_work()
    {
        var (device, backend, events) = NewDevice();
        using var guest = new TestNetGuest(device, events, Modern, queueSize: 1024);
        guest.StartAll();
        int total = NetTxQueue.Budget + 50;
        for (int i = 0; i < total; i++)
        {
            guest.AddTx(0, TestFrames.Packet(64, i));
        }

        guest.Kick(TestNetGuest.Tx(0));
        Assert.Equal(total, backend.Sent.Count);
        Assert.True(backend.Batches >= total / NetTxQueue.Batch);
    }

    [Fact]
    public void In_order_is_offered_and_every_queue_uses_buffers_in_the_order_they_were_made_available()
    {
        const ulong InOrder = Mergeable | (ulong)VirtioFeatures.InOrder;
        var (device, backend, events) = NewDevice();
        Assert.True((device.Features & (ulong)VirtioFeatures.InOrder) != 0);
        using var guest = new TestNetGuest(device, events, InOrder);
        guest.StartAll();
        var used = new UsedBuffer[64];

        // Transmit across a full backend: the held rest of the batch completes after the
        // chains before it, and a dropped frame completes in its place.
        for (int i = 0; i < 6; i++)
        {
            guest.AddTx(0, TestFrames.Packet(100 + i, i));
        }

        backend.NextResult = SendResult.Dropped;
        backend.Full = true;
        guest.Kick(TestNetGuest.Tx(0));
        backend.Full = false;
        backend.Ports[0].ResumeTransmit();
        events.Pump();
        int n = guest.Drivers[TestNetGuest.Tx(0)].Reap(used);
        Assert.Equal(6, n);
        var txUsed = used[..n].Select(u => u.Token).ToList();
        Assert.Equal(txUsed.Order().ToList(), txUsed);

        // Receive: chains are filled in posting order, a frame spanning two included.
        guest.PostRx(0, 8, 1536);
        guest.Kick(TestNetGuest.Rx(0));
        var port = backend.Ports[0];
        foreach (int size in new[] { 60, 3000, 70, 1400 })
        {
            var packet = TestFrames.Packet(size, size);
            Assert.Equal(ReceiveResult.Delivered, port.Receive(new PinnedFrame(TestFrames.WithHeader(packet)).Segments(2), 12 + packet.Length));
        }

        port.FlushReceived();
        n = guest.Drivers[TestNetGuest.Rx(0)].Reap(used);
        Assert.Equal(5, n); // the 3000-byte frame and its header take two 1536-byte buffers
        var rxUsed = used[..n].Select(u => u.Token).ToList();
        Assert.Equal(rxUsed.Order().ToList(), rxUsed);
    }

    [Fact]
    public void Receive_with_mergeable_buffers_spreads_a_frame_over_as_many_chains_as_it_needs()
    {
        var (device, backend, events) = NewDevice();
        using var guest = new TestNetGuest(device, events, Mergeable);
        guest.StartAll();
        guest.PostRx(0, 16, 1536);
        guest.Kick(TestNetGuest.Rx(0));
        var port = backend.Ports[0];
        var big = TestFrames.Packet(4000, 1);
        var small = TestFrames.Packet(60, 2);
        Assert.Equal(ReceiveResult.Delivered, port.Receive(new PinnedFrame(TestFrames.WithHeader(big)).Segments(3), 12 + big.Length));
        Assert.Equal(ReceiveResult.Delivered, port.Receive(new PinnedFrame(TestFrames.WithHeader(small)).Segments(), 12 + small.Length));
        port.FlushReceived();
        var frames = guest.ReapRx(0);
        Assert.Equal(2, frames.Count);
        Assert.Equal(3, BinaryPrimitives.ReadUInt16LittleEndian(frames[0].AsSpan(10)));
        Assert.Equal(big, frames[0][12..]);
        Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(frames[1].AsSpan(10)));
        Assert.Equal(small, frames[1][12..]);
        Assert.Equal(1, events.Signals(guest.CallOf(TestNetGuest.Rx(0))));
    }

    [Fact]
    public void Receive_without_mergeable_buffers_needs_one_chain_big_enough_and_drops_what_never_fits()
    {
        var (device, backend, events) = NewDevice();
        using var guest = new TestNetGuest(device, events, Modern);
        guest.StartAll();
        guest.PostRx(0, 2, 1526);
        guest.Kick(TestNetGuest.Rx(0));
        var port = backend.Ports[0];
        var big = TestFrames.Packet(3000, 1);
        var ok = TestFrames.Packet(1514, 2);
        Assert.Equal(ReceiveResult.Dropped, port.Receive(new PinnedFrame(TestFrames.WithHeader(big)).Segments(), 12 + big.Length));
        Assert.Equal(ReceiveResult.Delivered, port.Receive(new PinnedFrame(TestFrames.WithHeader(ok)).Segments(2), 12 + ok.Length));
        port.FlushReceived();
        var frames = guest.ReapRx(0);
        Assert.Single(frames);
        Assert.Equal(ok, frames[0][12..]);
        Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(frames[0].AsSpan(10)));
        Assert.Equal(1, device.Pairs[0].Rx.Stats.Drops);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Receive_writes_the_header_when_the_frame_or_the_driver_splits_it(bool legacy)
    {
        // The header normally goes from the frame's first segment to the driver's first
        // buffer in registers; a frame whose first segment is shorter than the header, and a
        // driver whose first buffer is, take the staged path.
        var (device, backend, events) = NewDevice();
        using var guest = new TestNetGuest(device, events, legacy ? (ulong)VirtioFeatures.RingEventIdx : Mergeable);
        guest.StartAll();
        ulong first = guest.Alloc(5);
        ulong rest = guest.Alloc(1000);
        guest.PostRxChain(0, new GuestBuffer(first, 5), new GuestBuffer(rest, 1000));
        var packet = TestFrames.Packet(60, 4);
        var framed = TestFrames.WithHeader(packet, flags: 0, gsoType: 0);
        framed[8] = 0x5a; // csum_offset: an ordinary field the device must carry over
        var frame = new PinnedFrame(framed);
        var segments = frame.Segments(10); // 8-byte pieces: the header straddles two
        Assert.True(segments[0].Length < VirtioNetHeader.Size);
        Assert.Equal(ReceiveResult.Delivered, backend.Ports[0].Receive(segments, framed.Length));
        backend.Ports[0].FlushReceived();
        var used = new UsedBuffer[4];
        Assert.Equal(1, guest.Drivers[TestNetGuest.Rx(0)].Reap(used));
        int header = legacy ? VirtioNetHeader.LegacySize : VirtioNetHeader.Size;
        Assert.Equal((uint)(header + packet.Length), used[0].Length);
        var seen = guest.Read(first, 5).Concat(guest.Read(rest, header + packet.Length - 5)).ToArray();
        Assert.Equal(0x5a, seen[8]);
        if (!legacy)
        {
            Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(seen.AsSpan(VirtioNetHeader.NumBuffersOffset)));
        }

        Assert.Equal(packet, seen[header..]);
    }

    [Fact]
    public void Receive_claims_lines_of_popped_buffers_only_inside_them()
    {
        // Popped buffers get early stores into their first lines; a first buffer too short
        // for them is left alone, and nothing past any buffer is touched.
        var (device, backend, events) = NewDevice();
        using var guest = new TestNetGuest(device, events, Mergeable);
        guest.StartAll();
        ulong small = guest.Alloc(16);
        ulong canary = guest.Alloc(64);
        ulong rest = guest.Alloc(1000);
        ulong after = guest.Alloc(64);
        guest.Write(canary, Enumerable.Repeat((byte)0xaa, 64).ToArray());
        guest.Write(after, Enumerable.Repeat((byte)0xbb, 64).ToArray());
        guest.PostRxChain(0, new GuestBuffer(small, 16), new GuestBuffer(rest, 1000));
        var packet = TestFrames.Packet(60, 5);
        Assert.Equal(ReceiveResult.Delivered, backend.Ports[0].Receive(new PinnedFrame(TestFrames.WithHeader(packet)).Segments(), 12 + packet.Length));
        backend.Ports[0].FlushReceived();
        var used = new UsedBuffer[4];
        Assert.Equal(1, guest.Drivers[TestNetGuest.Rx(0)].Reap(used));
        var seen = guest.Read(small, 16).Concat(guest.Read(rest, 12 + packet.Length - 16)).ToArray();
        Assert.Equal(packet, seen[12..]);
        Assert.All(guest.Read(canary, 64), b => Assert.Equal(0xaa, b));
        Assert.All(guest.Read(after, 64), b => Assert.Equal(0xbb, b));
    }

    [Fact]
    public void Receive_for_a_legacy_driver_writes_the_10_byte_header()
    {
        var (device, backend, events) = NewDevice();
        using var guest = new TestNetGuest(device, events, (ulong)VirtioFeatures.RingEventIdx);
        guest.StartAll();
        guest.PostRx(0, 1, 2048);
        guest.Kick(TestNetGuest.Rx(0));
        var p = TestFrames.Packet(100, 9);
        Assert.Equal(ReceiveResult.Delivered, backend.Ports[0].Receive(new PinnedFrame(TestFrames.WithHeader(p)).Segments(), 112));
        backend.Ports[0].FlushReceived();
        var f = Assert.Single(guest.ReapRx(0));
        Assert.Equal(110, f.Length);
        Assert.Equal(p, f[10..]);
    }

    [Fact]
    public void Receive_refuses_offloads_the_driver_did_not_negotiate()
    {
        var (device, backend, events) = NewDevice(offloads: VirtioNetFeatures.GuestCsum | VirtioNetFeatures.GuestTso4);
        using var guest = new TestNetGuest(device, events, Mergeable | (ulong)VirtioNetFeatures.GuestCsum);
        guest.StartAll();
        guest.PostRx(0, 8, 2048);
        guest.Kick(TestNetGuest.Rx(0));
        var p = TestFrames.Packet(100, 0);
        var port = backend.Ports[0];
        Assert.Equal(ReceiveResult.Delivered, port.Receive(new PinnedFrame(TestFrames.WithHeader(p, flags: 1)).Segments(), 112));
        Assert.Equal(ReceiveResult.Dropped, port.Receive(new PinnedFrame(TestFrames.WithHeader(p, flags: 1, gsoType: 1)).Segments(), 112));
        Assert.Equal(ReceiveResult.Dropped, port.Receive(new PinnedFrame(TestFrames.WithHeader(p, gsoType: 4)).Segments(), 112));
        Assert.Equal(VirtioNetFeatures.GuestCsum, backend.Negotiated);
    }

    [Fact]
    public void Receive_without_buffers_waits_and_the_rx_kick_tells_the_backend()
    {
        var (device, backend, events) = NewDevice();
        using var guest = new TestNetGuest(device, events, Mergeable);
        guest.StartAll();
        backend.SpaceAvailable.Clear();
        var port = backend.Ports[0];
        var p = TestFrames.Packet(100, 0);
        Assert.Equal(ReceiveResult.NoBuffers, port.Receive(new PinnedFrame(TestFrames.WithHeader(p)).Segments(), 112));

        // EVENT_IDX: the device asked for a kick at the next avail entry.
        guest.PostRx(0, 4, 2048);
        Assert.True(guest.Drivers[TestNetGuest.Rx(0)].NeedsKick());
        guest.Kick(TestNetGuest.Rx(0));
        Assert.Equal([0], backend.SpaceAvailable);
        Assert.Equal(ReceiveResult.Delivered, port.Receive(new PinnedFrame(TestFrames.WithHeader(p)).Segments(), 112));
    }

    [Fact]
    public void Receive_of_a_frame_larger_than_everything_posted_waits_then_completes()
    {
        var (device, backend, events) = NewDevice();
        using var guest = new TestNetGuest(device, events, Mergeable);
        guest.StartAll();
        guest.PostRx(0, 2, 1024);
        guest.Kick(TestNetGuest.Rx(0));
        var p = TestFrames.Packet(3000, 4);
        var frame = new PinnedFrame(TestFrames.WithHeader(p));
        Assert.Equal(ReceiveResult.NoBuffers, backend.Ports[0].Receive(frame.Segments(), frame.Length));
        Assert.Equal(2, device.Pairs[0].Rx.HeldChains);
        guest.PostRx(0, 2, 1024);
        guest.Kick(TestNetGuest.Rx(0));
        Assert.Equal(ReceiveResult.Delivered, backend.Ports[0].Receive(frame.Segments(), frame.Length));
        backend.Ports[0].FlushReceived();
        var f = Assert.Single(guest.ReapRx(0));
        Assert.Equal(p, f[12..]);
    }

    [Fact]
    public void Stop_gives_back_held_receive_buffers_so_the_next_avail_index_is_exact()
    {
        var (device, backend, events) = NewDevice();
        using var guest = new TestNetGuest(device, events, Mergeable);
        guest.StartAll();
        guest.PostRx(0, 10, 2048);
        guest.Kick(TestNetGuest.Rx(0));
        var p = TestFrames.Packet(100, 0);
        Assert.Equal(ReceiveResult.Delivered, backend.Ports[0].Receive(new PinnedFrame(TestFrames.WithHeader(p)).Segments(), 112));
        Assert.True(device.Pairs[0].Rx.HeldChains > 0);
        var state = device.StopQueue(TestNetGuest.Rx(0));
        Assert.Equal(1, state.NextAvail);
        Assert.Equal(1, state.NextUsed);
    }

    [Fact]
    public void Receive_chain_with_a_readable_buffer_breaks_the_receive_queue()
    {
        var (device, backend, events) = NewDevice();
        using var guest = new TestNetGuest(device, events, Mergeable);
        guest.StartAll();
        ulong a = guest.Alloc(64);
        ulong b = guest.Alloc(2048);
        Assert.True(guest.Drivers[TestNetGuest.Rx(0)].TryAdd([new GuestBuffer(a, 64)], [new GuestBuffer(b, 2048)], a));
        guest.Drivers[TestNetGuest.Rx(0)].Publish();
        guest.Kick(TestNetGuest.Rx(0));
        var p = TestFrames.Packet(100, 0);
        Assert.NotEqual(ReceiveResult.Delivered, backend.Ports[0].Receive(new PinnedFrame(TestFrames.WithHeader(p)).Segments(), 112));
        Assert.Equal(QueueError.WrongDirection, device.Pairs[0].Rx.Ring.Error);
        Assert.False(device.Pairs[0].Tx.Ring.IsBroken);
    }

    [Fact]
    public void Backend_learns_of_a_pair_when_a_queue_starts_and_forgets_it_when_both_stop()
    {
        var (device, backend, events) = NewDevice(pairs: 2);
        using var guest = new TestNetGuest(device, events, Modern);
        guest.Start(TestNetGuest.Rx(1));
        Assert.Equal([1], backend.Ports.Keys);
        guest.Start(TestNetGuest.Tx(1));
        device.StopQueue(TestNetGuest.Rx(1));
        Assert.Equal([1], backend.Ports.Keys);
        device.StopQueue(TestNetGuest.Tx(1));
        Assert.Empty(backend.Ports);
    }

    [Fact]
    public void Control_queue_answers_vq_pairs_set_within_the_device_pairs()
    {
        var (device, _, events) = NewDevice(pairs: 4);
        using var guest = new TestNetGuest(device, events, Modern | (ulong)VirtioNetFeatures.CtrlVq | (ulong)VirtioNetFeatures.Mq);
        int ctrl = device.QueueCount - 1;
        guest.Start(ctrl);
        byte Command(byte cls, byte cmd, ushort value)
        {
            ulong c = guest.Alloc(4);
            ulong ack = guest.Alloc(1);
            var bytes = new byte[4];
            bytes[0] = cls;
            bytes[1] = cmd;
            BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(2), value);
            guest.Write(c, bytes);
            guest.Write(ack, [0xee]);
            Assert.True(guest.Drivers[ctrl].TryAdd([new GuestBuffer(c, 4)], [new GuestBuffer(ack, 1)], c));
            guest.Drivers[ctrl].Publish();
            guest.Kick(ctrl);
            return guest.Read(ack, 1)[0];
        }

        Assert.Equal(0, Command(4, 0, 3));
        Assert.Equal(3, device.Control.ActivePairs);
        Assert.Equal(1, Command(4, 0, 5));
        Assert.Equal(1, Command(4, 0, 0));
        Assert.Equal(0, Command(0, 0, 1)); // promiscuous on: we forward everything anyway
        Assert.Equal(1, Command(9, 9, 0));
        Assert.Equal(3, device.Control.ActivePairs);
    }
}
