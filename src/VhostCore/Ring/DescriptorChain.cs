using System.Runtime.InteropServices;
using PciVirtio.VhostCore.Memory;

namespace PciVirtio.VhostCore.Ring;

/// <summary>
/// One validated descriptor chain popped from the avail ring: its head (the id to return in
/// the used ring) and where its translated segments sit in the caller's segment buffer —
/// readable ones first, then writable ones, as the spec orders them.
/// </summary>
[StructLayout(LayoutKind.Auto)]
public readonly struct DescriptorChain
{
    public DescriptorChain(ushort head, int segmentStart, int readableSegments, int writableSegments, uint readableBytes, uint writableBytes)
    {
        Head = head;
        SegmentStart = segmentStart;
        ReadableSegments = readableSegments;
        WritableSegments = writableSegments;
        ReadableBytes = readableBytes;
        WritableBytes = writableBytes;
    }

    public ushort Head { get; }

    public int SegmentStart { get; }

    public int ReadableSegments { get; }

    public int WritableSegments { get; }

    /// <summary>Total bytes the device may read (driver → device).</summary>
    public uint ReadableBytes { get; }

    /// <summary>Total bytes the device may write (device → driver).</summary>
    public uint WritableBytes { get; }

    public ReadOnlySpan<IoSegment> Readable(ReadOnlySpan<IoSegment> segments) => segments.Slice(SegmentStart, ReadableSegments);

    public ReadOnlySpan<IoSegment> Writable(ReadOnlySpan<IoSegment> segments) => segments.Slice(SegmentStart + ReadableSegments, WritableSegments);
}

/// <summary>struct virtq_used_elem: the head of a finished chain and the bytes written into it.</summary>
public readonly record struct UsedElement(ushort Id, uint Length);
