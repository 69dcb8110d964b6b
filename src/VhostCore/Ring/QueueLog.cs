using Microsoft.Extensions.Logging;

namespace PciVirtio.VhostCore.Ring;

internal static partial class QueueLog
{
    [LoggerMessage(EventId = 100, Level = LogLevel.Error, Message = "Queue {Queue} is broken ({Error}): {Reason}")]
    public static partial void Broken(ILogger logger, string queue, QueueError error, string reason);

    [LoggerMessage(EventId = 101, Level = LogLevel.Warning, Message = "Queue {Queue} discarded descriptor chain {Head} ({Error}): {Reason}; {Count} bad chains so far")]
    public static partial void ChainDiscarded(ILogger logger, string queue, ushort head, QueueError error, string reason, long count);

    [LoggerMessage(EventId = 102, Level = LogLevel.Debug, Message = "Queue {Queue} started: size {Size}, desc 0x{Desc:x}, avail 0x{Avail:x}, used 0x{Used:x}, next avail {NextAvail}, next used {NextUsed}, features {Features}")]
    public static partial void Started(ILogger logger, string queue, int size, ulong desc, ulong avail, ulong used, ushort nextAvail, ushort nextUsed, VirtioFeatures features);
}
