namespace PciVirtio.HwSim.Device;

/// <summary>A snapshot of one port's counters (see <see cref="NtbRegisters.Counters"/>).
/// Remote reads/writes and bytes are accesses this port made through its outbound window.</summary>
public readonly record struct PortCounters(
    long RemoteReads,
    long RemoteWrites,
    long RemoteReadBytes,
    long RemoteWrittenBytes,
    long DoorbellsSent,
    long DoorbellsReceived,
    long InterruptsRaised,
    long DoorbellsDropped,
    long LinkChanges,
    long DroppedWrites,
    long FailedReads)
{
    internal static PortCounters Read(RegisterPage page) => new(
        (long)page.Read64(NtbRegisters.RemoteReads),
        (long)page.Read64(NtbRegisters.RemoteWrites),
        (long)page.Read64(NtbRegisters.RemoteReadBytes),
        (long)page.Read64(NtbRegisters.RemoteWrittenBytes),
        (long)page.Read64(NtbRegisters.DoorbellsSent),
        (long)page.Read64(NtbRegisters.DoorbellsReceived),
        (long)page.Read64(NtbRegisters.InterruptsRaised),
        (long)page.Read64(NtbRegisters.DoorbellsDropped),
        (long)page.Read64(NtbRegisters.LinkChanges),
        (long)page.Read64(NtbRegisters.DroppedWrites),
        (long)page.Read64(NtbRegisters.FailedReads));

    public override string ToString() =>
        $"remote reads {RemoteReads} ({RemoteReadBytes} B), remote writes {RemoteWrites} ({RemoteWrittenBytes} B), " +
        $"doorbells sent {DoorbellsSent} received {DoorbellsReceived} dropped {DoorbellsDropped}, interrupts {InterruptsRaised}, " +
        $"link changes {LinkChanges}, dropped writes {DroppedWrites}, failed reads {FailedReads}";
}
