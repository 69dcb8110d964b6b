using Microsoft.Extensions.Logging;

namespace PciVirtio.VhostCore.Net;

internal static partial class NetLog
{
    [LoggerMessage(EventId = 300, Level = LogLevel.Information, Message = "virtio-net {Device}: features 0x{Features:x} negotiated (mergeable rx {Mergeable}, offloads {Offloads})")]
    public static partial void Features(ILogger logger, string device, ulong features, bool mergeable, VirtioNetFeatures offloads);

    [LoggerMessage(EventId = 301, Level = LogLevel.Information, Message = "virtio-net {Device}: device status 0x{Status:x2}")]
    public static partial void Status(ILogger logger, string device, byte status);

    [LoggerMessage(EventId = 302, Level = LogLevel.Information, Message = "virtio-net {Device}: MTU {Mtu}")]
    public static partial void Mtu(ILogger logger, string device, uint mtu);

    [LoggerMessage(EventId = 303, Level = LogLevel.Warning, Message = "virtio-net {Device}: MTU {Mtu} refused (allowed {Min} to {Max})")]
    public static partial void MtuRefused(ILogger logger, string device, uint mtu, int min, int max);

    [LoggerMessage(EventId = 304, Level = LogLevel.Information, Message = "virtio-net {Device}: announcing guest MAC {Mac} (RARP, {Result})")]
    public static partial void Rarp(ILogger logger, string device, string mac, SendResult result);

    [LoggerMessage(EventId = 305, Level = LogLevel.Warning, Message = "virtio-net {Device}: queue {Index} did not start: {Reason}")]
    public static partial void QueueStartFailed(ILogger logger, string device, int index, string? reason);
}
