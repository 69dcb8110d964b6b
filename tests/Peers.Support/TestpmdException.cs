namespace PciVirtio.Tests.Peers;

/// <summary>dpdk-testpmd did not behave: it failed to start, exited early, rejected a command or
/// printed something the harness could not read. The message holds its last output lines.</summary>
public sealed class TestpmdException : Exception
{
    public TestpmdException()
    {
    }

    public TestpmdException(string message)
        : base(message)
    {
    }

    public TestpmdException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
