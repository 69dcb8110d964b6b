namespace PciVirtio.Bridge.Link;

/// <summary>Link features (scratchpad <see cref="LinkScratchpad.Features"/>).</summary>
[Flags]
public enum LinkFeatures : uint
{
    None = 0,

    /// <summary>Both rings use EVENT_IDX notification suppression.</summary>
    EventIdx = 1 << 0,

    /// <summary>Frames carry a 12-byte virtio_net_hdr (checksum and segmentation offloads cross).</summary>
    VnetHeader = 1 << 1,

    /// <summary>The writer polls: it needs no doorbells.</summary>
    Polling = 1 << 2,

    /// <summary>Both rings run VIRTIO_F_IN_ORDER with one descriptor per frame: the sender
    /// uses descriptors in ring order and writes the avail entries once, the receiver returns
    /// a batch of frames with one used element naming the last.</summary>
    InOrder = 1 << 3,
}

/// <summary>The scratchpads of the handshake (docs/link-protocol.md). Each side writes the
/// peer's and reads its own.</summary>
public static class LinkScratchpad
{
    public const int Version = 0;
    public const int QueuePairs = 1;
    public const int QueueSize = 2;
    public const int BufferSize = 3;
    public const int WindowLo = 4;
    public const int WindowHi = 5;
    public const int Features = 6;
    public const int Mtu = 7;
    public const int Epoch = 8;
    public const int Ready = 9;

    /// <summary>The epoch of the reader's offer that the writer agreed to.</summary>
    public const int Ack = 10;

    /// <summary>A counter the writer advances every tick: a peer whose counter stops is gone.</summary>
    public const int Heartbeat = 11;

    /// <summary>Scratchpads the protocol needs.</summary>
    public const int Count = 12;

    /// <summary>"PV" in the high half: a value without it is not a PciVirtio peer (or none yet).</summary>
    public const uint Magic = 0x5056_0000;

    /// <summary>The protocol version this code speaks.</summary>
    public const ushort ProtocolVersion = 1;

    public static uint VersionWord(ushort version) => Magic | version;

    /// <summary>True when <paramref name="word"/> carries the magic; <paramref name="version"/> is then the peer's.</summary>
    public static bool TryParseVersion(uint word, out ushort version)
    {
        version = (ushort)word;
        return (word & 0xffff_0000) == Magic && version != 0;
    }
}

/// <summary>
/// What one side offers in the handshake, and (after <see cref="Agree"/>) what both use.
/// </summary>
public sealed record LinkParameters
{
    public const int MinQueueSize = 64;
    public const int MaxQueueSize = 4096;
    public const int MaxQueuePairs = 16;

    /// <summary>The default of <see cref="QueueSize"/> (why so deep: there).</summary>
    public const int DefaultQueueSize = 4096;

    /// <summary>The default of <see cref="BufferSize"/>.</summary>
    public const int DefaultBufferSize = 2048;

    public int QueuePairs { get; init; } = 1;

    /// <summary>Entries per ring. The default is deep on purpose: the sender gives each
    /// descriptor the same place every lap, so a lap of 4096 MTU-sized frames spans 6 MiB,
    /// and a line the receiver read has left its core's private cache by the time the sender
    /// writes that place again. The store then takes the line from the shared cache instead
    /// of waiting for the receiving core to give it up. With 256 entries (a 384 KiB lap) the
    /// lines are still there, and two CPUs passing 1500-byte frames that the receiver reads
    /// moved half as many (docs/link-benchmark.md). The rings of 4096 entries take 104 KiB of
    /// window. A lap that no longer fits a core's cache costs where no line changes CPU: both
    /// ends on one core, or a receiver that reads none of the payload, went 10–25% slower, and
    /// such a user offers a smaller ring (the smaller offer wins).</summary>
    public int QueueSize { get; init; } = DefaultQueueSize;

    /// <summary>Bytes of receive-buffer space per queue slot: a frame takes as many
    /// contiguous bytes of the receiver's buffer area as it is long, and the area holds
    /// <see cref="QueueSize"/> × this many (8 MiB with the defaults, so a queue pair needs a
    /// 16 MiB window). 1536, an area exactly one lap of MTU-sized frames, moved 15% fewer
    /// 1500-byte frames between two CPUs than 2048 in the link benchmark.</summary>
    public int BufferSize { get; init; } = DefaultBufferSize;

    /// <summary>Bytes of the inbound window the writer exposes.</summary>
    public ulong WindowSize { get; init; }

    public LinkFeatures Features { get; init; } = LinkFeatures.EventIdx | LinkFeatures.VnetHeader | LinkFeatures.InOrder;

