using Microsoft.Extensions.Logging;
using PciVirtio.Mmio.EventLoop;
using PciVirtio.Mmio.Net;
using PciVirtio.Mmio.VhostUser;
using PciVirtio.VhostCore.Logging;
using PciVirtio.VhostCore.Net;
using PciVirtio.VhostCore.VhostUser;

namespace PciVirtio.Host.Serve;

/// <summary>
/// Runs vhost-user virtio-net devices: one per socket, all on one
/// event loop thread, which carries both the vhost-user messages and the data path (so a
/// switch between two devices needs no locks). One socket bridges to a TAP; two sockets are
/// joined by the port-to-port switch.
/// </summary>
public sealed class VhostNetServer : IDisposable
{
    private readonly EpollEventLoop _loop;
    private readonly List<VhostUserBackend> _backends = [];
    private readonly List<VhostUserNetDevice> _devices = [];
    private EpollDataPlaneEvents? _events;
    private TapDevice? _tap;
    private TapNetBackend? _tapBackend;

    private VhostNetServer(EpollEventLoop loop)
    {
        _loop = loop;
    }

    public IReadOnlyList<VhostUserNetDevice> Devices => _devices;

    public IReadOnlyList<VhostUserBackend> Backends => _backends;

    /// <summary>The TAP when bridged to one.</summary>
    public TapDevice? Tap => _tap;

    public PortToPortSwitch? Switch { get; private set; }

    /// <summary>The sink or source when measuring.</summary>
    public TrafficBackend? Traffic { get; private set; }

    public EpollEventLoop Loop => _loop;

    public static VhostNetServer Start(ServeOptions options, ILoggerFactory? loggers = null)
    {
        string thread = options.Name is { } n ? $"vhost-{n}" : "vhost-net";
        // The loop serves this backend's devices only: its messages carry the backend's name.
        var loop = new EpollEventLoop(thread, loggers?.CreateLogger("PciVirtio.EventLoop").WithScope("Device", options.Name ?? "net"));
        var server = new VhostNetServer(loop);
        try
        {
            server.Build(options, loggers);
            loop.Start(thread);
            return server;
        }
        catch
        {
            server.Dispose();
            throw;
        }
    }

    /// <summary>Runs <paramref name="action"/> on the loop thread and waits (counters are
    /// written there; reading them there gives a consistent snapshot).</summary>
    public T Invoke<T>(Func<T> action) => _loop.Invoke(action);

    /// <summary>Totals per device: frames the driver transmitted, frames delivered to it, drops.</summary>
    public IReadOnlyList<NetDeviceCounters> Counters() => Invoke(() =>
    {
        var list = new List<NetDeviceCounters>();
        foreach (var d in _devices)
        {
            long tx = 0, rx = 0, txBytes = 0, rxBytes = 0, drops = 0;
            foreach (var p in d.Pairs)
            {
                tx += p.Tx.Stats.Packets;
                txBytes += p.Tx.Stats.Bytes;
                rx += p.Rx.Stats.Packets;
                rxBytes += p.Rx.Stats.Bytes;
                drops += p.Tx.Stats.Drops + p.Rx.Stats.Drops;
            }

            list.Add(new NetDeviceCounters(d.Name, tx, txBytes, rx, rxBytes, drops));
        }

        return (IReadOnlyList<NetDeviceCounters>)list;
    });

    /// <summary>Managed bytes the loop thread (the whole data path) has allocated so far.</summary>
    public long LoopAllocatedBytes() => Invoke(GC.GetAllocatedBytesForCurrentThread);

    /// <summary>One line per queue: frames, kicks, interrupts, stalls, drops.</summary>
    public IReadOnlyList<string> QueueReport() => Invoke(() =>
    {
        var lines = new List<string>();
        foreach (var d in _devices)
        {
            foreach (var p in d.Pairs)
            {
                foreach (var q in new NetQueue[] { p.Rx, p.Tx })
                {
                    var s = q.Stats;
                    lines.Add($"  {q.Name}: {s.Packets} frames, {s.Kicks} kicks, {s.Interrupts} interrupts, {s.Stalls} stalls, {s.Drops} drops");
                }
            }
        }

        return (IReadOnlyList<string>)lines;
    });

    public void Dispose()
    {
        foreach (var b in _backends)
        {
            b.Dispose();
        }

        _loop.Stop(10_000);
        _events?.Dispose();
        _tapBackend?.Dispose();
        _tap?.Dispose();
        _loop.Dispose();
    }

    private void Build(ServeOptions options, ILoggerFactory? loggers)
    {
        var events = new EpollDataPlaneEvents(_loop, options.Poll);
        _events = events;
        var deviceOptions = new NetDeviceOptions { QueuePairs = options.QueuePairs, MergeableRxBuffers = options.Mergeable };
        if (options.IsSwitch)
        {
            Switch = new PortToPortSwitch();
            AddDevice(options, 0, Switch.Left, events, deviceOptions, loggers);
            AddDevice(options, 1, Switch.Right, events, deviceOptions, loggers);
            return;
        }

        if (options.Traffic is { } mode)
        {
            Traffic = new TrafficBackend(mode, options.FrameSize, events);
            AddDevice(options, 0, Traffic, events, deviceOptions, loggers);
            return;
        }

        _tap = TapDevice.Create(new TapOptions { Name = options.Tap, Queues = options.QueuePairs, VnetHeaderSize = VirtioNetHeader.Size });
        if (options.Mtu is { } mtu)
        {
            _tap.Mtu = mtu;
        }

        _tap.SetUp(true);
        _tapBackend = new TapNetBackend(_tap, _loop, loggers?.CreateLogger("PciVirtio.Tap").WithScope("Device", options.DeviceName(0)));
        AddDevice(options, 0, _tapBackend, events, deviceOptions with { Mtu = options.Mtu ?? 1500 }, loggers);
    }

    private void AddDevice(ServeOptions options, int index, INetBackend backend, IDataPlaneEvents events, NetDeviceOptions deviceOptions, ILoggerFactory? loggers)
    {
        string name = options.DeviceName(index);
        var logger = loggers?.CreateLogger("PciVirtio.VhostUser").WithScope("Device", name);
        var device = new VhostUserNetDevice(name, deviceOptions, backend, events, logger);
        _devices.Add(device);
        VhostUserSession NewSession() => new(name, device, SharedMemoryRegionMapper.Instance, logger);
        string path = options.Sockets[index];
        _backends.Add(options.Client
            ? VhostUserBackend.Connect(_loop, path, NewSession, TimeSpan.FromMilliseconds(250), logger)
            : VhostUserBackend.Listen(_loop, path, NewSession, logger));
    }
}

/// <summary>A device's totals.</summary>
public readonly record struct NetDeviceCounters(string Device, long TxPackets, long TxBytes, long RxPackets, long RxBytes, long Drops);
