using System.Runtime.InteropServices;

namespace PciVirtio.VhostCore.Memory;

/// <summary>
/// A translated piece of a buffer: <see cref="Length"/> bytes that are contiguous in our
/// mapping at <see cref="Host"/> and start at guest address <see cref="Guest"/>. A
/// descriptor whose buffer spans two memory regions becomes two segments.
/// </summary>
[StructLayout(LayoutKind.Auto)]
public readonly struct IoSegment(nint host, uint length, ulong guest)
{
    public nint Host { get; } = host;

    public uint Length { get; } = length;

    public ulong Guest { get; } = guest;

    public override string ToString() => $"[gpa 0x{Guest:x}, {Length} B]";
}
