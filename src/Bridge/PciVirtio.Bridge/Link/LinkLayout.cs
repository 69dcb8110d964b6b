namespace PciVirtio.Bridge.Link;

/// <summary>Where the structures of one queue pair sit in an inbound window (offsets).</summary>
public readonly record struct LinkQueueLayout(ulong RxDesc, ulong RxAvail, ulong TxUsed, ulong RxBuffers, ulong RxBufferBytes);

/// <summary>
/// The layout of an inbound window for agreed parameters (docs/link-protocol.md): per queue
/// pair the receive descriptor table, the receive avail ring, the transmit used ring at
/// 4 mod 8 (so every used element is one aligned 8-byte posted write) and the receive
/// buffer area. Both sides compute it from the same parameters, so it is never exchanged.
/// </summary>
public sealed class LinkLayout
{
    private readonly LinkQueueLayout[] _queues;

    private LinkLayout(LinkQueueLayout[] queues, ulong size)
    {
        _queues = queues;
        Size = size;
    }

    /// <summary>Bytes the layout needs.</summary>
    public ulong Size { get; }

    public LinkQueueLayout this[int pair] => _queues[pair];

    public int QueuePairs => _queues.Length;

    public static LinkLayout Compute(LinkParameters agreed)
    {
        ulong n = (ulong)agreed.QueueSize;
        var queues = new LinkQueueLayout[agreed.QueuePairs];
        ulong at = 0;
        for (int q = 0; q < queues.Length; q++)
        {
            ulong desc = Align(at, 64);
            ulong avail = Align(desc + (16 * n), 64);
            ulong used = Align(avail + 6 + (2 * n), 64) + 4;
            ulong buffers = Align(used + 6 + (8 * n), 4096);
            ulong bytes = n * (ulong)agreed.BufferSize;
            queues[q] = new LinkQueueLayout(desc, avail, used, buffers, bytes);
            at = buffers + bytes;
        }

        return new LinkLayout(queues, at);
    }

    private static ulong Align(ulong value, ulong alignment) => (value + alignment - 1) & ~(alignment - 1);
}
