namespace PciVirtio.Bridge.Link;

/// <summary>
/// The sender's allocator for the receiver's buffer area: each frame takes as many
/// contiguous bytes (64-aligned) as it is long, handed out in order like a byte ring, and
/// comes back when the receiver returns its descriptor. Returns may come out of order (a
/// peer is not trusted to be in order): space is reclaimed up to the oldest frame still out.
/// </summary>
internal sealed class TransmitBufferRing
{
    private readonly ulong _size;
    private readonly ulong[] _ends;
    private readonly bool[] _done;
    private readonly int _slotMask;
    private ulong _head;
    private ulong _tail;
    private int _first;
    private int _count;

    /// <param name="size">Bytes of the area.</param>
    /// <param name="slots">Most frames out at once (the queue size, a power of two).</param>
    public TransmitBufferRing(ulong size, int slots)
    {
        _size = size;
        _ends = new ulong[slots];
        _done = new bool[slots];
        _slotMask = slots - 1;
    }

    public int InFlight => _count;

    /// <summary>Bytes of the area.</summary>
    public ulong Size => _size;

    public ulong FreeBytes => _size - (_head - _tail);

    /// <summary>Takes <paramref name="length"/> contiguous bytes; false when they are not free
    /// (or every slot is out). <paramref name="slot"/> names the frame for <see cref="Release"/>.</summary>
    public bool TryAllocate(uint length, out ulong offset, out int slot)
    {
        ulong need = ((ulong)length + 63) & ~63UL;
        ulong at = _head % _size;
        ulong skip = at + need > _size ? _size - at : 0; // no wrap inside a frame
        if (_count == _ends.Length || need > _size || skip + need > FreeBytes)
        {
            offset = 0;
            slot = -1;
            return false;
        }

        offset = skip == 0 ? at : 0;
        _head += skip + need;
        slot = (_first + _count) & _slotMask;
        _ends[slot] = _head;
        _done[slot] = false;
        _count++;
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
            _tail = _ends[_first];
            _first = (_first + 1) & _slotMask;
            _count--;
        }

        return true;
    }

    /// <summary>Forgets every frame (the link went down: nothing is coming back).</summary>
    public void Reset()
    {
        _head = 0;
        _tail = 0;
        _first = 0;
        _count = 0;
    }
}
