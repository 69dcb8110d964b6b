using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using PciVirtio.Bridge.Hardware;
using PciVirtio.Mmio.EventLoop;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Net;

namespace PciVirtio.Bridge.Link;

/// <summary>
/// One end of a host-to-host link (docs/link-protocol.md): the scratchpad handshake with a
/// version, the agreed layout of both windows, a pair of rings per queue pair, doorbells as
/// kicks and interrupts, and link-down recovery (stop, forget what was in flight, carrier
/// off, renegotiate with the next epoch). Frames come from and go to an
/// <see cref="INetBackend"/> (a TAP, or a packet API in tests). Everything runs on one event
/// loop thread; the timer only posts ticks to it.
/// </summary>
public sealed class NtbLink : IDisposable
{
    private readonly INtbHardware _hardware;
    private readonly INetBackend _backend;
    private readonly EpollEventLoop _loop;
    private readonly LinkOptions _options;
    private readonly ILogger? _logger;
    private readonly List<EventRegistration> _registrations = [];
    private readonly Timer _timer;
    private readonly Action _tick;
    private LinkQueuePair[] _pairs = [];
    private IDisposable? _poller;

    /// <summary>Empty polls in a row after which a polling end yields its core (measured on the
    /// link benchmark: 4 yields too often, 32 too late, under load).</summary>
    private const int IdlePollsPerYield = 16;
    private LinkParameters? _offer;
    private uint _epoch;
    private uint _beat;
    private uint _peerBeat;
    private long _peerBeatSeenAt;
    private HeartbeatWatch _watch;
    private string? _lastProblem;
    private bool _disposed;

    public NtbLink(INtbHardware hardware, INetBackend backend, EpollEventLoop loop, LinkOptions options, ILogger? logger = null)
    {
        if (options.Offer.Validate() is { } error)
        {
            throw new ArgumentException($"link offer: {error}", nameof(options));
        }

        if (LinkOptions.LingerError(options.Linger) is { } lingerError)
        {
            throw new ArgumentException(lingerError, nameof(options));
        }

        if (hardware.ScratchpadCount < LinkScratchpad.Count)
        {
            throw new ArgumentException($"{hardware.Name} has {hardware.ScratchpadCount} scratchpads; the link protocol needs {LinkScratchpad.Count}", nameof(hardware));
        }

        if (hardware.DoorbellCount < 2 * options.Offer.QueuePairs)
        {
            throw new ArgumentException($"{hardware.Name} has {hardware.DoorbellCount} doorbells; {options.Offer.QueuePairs} queue pairs need {2 * options.Offer.QueuePairs}", nameof(hardware));
        }

        _hardware = hardware;
        _backend = backend;
        _loop = loop;
        _options = options;
        _logger = logger;
        _tick = Tick;
        // A random first epoch: a restarted peer never reuses the epoch of its previous run.
        _epoch = (uint)RandomNumberGenerator.GetInt32(1, int.MaxValue);
        _timer = new Timer(_ => PostTick(), null, Timeout.Infinite, Timeout.Infinite);
    }

    public string Name => _options.Name;

    public LinkState State { get; private set; }

    /// <summary>What both sides agreed (while up).</summary>
    public LinkParameters? Agreed { get; private set; }

    public LinkStats Stats { get; } = new();

    /// <summary>Why the link is not up, when it is not (a version mismatch, a window too small...).</summary>
    public string? Problem => _lastProblem;

    /// <summary>Registers with the loop and starts the handshake (call on or before the loop thread runs).</summary>
    public void Start()
    {
        _registrations.Add(_loop.Add(_hardware.LinkEvent, _ => Tick()));
        int bits = 2 * _options.Offer.QueuePairs;
        for (int bit = 0; bit < bits; bit++)
        {
            int b = bit;
            _registrations.Add(_loop.Add(_hardware.DoorbellEvent(b), _ => OnDoorbell(b)));
        }

        _timer.Change(TimeSpan.Zero, _options.Tick);
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _timer.Dispose();
        GoDown("link closed", log: false);
        _hardware.WritePeerScratchpad(LinkScratchpad.Version, 0);
        foreach (var r in _registrations)
        {
            r.Dispose();
        }
    }

