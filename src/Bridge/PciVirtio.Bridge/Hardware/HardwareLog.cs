using Microsoft.Extensions.Logging;

namespace PciVirtio.Bridge.Hardware;

internal static partial class HardwareLog
{
    [LoggerMessage(EventId = 600, Level = LogLevel.Information, Message = "{Name}: attached as peer {Id}, peer {PeerId}; window 0x{WindowSize:x} bytes each way, {Doorbells} doorbells, heartbeat {HeartbeatMs} ms")]
    public static partial void Attached(ILogger logger, string name, uint id, uint peerId, ulong windowSize, int doorbells, long heartbeatMs);

    [LoggerMessage(EventId = 601, Level = LogLevel.Information, Message = "{Name}: link up (peer {PeerId}, session 0x{Session:x})")]
    public static partial void LinkUp(ILogger logger, string name, uint peerId, ulong session);

    [LoggerMessage(EventId = 602, Level = LogLevel.Warning, Message = "{Name}: link down ({Reason})")]
    public static partial void LinkDown(ILogger logger, string name, string reason);

    [LoggerMessage(EventId = 603, Level = LogLevel.Warning, Message = "{Name}: the peer's link area says version {Version} from peer {WriterId}; expected version {Expected} from peer {PeerId}")]
    public static partial void ForeignPeer(ILogger logger, string name, uint version, uint writerId, uint expected, uint peerId);

    [LoggerMessage(EventId = 604, Level = LogLevel.Warning, Message = "{Name}: the peer receives {PeerDoorbells} doorbell bits, we receive {Doorbells}; configure both devices with the same number of vectors")]
    public static partial void DoorbellCountDiffers(ILogger logger, string name, uint peerDoorbells, int doorbells);

    [LoggerMessage(EventId = 605, Level = LogLevel.Error, Message = "{Name}: heartbeat failed")]
    public static partial void HeartbeatFailed(ILogger logger, Exception exception, string name);

    [LoggerMessage(EventId = 606, Level = LogLevel.Information, Message = "{Name}: detached")]
    public static partial void Detached(ILogger logger, string name);
}
