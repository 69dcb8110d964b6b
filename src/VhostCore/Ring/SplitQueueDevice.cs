using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using PciVirtio.VhostCore.Memory;

namespace PciVirtio.VhostCore.Ring;

/// <summary>
/// The device side of a split virtqueue (what a vhost backend does): pops descriptor chains
/// from the avail ring in batches, validates and translates them, publishes used elements,
/// and decides when the driver must be interrupted or may kick.
/// </summary>
/// <remarks>
/// <para>Everything the guest controls is read once into locals and validated before use;
/// a violation never throws out of the data path: it breaks the queue (or discards the one
/// chain, see <see cref="ChainErrorPolicy"/>) with a logged reason.</para>
/// <para>Across a PCIe link the device's side of the ring is placed so it only reads its own
/// memory: it reads desc and avail (local) and only writes used (remote). For that reason
/// the used index, used flags and the avail index it last saw are shadowed here and never
/// read back.</para>
/// <para>Not thread-safe: one queue is served by one thread at a time, as in every vhost
/// engine, so the data path takes no lock.</para>
/// </remarks>
public sealed class SplitQueueDevice<TAccess> : QueueEndpoint
    where TAccess : struct, IMemoryAccessor
{
    /// <summary>Largest indirect table accepted (entries). Indirect tables are not bound by
    /// the queue size (Linux drivers size them by segment count), only by this cap.</summary>
    public const int MaxIndirectEntries = SplitRingLayout.MaxQueueSize;

    private readonly ChainErrorPolicy _policy;
    private GuestMemory<TAccess> _memory;
    private QueueState _state;
    private RingPointers _ring;
    private int _size;
    private int _mask;
    private int _regionHint; // the memory region the last buffer was in (MemoryTable's hinted lookups)
    private bool _eventIdx;
    private bool _indirect;
    private bool _inOrder;
    private ushort _nextAvail;
    private ushort _availIdxSeen;
    private ushort _nextUsed;
    private ushort _publishedUsed;
    private ushort _signalledUsed;
    private bool _signalledValid;
    private bool _publishedSinceCheck;
    private VirtqUsedFlags _usedFlags;

    public SplitQueueDevice(string name, ChainErrorPolicy policy = ChainErrorPolicy.BreakQueue, ILogger? logger = null)
        : base(name, logger)
    {
        _policy = policy;
    }

    public int Size => _size;

    public GuestMemory<TAccess> Memory => _memory;

    /// <summary>Chains popped and handed to the caller.</summary>
    public long ChainsPopped { get; private set; }

    /// <summary>Chains rejected under <see cref="ChainErrorPolicy.DiscardChain"/>.</summary>
    public long ChainsDiscarded { get; private set; }

    /// <summary>Used elements published.</summary>
    public long UsedPublished { get; private set; }

    /// <summary>Times <see cref="NeedsInterrupt"/> said yes / no.</summary>
    public long InterruptsRequested { get; private set; }

    public long InterruptsSuppressed { get; private set; }

    /// <summary>The current state: what GET_VRING_BASE reports and SET_VRING_BASE restores.
    /// On a broken queue the used index is the last one published, since pushed but
    /// unpublished elements never reached the driver.</summary>
    public QueueState State => _state with { NextAvail = _nextAvail, NextUsed = IsBroken ? _publishedUsed : _nextUsed };

    /// <summary>
    /// Starts the queue from <paramref name="state"/> over <paramref name="memory"/>. Every
    /// field is validated (the state may come from an untrusted frontend); on failure the
    /// queue is broken with the reason and false is returned. Buffers already in the ring
    /// are served by the next <see cref="PopAvail"/>, without waiting for a kick.
    /// </summary>
    public bool Start(in QueueState state, GuestMemory<TAccess> memory)
    {
        Running = false;
        ClearError();
        _memory = memory;
        _state = state;
        _size = state.Size;
        _mask = state.Size - 1;
        _eventIdx = state.EventIdx;
        _indirect = state.IndirectDesc;
        _inOrder = state.InOrder;
        _nextAvail = state.NextAvail;
        _availIdxSeen = state.NextAvail;
        _nextUsed = state.NextUsed;
        _publishedUsed = state.NextUsed;
        _signalledValid = false;
        _publishedSinceCheck = false;
        _usedFlags = VirtqUsedFlags.None;

        var error = state.Validate(memory.Table, out string reason, out _ring);
        if (error != QueueError.None)
        {
            Break(error, reason);
            return false;
        }

        if (Logger is not null)
        {
            QueueLog.Started(Logger, Name, state.Size, state.DescTable, state.AvailRing, state.UsedRing, state.NextAvail, state.NextUsed, state.Features);
        }

        // used.flags may still hold NO_NOTIFY from before a stop, while our shadow starts
        // clear: write the shadow, or EnableNotifications would never clear the flag and the
        // driver would never kick again.
        _memory.Access.StoreU16(_ring.UsedFlags, (ushort)_usedFlags);

        // With EVENT_IDX, ask for a kick on the next avail entry: avail_event may be stale
        // from an earlier run, and a device that waits for a kick would otherwise sleep.
        if (_eventIdx)
        {
            _memory.Access.StoreU16(_ring.AvailEvent, _nextAvail);
        }

        Running = true;
        return true;
    }

    /// <summary>Stops the queue (GET_VRING_BASE): publishes what was pushed and returns the
    /// state, whose <see cref="QueueState.NextAvail"/> is the next avail index to serve.</summary>
    public QueueState Stop()
    {
        if (Running && !IsBroken)
        {
            FlushUsed();
        }

        Running = false;
        return State;
    }

    /// <summary>Swaps in a new memory table (the frontend changed the memory map) and
    /// re-translates the ring areas; breaks the queue if they no longer lie in memory.</summary>
    public bool UpdateMemory(GuestMemory<TAccess> memory)
    {
        _memory = memory;
        if (!Running || IsBroken)
        {
            return !IsBroken;
        }

        var error = _state.Validate(memory.Table, out string reason, out _ring);
        if (error != QueueError.None)
        {
            Break(error, reason);
            return false;
        }

        return true;
    }

    /// <summary>Number of avail entries not yet consumed (reads the avail index).</summary>
    public int AvailPending()
    {
        if (!IsRunning)
        {
            return 0;
        }

        return RefreshAvail();
    }

    /// <summary>
    /// Pops up to <paramref name="chains"/>.Length chains, translating their buffers into
    /// <paramref name="segments"/> (readable then writable segments of each chain, chains
    /// one after another). Returns how many chains were popped; 0 when the ring is empty,
    /// stopped or broken. A chain that does not fit in the remaining segments is left in
    /// the ring for the next call, unless it is the first, which is then a bad chain.
    /// </summary>
    /// <param name="segmentBase">Where <paramref name="segments"/> starts in the caller's
    /// segment array: the chains' <see cref="DescriptorChain.SegmentStart"/> count from there,
    /// so a caller that appends to held chains need not renumber them.</param>
    public int PopAvail(Span<DescriptorChain> chains, Span<IoSegment> segments, int segmentBase = 0)
    {
        if (!IsRunning)
        {
            return 0;
        }

        int pending = _availIdxSeen == _nextAvail ? RefreshAvail() : (ushort)(_availIdxSeen - _nextAvail);
        int count = 0;
        int segUsed = 0;
        long discardedBefore = ChainsDiscarded;
        var access = _memory.Access;
        while (count < chains.Length && pending > 0)
        {
            ushort head = access.LoadU16(_ring.AvailEntries + (2 * (_nextAvail & _mask)));
            if (head >= _size)
            {
                Break(QueueError.HeadOutOfRange, $"avail entry {_nextAvail} names head {head}, outside the queue size {_size}");
                return 0;
            }

            // Walked straight into the caller's slot: a chain built on the stack and copied
            // over was re-read as one wide load right after its narrow field stores, a
            // store-forwarding stall that was a third of the receive loop's time.
            var fault = WalkChain(head, segments[segUsed..], segmentBase + segUsed, out chains[count], out int segCount);
            if (fault.Error == QueueError.TooManySegments && count > 0)
            {
                // Leave it for the next call, which starts with an empty segment buffer.
                break;
            }

            _nextAvail++;
            pending--;
            if (fault.Error != QueueError.None)
            {
                if (!RejectChain(head, fault))
                {
                    return 0;
                }

                continue;
            }

            count++;
            segUsed += segCount;
        }

        if (ChainsDiscarded != discardedBefore)
        {
            // Give the rejected heads back now, even if the caller got nothing to process.
            FlushUsed();
        }

        ChainsPopped += count;
        return count;
    }

    /// <summary>
    /// Pops up to <paramref name="buffers"/>.Length buffers of one device-readable descriptor
    /// each (a queue whose driver never chains, as the host-to-host link's): no chain walk,
    /// each descriptor read once (two loads) and translated as one piece. Their heads go to
    /// <paramref name="heads"/>. With VIRTIO_F_IN_ORDER each avail entry must name the next
    /// descriptor in ring order. Anything else (a chained, indirect or device-writable
    /// descriptor, a head out of order, a buffer outside memory) breaks the queue, whatever
    /// the chain policy: under IN_ORDER a used element for a discarded buffer would also
    /// return the buffers before it.
    /// </summary>
    public int PopSingleReadable(Span<ushort> heads, Span<IoSegment> buffers)
    {
        if (!IsRunning)
        {
            return 0;
        }

        int pending = _availIdxSeen == _nextAvail ? RefreshAvail() : (ushort)(_availIdxSeen - _nextAvail);
        int count = Math.Min(pending, Math.Min(heads.Length, buffers.Length));
        var access = _memory.Access;
        var table = _memory.Table;
        nint entries = _ring.AvailEntries;
        nint desc = _ring.Desc;
        int mask = _mask;
        ushort next = _nextAvail;
        int hint = _regionHint;
        for (int i = 0; i < count; i++, next++)
        {
            int head = access.LoadU16(entries + (2 * (next & mask)));
            if (head != (next & mask) && (_inOrder || head >= _size))
            {
                Break(_inOrder ? QueueError.OutOfOrder : QueueError.HeadOutOfRange, _inOrder
                    ? $"avail entry {next} names head {head}; in order it is {next & mask}"
                    : $"avail entry {next} names head {head}, outside the queue size {_size}");
                return 0;
            }

            nint d = desc + (head * SplitRingLayout.DescSize);
            ulong addr = access.LoadU64(d);
            ulong word = access.LoadU64(d + 8);
            uint len = (uint)word;
            var flags = (VirtqDescFlags)(ushort)(word >> 32);
            nint host = 0;
            QueueError error = flags != VirtqDescFlags.None
                ? (flags == VirtqDescFlags.Write ? QueueError.WrongDirection : QueueError.NotSingleDescriptor)
                : len != 0 && !table.TryTranslate(addr, len, ref hint, out host) ? QueueError.BufferOutOfMemory : QueueError.None;
            if (error != QueueError.None)
            {
                Break(error, $"descriptor chain {head}: {new ChainFault(error, head, addr, len, false).Describe(_size)}");
                return 0;
            }

            heads[i] = (ushort)head;
            buffers[i] = new IoSegment(host, len, addr);
        }

        _regionHint = hint;
        _nextAvail = next;
        ChainsPopped += count;
        return count;
    }

    /// <summary>
    /// Gives back the last <paramref name="count"/> popped chains, which were neither pushed
    /// nor published: the next <see cref="PopAvail"/> walks them again (their translations may
    /// be stale, e.g. after a memory update). Only with <see cref="ChainErrorPolicy.BreakQueue"/>:
    /// under DiscardChain a rejected chain between them was already pushed and would be
    /// pushed twice.
    /// </summary>
    public void Unpop(int count)
    {
        if (_policy != ChainErrorPolicy.BreakQueue)
        {
            throw new InvalidOperationException($"{Name}: Unpop needs the BreakQueue chain policy");
        }

        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, _size);
        _nextAvail -= (ushort)count;
        ChainsPopped -= count;
    }

    /// <summary>Pops one chain (see <see cref="PopAvail"/>).</summary>
    public bool TryPopAvail(out DescriptorChain chain, Span<IoSegment> segments)
    {
        chain = default;
        return PopAvail(new Span<DescriptorChain>(ref chain), segments) == 1;
    }

    /// <summary>
    /// Writes one used element; it becomes visible to the driver at the next
    /// <see cref="FlushUsed"/>, so a batch costs one index store.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void PushUsed(ushort head, uint length)
    {
        if (!IsRunning || head >= _size)
        {
            return;
        }

        // id and len in one 8-byte store. On I/O memory that is a single posted write only
        // when the element is 8-byte aligned, i.e. the used ring sits at 4 mod 8 (the
        // standard page-aligned placement splits it into two 4-byte writes): a link that
        // controls placement should put the used ring there.
        _memory.Access.StoreU64(_ring.UsedEntries + (8 * (_nextUsed & _mask)), head | ((ulong)length << 32));
        _nextUsed++;
    }

    /// <summary>Writes a batch of used elements (see <see cref="PushUsed(ushort, uint)"/>).</summary>
    public void PushUsed(ReadOnlySpan<UsedElement> elements)
    {
        foreach (ref readonly var e in elements)
        {
            PushUsed(e.Id, e.Length);
        }
    }

    /// <summary>Used elements pushed and not yet published.</summary>
    public int UnpublishedUsed => (ushort)(_nextUsed - _publishedUsed);

    /// <summary>Publishes every used element pushed so far with one release store of used.idx.</summary>
    public void FlushUsed()
    {
        if (!IsRunning || _publishedUsed == _nextUsed)
        {
            return;
        }

        int added = (ushort)(_nextUsed - _publishedUsed);
        _memory.Access.StoreReleaseU16(_ring.UsedIdx, _nextUsed);

        // If this batch moved used.idx past the last signalled value by a whole wrap, the
        // event comparison would be ambiguous: force the next interrupt (as Linux vhost does).
        if ((ushort)(_nextUsed - _signalledUsed) < added)
        {
            _signalledValid = false;
        }

        _publishedUsed = _nextUsed;
        _publishedSinceCheck = true;
        UsedPublished += added;
    }

    /// <summary>
    /// After <see cref="FlushUsed"/>: true when something was published since the last call
    /// and the driver asked to be interrupted for it (VIRTQ_AVAIL_F_NO_INTERRUPT clear, or with
    /// EVENT_IDX, used.idx passed used_event).
    /// </summary>
    public bool NeedsInterrupt()
    {
        if (!IsRunning)
        {
            return false;
        }

        // Nothing published since the last call (including right after Start): no interrupt.
        if (!_publishedSinceCheck)
        {
            return false;
        }

        _publishedSinceCheck = false;
        ushort old = _signalledUsed;
        bool valid = _signalledValid;
        ushort now = _publishedUsed;

        _signalledUsed = now;
        _signalledValid = true;
        var access = _memory.Access;

        // The used index store must be visible before we read the driver's wish, or the
        // driver may re-enable interrupts, see no new used entries, and sleep forever.
        access.FullBarrier();
        bool need;
        if (_eventIdx)
        {
            need = !valid || SplitRingLayout.NeedEvent(access.LoadU16(_ring.UsedEvent), now, old);
        }
        else
        {
            need = ((VirtqAvailFlags)access.LoadU16(_ring.AvailFlags) & VirtqAvailFlags.NoInterrupt) == 0;
        }

        if (need)
        {
            InterruptsRequested++;
        }
        else
        {
            InterruptsSuppressed++;
        }

        return need;
    }

    /// <summary>Asks the driver not to kick (the device is polling). With EVENT_IDX nothing
    /// is written: avail_event simply stays behind, so at most one more kick comes.</summary>
    public void DisableNotifications()
    {
        if (!IsRunning || _eventIdx || (_usedFlags & VirtqUsedFlags.NoNotify) != 0)
        {
            return;
        }

        _usedFlags |= VirtqUsedFlags.NoNotify;
        _memory.Access.StoreU16(_ring.UsedFlags, (ushort)_usedFlags);
    }

    /// <summary>
    /// Asks the driver to kick on its next avail entry, then re-checks the ring: returns
    /// true when entries arrived meanwhile, which the caller must process now because the
    /// driver may have skipped the kick for them.
    /// </summary>
    public bool EnableNotifications()
    {
        if (!IsRunning)
        {
            return false;
        }

        var access = _memory.Access;
        if (_eventIdx)
        {
            access.StoreU16(_ring.AvailEvent, _nextAvail);
        }
        else if ((_usedFlags & VirtqUsedFlags.NoNotify) != 0)
        {
            _usedFlags &= ~VirtqUsedFlags.NoNotify;
            access.StoreU16(_ring.UsedFlags, (ushort)_usedFlags);
        }

        // Our store must be visible before we look at avail.idx again (store→load order).
        access.FullBarrier();
        return RefreshAvail() > 0;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int RefreshAvail()
    {
        ushort availIdx = _memory.Access.LoadAcquireU16(_ring.AvailIdx);
        int pending = (ushort)(availIdx - _nextAvail);
        if (pending > _size)
        {
            Break(QueueError.AvailIndexJump, $"avail index moved from {_nextAvail} to {availIdx}, more than the queue size {_size}");
            return 0;
        }

        _availIdxSeen = availIdx;
        return pending;
    }

    /// <summary>Handles a malformed chain per policy; false when the queue is now broken.</summary>
    private bool RejectChain(ushort head, in ChainFault fault)
    {
        if (_policy == ChainErrorPolicy.BreakQueue)
        {
            Break(fault.Error, $"descriptor chain {head}: {fault.Describe(_size)}");
            return false;
        }

        ChainsDiscarded++;

        // Rate-limited: the 1st, 2nd, 4th, 8th... bad chain is logged.
        if (Logger is not null && (ChainsDiscarded & (ChainsDiscarded - 1)) == 0)
        {
            QueueLog.ChainDiscarded(Logger, Name, head, fault.Error, fault.Describe(_size), ChainsDiscarded);
        }

        PushUsed(head, 0);
        return true;
    }

    /// <summary>
    /// Walks the chain at <paramref name="head"/>: each descriptor is copied out of guest
    /// memory once (two 8-byte loads) and validated from the copy, so a guest rewriting the
    /// table concurrently cannot make us act on a value we did not check.
    /// </summary>
    private ChainFault WalkChain(ushort head, Span<IoSegment> segments, int segmentBase, out DescriptorChain chain, out int segCount)
    {
        chain = default;
        segCount = 0;
        var access = _memory.Access;
        var table = _memory.Table;

        nint descBase = _ring.Desc;
        bool spanning = false; // an indirect table over several regions, read entry by entry
        ulong tableAddress = 0;
        int tableEntries = _size;
        int ttl = _size;
        bool inIndirect = false;
        int index = head;
        int readable = 0;
        ulong readBytes = 0;
        ulong writeBytes = 0;
        bool seenWritable = false;

        while (true)
        {
            if ((uint)index >= (uint)tableEntries)
            {
                return new ChainFault(QueueError.NextOutOfRange, index, 0, (ulong)tableEntries, inIndirect);
            }

            if (--ttl < 0)
            {
                return new ChainFault(QueueError.ChainTooLong, index, 0, (ulong)tableEntries, inIndirect);
            }

            nint d = descBase + (index * SplitRingLayout.DescSize);
            if (spanning)
            {
                ulong entry = tableAddress + ((ulong)index * SplitRingLayout.DescSize);
                if (!table.TryTranslate(entry, SplitRingLayout.DescSize, out d))
                {
                    return new ChainFault(QueueError.IndirectOutOfMemory, index, entry, SplitRingLayout.DescSize, true);
                }
            }

            ulong addr = access.LoadU64(d);
            ulong word = access.LoadU64(d + 8);
            uint len = (uint)word;
            var flags = (VirtqDescFlags)(ushort)(word >> 32);
            int next = (ushort)(word >> 48);

            if ((flags & VirtqDescFlags.Indirect) != 0)
            {
                if (inIndirect)
                {
                    return new ChainFault(QueueError.IndirectNested, index, addr, len, true);
                }

                if (!_indirect)
                {
                    return new ChainFault(QueueError.IndirectNotNegotiated, index, addr, len, false);
                }

                if ((flags & VirtqDescFlags.Next) != 0)
                {
                    return new ChainFault(QueueError.IndirectWithNext, index, addr, len, false);
                }

                if (len == 0 || len % SplitRingLayout.DescSize != 0 || len / SplitRingLayout.DescSize > MaxIndirectEntries)
                {
                    return new ChainFault(QueueError.IndirectBadLength, index, addr, len, false);
                }

                if (!table.TryTranslate(addr, len, out descBase))
                {
                    // Contiguous in guest-physical memory but over two or more regions (memory
                    // backends side by side, as DPDK's vhost also accepts): each entry is then
                    // translated as it is read. Rare, so the usual table keeps its one base.
                    if (!_memory.IsMapped(addr, len))
                    {
                        return new ChainFault(QueueError.IndirectOutOfMemory, index, addr, len, false);
                    }

                    spanning = true;
                    tableAddress = addr;
                    descBase = 0;
                }

                tableEntries = (int)(len / SplitRingLayout.DescSize);
                ttl = tableEntries;
                inIndirect = true;
                index = 0;
                continue;
            }

            if (len != 0)
            {
                if (addr + (len - 1UL) < addr)
                {
                    return new ChainFault(QueueError.AddressOverflow, index, addr, len, inIndirect);
                }

                ulong a = addr;
                ulong remaining = len;
                while (remaining != 0)
                {
                    ulong piece = table.TranslatePiece(a, remaining, ref _regionHint, out nint host);
                    if (piece == 0)
                    {
                        return new ChainFault(QueueError.BufferOutOfMemory, index, addr, len, inIndirect);
                    }

                    if (segCount == segments.Length)
                    {
                        return new ChainFault(QueueError.TooManySegments, index, addr, len, inIndirect);
                    }

                    segments[segCount++] = new IoSegment(host, (uint)piece, a);
                    a += piece;
                    remaining -= piece;
                }
            }

            if ((flags & VirtqDescFlags.Write) != 0)
            {
                seenWritable = true;
                writeBytes += len;
            }
            else
            {
                if (seenWritable)
                {
                    return new ChainFault(QueueError.ReadableAfterWritable, index, addr, len, inIndirect);
                }

                readBytes += len;
                readable = segCount;
            }

            if (readBytes > uint.MaxValue || writeBytes > uint.MaxValue)
            {
                return new ChainFault(QueueError.LengthOverflow, index, addr, len, inIndirect);
            }

            if ((flags & VirtqDescFlags.Next) == 0)
            {
                break;
            }

            index = next;
        }

        chain = new DescriptorChain(head, segmentBase, readable, segCount - readable, (uint)readBytes, (uint)writeBytes);
        return default;
    }
}
