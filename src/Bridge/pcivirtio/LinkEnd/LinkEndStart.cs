using Microsoft.Extensions.Logging;
using PciVirtio.Bridge.Hardware;
using PciVirtio.Bridge.Link;
using PciVirtio.Host.Daemon;
using PciVirtio.VhostCore.Logging;

namespace PciVirtio.Host.LinkEnd;

/// <summary>Brings up one link end from its settings, the same way for <c>pcivirtio link</c>
/// and for the daemon.</summary>
public static class LinkEndStart
{
    /// <summary>Opens the hardware <paramref name="settings"/> names and starts the end on it
    /// as <paramref name="name"/>, with its TAP.</summary>
    public static TapLinkEnd Start(LinkEndSettings settings, string name, ILoggerFactory loggers)
    {
        var offer = new LinkParameters { QueuePairs = settings.Queues, QueueSize = settings.QueueSize, BufferSize = settings.BufferSize };
        var hardwareLogger = loggers.CreateLogger("PciVirtio.Hardware").WithScope("Link", name);
        var hardware = NtbHardware.Open(settings.Hardware!, settings.OpenOptions(hardwareLogger));
        return TapLinkEnd.Start(hardware, settings.Tap, settings.Mtu, new LinkOptions { Name = name, Offer = offer, Poll = settings.Poll, Linger = TimeSpan.FromMicroseconds(settings.LingerMicroseconds) }, loggers);
    }

    /// <summary>The failures <see cref="Start"/> reports for the operator to act on (absent
    /// hardware or socket, no permission, a TAP in use, a peer that is not hw-sim), as
    /// opposed to bugs.</summary>
    public static bool IsStartFailure(Exception e) =>
        e is Mmio.Interop.NativeCallException or IOException or InvalidDataException or InvalidOperationException
            or TimeoutException or UnauthorizedAccessException or ArgumentException;
}
