using System.Buffers.Binary;
using PciVirtio.VhostCore.Net;
using PciVirtio.VhostCore.Ring;

namespace PciVirtio.VhostCore.Tests.Net;

public sealed class PortToPortSwitchTests : IDisposable
{
    private const ulong Features = (ulong)(VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx) | (ulong)VirtioNetFeatures.MrgRxbuf;
    private readonly ManualEvents _events = new();
    private readonly PortToPortSwitch _switch = new();
    private readonly TestNetGuest _a;
    private readonly TestNetGuest _b;

    public PortToPortSwitchTests()
    {
        var da = new VhostUserNetDevice("a", new NetDeviceOptions(), _switch.Left, _events);
        var db = new VhostUserNetDevice("b", new NetDeviceOptions(), _switch.Right, _events);
        _a = new TestNetGuest(da, _events, Features, queueSize: 256);
        _b = new TestNetGuest(db, _events, Features, queueSize: 256);
        _a.StartAll();
        _b.StartAll();
    }

    public void Dispose()
    {
        _a.Dispose();
        _b.Dispose();
    }

    [Fact]
    public void Frames_cross_both_ways_intact_and_in_order()
    {
        _a.PostRx(0, 64, 2048);
        _a.Kick(TestNetGuest.Rx(0));
        _b.PostRx(0, 64, 2048);
        _b.Kick(TestNetGuest.Rx(0));
        var sent = new List<byte[]>();
        for (int i = 0; i < 40; i++)
        {
            var p = TestFrames.Packet(60 + (i * 37), i);
            sent.Add(p);
            _a.AddTx(0, p, null, i % 3 == 0 ? [12] : []);
        }

        _a.Kick(TestNetGuest.Tx(0));
        _b.AddTx(0, TestFrames.Packet(99, 1000));
        _b.Kick(TestNetGuest.Tx(0));

        var atB = _b.ReapRx(0);
        Assert.Equal(sent.Count, atB.Count);
        for (int i = 0; i < sent.Count; i++)
        {
            Assert.Equal(sent[i], atB[i][12..]);
        }

        var atA = Assert.Single(_a.ReapRx(0));
        Assert.Equal(1000, BinaryPrimitives.ReadInt32LittleEndian(atA.AsSpan(12 + 14)));
        Assert.Equal(40, _switch.Left.Forwarded);
        Assert.Equal(1, _switch.Right.Forwarded);
        Assert.Equal(40, _a.ReapTx(0));
    }

    [Fact]
    public void A_receiver_without_buffers_holds_the_sender_back_and_nothing_is_lost()
    {
        _b.PostRx(0, 4, 2048);
        _b.Kick(TestNetGuest.Rx(0));
        for (int i = 0; i < 20; i++)
        {
            _a.AddTx(0, TestFrames.Packet(500, i));
        }

        _a.Kick(TestNetGuest.Tx(0));
        var first = _b.ReapRx(0);
        Assert.Equal(4, first.Count);
        Assert.Equal(16, _a.Device.Pairs[0].Tx.HeldChains);

        // B posts buffers and kicks its rx queue: A's transmit resumes by itself.
        _b.PostRx(0, 32, 2048);
        _b.Kick(TestNetGuest.Rx(0));
        var rest = _b.ReapRx(0);
        Assert.Equal(16, rest.Count);
        var seqs = first.Concat(rest).Select(f => BinaryPrimitives.ReadInt32LittleEndian(f.AsSpan(12 + 14))).ToArray();
        Assert.Equal(Enumerable.Range(0, 20), seqs);
        Assert.Equal(0, _switch.Left.Dropped);
        Assert.Equal(20, _a.ReapTx(0));
    }

    [Fact]
    public void A_sender_whose_peer_is_not_connected_drops()
    {
        _b.Device.StopQueue(TestNetGuest.Rx(0));
        _b.Device.StopQueue(TestNetGuest.Tx(0));
        _a.AddTx(0, TestFrames.Packet(100, 0));
        _a.Kick(TestNetGuest.Tx(0));
        Assert.Equal(1, _switch.Left.Dropped);
        Assert.Equal(1, _a.ReapTx(0));
    }

