using System.Runtime.CompilerServices;

namespace PciVirtio.VhostCore.Memory;

/// <summary>
/// A memory table together with the accessor that touches it: everything ring and device
/// code needs to reach guest memory. A small value type, copied into each queue, so the
/// accessor's methods are called without dispatch.
/// </summary>
public readonly struct GuestMemory<TAccess>(MemoryTable table, TAccess access)
    where TAccess : struct, IMemoryAccessor
{
    public MemoryTable Table { get; } = table;

    public TAccess Access { get; } = access;

    /// <summary>Copies guest memory at <paramref name="guestAddr"/> into
    /// <paramref name="destination"/>; the range may span several regions. False (and
    /// nothing guaranteed about <paramref name="destination"/>) when any byte is unmapped.</summary>
    public bool TryRead(ulong guestAddr, Span<byte> destination)
    {
        if (!destination.IsEmpty && guestAddr + (ulong)(destination.Length - 1) < guestAddr)
        {
            return false;
        }

        while (!destination.IsEmpty)
        {
            ulong piece = Table.TranslatePiece(guestAddr, (ulong)destination.Length, out nint host);
            if (piece == 0)
            {
                return false;
            }

            Access.CopyFrom(host, destination[..(int)piece]);
            destination = destination[(int)piece..];
            guestAddr += piece;
        }

        return true;
    }

    /// <summary>Copies <paramref name="source"/> into guest memory at
    /// <paramref name="guestAddr"/>; the range may span several regions. Checks the whole
    /// range before writing anything, so a failed write leaves memory untouched.</summary>
    public bool TryWrite(ulong guestAddr, ReadOnlySpan<byte> source)
    {
        if (!IsMapped(guestAddr, (ulong)source.Length))
        {
            return false;
        }

        while (!source.IsEmpty)
        {
            ulong piece = Table.TranslatePiece(guestAddr, (ulong)source.Length, out nint host);
            Access.CopyTo(host, source[..(int)piece]);
            source = source[(int)piece..];
            guestAddr += piece;
        }

        return true;
    }

    /// <summary>True when every byte of the range lies in some region.</summary>
    public bool IsMapped(ulong guestAddr, ulong length)
    {
        if (length == 0)
        {
            return true;
        }

        if (guestAddr + (length - 1) < guestAddr)
        {
            return false;
        }

        while (length > 0)
        {
            ulong piece = Table.TranslatePiece(guestAddr, length, out _);
            if (piece == 0)
            {
                return false;
            }

            length -= piece;
            guestAddr += piece;
        }

        return true;
    }

    /// <summary>Gathers the bytes of <paramref name="segments"/>, skipping the first
    /// <paramref name="skip"/>, into <paramref name="destination"/>; returns the count copied.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Gather(ReadOnlySpan<IoSegment> segments, int skip, Span<byte> destination)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(skip);
        int copied = 0;
        foreach (ref readonly var s in segments)
        {
            if (copied == destination.Length)
            {
                break;
            }

            if (skip >= s.Length)
            {
                skip -= (int)s.Length;
                continue;
            }

            // A segment may be longer than int.MaxValue (a descriptor of up to 4 GiB - 1):
            // compute unsigned; the result is bounded by the span, so it fits an int.
            int n = (int)Math.Min(s.Length - (uint)skip, (uint)(destination.Length - copied));
            Access.CopyFrom(s.Host + skip, destination.Slice(copied, n));
            copied += n;
            skip = 0;
        }

        return copied;
    }

    /// <summary>Scatters <paramref name="source"/> into <paramref name="segments"/>, skipping
    /// the first <paramref name="skip"/> bytes of them; returns the count written (short
    /// when the segments are too small).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Scatter(ReadOnlySpan<IoSegment> segments, int skip, ReadOnlySpan<byte> source)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(skip);
        int written = 0;
        foreach (ref readonly var s in segments)
        {
            if (written == source.Length)
            {
                break;
            }

            if (skip >= s.Length)
            {
                skip -= (int)s.Length;
                continue;
            }

            int n = (int)Math.Min(s.Length - (uint)skip, (uint)(source.Length - written));
            Access.CopyTo(s.Host + skip, source.Slice(written, n));
            written += n;
            skip = 0;
        }

        return written;
    }
}