    private void PostTick()
    {
        try
        {
            _loop.Post(_tick);
        }
        catch (ObjectDisposedException)
        {
            // the loop is stopping
        }
    }

    /// <summary>The handshake and link supervision, every tick and on link events.</summary>
    private void Tick()
    {
        if (_disposed)
        {
            return;
        }

        if (!_hardware.RefreshLinkState())
        {
            if (State != LinkState.Down)
            {
                GoDown("the hardware link went down");
            }

            return;
        }

        _hardware.WritePeerScratchpad(LinkScratchpad.Heartbeat, ++_beat);
        DiscountUnwatchedTime();
        switch (State)
        {
            case LinkState.Down:
                Offer();
                break;
            case LinkState.Offered:
                TryAgree();
                break;
            case LinkState.Ready:
                if (PeerGone() is { } gone)
                {
                    GoDown(gone);
                }
                else if (PeerReady())
                {
                    BringUp();
                }

                break;
            case LinkState.Up:
                if (PeerGone() is { } reason)
                {
                    GoDown(reason);
                }
                else
                {
                    foreach (var p in _pairs)
                    {
                        if (p.IsBroken)
                        {
                            GoDown($"queue pair {p.PairIndex} broke: {p.BrokenReason}");
                            break;
                        }
                    }
                }

                break;
        }

        // Down with the hardware link up (the peer restarted or renegotiates, its heartbeat
        // stopped, a queue broke): offer again at once. Our old offer, left in the peer's
        // scratchpads until the next tick, could be agreed to by a peer that starts over; our
        // new offer would then take it down, and the two would chase each other's withdrawn
        // offers one tick apart for ever.
        if (State == LinkState.Down)
        {
            Offer();
        }
    }

    /// <summary>The peer's heartbeat is judged only over ticks of ours that ran
    /// (<see cref="HeartbeatWatch"/>).</summary>
    private void DiscountUnwatchedTime()
    {
        long tick = Math.Max(1, (long)_options.Tick.TotalMilliseconds);
        long unwatched = _watch.Look(Environment.TickCount64, tick);
        if (unwatched > 0)
        {
            _peerBeatSeenAt += unwatched;
            if (_logger is not null && State != LinkState.Down)
            {
                LinkLog.NotWatched(_logger, Name, unwatched + tick);
            }
        }
    }

    private void Offer()
    {
        _epoch = _epoch == uint.MaxValue ? 1 : _epoch + 1;
        _offer = _options.Offer with
        {
            WindowSize = _hardware.LocalWindow.Size, Epoch = _epoch,
            Features = _options.Poll ? _options.Offer.Features | LinkFeatures.Polling : _options.Offer.Features & ~LinkFeatures.Polling,
        };
        _offer.WriteTo(_hardware.WritePeerScratchpad);
        _peerBeat = _hardware.ReadScratchpad(LinkScratchpad.Heartbeat);
        _peerBeatSeenAt = Environment.TickCount64;
        State = LinkState.Offered;
    }