    /// <summary>Largest packet (without the vnet header) the writer accepts.</summary>
    public int Mtu { get; init; } = 65535;

    public uint Epoch { get; init; }

    /// <summary>Null when valid, else what is wrong (naming the value).</summary>
    public string? Validate()
    {
        if (QueuePairs is < 1 or > MaxQueuePairs)
        {
            return $"queue pairs {QueuePairs} not in 1..{MaxQueuePairs}";
        }

        if (QueueSize is < MinQueueSize or > MaxQueueSize || (QueueSize & (QueueSize - 1)) != 0)
        {
            return $"queue size {QueueSize} is not a power of two in {MinQueueSize}..{MaxQueueSize}";
        }

        if (BufferSize < 256 || BufferSize % 64 != 0 || BufferSize > (1 << 20))
        {
            return $"buffer size {BufferSize} is not a multiple of 64 in 256..1 MiB";
        }

        if (Mtu is < 68 or > 65535)
        {
            return $"MTU {Mtu} not in 68..65535";
        }

        return null;
    }

    /// <summary>Writes the offer into the peer's scratchpads: everything, then the version last.</summary>
    public void WriteTo(Action<int, uint> writePeer, ushort version = LinkScratchpad.ProtocolVersion)
    {
        writePeer(LinkScratchpad.Version, 0);
        writePeer(LinkScratchpad.Ready, 0);
        writePeer(LinkScratchpad.Ack, 0);
        writePeer(LinkScratchpad.QueuePairs, (uint)QueuePairs);
        writePeer(LinkScratchpad.QueueSize, (uint)QueueSize);
        writePeer(LinkScratchpad.BufferSize, (uint)BufferSize);
        writePeer(LinkScratchpad.WindowLo, (uint)WindowSize);
        writePeer(LinkScratchpad.WindowHi, (uint)(WindowSize >> 32));
        writePeer(LinkScratchpad.Features, (uint)Features);
        writePeer(LinkScratchpad.Mtu, (uint)Mtu);
        writePeer(LinkScratchpad.Epoch, Epoch);
        writePeer(LinkScratchpad.Version, LinkScratchpad.VersionWord(version));
    }

    /// <summary>Reads the peer's offer from our own scratchpads (after its version word was seen).</summary>
    public static LinkParameters ReadFrom(Func<int, uint> readLocal) => new()
    {
        QueuePairs = (int)Math.Min(readLocal(LinkScratchpad.QueuePairs), int.MaxValue),
        QueueSize = (int)Math.Min(readLocal(LinkScratchpad.QueueSize), int.MaxValue),
        BufferSize = (int)Math.Min(readLocal(LinkScratchpad.BufferSize), int.MaxValue),
        WindowSize = readLocal(LinkScratchpad.WindowLo) | ((ulong)readLocal(LinkScratchpad.WindowHi) << 32),
        Features = (LinkFeatures)readLocal(LinkScratchpad.Features),
        Mtu = (int)Math.Min(readLocal(LinkScratchpad.Mtu), int.MaxValue),
        Epoch = readLocal(LinkScratchpad.Epoch),
    };

    /// <summary>What both sides use: the smaller of each size, the features both offer; then,
    /// while the layout of that does not fit the smaller of the two windows the offers name,
    /// the queue size halved (not below <see cref="MinQueueSize"/>). Both sides compute the
    /// same result from the same two offers, in either order: the fit uses only the window
    /// sizes written in the offers, never what one side's hardware maps of the other's. The
    /// deep default ring thus shrinks to what a small window holds instead of failing (a
    /// 4 MiB window gets 1024 entries, a 1 MiB one 256); what does not fit even at the
    /// smallest ring is left for the caller to refuse, naming the sizes.</summary>
    public static LinkParameters Agree(LinkParameters a, LinkParameters b)
    {
        var agreed = new LinkParameters
        {
            QueuePairs = Math.Min(a.QueuePairs, b.QueuePairs),
            QueueSize = Math.Min(a.QueueSize, b.QueueSize),
            BufferSize = Math.Min(a.BufferSize, b.BufferSize),
            Mtu = Math.Min(a.Mtu, b.Mtu),
            Features = a.Features & b.Features & (LinkFeatures.EventIdx | LinkFeatures.VnetHeader | LinkFeatures.InOrder),
        };

        ulong window = Math.Min(a.WindowSize, b.WindowSize);
        while (window != 0 && agreed.QueueSize > MinQueueSize && LinkLayout.Compute(agreed).Size > window)
        {
            agreed = agreed with { QueueSize = agreed.QueueSize / 2 };
        }

        return agreed;
    }
}
