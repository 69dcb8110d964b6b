using Microsoft.Extensions.Logging;

namespace PciVirtio.VhostCore.Ring;

/// <summary>
/// What the two sides of a virtqueue share: a name for logs, whether the side is running,
/// and the sticky broken state. Breaking is the one way either side reports hostile or
/// corrupt input from the other: the first reason is kept and logged once, and every
/// further operation becomes a no-op until the side is started again.
/// </summary>
public abstract class QueueEndpoint
{
    private protected QueueEndpoint(string name, ILogger? logger)
    {
        Name = name;
        Logger = logger;
    }

    public string Name { get; }

    /// <summary>True between a successful start and a stop, unless broken.</summary>
    public bool IsRunning => Running && Error == QueueError.None;

    public bool IsBroken => Error != QueueError.None;

    public QueueError Error { get; private set; }

    /// <summary>Human-readable reason the queue broke, naming the offending index or address.</summary>
    public string? BrokenReason { get; private set; }

    private protected ILogger? Logger { get; }

    private protected bool Running { get; set; }

    /// <summary>Marks this side broken (virtio DEVICE_NEEDS_RESET), also from outside the
    /// ring (e.g. a device-level violation such as a header shorter than the virtio-net
    /// header, or a link that lost its peer). Idempotent; the first reason stays.</summary>
    public void Break(QueueError error, string reason)
    {
        if (IsBroken)
        {
            return;
        }

        Error = error;
        BrokenReason = reason;
        if (Logger is not null)
        {
            QueueLog.Broken(Logger, Name, error, reason);
        }
    }

    /// <summary>Clears the broken state when the side is started again (a reset).</summary>
    private protected void ClearError()
    {
        Error = QueueError.None;
        BrokenReason = null;
    }
}
