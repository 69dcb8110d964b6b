namespace PciVirtio.VhostCore.Net;

/// <summary>Counters of one virtio-net queue. Written by the data-plane thread only; read
/// from anywhere (a torn read of a counter is at worst one update old on 64-bit).</summary>
public sealed class NetQueueStats
{
    internal long PacketsField;
    internal long BytesField;
    internal long DropsField;
    internal long KicksField;
    internal long InterruptsField;
    internal long FullField;

    /// <summary>Frames moved (transmitted by the driver, or delivered to it).</summary>
    public long Packets => Volatile.Read(ref PacketsField);

    /// <summary>Packet bytes moved (without the virtio_net_hdr).</summary>
    public long Bytes => Volatile.Read(ref BytesField);

    /// <summary>Frames dropped (refused by the backend or undeliverable to the driver).</summary>
    public long Drops => Volatile.Read(ref DropsField);

    /// <summary>Kicks taken from the driver.</summary>
    public long Kicks => Volatile.Read(ref KicksField);

    /// <summary>Interrupts sent to the driver.</summary>
    public long Interrupts => Volatile.Read(ref InterruptsField);

    /// <summary>Times the queue had to wait: no receive buffers, or a full backend on transmit.</summary>
    public long Stalls => Volatile.Read(ref FullField);
}
