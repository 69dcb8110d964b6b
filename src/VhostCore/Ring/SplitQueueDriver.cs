using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using PciVirtio.VhostCore.Memory;

namespace PciVirtio.VhostCore.Ring;

/// <summary>
/// The driver side of a split virtqueue (what a virtio driver does): adds buffers as
/// descriptor chains, publishes avail entries in batches, decides whether the device must
/// be kicked, and reaps used entries.
/// </summary>
/// <remarks>
/// <para>The host-to-host link runs a driver for its transmit direction, and tests use it
/// to drive <see cref="SplitQueueDevice{TAccess}"/>. The device at the other end may be a
/// peer host, so everything read from the used ring is validated like guest input.</para>
/// <para>The driver never reads back what it wrote: the free list, chain lengths, the avail
/// index and flags are shadowed here. Across a PCIe link the descriptor table and avail
/// ring sit in the device's memory (remote writes only) and the used ring in ours (local
/// reads only).</para>
/// <para>Not thread-safe: one thread adds and reaps.</para>
/// </remarks>
public sealed class SplitQueueDriver<TAccess> : QueueEndpoint
    where TAccess : struct, IMemoryAccessor
{
    private GuestMemory<TAccess> _memory;
    private QueueState _state;
    private RingPointers _ring;
    private int _size;
    private int _mask;
    private bool _eventIdx;
    private bool _useIndirect;
    private IndirectArea _indirectArea;
    private nint _indirectHost;

    // Free descriptors form a list through _next; a chain keeps its links there while in
    // flight, so freeing it is O(1): splice [head.._chainLast[head]] back on the list.
    private ushort[] _next = [];
    private ushort[] _chainCount = [];
    private ushort[] _chainLast = [];
    private uint[] _writableBytes = [];
    private ulong[] _tokens = [];
    private ushort _freeHead;
    private int _numFree;
    private int _inFlight;

    private ushort _availShadow;
    private ushort _publishedAvail;
    private ushort _kickCheckedAvail;
    private ushort _lastUsed;
    private bool _interruptsEnabled;

    // VIRTIO_F_IN_ORDER with one descriptor per buffer (TryAddInOrder, ReapInOrder): the
    // buffer at avail index i is descriptor i mod size, so no free list is kept, the avail
    // entries are written once at Start, and one used element may return a whole batch.
    private bool _inOrder;
    private bool _inOrderCalls;

    // What TryAddInOrder last stored in each descriptor (address, then the word of length,
    // flags and next), so a descriptor that would get the same bytes again is not stored:
    // see TryAddInOrder. Reset at Start to a word no descriptor of ours has (every flag bit
    // set), as the ring memory's contents are not known then.
    private ulong[] _descWritten = [];

    public SplitQueueDriver(string name, ILogger? logger = null)
        : base(name, logger)
    {
    }

    public int Size => _size;

    /// <summary>Descriptors free for new buffers.</summary>
    public int FreeDescriptors => _numFree;

    /// <summary>Chains added and not yet reaped.</summary>
    public int InFlight => _inFlight;

    public long KicksRequested { get; private set; }

    public long KicksSuppressed { get; private set; }

    public GuestMemory<TAccess> Memory => _memory;

    /// <summary>The driver's current indices as a queue state.</summary>
    public QueueState State => _state with { NextAvail = _availShadow, NextUsed = _lastUsed };

    /// <summary>
    /// Starts driving the ring described by <paramref name="state"/> (a fresh ring: nothing
    /// in flight). Writes the avail flags and index so the device sees a consistent ring.
    /// <paramref name="indirect"/>, when given and INDIRECT_DESC is negotiated, is used for
    /// chains of two or more buffers.
    /// </summary>
    public bool Start(in QueueState state, GuestMemory<TAccess> memory, IndirectArea? indirect = null)
    {
        Running = false;
        ClearError();
        _memory = memory;
        _state = state;
        var error = state.Validate(memory.Table, out string reason, out _ring);
        if (error != QueueError.None)
        {
            Break(error, reason);
            return false;
        }

        _size = state.Size;
        _mask = _size - 1;
        _eventIdx = state.EventIdx;
        _useIndirect = false;
        if (indirect is { } area && state.IndirectDesc && area.EntriesPerHead >= 2)
        {
            if (area.EntriesPerHead > SplitQueueDevice<TAccess>.MaxIndirectEntries
                || area.GuestAddress % SplitRingLayout.DescAlign != 0
                || !memory.Table.TryTranslate(area.GuestAddress, area.Bytes(_size), out _indirectHost))
            {
                Break(QueueError.IndirectOutOfMemory, $"indirect area at 0x{area.GuestAddress:x} ({area.EntriesPerHead} entries per head) is not aligned inside one memory region");
                return false;
            }

            _indirectArea = area;
            _useIndirect = true;
        }

        if (_next.Length != _size)
        {
            _next = new ushort[_size];
            _chainCount = new ushort[_size];
            _chainLast = new ushort[_size];
            _writableBytes = new uint[_size];
            _tokens = new ulong[_size];
        }

        for (int i = 0; i < _size; i++)
        {
            _next[i] = (ushort)((i + 1) & _mask);
            _chainCount[i] = 0;
        }

        _freeHead = 0;
        _numFree = _size;
        _inFlight = 0;
        _inOrder = state.InOrder;
        _inOrderCalls = false;
        _availShadow = state.NextAvail;
        _lastUsed = state.NextUsed;
        _publishedAvail = _availShadow;
        _kickCheckedAvail = _availShadow;
        _interruptsEnabled = true;

        var access = memory.Access;
        access.StoreU16(_ring.AvailFlags, 0);
        if (_eventIdx)
        {
            access.StoreU16(_ring.UsedEvent, _lastUsed);
        }

        if (_inOrder)
        {
            if (_descWritten.Length != 2 * _size)
            {
                _descWritten = new ulong[2 * _size];
            }

            for (int i = 0; i < _size; i++)
            {
                _descWritten[(2 * i) + 1] = ulong.MaxValue;
            }

            // In ring order the entry at slot i always names descriptor i (whatever the
            // starting index, as both count modulo the size): written once here rather than
            // once per buffer, which saves a store per frame into a line the device reads.
            for (int i = 0; i < _size; i++)
            {
                access.StoreU16(_ring.AvailEntries + (2 * i), (ushort)i);
            }
        }

        access.StoreReleaseU16(_ring.AvailIdx, _availShadow);
        Running = true;
        return true;
    }

    /// <summary>Stops driving the ring; buffers in flight stay with the device.</summary>
    public QueueState Stop()
    {
        Running = false;
        return State;
    }

    /// <summary>
    /// Adds one request: <paramref name="readable"/> buffers the device reads, then
    /// <paramref name="writable"/> buffers it writes. <paramref name="token"/> comes back
    /// from <see cref="Reap"/>. The entry is visible to the device after
    /// <see cref="Publish"/>. False when there is no room (or the queue is not running).
    /// </summary>
    public bool TryAdd(ReadOnlySpan<GuestBuffer> readable, ReadOnlySpan<GuestBuffer> writable, ulong token)
    {
        int total = readable.Length + writable.Length;
        ThrowIfInOrderCalls();
        if (!IsRunning || total == 0)
        {
            return false;
        }

        ulong writableTotal = 0;
        foreach (ref readonly var b in writable)
        {
            writableTotal += b.Length;
        }

        if (writableTotal > uint.MaxValue)
        {
            return false;
        }

        var access = _memory.Access;
        ushort head;
        if (_useIndirect && total > 1 && total <= _indirectArea.EntriesPerHead)
        {
            if (_numFree < 1)
            {
                return false;
            }

            head = _freeHead;
            _freeHead = _next[head];
            _numFree--;

            ulong tableGuest = _indirectArea.GuestAddress + ((ulong)head * (ulong)_indirectArea.EntriesPerHead * SplitRingLayout.DescSize);
            nint table = _indirectHost + (nint)((ulong)head * (ulong)_indirectArea.EntriesPerHead * SplitRingLayout.DescSize);
            for (int i = 0; i < total; i++)
            {
                var b = i < readable.Length ? readable[i] : writable[i - readable.Length];
                var flags = i < readable.Length ? VirtqDescFlags.None : VirtqDescFlags.Write;
                if (i + 1 < total)
                {
                    flags |= VirtqDescFlags.Next;
                }

                WriteDesc(access, table + (i * SplitRingLayout.DescSize), b.Address, b.Length, flags, (ushort)(i + 1));
            }

            WriteDesc(access, _ring.Desc + (head * SplitRingLayout.DescSize), tableGuest, (uint)(total * SplitRingLayout.DescSize), VirtqDescFlags.Indirect, 0);
            _chainCount[head] = 1;
            _chainLast[head] = head;
        }
        else
        {
            if (_numFree < total)
            {
                return false;
            }

            head = _freeHead;
            ushort d = head;
            for (int i = 0; i < total; i++)
            {
                var b = i < readable.Length ? readable[i] : writable[i - readable.Length];
                var flags = i < readable.Length ? VirtqDescFlags.None : VirtqDescFlags.Write;
                ushort next = _next[d];
                if (i + 1 < total)
                {
                    flags |= VirtqDescFlags.Next;
                }

                WriteDesc(access, _ring.Desc + (d * SplitRingLayout.DescSize), b.Address, b.Length, flags, next);
                if (i + 1 < total)
                {
                    d = next;
                }
            }

            _freeHead = _next[d];
            _numFree -= total;
            _chainCount[head] = (ushort)total;
            _chainLast[head] = d;
        }

        _writableBytes[head] = (uint)writableTotal;
        _tokens[head] = token;
        _inFlight++;

        access.StoreU16(_ring.AvailEntries + (2 * (_availShadow & _mask)), head);
        _availShadow++;
        return true;
    }

    /// <summary>
    /// <see cref="TryAdd"/> for one device-readable buffer (a frame to send), the commonest
    /// request of a transmit queue: one descriptor, no loops over the request. Same ring
    /// contents and accounting as <c>TryAdd([buffer], [], token)</c>.
    /// </summary>
    public bool TryAddReadable(GuestBuffer buffer, ulong token)
    {
        ThrowIfInOrderCalls();
        if (!IsRunning || _numFree < 1)
        {
            return false;
        }

        ushort head = _freeHead;
        var access = _memory.Access;
        WriteDesc(access, _ring.Desc + (head * SplitRingLayout.DescSize), buffer.Address, buffer.Length, VirtqDescFlags.None, _next[head]);
        _freeHead = _next[head];
        _numFree--;
        _chainCount[head] = 1;
        _chainLast[head] = head;
        _writableBytes[head] = 0;
        _tokens[head] = token;
        _inFlight++;
        access.StoreU16(_ring.AvailEntries + (2 * (_availShadow & _mask)), head);
        _availShadow++;
        return true;
    }

    /// <summary>
    /// Adds one device-readable buffer in ring order (VIRTIO_F_IN_ORDER negotiated): it takes
    /// descriptor avail.idx mod size, whose avail entry was written at <see cref="Start"/>, so
    /// a buffer costs one descriptor store and nothing else, and not even that when the
    /// descriptor already names the same address and length from an earlier lap (a caller that
    /// gives each descriptor the same place every lap, as the link's sender does, then writes
    /// only payload). The descriptor lives in memory the device reads; a store into it waits
    /// for the line the device last read, and across a bus it is one more posted write. Only
    /// the device could have changed the descriptor since, and it then reads back its own
    /// bytes; after <see cref="Start"/> every descriptor is stored once. Buffers come back,
    /// oldest first, from <see cref="ReapInOrder"/>; the caller keeps its own per-buffer state
    /// in the same order. Not to be mixed with <see cref="TryAdd"/> on one run of the ring.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAddInOrder(GuestBuffer buffer)
    {
        if (!_inOrderCalls)
        {
            BeginInOrderCalls();
        }

        if (!IsRunning || _inFlight == _size)
        {
            return false;
        }

        int head = _availShadow & _mask;
        ref ulong written = ref _descWritten[2 * head];
        ulong word = buffer.Length; // flags none, next 0
        if (written != buffer.Address || Unsafe.Add(ref written, 1) != word)
        {
            WriteInOrderDesc(head, buffer);
        }

        _inFlight++;
        _numFree--;
        _availShadow++;
        return true;
    }

    /// <summary>Stores descriptor <paramref name="head"/> for <paramref name="buffer"/> and
    /// remembers it. Out of line: the accessor it passes is a struct copy, and a caller
    /// that inlines <see cref="TryAddInOrder"/> would otherwise clear room for it on every
    /// call, stores on a path whose descriptors are mostly not written at all.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void WriteInOrderDesc(int head, GuestBuffer buffer)
    {
        WriteDesc(_memory.Access, _ring.Desc + (head * SplitRingLayout.DescSize), buffer.Address, buffer.Length, VirtqDescFlags.None, 0);
        ref ulong written = ref _descWritten[2 * head];
        written = buffer.Address;
        Unsafe.Add(ref written, 1) = buffer.Length;
    }

    /// <summary>
    /// Takes what the device returned in ring order: the number of buffers, oldest first,
    /// that are done. Under VIRTIO_F_IN_ORDER one used element names the last buffer of a
    /// batch and returns every buffer before it too. An element naming a buffer that is not
    /// out, or reporting bytes written into a device-readable buffer, breaks the queue.
    /// </summary>
    public int ReapInOrder()
    {
        if (!_inOrderCalls)
        {
            BeginInOrderCalls();
        }

        if (!IsRunning)
        {
            return 0;
        }

        var access = _memory.Access;
        ushort usedIdx = access.LoadAcquireU16(_ring.UsedIdx);
        if (usedIdx == _lastUsed)
        {
            return 0;
        }

        int elements = (ushort)(usedIdx - _lastUsed);
        if (elements > _inFlight)
        {
            Break(QueueError.UsedIndexJump, $"used index moved from {_lastUsed} to {usedIdx} but only {_inFlight} buffers are in flight");
            return 0;
        }

        int done = 0;
        for (int i = 0; i < elements; i++)
        {
            ulong e = access.LoadU64(_ring.UsedEntries + (8 * (_lastUsed & _mask)));
            uint id = (uint)e;
            uint len = (uint)(e >> 32);
            int oldest = (ushort)(_availShadow - _inFlight) & _mask;
            int count = (int)((id - (uint)oldest) & (uint)_mask) + 1;
            if (id >= (uint)_size || count > _inFlight)
            {
                Break(QueueError.UsedIdNotInFlight, $"used entry {_lastUsed} names id {id}, which is not a buffer in flight (in order from {oldest}, {_inFlight} out)");
                break;
            }

            if (len != 0)
            {
                Break(QueueError.UsedLengthTooLong, $"used entry {_lastUsed} reports {len} bytes written into device-readable buffer {id}");
                break;
            }

            _inFlight -= count;
            _numFree += count;
            done += count;
            _lastUsed++;
        }

        if (done > 0 && _eventIdx && _interruptsEnabled)
        {
            access.StoreU16(_ring.UsedEvent, _lastUsed);
        }

        return done;
    }

    private void BeginInOrderCalls()
    {
        if (!_inOrder)
        {
            throw new InvalidOperationException($"{Name}: the in-order calls need VIRTIO_F_IN_ORDER in the queue's features");
        }

        if (_inFlight != 0)
        {
            throw new InvalidOperationException($"{Name}: in-order and general adds cannot be mixed on one run of the ring");
        }

        _inOrderCalls = true;
    }

    private void ThrowIfInOrderCalls()
    {
        if (_inOrderCalls)
        {
            throw new InvalidOperationException($"{Name}: this ring is driven in order (TryAddInOrder, ReapInOrder) until it is restarted");
        }
    }

    /// <summary>Makes every added entry visible to the device: one release store of avail.idx
    /// (descriptors and payload written before it are visible first).</summary>
    public void Publish()
    {
        if (IsRunning)
        {
            _memory.Access.StoreReleaseU16(_ring.AvailIdx, _availShadow);
            _publishedAvail = _availShadow;
        }
    }

    /// <summary>
    /// After <see cref="Publish"/>: true when the device asked to be kicked for the entries
    /// published since the last call (entries added but not yet published do not count, so
    /// calling this too early cannot swallow the kick they will need) (VIRTQ_USED_F_NO_NOTIFY clear, or with EVENT_IDX, avail.idx
    /// passed avail_event).
    /// </summary>
    public bool NeedsKick()
    {
        if (!IsRunning || _publishedAvail == _kickCheckedAvail)
        {
            return false;
        }

        var access = _memory.Access;

        // The avail index store must be visible before we read the device's wish.
        access.FullBarrier();
        ushort newIdx = _publishedAvail;
        ushort oldIdx = _kickCheckedAvail;
        _kickCheckedAvail = newIdx;
        bool need = _eventIdx
            ? SplitRingLayout.NeedEvent(access.LoadU16(_ring.AvailEvent), newIdx, oldIdx)
            : ((VirtqUsedFlags)access.LoadU16(_ring.UsedFlags) & VirtqUsedFlags.NoNotify) == 0;
        if (need)
        {
            KicksRequested++;
        }
        else
        {
            KicksSuppressed++;
        }

        return need;
    }

    /// <summary>
    /// Reaps up to <paramref name="buffers"/>.Length used entries, returning their tokens and
    /// written lengths. Validates every element: an id that is not a chain in flight, a
    /// length beyond the chain's writable bytes, or a used index that moved past what is in
    /// flight breaks the queue.
    /// </summary>
    public int Reap(Span<UsedBuffer> buffers)
    {
        ThrowIfInOrderCalls();
        if (!IsRunning)
        {
            return 0;
        }

        var access = _memory.Access;
        ushort usedIdx = access.LoadAcquireU16(_ring.UsedIdx);
        int pending = (ushort)(usedIdx - _lastUsed);
        if (pending > _inFlight)
        {
            Break(QueueError.UsedIndexJump, $"used index moved from {_lastUsed} to {usedIdx} but only {_inFlight} buffers are in flight");
            return 0;
        }

        int n = Math.Min(pending, buffers.Length);
        for (int i = 0; i < n; i++)
        {
            ulong e = access.LoadU64(_ring.UsedEntries + (8 * (_lastUsed & _mask)));
            uint id = (uint)e;
            uint len = (uint)(e >> 32);
            if (id >= (uint)_size || _chainCount[id] == 0)
            {
                Break(QueueError.UsedIdNotInFlight, $"used entry {_lastUsed} names id {id}, which is not a buffer in flight");
                return i;
            }

            if (len > _writableBytes[id])
            {
                Break(QueueError.UsedLengthTooLong, $"used entry {_lastUsed} reports {len} bytes written into buffer {id} of {_writableBytes[id]} writable bytes");
                return i;
            }

            buffers[i] = new UsedBuffer(_tokens[id], len);
            _next[_chainLast[id]] = _freeHead;
            _freeHead = (ushort)id;
            _numFree += _chainCount[id];
            _chainCount[id] = 0;
            _inFlight--;
            _lastUsed++;
        }

        // With EVENT_IDX, ask for the next interrupt after what we have now consumed: one
        // store per batch rather than per buffer.
        if (n > 0 && _eventIdx && _interruptsEnabled)
        {
            access.StoreU16(_ring.UsedEvent, _lastUsed);
        }

        return n;
    }

    /// <summary>Asks the device not to interrupt (the driver is polling). With EVENT_IDX the
    /// spec keeps avail.flags at 0; used_event simply stops advancing.</summary>
    public void DisableInterrupts()
    {
        if (!IsRunning || !_interruptsEnabled)
        {
            return;
        }

        _interruptsEnabled = false;
        if (!_eventIdx)
        {
            _memory.Access.StoreU16(_ring.AvailFlags, (ushort)VirtqAvailFlags.NoInterrupt);
        }
    }

    /// <summary>
    /// Asks the device to interrupt on its next used entry, then re-checks: true when used
    /// entries are already waiting, which the caller must reap now because the device may
    /// have skipped the interrupt for them.
    /// </summary>
    public bool EnableInterrupts()
    {
        if (!IsRunning)
        {
            return false;
        }

        var access = _memory.Access;
        _interruptsEnabled = true;
        if (_eventIdx)
        {
            access.StoreU16(_ring.UsedEvent, _lastUsed);
        }
        else
        {
            access.StoreU16(_ring.AvailFlags, 0);
        }

        access.FullBarrier();
        return access.LoadAcquireU16(_ring.UsedIdx) != _lastUsed;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WriteDesc(TAccess access, nint at, ulong addr, uint len, VirtqDescFlags flags, ushort next) =>
        access.StoreU64Pair(at, addr, len | ((ulong)(ushort)flags << 32) | ((ulong)next << 48));
}
