using System.Globalization;

namespace PciVirtio.Tests.VfioPingPong;

/// <summary>
/// Runs in each of two QEMU guests whose ivshmem-doorbell devices share one memory region and
/// are bound to vfio-pci (tests/guest/vfio-guest.sh starts it with VFIO_GROUP, VFIO_BDF and
/// IVSHMEM_ID in its environment). Peer 0 initiates, peer 1 responds; see <see cref="PingPong"/>.
/// Prints "PINGPONG OK role=... messages=... bytes=... interrupts=... bar2-reads=...
/// bar2-writes=..." and exits 0, or "PINGPONG FAIL reason" and exits 1.
/// </summary>
internal static class Program
{
    private static int Main(string[] args)
    {
        string? summary = null;
        string? failure = null;
        PingPong? run = null;
        try
        {
            var options = Options.Parse(args);
            Log($"start {options} VFIO_GROUP={Variable("VFIO_GROUP")} VFIO_BDF={Variable("VFIO_BDF")} IVSHMEM_ID={Variable("IVSHMEM_ID")}");
            string bdf = Variable("VFIO_BDF") ?? throw new PingPongException("VFIO_BDF is not set (run by tests/guest/vfio-guest.sh)");
            run = PingPong.Open(bdf, Variable("VFIO_GROUP"), Variable("IVSHMEM_ID"), options, Log);
            summary = run.Run();
        }
        catch (PingPongException e)
        {
            failure = e.Message;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            failure = $"{e.GetType().Name}: {e.Message}";
            foreach (string line in e.ToString().Split('\n'))
            {
                Log("  " + line.TrimEnd());
            }
        }

        // Interrupts off and everything closed before the verdict, so a cleanup failure fails the run.
        try
        {
            run?.Dispose();
            if (run is not null)
            {
                Log("cleanup: MSI-X disabled, doorbells, eventfds, mappings and the VFIO device closed");
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            failure ??= $"cleanup: {e.GetType().Name}: {e.Message}";
        }

        if (failure is not null)
        {
            Console.WriteLine($"PINGPONG FAIL {failure}");
            return 1;
        }

        Console.WriteLine($"PINGPONG OK {summary}");
        return 0;
    }

    private static void Log(string line) => Console.WriteLine(line);

    private static string? Variable(string name) =>
        Environment.GetEnvironmentVariable(name) is { Length: > 0 } value ? value : null;
}

/// <summary>A check failed: the message is the reason printed after "PINGPONG FAIL".</summary>
public sealed class PingPongException : Exception
{
    public PingPongException()
    {
    }

    public PingPongException(string message)
        : base(message)
    {
    }

    public PingPongException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    internal static PingPongException Format(FormattableString message) =>
        new(message.ToString(CultureInfo.InvariantCulture));
}
