using Microsoft.Extensions.Logging;

namespace PciVirtio.VhostCore.VhostUser;

internal static partial class VhostUserLog
{
    [LoggerMessage(EventId = 200, Level = LogLevel.Error, Message = "vhost-user {Session}: {Request} rejected, session ended: {Reason}")]
    public static partial void SessionFailed(ILogger logger, string session, VhostUserRequest request, string reason);

    [LoggerMessage(EventId = 201, Level = LogLevel.Debug, Message = "vhost-user {Session}: {Request} (flags 0x{Flags:x}, {Size} bytes, {Fds} fds)")]
    public static partial void Received(ILogger logger, string session, VhostUserRequest request, uint flags, uint size, int fds);

    [LoggerMessage(EventId = 202, Level = LogLevel.Information, Message = "vhost-user {Session}: vring {Index} started (size {Size}, next avail {NextAvail})")]
    public static partial void QueueStarted(ILogger logger, string session, int index, int size, ushort nextAvail);

    [LoggerMessage(EventId = 203, Level = LogLevel.Information, Message = "vhost-user {Session}: vring {Index} stopped (next avail {NextAvail})")]
    public static partial void QueueStopped(ILogger logger, string session, int index, ushort nextAvail);

    [LoggerMessage(EventId = 204, Level = LogLevel.Information, Message = "vhost-user {Session}: memory table of {Count} regions")]
    public static partial void MemoryTable(ILogger logger, string session, int count);

    [LoggerMessage(EventId = 205, Level = LogLevel.Warning, Message = "vhost-user {Session}: vring {Index} could not move to the new memory table; it keeps the old mappings")]
    public static partial void MemoryUpdateRefused(ILogger logger, string session, int index);

    [LoggerMessage(EventId = 206, Level = LogLevel.Information, Message = "vhost-user {Session}: session closed")]
    public static partial void Closed(ILogger logger, string session);
}
