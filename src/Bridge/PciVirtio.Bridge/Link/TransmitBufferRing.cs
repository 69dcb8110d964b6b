using System.Runtime.CompilerServices;

namespace PciVirtio.Bridge.Link;

/// <summary>
/// The sender's allocator for the receiver's buffer area: each frame takes as many
/// contiguous bytes (64-aligned) as it is long, handed out in order like a byte ring, and
/// comes back when the receiver returns its descriptor. Returns may come out of order (a
/// peer is not trusted to be in order): space is reclaimed up to the oldest frame still out.
/// </summary>
/// <remarks>
/// Places follow the ring's laps: the frame of slot 0 (and so of descriptor 0, as the link's
/// in-order ring pairs them) goes back to offset 0 whenever the bytes before the oldest frame
/// out leave room, and the frames after it follow on, going back to 0 only when the end of the
/// area is reached. Frames of one length therefore keep their places lap after lap, and the
/// descriptor naming each is not written again (<c>SplitQueueDriver.TryAddInOrder</c>): with
/// two threads in the link benchmark the sender's store into a descriptor line the receiver
/// read a lap earlier was 5–9 ns of its 41 per 1500-byte frame (docs/link-benchmark.md). When a
/// lap fits in the area the places in use stay within its bytes (4096 frames of 1500 bytes, the
/// default ring: 6 MiB of the 8 MiB area) rather than cycling through the whole area, and no
/// division is on the per-frame path. How long the lap is matters as well: see
/// LinkParameters.QueueSize.
/// Before, the ring went back to 0 as soon as the bytes before the oldest frame out were as
/// many as those out: a smaller set of places, but one whose places moved from lap to lap, so
/// every descriptor was written again.
/// </remarks>
internal sealed class TransmitBufferRing
{
    /// <summary>What <see cref="Find"/> returns when the bytes are not free.</summary>
    public const ulong NoRoom = ulong.MaxValue;

    private readonly ulong _size;
    private readonly ulong[] _starts;
    private readonly bool[] _done; // out-of-order returns (Release) only; false for every slot not returned
    private readonly int _slotMask;
    private ulong _head; // where the next frame goes
    private ulong _tail; // where the oldest frame out starts (0 when none is out)
    private int _first;
    private int _count;

    /// <param name="size">Bytes of the area.</param>
    /// <param name="slots">Most frames out at once (the queue size, a power of two).</param>
    public TransmitBufferRing(ulong size, int slots)
    {
        _size = size;
        _starts = new ulong[slots];
        _done = new bool[slots];
        _slotMask = slots - 1;
    }

    public int InFlight => _count;

    /// <summary>Bytes of the area.</summary>
    public ulong Size => _size;

    /// <summary>The slot the next frame gets (the one <see cref="Take"/> hands out).</summary>
    public int NextSlot => (_first + _count) & _slotMask;

    /// <summary>
    /// Where <paramref name="length"/> contiguous bytes would go, or <see cref="NoRoom"/>
    /// when they are not free (or every slot is out). Changes nothing: the sender finds the
    /// place, writes the frame there, and only then <see cref="Take"/>s it, so a frame that
    /// does not go out after all (a short gather) leaves nothing to undo, and the frame's
    /// path stores to this object only what a frame that goes out must.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong Find(uint length)
    {
        ulong need = ((ulong)length + 63) & ~63UL;
        bool lapStart = NextSlot == 0;
        ulong at;
        if (_count > _slotMask)
        {
            return NoRoom;
        }
        else if (_count == 0)
        {
            // Nothing out, so every byte is free; still on at head, so a lap keeps its places.
            at = lapStart || need > _size - _head ? 0 : _head;
        }
        else if (_head > _tail)
        {
            // Frames out in [tail, head): back to 0 at the start of a lap or at the end of the
            // area, when the bytes before tail are enough, else on at head.
            bool end = need <= _size - _head;
            at = _tail >= need && (lapStart || !end) ? 0 : end ? _head : NoRoom;
        }
        else
        {
            // Wrapped: frames out in [tail, end) and [0, head); free is [head, tail).
            at = _tail - _head >= need ? _head : NoRoom;
        }

        return at == NoRoom || need > _size - at ? NoRoom : at;
    }

    /// <summary>Hands out the place <see cref="Find"/> just gave for <paramref name="length"/>
    /// bytes, as slot <see cref="NextSlot"/>; nothing else may change the ring in between.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Take(ulong offset, uint length)
    {
        int slot = NextSlot;
        _head = offset + (((ulong)length + 63) & ~63UL);
        if (_count == 0)
        {
            _tail = offset;
        }

        _starts[slot] = offset;
        _count++;
    }

    /// <summary>Takes <paramref name="length"/> contiguous bytes at once (<see cref="Find"/>
    /// then <see cref="Take"/>); false when they are not free.</summary>
    public bool TryAllocate(uint length, out ulong offset, out int slot)
    {
        offset = Find(length);
        if (offset == NoRoom)
        {
            offset = 0;
            slot = -1;
            return false;
        }

        slot = NextSlot;
        Take(offset, length);
        return true;
    }

    /// <summary>The receiver is done with frame <paramref name="slot"/>; false for a slot
    /// that is not out (a hostile or confused peer).</summary>
    public bool Release(int slot)
    {
        if ((uint)slot > (uint)_slotMask || ((slot - _first) & _slotMask) >= _count || _done[slot])
        {
            return false;
        }

        _done[slot] = true;
        while (_count > 0 && _done[_first])
        {
            // Cleared as it leaves, so a slot handed out again starts not done without the
            // hand-out storing it.
            _done[_first] = false;
            _first = (_first + 1) & _slotMask;
            _count--;
        }

        _tail = _count == 0 ? 0 : _starts[_first];

        return true;
    }

    /// <summary>The receiver is done with the <paramref name="count"/> oldest frames (a ring
    /// in order returns them so); the caller has checked that as many are out.</summary>
    public void ReleaseOldest(int count)
    {
        _first = (_first + count) & _slotMask;
        _count -= count;
        _tail = _count == 0 ? 0 : _starts[_first];
    }

    /// <summary>Forgets every frame (the link went down: nothing is coming back).</summary>
    public void Reset()
    {
        _head = 0;
        _tail = 0;
        _first = 0;
        _count = 0;
        Array.Clear(_done);
    }
}
