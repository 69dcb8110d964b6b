using System.Diagnostics;
using PciVirtio.Bridge.Link;
using PciVirtio.Host.Control;
using PciVirtio.Host.Serve;
using PciVirtio.VhostCore.Net;

namespace PciVirtio.Host.Daemon;

/// <summary>A backend the daemon started.</summary>
public sealed record RunningBackend(string Name, VhostNetServer Server, IReadOnlyList<string> Sockets);

/// <summary>A link end the daemon started.</summary>
public sealed record RunningLink(string Name, TapLinkEnd End);

/// <summary>
/// What the daemon runs right now, for the control socket and the metrics. Counters are
/// read without stopping the data path: each is a 64-bit value written by one thread, so a
/// reading is at worst a moment old, never torn.
/// </summary>
public sealed class RunningDevices
{
    private readonly Lock _lock = new();
    private readonly Stopwatch _uptime = Stopwatch.StartNew();
    private RunningBackend[] _backends = [];
    private RunningLink[] _links = [];

    public IReadOnlyList<RunningBackend> Backends => Volatile.Read(ref _backends);

    public IReadOnlyList<RunningLink> Links => Volatile.Read(ref _links);

    public void Add(RunningBackend backend)
    {
        lock (_lock)
        {
            _backends = [.. _backends, backend];
        }
    }

    public void Add(RunningLink link)
    {
        lock (_lock)
        {
            _links = [.. _links, link];
        }
    }

    /// <summary>Forgets everything (the daemon is stopping); returns what was running.</summary>
    public (RunningBackend[] Backends, RunningLink[] Links) Clear()
    {
        lock (_lock)
        {
            var taken = (_backends, _links);
            _backends = [];
            _links = [];
            return taken;
        }
    }

    /// <summary>Every counter now.</summary>
    public DaemonStatus Status()
    {
        var status = new DaemonStatus
        {
            ProcessId = Environment.ProcessId,
            Time = DateTimeOffset.UtcNow,
            UptimeSeconds = _uptime.Elapsed.TotalSeconds,
        };
        foreach (var b in Backends)
        {
            var devices = b.Server.Devices;
            for (int i = 0; i < devices.Count; i++)
            {
                status.Devices.Add(Describe(b, i, devices[i]));
            }
        }

        foreach (var l in Links)
        {
            status.Links.Add(Describe(l));
        }

        return status;
    }

    private static DeviceStatus Describe(RunningBackend backend, int index, VhostUserNetDevice device)
    {
        var server = backend.Server;
        var d = new DeviceStatus
        {
            Name = device.Name,
            Backend = backend.Name,
            Socket = backend.Sockets[index],
            Connected = index < server.Backends.Count && server.Backends[index].IsConnected,
            Attachment = server.Tap is { } tap ? $"tap {tap.Name}" : server.Switch is not null ? "port-to-port" : server.Traffic is { } t ? t.Mode.ToString().ToLowerInvariant() : null,
            AckedFeatures = device.AckedFeatures,
        };
        foreach (var pair in device.Pairs)
        {
            d.Queues.Add(Describe(pair.Rx));
            d.Queues.Add(Describe(pair.Tx));
        }

        d.Queues.Add(Describe(device.Control));
        return d;
    }

    private static QueueStatus Describe(NetQueue q)
    {
        var s = q.Stats;
        return new QueueStatus
        {
            Name = q.Name,
            Running = q.IsRunning,
            Error = q.Ring.IsBroken ? $"{q.Ring.Error}: {q.Ring.BrokenReason}" : null,
            Packets = s.Packets,
            Bytes = s.Bytes,
            Drops = s.Drops,
            Kicks = s.Kicks,
            Interrupts = s.Interrupts,
            RingFull = s.Stalls,
        };
    }

    private static LinkStatus Describe(RunningLink l)
    {
        var link = l.End.Link;
        var s = link.Stats;
        var remote = l.End.Hardware.RemoteAccesses;
        return new LinkStatus
        {
            Name = l.Name,
            Hardware = l.End.Hardware.Name,
            Tap = l.End.Tap.Name,
            State = link.State.ToString(),
            Problem = link.Problem,
            TxFrames = Volatile.Read(ref s.TxFrames),
            TxBytes = Volatile.Read(ref s.TxBytes),
            TxDropped = Volatile.Read(ref s.TxDropped),
            TxRingFull = Volatile.Read(ref s.TxStalls),
            RxFrames = Volatile.Read(ref s.RxFrames),
            RxBytes = Volatile.Read(ref s.RxBytes),
            RxDropped = Volatile.Read(ref s.RxDropped),
            RxRingFull = Volatile.Read(ref s.RxStalls),
            DoorbellsSent = Volatile.Read(ref s.DoorbellsSent),
            DoorbellsTaken = Volatile.Read(ref s.DoorbellsTaken),
            RxRearms = Volatile.Read(ref s.RxRearms),
            LinkUps = Volatile.Read(ref s.LinkUps),
            LinkDowns = Volatile.Read(ref s.LinkDowns),
            RemoteReads = remote.Reads,
            RemoteWrites = remote.Writes,
        };
    }
}
