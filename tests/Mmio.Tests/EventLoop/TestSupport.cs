using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace PciVirtio.Mmio.Tests.EventLoop;

/// <summary>Bounds for every wait in these tests, so a broken loop fails instead of hanging.</summary>
internal static class Bounded
{
    public const int Ms = 10_000;

    public static readonly TimeSpan Timeout = TimeSpan.FromMilliseconds(Ms);

    public static void Until(Func<bool> condition, string what) =>
        Assert.True(SpinWait.SpinUntil(condition, Timeout), $"timed out waiting for {what}");

    public static void Wait(ManualResetEventSlim e, string what) => Assert.True(e.Wait(Timeout), $"timed out waiting for {what}");

    public static void Wait(Task task, string what) => Assert.True(task.Wait(Timeout), $"timed out waiting for {what}");
}

/// <summary>Counts this process's open fds by kind, from /proc/self/fd.</summary>
internal static class ProcFd
{
    public static int Count(string linkTarget)
    {
        int n = 0;
        foreach (string path in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            try
            {
                if (new FileInfo(path).LinkTarget == linkTarget)
                {
                    n++;
                }
            }
            catch (IOException)
            {
                // Closed while we looked (e.g. the directory's own fd).
            }
        }

        return n;
    }

    /// <summary>What fd <paramref name="fd"/> refers to, or null when it is not open.</summary>
    public static string? LinkOf(int fd)
    {
        try
        {
            return new FileInfo($"/proc/self/fd/{fd}").LinkTarget;
        }
        catch (IOException)
        {
            return null;
        }
    }

    public static int Epoll => Count("anon_inode:[eventpoll]");

    public static int EventFds => Count("anon_inode:[eventfd]");
}

/// <summary>An ILogger keeping what it is given.</summary>
internal sealed class CapturingLogger : ILogger
{
    public ConcurrentQueue<(LogLevel Level, string Message, Exception? Exception)> Entries { get; } = new();

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        Entries.Enqueue((logLevel, formatter(state, exception), exception));
}

/// <summary>Tests that count process-wide fds run alone, not beside tests creating their own.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class FdCountingCollection
{
    public const string Name = "fd counting";
}
