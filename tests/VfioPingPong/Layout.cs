namespace PciVirtio.Tests.VfioPingPong;

/// <summary>
/// Where things live. BAR0 holds ivshmem's registers; BAR2 is the memory both guests share:
/// <code>
/// 0x0000  header of peer 0      0x2000  inbox of peer 0 (messages to peer 0)
/// 0x1000  header of peer 1      0x4000  inbox of peer 1
/// </code>
/// A header is written only by its peer: magic, its id, its state (ready, done) and its
/// counters — used for the start handshake and a final cross-check. An inbox is written only by
/// the other peer: the payload first (at 64 + seq % 8, so the accessor's unaligned head and tail
/// paths are exercised too), then a barrier, then length and checksum, then a barrier and the
/// sequence number that publishes it, then the doorbell.
/// </summary>
internal static class Layout
{
    /// <summary>"PPNG" little-endian.</summary>
    public const uint Magic = 0x474E5050;

    public const ulong HeaderStride = 0x1000;
    public const ulong InboxBase = 0x2000;
    public const ulong InboxStride = 0x2000;

    /// <summary>BAR2 must hold both headers and both inboxes.</summary>
    public const ulong RequiredSharedMemory = InboxBase + (2 * InboxStride);

    // Header fields.
    public const ulong HeaderMagic = 0;
    public const ulong HeaderPeerId = 4;
    public const ulong HeaderState = 8;
    public const ulong HeaderSent = 16;
    public const ulong HeaderReceived = 24;
    public const ulong HeaderBytesReceived = 32;

    /// <summary>Doorbells the responder has counted on its parked eventfd (the masking step).</summary>
    public const ulong HeaderParked = 40;

    public const uint StateNone = 0;
    public const uint StateReady = 1;
    public const uint StateDone = 2;

    // The masking step after the messages (PingPong.MaskStep): the responder parked its
    // vector 0 (and counts rings in HeaderParked), then routed it back.
    public const uint StateParked = 3;
    public const uint StateRouted = 4;

    // Inbox fields.
    public const ulong InboxSequence = 0;
    public const ulong InboxLength = 8;
    public const ulong InboxChecksum = 12;
    public const ulong InboxPayload = 64;

    /// <summary>The most a message may carry: the inbox less its fields and the alignment shift.</summary>
    public const int MaxPayload = (int)(InboxStride - InboxPayload - 8);

    // BAR0 registers (ivshmem spec).
    public const ulong IvPosition = 8;

    public static ulong Header(int peer) => (ulong)peer * HeaderStride;

    public static ulong Inbox(int peer) => InboxBase + ((ulong)peer * InboxStride);

    public static ulong PayloadOffset(ulong sequence) => InboxPayload + (sequence % 8);
}
