using Microsoft.Extensions.Logging;
using PciVirtio.Bridge.Hardware;
using PciVirtio.Mmio.EventLoop;
using PciVirtio.Mmio.Net;
using PciVirtio.Mmio.VhostUser;
using PciVirtio.VhostCore.Logging;
using PciVirtio.VhostCore.Net;

namespace PciVirtio.Bridge.Link;

/// <summary>
/// One end of a link as a network interface: the NTB hardware, a TAP with a vnet header
/// (so checksum and segmentation offloads cross the link and a 64 KiB TCP segment travels
/// as one frame), and the link between them, on one event loop thread of its own. The
/// TAP's carrier follows the link.
/// </summary>
public sealed class TapLinkEnd : IDisposable
{
    private readonly EpollEventLoop _loop;
    private readonly INtbHardware _hardware;
    private readonly TapDevice _tap;
    private readonly TapNetBackend _backend;
    private readonly NtbLink _link;

    private TapLinkEnd(INtbHardware hardware, TapDevice tap, EpollEventLoop loop, TapNetBackend backend, NtbLink link)
    {
        _hardware = hardware;
        _tap = tap;
        _loop = loop;
        _backend = backend;
        _link = link;
    }

    public NtbLink Link => _link;

    public TapDevice Tap => _tap;

    public INtbHardware Hardware => _hardware;

    /// <summary>Creates the TAP <paramref name="tapName"/> (MTU <paramref name="mtu"/>, up) and
    /// starts the link over <paramref name="hardware"/> (owned from here on).</summary>
    public static TapLinkEnd Start(INtbHardware hardware, string? tapName, int mtu, LinkOptions options, ILoggerFactory? loggers = null)
    {
        TapDevice? tap = null;
        EpollEventLoop? loop = null;
        try
        {
            tap = TapDevice.Create(new TapOptions { Name = tapName, Queues = options.Offer.QueuePairs, VnetHeaderSize = VirtioNetHeader.Size });
            tap.Mtu = mtu;
            tap.SetUp(true);
            loop = new EpollEventLoop($"link-{options.Name}", loggers?.CreateLogger("PciVirtio.EventLoop").WithScope("Link", options.Name));
            var backend = new TapNetBackend(tap, loop, loggers?.CreateLogger("PciVirtio.Tap").WithScope("Link", options.Name));

            // Both ends are TAPs: let the kernel hand us checksum-pending and TSO frames, the
            // peer's kernel takes them as they are.
            backend.FeaturesNegotiated(VirtioNetFeatures.GuestCsum | VirtioNetFeatures.GuestTso4 | VirtioNetFeatures.GuestTso6 | VirtioNetFeatures.GuestEcn);
            var link = new NtbLink(hardware, backend, loop, options with { Offer = options.Offer with { Mtu = Math.Max(options.Offer.Mtu, mtu) } },
                loggers?.CreateLogger("PciVirtio.Link").WithScope("Link", options.Name));
            var end = new TapLinkEnd(hardware, tap, loop, backend, link);
            loop.Start($"link-{options.Name}");
            end.Invoke(() =>
            {
                link.Start();
                return 0;
            });
            return end;
        }
        catch
        {
            loop?.Dispose();
            tap?.Dispose();
            hardware.Dispose();
            throw;
        }
    }

    /// <summary>Runs <paramref name="action"/> on the link's thread and waits for it.</summary>
    public T Invoke<T>(Func<T> action) => _loop.Invoke(action);

    /// <summary>A consistent copy of the counters and the state.</summary>
    public (LinkState State, LinkStats Stats, string? Problem) Snapshot() => Invoke(() => (_link.State, _link.Stats.Snapshot(), _link.Problem));

    public void Dispose()
    {
        if (_loop.IsRunning)
        {
            Invoke(() =>
            {
                _link.Dispose();
                _backend.Dispose();
                return 0;
            });
        }

        _loop.Stop(10_000);
        _loop.Dispose();
        _tap.Dispose();
        _hardware.Dispose();
    }
}
