using System.CommandLine;
using System.CommandLine.Parsing;
using PciVirtio.Bridge.Hardware;
using PciVirtio.Bridge.Link;
using PciVirtio.Host.Daemon;
using PciVirtio.Host.LinkEnd;

namespace PciVirtio.Host.Cli;

/// <summary><c>pcivirtio link</c>: one end of a host-to-host link from flags.</summary>
internal static class LinkCli
{
    public static Command Create(TextWriter output)
    {
        var hw = new Option<string>("--hw") { Description = $"The NTB: {NtbHardware.SpecForms}", Required = true };
        var name = CliOptions.Text("--name", "Link name in logs and counters (default: the TAP's name)");
        var tap = CliOptions.Text("--tap", "TAP interface to create (default: the kernel names one)");
        var mtu = CliOptions.Int("--mtu", "MTU of the TAP", SettingsValidator.MinMtu, SettingsValidator.MaxTapMtu, 1500);
        var address = CliOptions.Text("--address", "Address to give the TAP, e.g. 10.77.0.1/24 (runs ip addr add)");
        var queues = CliOptions.Int("--queues", "Queue pairs to offer", 1, LinkParameters.MaxQueuePairs, 1);
        var queueSize = CliOptions.Int("--queue-size", "Ring size to offer, a power of two", LinkParameters.MinQueueSize, LinkParameters.MaxQueueSize, LinkParameters.DefaultQueueSize);
        var bufferSize = CliOptions.Int("--buffer-size", "Receive buffer bytes per ring slot, a multiple of 64", SettingsValidator.MinBufferSize, SettingsValidator.MaxBufferSize, LinkParameters.DefaultBufferSize);
        var duration = CliOptions.OptionalSeconds("--duration", "Stop after this many seconds (default: on SIGINT/SIGTERM)");
        var stats = CliOptions.Seconds("--stats", "Print state and throughput every this many seconds (0: never)", 1, zeroAllowed: true);
        var poll = CliOptions.Flag("--poll", "Busy-poll the rings (lowest latency, one core spins) instead of doorbells");
        var linger = CliOptions.Int("--linger", "Doorbells mode: microseconds a dry receive ring or a full transmit ring is still watched before a doorbell is asked for (0: at once)",
            0, SettingsValidator.MaxLingerMicroseconds, (int)LinkOptions.DefaultLinger.TotalMicroseconds);
        var verbose = CliOptions.Flag("--verbose", "Debug logging");
        var peerId = new Option<uint?>("--peer-id") { Description = "vfio: only: the other side's ivshmem IVPosition (default: 1 when ours is 0, else 0)" };
        var noIommu = CliOptions.Flag("--no-iommu", "vfio: only: accept vfio-pci's unsafe no-IOMMU mode (machines without an IOMMU)");
        var command = new Command("link", "One end of a host-to-host link over an NTB, as a TAP interface")
        {
            hw, name, tap, mtu, address, queues, queueSize, bufferSize, duration, stats, poll, linger, verbose, peerId, noIommu,
        };
        LinkEndSettings Settings(CommandResult r) => new()
        {
            Name = r.GetValue(name),
            Hardware = r.GetValue(hw),
            Tap = r.GetValue(tap),
            Mtu = r.GetValue(mtu),
            Address = r.GetValue(address),
            Queues = r.GetValue(queues),
            QueueSize = r.GetValue(queueSize),
            BufferSize = r.GetValue(bufferSize),
            Poll = r.GetValue(poll),
            LingerMicroseconds = r.GetValue(linger),
            PeerId = r.GetValue(peerId),
            NoIommu = r.GetValue(noIommu),
        };
        command.SetAction(parse => CliOptions.Refuse(parse, SettingsValidator.ValidateLink(Settings(parse.CommandResult), Flag))
            ? PciVirtioCli.UsageError
            : LinkCommand.Run(Settings(parse.CommandResult), parse.GetValue(duration), parse.GetValue(stats), parse.GetValue(verbose), output));
        return command;
    }

    private static string Flag(string setting) => setting switch
    {
        "Hardware" => "--hw",
        "QueueSize" => "--queue-size",
        "BufferSize" => "--buffer-size",
        "PeerId" => "--peer-id",
        "NoIommu" => "--no-iommu",
        "LingerMicroseconds" => "--linger",
        _ => "--" + setting.ToLowerInvariant(),
    };
}
