using Microsoft.Extensions.Logging;
using PciVirtio.Host.Tests.Support;
using PciVirtio.VhostCore.Logging;

namespace PciVirtio.Host.Tests;

/// <summary><see cref="ScopedLogger"/>: the scope travels with the logger to the provider,
/// on whichever thread logs; nothing is done while the level is off.</summary>
public sealed class ScopedLoggerTests
{
    private static (ILoggerFactory Factory, RecordingLoggerProvider Provider) Factory(LogLevel minimum = LogLevel.Trace)
    {
        var provider = new RecordingLoggerProvider();
        var factory = LoggerFactory.Create(b => b.AddProvider(provider).SetMinimumLevel(minimum));
        return (factory, provider);
    }

    [Fact]
    public void The_scope_reaches_the_provider_as_a_pair_and_as_text()
    {
        var (factory, provider) = Factory();
        using (factory)
        {
            var logger = factory.CreateLogger("PciVirtio.Test").WithScope("Device", "net0")!;
            logger.LogInformation("queue {Queue} started", 3);

            var entry = Assert.Single(provider.Entries);
            Assert.Equal("queue 3 started", entry.Message);
            Assert.Equal(LogLevel.Information, entry.Level);
            Assert.Equal("PciVirtio.Test", entry.Category);
            var scope = Assert.Single(entry.Scopes);
            Assert.Equal("Device=net0", scope!.ToString());
            Assert.Equal([new KeyValuePair<string, object?>("Device", "net0")], entry.ScopeValues);
            var list = Assert.IsAssignableFrom<IReadOnlyList<KeyValuePair<string, object?>>>(scope);
            Assert.True(list.Count == 1);
            Assert.Equal("Device", list[0].Key);
            Assert.Throws<ArgumentOutOfRangeException>(() => list[1]);
        }
    }

    [Fact]
    public void Nested_scopes_keep_the_outer_one()
    {
        var (factory, provider) = Factory();
        using (factory)
        {
            var device = factory.CreateLogger("PciVirtio.Test").WithScope("Device", "net0");
            var queue = device.WithScope("Queue", "net0/rx0")!;
            queue.LogWarning("ring full");

            var entry = Assert.Single(provider.Entries);
            var values = entry.ScopeValues.ToDictionary(p => p.Key, p => p.Value);
            Assert.Equal("net0", values["Device"]);
            Assert.Equal("net0/rx0", values["Queue"]);
            Assert.Equal(2, entry.Scopes.Count);
        }
    }

    [Fact]
    public void The_scope_goes_with_the_logger_to_other_threads_and_ends_with_the_message()
    {
        var (factory, provider) = Factory();
        using (factory)
        {
            var plain = factory.CreateLogger("PciVirtio.Test");
            var scoped = plain.WithScope("Link", "ntb0")!;
            var thread = new Thread(() => scoped.LogInformation("from the loop"));
            thread.Start();
            Assert.True(thread.Join(TimeSpan.FromSeconds(10)));
            plain.LogInformation("unscoped");

            var entries = provider.Entries.ToArray();
            Assert.Equal(2, entries.Length);
            Assert.Equal("Link=ntb0", Assert.Single(entries[0].Scopes)!.ToString());
            Assert.Empty(entries[1].Scopes);
        }
    }

    [Fact]
    public void Scopes_begun_by_the_caller_pass_through()
    {
        var (factory, provider) = Factory();
        using (factory)
        {
            var scoped = factory.CreateLogger("PciVirtio.Test").WithScope("Device", "net1")!;
            using (scoped.BeginScope("request {Id}", 7))
            {
                scoped.LogInformation("inside");
            }

            var entry = Assert.Single(provider.Entries);
            Assert.Equal(["request 7", "Device=net1"], entry.Scopes.Select(s => s!.ToString()));
        }
    }

    [Fact]
    public void Nothing_is_formatted_or_scoped_while_the_level_is_off()
    {
        var inner = new CountingLogger(LogLevel.Information);
        var scoped = new ScopedLogger(inner, "Device", "net0");
        int formatted = 0;
        var state = new CountingState();
        scoped.Log(LogLevel.Debug, default, state, null, (s, _) =>
        {
            formatted++;
            return s.ToString();
        });
        Assert.False(scoped.IsEnabled(LogLevel.Debug));
        Assert.Equal(0, formatted);
        Assert.Equal(0, state.Formatted);
        Assert.Equal(0, inner.Scopes);
        Assert.Equal(0, inner.Logged);

        // The same message at an enabled level goes through, in its scope, formatted once.
        scoped.Log(LogLevel.Warning, default, state, null, (s, _) =>
        {
            formatted++;
            return s.ToString();
        });
        Assert.True(scoped.IsEnabled(LogLevel.Warning));
        Assert.Equal(1, formatted);
        Assert.Equal(1, inner.Scopes);
        Assert.Equal(1, inner.Logged);
        Assert.Equal(0, inner.OpenScopes);
    }

    [Fact]
    public void A_disabled_level_through_a_factory_costs_no_formatting()
    {
        var (factory, provider) = Factory(LogLevel.Information);
        using (factory)
        {
            var scoped = factory.CreateLogger("PciVirtio.Test").WithScope("Queue", "net0/tx0")!;
            var state = new CountingState();
            scoped.Log(LogLevel.Debug, default, state, null, (s, _) => s.ToString());
            scoped.LogTrace("trace {State}", state);
            Assert.Equal(0, state.Formatted);
            Assert.Empty(provider.Entries);
        }
    }

    [Fact]
    public void A_null_logger_stays_null()
    {
        ILogger? none = null;
        Assert.Null(none.WithScope("Device", "net0"));
        Assert.Throws<ArgumentNullException>(() => new ScopedLogger(null!, "Device", "net0"));
    }

    /// <summary>A state that counts how often it is turned into text.</summary>
    private sealed class CountingState
    {
        public int Formatted { get; private set; }

        public override string ToString()
        {
            Formatted++;
            return "state";
        }
    }

    /// <summary>An inner logger that counts scopes and messages.</summary>
    private sealed class CountingLogger(LogLevel minimum) : ILogger
    {
        public int Scopes { get; private set; }

        public int OpenScopes { get; private set; }

        public int Logged { get; private set; }

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull
        {
            Scopes++;
            OpenScopes++;
            return new End(() => OpenScopes--);
        }

        public bool IsEnabled(LogLevel logLevel) => logLevel >= minimum;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            Assert.Equal(1, OpenScopes);
            Logged++;
            _ = formatter(state, exception);
        }

        private sealed class End(Action action) : IDisposable
        {
            public void Dispose() => action();
        }
    }
}
