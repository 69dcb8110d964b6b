namespace PciVirtio.Tests.Peers;

/// <summary>How to start one dpdk-testpmd (see <see cref="Testpmd.StartAsync"/>).</summary>
public sealed record TestpmdOptions
{
    /// <summary>Names the instance in log lines and messages, and is part of its file prefix.</summary>
    public string Name { get; init; } = "testpmd";

    /// <summary>
    /// The CPUs, as for EAL's <c>-l</c> (e.g. <c>"0-1"</c>). testpmd needs a main lcore (it runs the
    /// prompt and sleeps in a read of stdin) and at least one forwarding lcore, so a single CPU such
    /// as <c>"1"</c> becomes <c>--lcores (0-1)@1</c>: both lcores on that CPU, the forwarding one
    /// busy-polling it.
    /// </summary>
    public string Cores { get; init; } = "0-1";

    /// <summary>The <c>--vdev</c> strings (see <see cref="Vdev"/>); one port each, in this order.</summary>
    public IReadOnlyList<string> Vdevs { get; init; } = [];

    /// <summary>EAL's <c>-m</c>: the memory (a memfd under <c>--no-huge</c>) that a virtio-user
    /// frontend hands to its backend whole.</summary>
    public int MemoryMiB { get; init; } = 512;

    /// <summary><c>--total-num-mbufs</c>. testpmd's default (~155k mbufs) does not fit in 512 MiB.</summary>
    public int TotalMbufs { get; init; } = 8192;

    /// <summary><c>--rxq</c>/<c>--txq</c>: queues per port (a vdev's <c>queues=</c> is its maximum).</summary>
    public int? RxQueues { get; init; }

    public int? TxQueues { get; init; }

    /// <summary><c>--rxd</c>/<c>--txd</c>: descriptors per queue.</summary>
    public int? RxDescriptors { get; init; }

    public int? TxDescriptors { get; init; }

    /// <summary><c>--forward-mode</c> at start-up; <see cref="Testpmd.SetForwardModeAsync"/> changes it later.</summary>
    public string? ForwardMode { get; init; }

    /// <summary>More EAL arguments, after the ones the harness sets.</summary>
    public IReadOnlyList<string> EalArguments { get; init; } = [];

    /// <summary>More application arguments (after <c>--</c>, next to <c>-i</c>).</summary>
    public IReadOnlyList<string> AppArguments { get; init; } = [];

    /// <summary>How long start-up may take until the first prompt (~0.6 s on an idle machine,
    /// several seconds when both CPUs are busy).</summary>
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>How long a command may take by default until the next prompt.</summary>
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>How many output lines <see cref="Testpmd.Lines"/> keeps (the oldest go first).</summary>
    public int LogCapacity { get; init; } = 5000;

    /// <summary>The testpmd binary; null finds <c>dpdk-testpmd</c> on PATH.</summary>
    public string? Executable { get; init; }
}
