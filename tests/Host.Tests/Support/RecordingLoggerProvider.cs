using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace PciVirtio.Host.Tests.Support;

/// <summary>One message as a provider saw it, with the scopes around it (outermost first).</summary>
public sealed record LogEntry(string Category, LogLevel Level, string Message, IReadOnlyList<object?> Scopes)
{
    /// <summary>The scopes' key/value pairs (scopes that are lists of pairs, as structured ones are).</summary>
    public IEnumerable<KeyValuePair<string, object?>> ScopeValues =>
        Scopes.OfType<IEnumerable<KeyValuePair<string, object?>>>().SelectMany(s => s);

    public override string ToString() => $"[{Category}] {Level} {string.Join(" => ", Scopes)}: {Message}";
}

/// <summary>A provider that keeps every message with its scopes, taking scopes the way the
/// console provider does (from the factory's external scope provider).</summary>
public sealed class RecordingLoggerProvider : ILoggerProvider, ISupportExternalScope
{
    private IExternalScopeProvider _scopes = new LoggerExternalScopeProvider();

    public ConcurrentQueue<LogEntry> Entries { get; } = new();

    public LogLevel Minimum { get; init; } = LogLevel.Trace;

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void SetScopeProvider(IExternalScopeProvider scopeProvider) => _scopes = scopeProvider;

    public void Dispose()
    {
    }

    private sealed class Logger(RecordingLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => owner._scopes.Push(state);

        public bool IsEnabled(LogLevel logLevel) => logLevel >= owner.Minimum;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel))
            {
                return;
            }

            var scopes = new List<object?>();
            owner._scopes.ForEachScope((scope, list) => list.Add(scope), scopes);
            owner.Entries.Enqueue(new LogEntry(category, logLevel, formatter(state, exception), scopes));
        }
    }
}