    private void TryAgree()
    {
        if (!LinkScratchpad.TryParseVersion(_hardware.ReadScratchpad(LinkScratchpad.Version), out ushort version))
        {
            return; // no peer offer yet
        }

        if (version != LinkScratchpad.ProtocolVersion)
        {
            Report($"the peer speaks link protocol version {version}, this end version {LinkScratchpad.ProtocolVersion}");
            return;
        }

        var peer = LinkParameters.ReadFrom(_hardware.ReadScratchpad);
        if (peer.Validate() is { } invalid)
        {
            Report($"the peer's offer is invalid: {invalid}");
            return;
        }

        var agreed = LinkParameters.Agree(_offer!, peer);
        var layout = LinkLayout.Compute(agreed);
        ulong peerWindow = _hardware.PeerWindowSize;
        if (peerWindow == 0 || !_hardware.TryGetPeerWindow(out var remote))
        {
            Report("the peer's window is not mapped yet");
            return;
        }

        if (layout.Size > _hardware.LocalWindow.Size || layout.Size > peerWindow || layout.Size > peer.WindowSize)
        {
            Report($"{agreed.QueuePairs} queue pair(s) of {agreed.QueueSize} × {agreed.BufferSize} B need a {layout.Size}-byte window; ours is {_hardware.LocalWindow.Size}, the peer's {peerWindow}");
            return;
        }

        // Our window starts clean: no index or entry of an earlier epoch may be read as new.
        ClearLocal(layout.Size);
        var local = _hardware.LocalWindow;
        var access = remote.Accessor;
        var txMemory = new GuestMemory<NtbMemoryAccessor>(
            MemoryTable.Create(remote.Region(0, 0, layout.Size), local.Region(LinkAddresses.SenderBase, 0, layout.Size)), access);
        var rxMemory = new GuestMemory<NtbMemoryAccessor>(
            MemoryTable.Create(local.Region(0, 0, layout.Size), remote.Region(LinkAddresses.SenderBase, 0, layout.Size)), access);
        _pairs = new LinkQueuePair[agreed.QueuePairs];
        for (int q = 0; q < _pairs.Length; q++)
        {
            _pairs[q] = new LinkQueuePair(q, _hardware, layout, agreed, txMemory, rxMemory, _backend, Stats, _logger, _loop.Post, _options.Linger, _options.TimeProvider);
        }

        Agreed = agreed with { Epoch = peer.Epoch };
        _lastProblem = null;
        _hardware.WritePeerScratchpad(LinkScratchpad.Ack, peer.Epoch);
        _hardware.WritePeerScratchpad(LinkScratchpad.Ready, _epoch);
        State = LinkState.Ready;
        if (_logger is not null)
        {
            LinkLog.Agreed(_logger, Name, agreed.QueuePairs, agreed.QueueSize, agreed.BufferSize, agreed.Mtu, agreed.Features, _epoch, peer.Epoch);
        }

        if (PeerReady())
        {
            BringUp();
        }
    }

    /// <summary>The peer has set up for its current offer, and agreed to our current one.</summary>
    private bool PeerReady()
    {
        uint peerEpoch = _hardware.ReadScratchpad(LinkScratchpad.Epoch);
        return peerEpoch != 0 && peerEpoch == Agreed?.Epoch
            && _hardware.ReadScratchpad(LinkScratchpad.Ready) == peerEpoch
            && _hardware.ReadScratchpad(LinkScratchpad.Ack) == _epoch;
    }

    /// <summary>Why the peer is gone, or null: its offer withdrawn or replaced (it restarted
    /// or renegotiates), or its heartbeat stopped.</summary>
    private string? PeerGone()
    {
        if (!LinkScratchpad.TryParseVersion(_hardware.ReadScratchpad(LinkScratchpad.Version), out _))
        {
            return "the peer withdrew its offer";
        }

        if (_hardware.ReadScratchpad(LinkScratchpad.Epoch) != Agreed?.Epoch)
        {
            return "the peer renegotiates (new epoch)";
        }

        uint beat = _hardware.ReadScratchpad(LinkScratchpad.Heartbeat);
        long now = Environment.TickCount64;
        if (beat != _peerBeat)
        {
            _peerBeat = beat;
            _peerBeatSeenAt = now;
        }
        else if (now - _peerBeatSeenAt > (long)_options.PeerTimeout.TotalMilliseconds)
        {
            return $"the peer's heartbeat stopped ({now - _peerBeatSeenAt} ms)";
        }

        return null;
    }

