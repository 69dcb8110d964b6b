using System.Collections;
using Microsoft.Extensions.Logging;

namespace PciVirtio.VhostCore.Logging;

/// <summary>
/// A logger that puts one named value (a device, a queue, a link) in scope around every
/// message it writes. Scopes begun with <c>BeginScope</c> live on the calling thread only,
/// and our messages come from event-loop threads that serve many devices, so the scope has
/// to travel with the logger instead. Nothing is done unless the level is enabled, so the
/// data path pays nothing while it logs nothing.
/// </summary>
public sealed class ScopedLogger : ILogger
{
    private readonly ILogger _inner;
    private readonly LogScope _scope;

    public ScopedLogger(ILogger inner, string key, string value)
    {
        ArgumentNullException.ThrowIfNull(inner);
        // Nested scopes (a queue of a device) keep the outer ones: the inner logger adds its
        // own scope around ours.
        _inner = inner;
        _scope = new LogScope(key, value);
    }

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => _inner.BeginScope(state);

    public bool IsEnabled(LogLevel logLevel) => _inner.IsEnabled(logLevel);

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (!_inner.IsEnabled(logLevel))
        {
            return;
        }

        using (_inner.BeginScope(_scope))
        {
            _inner.Log(logLevel, eventId, state, exception, formatter);
        }
    }

    /// <summary>One key and value: structured for JSON output, <c>Key=value</c> as text.</summary>
    private sealed class LogScope(string key, string value) : IReadOnlyList<KeyValuePair<string, object?>>
    {
        private readonly KeyValuePair<string, object?> _pair = new(key, value);

        public int Count => 1;

        public KeyValuePair<string, object?> this[int index] =>
            index == 0 ? _pair : throw new ArgumentOutOfRangeException(nameof(index));

        public IEnumerator<KeyValuePair<string, object?>> GetEnumerator()
        {
            yield return _pair;
        }

        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

        public override string ToString() => $"{_pair.Key}={_pair.Value}";
    }
}

/// <summary>Adds <see cref="ScopedLogger"/> to any logger.</summary>
public static class ScopedLoggerExtensions
{
    /// <summary><paramref name="logger"/> with <paramref name="key"/>=<paramref name="value"/>
    /// in scope on every message; null stays null.</summary>
    public static ILogger? WithScope(this ILogger? logger, string key, string value) =>
        logger is null ? null : new ScopedLogger(logger, key, value);
}
