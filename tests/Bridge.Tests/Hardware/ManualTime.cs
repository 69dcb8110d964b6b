namespace PciVirtio.Bridge.Tests.Hardware;

/// <summary>A clock in milliseconds that moves only when the test says, and timers that fire
/// only when the test fires them.</summary>
internal sealed class ManualTime : TimeProvider
{
    private long _milliseconds = 1_000_000;

    /// <summary>The timer created last.</summary>
    public ManualTimer? Timer { get; private set; }

    public override long TimestampFrequency => 1000;

    public override long GetTimestamp() => Interlocked.Read(ref _milliseconds);

    public void Advance(TimeSpan by) => Interlocked.Add(ref _milliseconds, (long)by.TotalMilliseconds);

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) =>
        Timer = new ManualTimer(callback, state);
}

internal sealed class ManualTimer(TimerCallback callback, object? state) : ITimer
{
    private bool _disposed;

    /// <summary>Runs the callback once, on the calling thread, unless disposed.</summary>
    public void Fire()
    {
        if (!_disposed)
        {
            callback(state);
        }
    }

    public bool Change(TimeSpan dueTime, TimeSpan period) => !_disposed;

    public void Dispose() => _disposed = true;

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }
}
