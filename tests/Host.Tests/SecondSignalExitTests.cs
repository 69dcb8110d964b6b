using System.Runtime.InteropServices;
using PciVirtio.Host.Daemon;

namespace PciVirtio.Host.Tests;

/// <summary>The first SIGINT/SIGTERM is left to the graceful stop; the second exits at once
/// with 128 + the signal's number.</summary>
public sealed class SecondSignalExitTests
{
    [Theory]
    [InlineData(PosixSignal.SIGINT, PosixSignal.SIGINT, 130)]
    [InlineData(PosixSignal.SIGTERM, PosixSignal.SIGTERM, 143)]
    [InlineData(PosixSignal.SIGINT, PosixSignal.SIGTERM, 143)]
    [InlineData(PosixSignal.SIGTERM, PosixSignal.SIGINT, 130)]
    public void The_second_signal_exits_with_its_code(PosixSignal first, PosixSignal second, int code)
    {
        var exits = new List<int>();
        var now = TimeSpan.FromSeconds(100);
        using var exit = new SecondSignalExit(exits.Add, () => now);
        Assert.Equal(0, exit.Signals);

        var context = new PosixSignalContext(first);
        exit.OnSignal(context);
        Assert.Empty(exits);
        Assert.Equal(1, exit.Signals);

        // The first is the host's to handle: not cancelled here.
        Assert.False(context.Cancel);

        // Within the echo window it is the same request (a relayed copy).
        now += SecondSignalExit.Echo / 2;
        exit.OnSignal(new PosixSignalContext(second));
        Assert.Empty(exits);

        now += SecondSignalExit.Echo;
        exit.OnSignal(new PosixSignalContext(second));
        Assert.Equal([code], exits);
        Assert.Equal(3, exit.Signals);
    }

    [Fact]
    public void Signals_that_race_exit_once_per_signal_after_the_first()
    {
        int exits = 0;
        var now = TimeSpan.Zero;
        using var exit = new SecondSignalExit(_ => Interlocked.Increment(ref exits), () => now);
        exit.OnSignal(new PosixSignalContext(PosixSignal.SIGTERM));

        // Well after the first: every one of these is a second request.
        now = TimeSpan.FromSeconds(10);
        Parallel.For(0, 63, _ => exit.OnSignal(new PosixSignalContext(PosixSignal.SIGTERM)));
        Assert.Equal(64, exit.Signals);
        Assert.Equal(63, exits);
    }

    [Fact]
    public void A_null_context_is_refused()
    {
        using var exit = new SecondSignalExit(_ => Assert.Fail("no exit without a signal"));
        Assert.Throws<ArgumentNullException>(() => exit.OnSignal(null!));
        Assert.Equal(0, exit.Signals);
    }
}
