using PciVirtio.Bridge.Link;
using Xunit.Abstractions;

namespace PciVirtio.Bridge.Tests.Link;

public sealed class LinkTests(ITestOutputHelper output)
{
    private static readonly TimeSpan UpTimeout = TimeSpan.FromSeconds(10);

    [Fact]
    public void Both_ends_agree_and_come_up()
    {
        using var pair = new LinkPair(new LinkParameters { QueueSize = 512, BufferSize = 2048 }, new LinkParameters { QueueSize = 256, BufferSize = 4096 });
        pair.Start();
        Assert.True(pair.WaitUntilUp(UpTimeout), $"a: {pair.A.Link.State} {pair.A.Link.Problem}; b: {pair.B.Link.State} {pair.B.Link.Problem}");
        var agreed = pair.A.OnLoop(() => pair.A.Link.Agreed)!;
        Assert.Equal(256, agreed.QueueSize);
        Assert.Equal(2048, agreed.BufferSize);
        Assert.Equal(pair.B.OnLoop(() => pair.B.Link.Agreed)!.QueueSize, agreed.QueueSize);
        Assert.True(pair.A.Endpoint.IsAttached(0));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)] // a peer that does not offer InOrder: descriptors from a free list, a used element per frame
    public void Frames_cross_both_ways_whole_once_and_in_order_with_no_remote_read(bool inOrder)
    {
        var offer = new LinkParameters();
        using var pair = new LinkPair(offerB: inOrder ? offer : offer with { Features = offer.Features & ~LinkFeatures.InOrder });
        pair.Start();
        Assert.True(pair.WaitUntilUp(UpTimeout));
        Assert.Equal(inOrder, (pair.A.OnLoop(() => pair.A.Link.Agreed)!.Features & LinkFeatures.InOrder) != 0);
        var before = pair.A.Hardware.RemoteAccesses;
        var beforeB = pair.B.Hardware.RemoteAccesses;
        var sizes = new[] { 60, 61, 64, 1000, 1514, 9000, 65535 };
        var toB = Enumerable.Range(0, 3000).Select(i => LinkPair.Frame(i, sizes[i % sizes.Length])).ToList();
        var toA = Enumerable.Range(0, 1000).Select(i => LinkPair.Frame(i, 100 + (i % 1400))).ToList();
        Assert.Equal(toB.Count, pair.A.SendAll(toB));
        Assert.Equal(toA.Count, pair.B.SendAll(toA));
        Assert.True(SpinWait.SpinUntil(() => pair.B.ReceivedCount == toB.Count && pair.A.ReceivedCount == toA.Count, TimeSpan.FromSeconds(20)),
            $"b got {pair.B.ReceivedCount}/{toB.Count}, a got {pair.A.ReceivedCount}/{toA.Count}");
        for (int i = 0; i < toB.Count; i++)
        {
            Assert.Equal(toB[i], pair.B.Received[i]);
        }

        for (int i = 0; i < toA.Count; i++)
        {
            Assert.Equal(toA[i], pair.A.Received[i]);
        }

        // Read locally, write remotely: the data path never read the peer's window.
        var a = pair.A.Hardware.RemoteAccesses.Since(before);
        var b = pair.B.Hardware.RemoteAccesses.Since(beforeB);
        output.WriteLine($"a: {a}; b: {b}; a stats {pair.A.OnLoop(() => pair.A.Link.Stats.ToString())}");
        Assert.Equal(0, a.Reads);
        Assert.Equal(0, b.Reads);
        Assert.True(a.Writes > 0 && b.Writes > 0);
    }

    [Fact]
    public void Default_offers_over_windows_too_small_for_the_default_ring_agree_on_a_smaller_one_and_carry_frames()
    {
        // 4 MiB windows hold 1024 entries of 2048 B, not the default 4096: both ends halve the
        // ring to what fits (LinkParameters.Agree) instead of failing.
        using var pair = new LinkPair(windowSize: 4 << 20);
        pair.Start();
        Assert.True(pair.WaitUntilUp(UpTimeout), pair.A.OnLoop(() => pair.A.Link.Problem) ?? "not up");
        Assert.Equal(1024, pair.A.OnLoop(() => pair.A.Link.Agreed!.QueueSize));
        Assert.Equal(1024, pair.B.OnLoop(() => pair.B.Link.Agreed!.QueueSize));
        var frames = Enumerable.Range(0, 3000).Select(i => LinkPair.Frame(i, 64 + (i % 1400))).ToList();
        Assert.Equal(frames.Count, pair.A.SendAll(frames));
        Assert.True(SpinWait.SpinUntil(() => pair.B.ReceivedCount == frames.Count, UpTimeout), $"{pair.B.ReceivedCount}");
        Assert.Equal(frames, pair.B.Received);
    }

    [Theory]
    [InlineData(LinkFeatures.EventIdx | LinkFeatures.VnetHeader | LinkFeatures.InOrder)]
    [InlineData(LinkFeatures.EventIdx | LinkFeatures.VnetHeader)]
    public void A_receiver_that_refuses_holds_the_sender_back_without_loss(LinkFeatures features)
    {
        var offer = new LinkParameters { QueueSize = 64, BufferSize = 2048, Features = features };
        using var pair = new LinkPair(offer, offer);
        pair.Start();
        Assert.True(pair.WaitUntilUp(UpTimeout));
        pair.B.Refuse = true;
        var frames = Enumerable.Range(0, 500).Select(i => LinkPair.Frame(i, 1400)).ToList();
        int sent = pair.A.SendAll(frames, timeout: TimeSpan.FromMilliseconds(500));
        Assert.True(sent < frames.Count, "the ring and buffers filled up");
        pair.B.Refuse = false;
        pair.B.OnLoop(() =>
        {
            pair.B.Endpoint.Resume(0);
            return 0;
        });
        Assert.Equal(frames.Count - sent, pair.A.SendAll(frames.Skip(sent).ToList()));
        Assert.True(SpinWait.SpinUntil(() => pair.B.ReceivedCount == frames.Count, TimeSpan.FromSeconds(20)), $"{pair.B.ReceivedCount}");
        Assert.Equal(Enumerable.Range(0, frames.Count), pair.B.Received.Select(LinkPair.SeqOf));
    }

    [Fact]
    public void Big_frames_are_published_a_quarter_of_the_buffer_area_at_a_time_without_waiting_for_the_flush()
    {
        // 1 MiB of receive buffers: four 64 KiB frames are a quarter.
        var offer = new LinkParameters { QueueSize = 256, BufferSize = 4096 };
        using var pair = new LinkPair(offer, offer);
        pair.Start();
        Assert.True(pair.WaitUntilUp(UpTimeout));
        var frames = Enumerable.Range(0, 5).Select(i => LinkPair.Frame(i, 65535)).ToList();
        Assert.Equal(frames.Count, pair.A.OnLoop(() => frames.Count(f => pair.A.Endpoint.Send(0, f) == VhostCore.Net.ReceiveResult.Delivered)));

        // No Flush yet: the first four are on the ring (and the receiver was kicked), the fifth not.
        Assert.True(SpinWait.SpinUntil(() => pair.B.ReceivedCount == 4, UpTimeout), $"{pair.B.ReceivedCount}");
        Thread.Sleep(100);
        Assert.Equal(4, pair.B.ReceivedCount);
        pair.A.OnLoop(() =>
        {
            pair.A.Endpoint.Flush(0);
            return 0;
        });
        Assert.True(SpinWait.SpinUntil(() => pair.B.ReceivedCount == 5, UpTimeout), $"{pair.B.ReceivedCount}");
        Assert.Equal(frames, pair.B.Received);
    }

    [Fact]
    public void A_sender_that_breaks_ring_order_takes_the_link_down_with_the_reason_and_it_comes_back()
    {
        using var pair = new LinkPair();
        pair.Start();
        Assert.True(pair.WaitUntilUp(UpTimeout));
        var first = Enumerable.Range(0, 10).Select(i => LinkPair.Frame(i, 300)).ToList();
        Assert.Equal(first.Count, pair.A.SendAll(first));
        Assert.True(SpinWait.SpinUntil(() => pair.B.ReceivedCount == first.Count, UpTimeout));

        // A's avail entries were written once when its ring started; scribble over the next
        // one in B's window (where A's ring lives) as a hostile or broken sender would.
        var agreed = pair.B.OnLoop(() => pair.B.Link.Agreed)!;
        var layout = LinkLayout.Compute(agreed);
        nint entry = pair.B.Hardware.LocalWindow.Address + (nint)layout[0].RxAvail + 4 + (2 * (first.Count % agreed.QueueSize));
        System.Runtime.InteropServices.Marshal.WriteInt16(entry, (short)((first.Count + 7) % agreed.QueueSize));
        Assert.Equal(1, pair.A.SendAll([LinkPair.Frame(first.Count, 300)]));

        Assert.True(SpinWait.SpinUntil(() => pair.B.OnLoop(() => pair.B.Link.Stats.LinkDowns) > 0, UpTimeout));
        string? problem = pair.B.OnLoop(() => pair.B.Link.Problem);
        output.WriteLine(problem);
        Assert.Contains($"avail entry {first.Count} names head {first.Count + 7}; in order it is {first.Count}", problem);
        Assert.Equal(first.Count, pair.B.ReceivedCount); // the frame behind the bad entry was not delivered

        // Both ends start their rings afresh (the windows are cleared) and carry traffic again.
        Assert.True(pair.WaitUntilUp(UpTimeout), $"a: {pair.A.Link.Problem}; b: {pair.B.Link.Problem}");
        var after = Enumerable.Range(100, 50).Select(i => LinkPair.Frame(i, 700)).ToList();
        Assert.Equal(after.Count, pair.A.SendAll(after));
        Assert.True(SpinWait.SpinUntil(() => pair.B.ReceivedCount == first.Count + after.Count, UpTimeout), $"{pair.B.ReceivedCount}");
        Assert.Equal(after.Select(LinkPair.SeqOf), pair.B.Received.Skip(first.Count).Select(LinkPair.SeqOf));
    }

    [Fact]
    public void Link_down_and_up_renegotiates_and_traffic_resumes_without_duplicates()
    {
        using var pair = new LinkPair();
        pair.Start();
        Assert.True(pair.WaitUntilUp(UpTimeout));
        int seq = 0;
        for (int round = 0; round < 3; round++)
        {
            var batch = Enumerable.Range(seq, 200).Select(i => LinkPair.Frame(i, 800)).ToList();
            seq += batch.Count;
            Assert.Equal(batch.Count, pair.A.SendAll(batch));
            Assert.True(SpinWait.SpinUntil(() => pair.B.ReceivedCount >= seq - (round * 0), TimeSpan.FromSeconds(10)) || true);
            pair.Device.SetLink(false);
            Assert.True(SpinWait.SpinUntil(() => pair.A.OnLoop(() => pair.A.Link.State) == LinkState.Down && pair.B.OnLoop(() => pair.B.Link.State) == LinkState.Down, UpTimeout));
            Assert.False(pair.A.Endpoint.IsAttached(0));
            pair.Device.SetLink(true);
            Assert.True(pair.WaitUntilUp(UpTimeout), $"round {round}: a {pair.A.Link.Problem}, b {pair.B.Link.Problem}");
        }

        var last = Enumerable.Range(seq, 100).Select(i => LinkPair.Frame(i, 500)).ToList();
        Assert.Equal(last.Count, pair.A.SendAll(last));
        Assert.True(SpinWait.SpinUntil(() => pair.B.Received.Count > 0 && LinkPair.SeqOf(pair.B.Received[^1]) == seq + 99, TimeSpan.FromSeconds(10)));
        var seqs = pair.B.Received.Select(LinkPair.SeqOf).ToList();
        Assert.True(seqs.Zip(seqs.Skip(1)).All(p => p.Second > p.First), "strictly increasing: nothing duplicated or reordered");
        Assert.Equal(Enumerable.Range(seq, 100), seqs.TakeLast(100));
        Assert.Equal(3, pair.A.OnLoop(() => pair.A.Link.Stats.LinkDowns));
    }

    [Fact]
    public void A_peer_that_goes_away_takes_the_link_down_and_a_new_one_brings_it_back()
    {
        using var pair = new LinkPair();
        pair.Start();
        Assert.True(pair.WaitUntilUp(UpTimeout));

        // The peer's loop stops without a word: only its heartbeat tells.
        pair.B.Loop.Stop();
        Assert.True(SpinWait.SpinUntil(() => pair.A.OnLoop(() => pair.A.Link.State) != LinkState.Up, TimeSpan.FromSeconds(5)));
        output.WriteLine($"a: {pair.A.Link.Problem}");
        Assert.Contains("heartbeat", pair.A.OnLoop(() => pair.A.Link.Problem), StringComparison.Ordinal);
    }

    [Fact]
    public void Time_this_end_did_not_run_is_not_held_against_the_peers_heartbeat()
    {
        using var pair = new LinkPair(); // peer timeout 600 ms, a tick every 100 ms
        pair.Start();
        Assert.True(pair.WaitUntilUp(UpTimeout));
        long downsA = pair.A.OnLoop(() => pair.A.Link.Stats.LinkDowns);
        long downsB = pair.B.OnLoop(() => pair.B.Link.Stats.LinkDowns);

        // Neither end runs for 1.5 s, as on a machine too loaded to give either a CPU. The
        // peer stops first, so this end has seen its last heartbeat before it stops itself,
        // and comes back 100 ms after this end, whose first ticks then find a heartbeat that
        // has not moved for over 1.5 s. Only watched time counts: the link stays up.
        using var releaseA = new ManualResetEventSlim();
        using var releaseB = new ManualResetEventSlim();
        pair.B.Loop.Post(() => releaseB.Wait());
        Thread.Sleep(150);
        pair.A.Loop.Post(() => releaseA.Wait());
        Thread.Sleep(1500);
        releaseA.Set();
        Thread.Sleep(100);
        releaseB.Set();
        Thread.Sleep(1000);

        Assert.Equal(downsA, pair.A.OnLoop(() => pair.A.Link.Stats.LinkDowns));
        Assert.Equal(downsB, pair.B.OnLoop(() => pair.B.Link.Stats.LinkDowns));
        Assert.True(pair.WaitUntilUp(TimeSpan.Zero), $"a {pair.A.Link.Problem}, b {pair.B.Link.Problem}");
    }

    [Fact]
    public void A_peer_speaking_another_version_is_refused_with_both_versions_named()
    {
        using var pair = new LinkPair();
        pair.A.Start();

        // B's side is played by hand: an offer with version 2.
        var b = pair.B.Hardware;
        new LinkParameters { WindowSize = b.LocalWindow.Size, Epoch = 7 }.WriteTo(b.WritePeerScratchpad, version: 2);
        Assert.True(SpinWait.SpinUntil(() => pair.A.OnLoop(() => pair.A.Link.Problem) is { } p && p.Contains("version 2", StringComparison.Ordinal), UpTimeout));
        string problem = pair.A.OnLoop(() => pair.A.Link.Problem)!;
        Assert.Contains("version 1", problem, StringComparison.Ordinal);
        Assert.NotEqual(LinkState.Up, pair.A.OnLoop(() => pair.A.Link.State));
    }

    [Theory]
    [InlineData(true, true)]
    [InlineData(true, false)]
    public void Polling_ends_move_frames_without_doorbells_of_their_own(bool pollA, bool pollB)
    {
        using var pair = new LinkPair(pollA: pollA, pollB: pollB);
        pair.Start();
        Assert.True(pair.WaitUntilUp(UpTimeout));
        var toB = Enumerable.Range(0, 2000).Select(i => LinkPair.Frame(i, 64 + (i % 1500))).ToList();
        var toA = Enumerable.Range(0, 500).Select(i => LinkPair.Frame(i, 200)).ToList();
        Assert.Equal(toB.Count, pair.A.SendAll(toB));
        Assert.Equal(toA.Count, pair.B.SendAll(toA));
        Assert.True(SpinWait.SpinUntil(() => pair.B.ReceivedCount == toB.Count && pair.A.ReceivedCount == toA.Count, TimeSpan.FromSeconds(20)),
            $"b got {pair.B.ReceivedCount}/{toB.Count}, a got {pair.A.ReceivedCount}/{toA.Count}");
        Assert.Equal(Enumerable.Range(0, toB.Count), pair.B.Received.Select(LinkPair.SeqOf));
        Assert.Equal(Enumerable.Range(0, toA.Count), pair.A.Received.Select(LinkPair.SeqOf));
        var statsB = pair.B.OnLoop(() => pair.B.Link.Stats.Snapshot());
        output.WriteLine($"a: {pair.A.OnLoop(() => pair.A.Link.Stats.ToString())}; b: {statsB}");

        // A polling end asks for no doorbell, so its peer rings (almost) none: at most one per
        // ring wrap of the event index.
        if (pollA)
        {
            Assert.True(statsB.DoorbellsSent <= 4, $"b rang {statsB.DoorbellsSent} doorbells at a polling peer");
        }
    }
}
