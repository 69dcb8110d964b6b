using Microsoft.Extensions.Logging;

namespace PciVirtio.Integration.Tests;

/// <summary>Sends our components' log lines (information and above) to a test's output.</summary>
internal sealed class TestOutputLoggers(Action<string> log) : ILoggerFactory, ILogger
{
    public ILogger CreateLogger(string categoryName) => this;

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (IsEnabled(logLevel))
        {
            log($"[pcivirtio {logLevel}] {formatter(state, exception)}{(exception is null ? string.Empty : " " + exception)}");
        }
    }

    public void Dispose()
    {
    }
}