    [Fact]
    public void A_sender_held_back_by_a_peer_that_goes_away_goes_on_and_drops()
    {
        _b.PostRx(0, 4, 2048);
        _b.Kick(TestNetGuest.Rx(0));
        for (int i = 0; i < 20; i++)
        {
            _a.AddTx(0, TestFrames.Packet(500, i));
        }

        _a.Kick(TestNetGuest.Tx(0));
        Assert.Equal(4, _b.ReapRx(0).Count);
        Assert.Equal(16, _a.Device.Pairs[0].Tx.HeldChains);

        // B's frontend dies (its session stops both queues): A's transmit queue must not wait
        // for buffers that will never come; it goes on, and the switch drops for the absent peer.
        _b.Device.StopQueue(TestNetGuest.Rx(0));
        _b.Device.StopQueue(TestNetGuest.Tx(0));
        _a.Events.Pump();
        Assert.Equal(0, _a.Device.Pairs[0].Tx.HeldChains);
        Assert.Equal(16, _switch.Left.Dropped);
        Assert.Equal(20, _a.ReapTx(0));

        // Later frames are dropped at once, without a resume.
        _a.AddTx(0, TestFrames.Packet(100, 20));
        _a.Kick(TestNetGuest.Tx(0));
        Assert.Equal(17, _switch.Left.Dropped);
        Assert.Equal(1, _a.ReapTx(0));
    }

    [Fact]
    public void Forwarding_in_steady_state_allocates_nothing()
    {
        // Warm up every path first (JIT, first batch), then measure a long run.
        void Round(int n)
        {
            _b.PostRx(0, n, 2048);
            _b.Kick(TestNetGuest.Rx(0));
            for (int i = 0; i < n; i++)
            {
                _a.AddTx(0, TestFrames.Packet(64, i));
            }

            long before = GC.GetAllocatedBytesForCurrentThread();
            _a.Kick(TestNetGuest.Tx(0));
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.Equal(n, _b.ReapRx(0).Count);
            Assert.Equal(n, _a.ReapTx(0));
            LastAllocated = allocated;
        }

        for (int r = 0; r < 3; r++)
        {
            Round(100);
        }

        Round(200);
        Assert.Equal(0, LastAllocated);
    }

    private long LastAllocated { get; set; }
}

public sealed class PollingSwitchTests
{
    [Fact]
    public void Polling_devices_forward_without_kicks_and_ask_the_drivers_not_to_kick()
    {
        const ulong features = (ulong)VirtioFeatures.Version1 | (ulong)VirtioNetFeatures.MrgRxbuf; // flag-based suppression
        var events = new ManualEvents { Polling = true };
        var sw = new PortToPortSwitch();
        using var a = new TestNetGuest(new VhostUserNetDevice("a", new NetDeviceOptions(), sw.Left, events), events, features);
        using var b = new TestNetGuest(new VhostUserNetDevice("b", new NetDeviceOptions(), sw.Right, events), events, features);
        a.StartAll();
        b.StartAll();
        Assert.Equal(6, events.Pollers.Count); // rx, tx, ctrl of each device

        // b has no buffers yet: a's frames wait; polling notices b's buffers when they come.
        for (int i = 0; i < 10; i++)
        {
            a.AddTx(0, TestFrames.Packet(80, i));
        }

        Assert.False(a.Drivers[TestNetGuest.Tx(0)].NeedsKick());
        events.PollOnce();
        Assert.Empty(b.ReapRx(0));
        b.PostRx(0, 16, 2048);
        Assert.False(b.Drivers[TestNetGuest.Rx(0)].NeedsKick());
        for (int turn = 0; turn < 5; turn++)
        {
            events.PollOnce();
        }

        var got = b.ReapRx(0);
        Assert.Equal(10, got.Count);
        Assert.Equal(Enumerable.Range(0, 10), got.Select(f => BinaryPrimitives.ReadInt32LittleEndian(f.AsSpan(12 + 14))));
        Assert.Equal(0, a.Device.Pairs[0].Tx.Stats.Kicks);

        a.Device.StopQueue(TestNetGuest.Tx(0));
        Assert.Equal(5, events.Pollers.Count);
    }
}
