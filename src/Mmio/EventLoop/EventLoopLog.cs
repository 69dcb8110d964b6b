using Microsoft.Extensions.Logging;

namespace PciVirtio.Mmio.EventLoop;

internal static partial class EventLoopLog
{
    [LoggerMessage(EventId = 300, Level = LogLevel.Debug, Message = "Event loop {Loop} running on thread {ThreadId}")]
    public static partial void Started(ILogger logger, string loop, int threadId);

    [LoggerMessage(EventId = 301, Level = LogLevel.Debug, Message = "Event loop {Loop} stopped after {Waits} waits and {Events} events; {Registrations} registrations removed")]
    public static partial void Stopped(ILogger logger, string loop, long waits, long events, int registrations);

    [LoggerMessage(EventId = 302, Level = LogLevel.Error, Message = "Event loop {Loop}: handler for fd {Fd} failed on {Events} (failure {Count} of this registration)")]
    public static partial void HandlerFailed(ILogger logger, Exception exception, string loop, int fd, EpollEvents events, long count);

    [LoggerMessage(EventId = 304, Level = LogLevel.Error, Message = "Event loop {Loop}: handler for fd {Fd} failed {Count} times in a row; the fd is no longer watched")]
    public static partial void HandlerRemoved(ILogger logger, string loop, int fd, long count);

    [LoggerMessage(EventId = 303, Level = LogLevel.Error, Message = "Event loop {Loop}: posted action failed")]
    public static partial void PostedActionFailed(ILogger logger, Exception exception, string loop);

    [LoggerMessage(EventId = 304, Level = LogLevel.Critical, Message = "Event loop {Loop} failed and stopped")]
    public static partial void LoopFailed(ILogger logger, Exception exception, string loop);

    [LoggerMessage(EventId = 305, Level = LogLevel.Warning, Message = "Event loop {Loop}: epoll_ctl(EPOLL_CTL_DEL) of fd {Fd} failed: {Errno}")]
    public static partial void RemoveFailed(ILogger logger, string loop, int fd, string errno);

    [LoggerMessage(EventId = 310, Level = LogLevel.Debug, Message = "Poller {Poller} running: budget {Budget}, {SpinPolls} empty polls before sleeping")]
    public static partial void PollerStarted(ILogger logger, string poller, int budget, int spinPolls);

    [LoggerMessage(EventId = 311, Level = LogLevel.Debug, Message = "Poller {Poller} stopped: {Polls} polls ({EmptyPolls} empty), {Items} items, {Sleeps} sleeps, {Wakeups} wake-ups, {Rechecks} re-checks with work")]
    public static partial void PollerStopped(ILogger logger, string poller, long polls, long emptyPolls, long items, long sleeps, long wakeups, long rechecks);

    [LoggerMessage(EventId = 312, Level = LogLevel.Error, Message = "Poller {Poller} failed and stopped")]
    public static partial void PollerFailed(ILogger logger, Exception exception, string poller);
}
