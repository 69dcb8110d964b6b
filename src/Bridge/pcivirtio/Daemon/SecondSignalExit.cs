using System.Runtime.InteropServices;

namespace PciVirtio.Host.Daemon;

/// <summary>
/// The first SIGINT or SIGTERM asks the daemon to stop gracefully (the host does that); a
/// second one, while the graceful stop is still under way, ends the process at once with
/// 128 + the signal's number, as shells report a killed program. It calls _exit directly:
/// a managed exit would wait for the very shutdown the operator is tired of waiting for.
/// </summary>
public sealed class SecondSignalExit : IDisposable
{
    private readonly PosixSignalRegistration[] _registrations;
    private readonly Action<int> _exit;
    private int _signals;

    public SecondSignalExit(Action<int>? exit = null)
    {
        _exit = exit ?? (code => Tmds.Linux.LibC._exit(code));
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
        if (Interlocked.Increment(ref _signals) < 2)
        {
            return;
        }

        int number = context.Signal == PosixSignal.SIGINT ? 2 : 15;
        Console.Error.WriteLine($"pcivirtio: second {context.Signal}, exiting without finishing the graceful stop");
        _exit(128 + number);
    }
}
