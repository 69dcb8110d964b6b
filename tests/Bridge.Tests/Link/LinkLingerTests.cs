using PciVirtio.Bridge.Link;
using PciVirtio.Bridge.Tests.Hardware;

namespace PciVirtio.Bridge.Tests.Link;

/// <summary>
/// The linger (LinkOptions.Linger): a receiver whose ring ran dry, or a sender out of space,
/// keeps looking at its ring for a while instead of asking the peer for a doorbell at once.
/// The linger's clock is moved by hand, so "still lingering" and "linger over" are states the
/// test sets, not races it hopes to win.
/// </summary>
public sealed class LinkLingerTests
{
    private static readonly TimeSpan UpTimeout = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan ArriveTimeout = TimeSpan.FromSeconds(20);

    [Fact]
    public void While_both_ends_linger_frames_and_returned_buffers_cross_without_a_doorbell_even_with_every_doorbell_lost()
    {
        var clock = new ManualTime();

        // A 256-entry ring, so the 600 frames below run a out of space.
        var offer = new LinkParameters { QueueSize = 256 };
        using var pair = Up(new LinkPair(offer, offer, linger: TimeSpan.FromMilliseconds(1), clock: clock));

        // The clock stands still: b's ring ran dry when the link came up, and b lingers on.
        // The first frame still brings a kick: with EVENT_IDX a fresh ring's avail_event is 0,
        // which the first entry passes whatever b does.
        Assert.Equal(1, pair.A.SendAll([LinkPair.Frame(0, 100)]));
        Assert.True(SpinWait.SpinUntil(() => pair.B.ReceivedCount == 1, ArriveTimeout));
        pair.Device.DropDoorbells(1_000_000);
        long kicks = pair.A.OnLoop(() => pair.A.Link.Stats.DoorbellsSent);
        long usedDoorbells = pair.B.OnLoop(() => pair.B.Link.Stats.DoorbellsSent);
        long stalls = pair.A.OnLoop(() => pair.A.Link.Stats.TxStalls);
        var frames = Enumerable.Range(1, 600).Select(i => LinkPair.Frame(i, 64 + (i % 700))).ToList();
        Assert.Equal(frames.Count, pair.A.SendAll(frames));
        Assert.True(SpinWait.SpinUntil(() => pair.B.ReceivedCount == frames.Count + 1, ArriveTimeout), $"b got {pair.B.ReceivedCount}/{frames.Count + 1}");
        Assert.Equal(Enumerable.Range(0, frames.Count + 1), pair.B.Received.Select(LinkPair.SeqOf));
        Assert.Equal(kicks, pair.A.OnLoop(() => pair.A.Link.Stats.DoorbellsSent));

        // 600 frames do not fit a 256-entry ring: a ran out of space, and took back what b
        // returned by looking, never asking b for a used doorbell.
        Assert.True(pair.A.OnLoop(() => pair.A.Link.Stats.TxStalls) > stalls, "a never ran out of space");
        Assert.Equal(usedDoorbells, pair.B.OnLoop(() => pair.B.Link.Stats.DoorbellsSent));
    }

    [Fact]
    public void Once_the_linger_is_over_the_receiver_asks_for_a_kick_and_the_next_frame_brings_one()
    {
        var clock = new ManualTime();
        using var pair = Up(new LinkPair(linger: TimeSpan.FromMilliseconds(1), clock: clock));
        long kicks = pair.A.OnLoop(() => pair.A.Link.Stats.DoorbellsSent);
        long rearms = pair.B.OnLoop(() => pair.B.Link.Stats.RxRearms);

        clock.Advance(TimeSpan.FromMilliseconds(2));
        Assert.True(SpinWait.SpinUntil(() => pair.B.OnLoop(() => pair.B.Link.Stats.RxRearms) > rearms, UpTimeout), "b never asked for kicks after its linger");
        Assert.Equal(1, pair.A.SendAll([LinkPair.Frame(0, 100)]));
        Assert.True(SpinWait.SpinUntil(() => pair.B.ReceivedCount == 1, ArriveTimeout));
        Assert.Equal(kicks + 1, pair.A.OnLoop(() => pair.A.Link.Stats.DoorbellsSent));

        // b served the kick and lingers again (the clock stands still): the next frames need none.
        var more = Enumerable.Range(1, 50).Select(i => LinkPair.Frame(i, 100)).ToList();
        Assert.Equal(more.Count, pair.A.SendAll(more));
        Assert.True(SpinWait.SpinUntil(() => pair.B.ReceivedCount == 51, ArriveTimeout), $"b got {pair.B.ReceivedCount}/51");
        Assert.Equal(kicks + 1, pair.A.OnLoop(() => pair.A.Link.Stats.DoorbellsSent));
    }

    [Fact]
    public void Without_a_linger_every_frame_after_a_dry_ring_is_kicked()
    {
        using var pair = Up(new LinkPair(linger: TimeSpan.Zero));
        long kicks = pair.A.OnLoop(() => pair.A.Link.Stats.DoorbellsSent);
        for (int i = 0; i < 3; i++)
        {
            // Once b has asked for kicks again (not merely handed the frame on), a's next
            // frame must bring one.
            long rearms = pair.B.OnLoop(() => pair.B.Link.Stats.RxRearms);
            Assert.Equal(1, pair.A.SendAll([LinkPair.Frame(i, 100)]));
            Assert.True(SpinWait.SpinUntil(() => pair.B.ReceivedCount == i + 1 && pair.B.OnLoop(() => pair.B.Link.Stats.RxRearms) > rearms, ArriveTimeout));
        }

        Assert.Equal(kicks + 3, pair.A.OnLoop(() => pair.A.Link.Stats.DoorbellsSent));
    }

    [Fact]
    public void A_linger_longer_than_a_millisecond_is_refused()
    {
        using var device = PciVirtio.HwSim.Device.HwSimDevice.Create(windows: 1, windowSize: 1 << 20);
        using var hardware = new PciVirtio.Bridge.Hardware.SimNtbHardware(device.OpenPort(0));
        using var loop = new PciVirtio.Mmio.EventLoop.EpollEventLoop("linger-refused");
        var e = Assert.Throws<ArgumentException>(() => new NtbLink(hardware, new PacketEndpoint(), loop, new LinkOptions { Linger = TimeSpan.FromMilliseconds(2) }));
        Assert.Contains("linger", e.Message, StringComparison.Ordinal);
    }

    /// <summary>Starts both ends and waits for the link; disposes them if it does not come up.</summary>
    private static LinkPair Up(LinkPair pair)
    {
        try
        {
            pair.Start();
            Assert.True(pair.WaitUntilUp(UpTimeout));
            return pair;
        }
        catch
        {
            pair.Dispose();
            throw;
        }
    }
}