    private void BringUp()
    {
        _hardware.ClearDoorbell(_hardware.DoorbellValidMask);
        foreach (var p in _pairs)
        {
            p.Polling = _options.Poll;
            if (!p.Start())
            {
                GoDown($"queue pair {p.PairIndex} did not start: {p.BrokenReason}");
                return;
            }
        }

        if (_options.Poll)
        {
            var pairs = _pairs;
            int idle = 0;
            _poller = _loop.AddPoller(() =>
            {
                bool work = false;
                foreach (var p in pairs)
                {
                    work |= p.Poll();
                }

                // A poller that finds nothing gives its core away now and then: when the
                // peer's loop (or whatever feeds ours) shares this core, spinning through our
                // time slice only delays the work we wait for. Two polling ends on a busy
                // 2-core machine moved 20 times fewer frames without this. On an idle core
                // sched_yield returns at once, so polling costs no more than a system call
                // per IdlePollsPerYield empty looks.
                if (work)
                {
                    idle = 0;
                }
                else if (++idle == IdlePollsPerYield)
                {
                    idle = 0;
                    Thread.Yield();
                }

                return work;
            });
        }
        else
        {
            _hardware.UnmaskDoorbell(_hardware.DoorbellValidMask);
        }

        State = LinkState.Up;
        Stats.LinkUps++;
        if (_logger is not null)
        {
            LinkLog.Up(_logger, Name, _pairs.Length);
        }

        foreach (var p in _pairs)
        {
            _backend.Attach(p);
            p.ServeReceive(); // frames the peer sent before our doorbell watch saw them
        }
    }

    private void GoDown(string reason, bool log = true)
    {
        var was = State;
        _poller?.Dispose();
        _poller = null;
        if (was == LinkState.Up)
        {
            foreach (var p in _pairs)
            {
                _backend.Detach(p.PairIndex);
                p.Stop();
            }

            Stats.LinkDowns++;
        }

        _pairs = [];
        Agreed = null;
        State = LinkState.Down;
        if (log && _logger is not null && was != LinkState.Down)
        {
            LinkLog.Down(_logger, Name, was, reason);
        }

        _lastProblem = reason;
    }

    private void OnDoorbell(int bit)
    {
        _hardware.ClearDoorbell(1UL << bit);
        Stats.DoorbellsTaken++;
        if (State != LinkState.Up || bit / 2 >= _pairs.Length)
        {
            return;
        }

        var pair = _pairs[bit / 2];
        if ((bit & 1) == 0)
        {
            pair.ServeReceive();
        }
        else
        {
            pair.OnUsedDoorbell();
        }
    }

    private void Report(string problem)
    {
        if (problem != _lastProblem && _logger is not null)
        {
            LinkLog.Problem(_logger, Name, problem);
        }

        _lastProblem = problem;
    }

    private void ClearLocal(ulong length)
    {
        var window = _hardware.LocalWindow;
        var access = window.Accessor;
        Span<byte> zeros = stackalloc byte[4096];
        zeros.Clear();
        for (ulong at = 0; at < length; at += (ulong)zeros.Length)
        {
            int n = (int)Math.Min((ulong)zeros.Length, length - at);
            access.CopyTo(window.Address + (nint)at, zeros[..n]);
        }
    }
}

internal static partial class LinkLog
{
    [LoggerMessage(EventId = 500, Level = LogLevel.Information, Message = "link {Link}: agreed {Pairs} queue pair(s) of {QueueSize}, {BufferSize}-byte buffers, MTU {Mtu}, features {Features} (epoch {Epoch}, peer epoch {PeerEpoch})")]
    public static partial void Agreed(ILogger logger, string link, int pairs, int queueSize, int bufferSize, int mtu, LinkFeatures features, uint epoch, uint peerEpoch);

    [LoggerMessage(EventId = 501, Level = LogLevel.Information, Message = "link {Link}: up with {Pairs} queue pair(s)")]
    public static partial void Up(ILogger logger, string link, int pairs);

    [LoggerMessage(EventId = 502, Level = LogLevel.Warning, Message = "link {Link}: down (was {State}): {Reason}")]
    public static partial void Down(ILogger logger, string link, LinkState state, string reason);

    [LoggerMessage(EventId = 504, Level = LogLevel.Warning, Message = "link {Link} pair {Pair}: dropped {What}; {Count} dropped so far")]
    public static partial void FrameDropped(ILogger logger, string link, int pair, string what, long count);

    [LoggerMessage(EventId = 503, Level = LogLevel.Error, Message = "link {Link}: {Problem}")]
    public static partial void Problem(ILogger logger, string link, string problem);

    [LoggerMessage(EventId = 505, Level = LogLevel.Warning, Message = "link {Link}: this end did not run for {GapMs} ms (an overloaded machine or a stopped process); that time is not held against the peer's heartbeat")]
    public static partial void NotWatched(ILogger logger, string link, long gapMs);
}
