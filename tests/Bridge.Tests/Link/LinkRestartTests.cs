using System.Diagnostics;
using PciVirtio.Bridge.Hardware;
using PciVirtio.Bridge.Link;
using PciVirtio.HwSim.Client;
using PciVirtio.HwSim.Device;
using PciVirtio.Mmio.EventLoop;
using Xunit.Abstractions;

namespace PciVirtio.Bridge.Tests.Link;

/// <summary>
/// Renegotiation when one end starts over alone (its process restarted, or it took the link
/// down on its own) while the hardware link stays up: the other end must not leave its old
/// offer standing for the newcomer to agree to. The ticks are driven by hand (the timer's
/// period is an hour; a signal on a port's link event is one tick of that end), so the
/// interleaving is exactly the one that went wrong.
/// </summary>
public sealed class LinkRestartTests(ITestOutputHelper output)
{
    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(5);

    [Fact]
    public void A_peer_restarted_between_two_ticks_is_agreed_with_and_the_link_comes_up_again()
    {
        using var device = HwSimDevice.Create(windows: 1, windowSize: 16 << 20);
        using var a = new Side("a", device.OpenPort(0));
        using var b = new Side("b", device.OpenPort(1));

        // Each start ticks once at once: both offer. Then A agrees, B agrees and sees A ready,
        // A sees B ready.
        a.Start(b);
        b.Start(a);
        a.TickOnce(b);
        b.TickOnce(a);
        a.TickOnce(b);
        Assert.Equal((LinkState.Up, LinkState.Up), (a.State, b.State));

        // B's end stops and a new one starts (and offers) before A's next tick, as a restarted
        // process would. From here the ends tick in turn, A first. Had A, going down at its
        // tick, left its old offer standing until its following one, the new B would agree to
        // that withdrawn offer at its tick, A's fresh offer would then take B down, A would
        // agree to B's withdrawn offer, and so on, one tick apart, for ever.
        b.StopLink();
        b.StartNewLink(a);
        int rounds = 0;
        while (rounds < 8 && (a.State, b.State) != (LinkState.Up, LinkState.Up))
        {
            a.TickOnce(b);
            b.TickOnce(a);
            rounds++;
            output.WriteLine($"round {rounds}: a {a.State}, b {b.State}");
        }

        output.WriteLine($"a: {a.Describe()}; b: {b.Describe()}");
        Assert.True((a.State, b.State) == (LinkState.Up, LinkState.Up), $"not up after {rounds} rounds: a {a.Describe()}; b {b.Describe()}");
        Assert.True(rounds <= 2, $"up only after {rounds} rounds");

        // Up for good: still up some ticks later; A went down once (for the restart) and came
        // up twice.
        for (int i = 0; i < 4; i++)
        {
            a.TickOnce(b);
            b.TickOnce(a);
        }

        Assert.Equal((LinkState.Up, LinkState.Up), (a.State, b.State));
        Assert.Equal(1, a.OnLoop(() => a.Link.Stats.LinkDowns));
        Assert.Equal(2, a.OnLoop(() => a.Link.Stats.LinkUps));
    }

    /// <summary>One end whose link can be replaced by a new one over the same hardware and loop,
    /// ticked by hand.</summary>
    private sealed class Side : IDisposable
    {
        private readonly string _name;
        private readonly SimNtbPort _port;
        private readonly EpollEventLoop _loop;
        private readonly PacketEndpoint _endpoint = new() { FrameArrived = (_, _) => true };

        public Side(string name, SimNtbPort port)
        {
            _name = name;
            _port = port;
            Hardware = new SimNtbHardware(port);
            _loop = new EpollEventLoop($"link-{name}");
            Link = NewLink();
        }

        public SimNtbHardware Hardware { get; }

        public NtbLink Link { get; private set; }

        public LinkState State => OnLoop(() => Link.State);

        /// <summary>Starts the loop and the link, and waits for the link's first tick.</summary>
        public void Start(Side peer)
        {
            _loop.Start();
            WaitForTick(peer, () => OnLoop(() =>
            {
                Link.Start();
                return 0;
            }));
        }

        public void StopLink() => OnLoop(() =>
        {
            Link.Dispose();
            return 0;
        });

        /// <summary>A new link on the same hardware (a restarted process); waits for its first tick.</summary>
        public void StartNewLink(Side peer) => WaitForTick(peer, () => OnLoop(() =>
        {
            Link = NewLink();
            Link.Start();
            return 0;
        }));

        /// <summary>One tick of this end: a signal on its link event.</summary>
        public void TickOnce(Side peer) => WaitForTick(peer, () => _port.LinkEvent.Signal());

        public string Describe() => OnLoop(() => $"{Link.State} ({Link.Problem}), {Link.Stats}");

        public T OnLoop<T>(Func<T> action)
        {
            var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
            _loop.Post(() =>
            {
                try
                {
                    done.SetResult(action());
                }
                catch (Exception e)
                {
                    done.SetException(e);
                }
            });
            return done.Task.Wait(StepTimeout) ? done.Task.Result : throw new TimeoutException($"link {_name}'s loop did not answer");
        }

        public void Dispose()
        {
            if (_loop.IsRunning)
            {
                OnLoop(() =>
                {
                    Link.Dispose();
                    return 0;
                });
            }

            _loop.Stop();
            _loop.Dispose();
            Hardware.Dispose();
        }

        /// <summary>Does <paramref name="cause"/> and waits until this end's tick has run: every
        /// tick first writes the next heartbeat into the peer's scratchpad, and a call on the
        /// loop after that returns once the tick is over.</summary>
        private void WaitForTick(Side peer, Action cause)
        {
            uint beat = peer.Hardware.ReadScratchpad(LinkScratchpad.Heartbeat);
            cause();
            var clock = Stopwatch.StartNew();
            while (peer.Hardware.ReadScratchpad(LinkScratchpad.Heartbeat) == beat)
            {
                if (clock.Elapsed > StepTimeout)
                {
                    throw new TimeoutException($"link {_name} did not tick");
                }

                Thread.Sleep(1);
            }

            OnLoop(() => 0);
        }

        // No tick of its own in the test (an hour), and no heartbeat timeout.
        private NtbLink NewLink() =>
            new(Hardware, _endpoint, _loop, new LinkOptions { Name = _name, Tick = TimeSpan.FromHours(1), PeerTimeout = TimeSpan.FromHours(1) });
    }
}
