using System.Runtime.InteropServices;

namespace PciVirtio.Host.Daemon;

/// <summary>
/// The first SIGINT or SIGTERM asks the daemon to stop gracefully (the host does that); a
/// second one, while the graceful stop is still under way, ends the process at once with
/// 128 + the signal's number, as shells report a killed program. It calls _exit directly:
/// a managed exit would wait for the very shutdown the operator is tired of waiting for.
/// A signal within <see cref="Echo"/> of the first is taken as the same request: wrappers
/// relay the signal they get (runuser, su), and a pkill can match a wrapper and the daemon,
/// so one stop request often arrives twice within milliseconds.
/// </summary>
public sealed class SecondSignalExit : IDisposable
{
    /// <summary>How long after the first signal another one still counts as its echo.</summary>
    public static readonly TimeSpan Echo = TimeSpan.FromMilliseconds(500);

    private readonly PosixSignalRegistration[] _registrations;
    private readonly Action<int> _exit;
    private readonly Func<TimeSpan> _clock;
    private long _firstAtTicks = -1;
    private int _signals;

    /// <param name="exit">What ends the process (tests pass their own).</param>
    /// <param name="clock">Monotonic time (tests pass their own); default: the process's stopwatch.</param>
    public SecondSignalExit(Action<int>? exit = null, Func<TimeSpan>? clock = null)
    {
        _exit = exit ?? (code => Tmds.Linux.LibC._exit(code));
        var started = System.Diagnostics.Stopwatch.StartNew();
        _clock = clock ?? (() => started.Elapsed);
        _registrations =
        [
            PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal),
            PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal),
        ];
    }

    /// <summary>Signals seen so far.</summary>
    public int Signals => Volatile.Read(ref _signals);

    public void Dispose()
    {
        foreach (var r in _registrations)
        {
            r.Dispose();
        }
    }

    /// <summary>Counts a signal; exits on the second. Public for tests, which cannot send
    /// themselves a real second signal without ending the test run.</summary>
    public void OnSignal(PosixSignalContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        Interlocked.Increment(ref _signals);
        long now = _clock().Ticks;
        long first = Interlocked.CompareExchange(ref _firstAtTicks, now, -1);
        if (first < 0 || now - first < Echo.Ticks)
        {
            // The first request, or an echo of it: the graceful stop is under way.
            return;
        }

        int number = context.Signal == PosixSignal.SIGINT ? 2 : 15;
        Console.Error.WriteLine($"pcivirtio: second {context.Signal}, exiting without finishing the graceful stop");
        _exit(128 + number);
    }
}
