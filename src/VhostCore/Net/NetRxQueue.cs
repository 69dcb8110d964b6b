using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.VhostUser;

namespace PciVirtio.VhostCore.Net;

/// <summary>
/// The receive queue of a virtio-net device: copies frames from a backend into the
/// driver's buffers. With MRG_RXBUF a frame spans as many chains as it needs (num_buffers
/// in its header); without, it must fit one chain. Chains are popped in batches and held
/// until frames fill them, so a run of small frames costs one avail walk per batch; held
/// chains go back to the ring on stop and on a memory change.
/// </summary>
public sealed class NetRxQueue : NetQueue
{
    /// <summary>Most chains held at once (a 64 KiB frame in 1 KiB buffers needs 65).</summary>
    public const int MaxHeldChains = 256;

    /// <summary>Segments a refill must have room for: a chain with more is malformed (the
    /// kernel's vhost has the same bound, UIO_MAXIOV).</summary>
    public const int MaxChainSegments = 1024;

    /// <summary>Used entries after which used.idx is published even in the middle of a backend's
    /// run: a polling driver then takes frames while we fill more buffers, instead of both
    /// sides taking turns over a whole ring (DPDK's vhost publishes per burst of 32 alike).
    /// The interrupt check stays at the end of the run.</summary>
    public const int PublishEvery = 32;

    private readonly DescriptorChain[] _chains = new DescriptorChain[MaxHeldChains];
    private readonly IoSegment[] _segments = new IoSegment[2 * MaxChainSegments];
    private readonly Action<int> _spaceAvailable;

    // A frame's header when it does not lie whole in the frame's first segment or the
    // driver's first buffer (the slow path; see WriteHeader).
    private readonly byte[] _header = new byte[VirtioNetHeader.Size];
    private readonly int _pair;
    // Held chains are _chains[_heldStart.._heldEnd): a frame moves the start only.
    private int _heldStart;
    private int _heldEnd;
    private int _guestHeader;
    private bool _waiting;
    private VirtioNetFeatures _netFeatures;

    /// <param name="spaceAvailable">Called with the pair index when buffers arrive after a
    /// <see cref="ReceiveResult.NoBuffers"/> (the backend retries then).</param>
    public NetRxQueue(string name, int pair, IDataPlaneEvents events, Action<int> spaceAvailable, ILogger? logger = null)
        : base(name, events, logger)
    {
        _pair = pair;
        _spaceAvailable = spaceAvailable;
    }

    /// <summary>Chains popped and waiting for frames.</summary>
    public int HeldChains => _heldEnd - _heldStart;

    /// <summary>Copies one frame (12-byte header + packet, in <paramref name="frame"/>) into
    /// the driver's buffers.</summary>
    public unsafe ReceiveResult Receive(ReadOnlySpan<IoSegment> frame, int length)
    {
        if (!Ring.IsRunning)
        {
            return ReceiveResult.NoBuffers;
        }

        if (length < VirtioNetHeader.Size + 14 || length > VirtioNetHeader.MaxFrame)
        {
            Stats.DropsField++;
            return ReceiveResult.Dropped;
        }

        // The frame's segments are ordinary memory: the RAM accessor of the guest's memory reads them.
        var memory = Ring.Memory;
        ulong headerLow;
        uint headerHigh;
        if (!frame.IsEmpty && frame[0].Length >= VirtioNetHeader.Size)
        {
            headerLow = memory.Access.LoadU64(frame[0].Host);
            headerHigh = memory.Access.LoadU32(frame[0].Host + 8);
        }
        else if (memory.Gather(frame, 0, _header) == VirtioNetHeader.Size)
        {
            headerLow = BinaryPrimitives.ReadUInt64LittleEndian(_header);
            headerHigh = BinaryPrimitives.ReadUInt32LittleEndian(_header.AsSpan(8));
        }
        else
        {
            Stats.DropsField++;
            return ReceiveResult.Dropped;
        }

        // No flags and no GSO (the usual frame) suits every driver: no call for it.
        if ((ushort)headerLow != 0 && !VirtioNetHeader.AcceptableFor((VirtioNetHeaderFlags)headerLow, (VirtioNetGsoType)(headerLow >> 8), _netFeatures))
        {
            Stats.DropsField++;
            return ReceiveResult.Dropped;
        }

        int packet = length - VirtioNetHeader.Size;
        uint needed = (uint)(_guestHeader + packet);

        // The usual frame: one piece, into the first held buffer whole. Kept apart from the
        // general path so its few values stay in registers: every spill is one more store
        // queued behind the stores into the guest's lines.
        int held = _heldStart;
        if (held < _heldEnd && frame.Length == 1 && frame[0].Length >= (uint)length)
        {
            ref readonly var chain = ref _chains[held];
            ref readonly var first = ref _segments[chain.SegmentStart];
            if (first.Length >= needed)
            {
                StoreHeader(memory, first.Host, headerLow, VirtioNetHeader.WithNumBuffers(headerHigh, 1));
                memory.Access.CopyTo(first.Host + _guestHeader, new ReadOnlySpan<byte>((byte*)frame[0].Host + VirtioNetHeader.Size, packet));
                Ring.PushUsed(chain.Head, needed);
                _heldStart = held + 1;
                return Delivered(packet);
            }
        }

        return ReceiveIntoChains(memory, frame, packet, needed, headerLow, headerHigh);
    }

    /// <summary>The general path of <see cref="Receive"/>: a frame in pieces, or into several
    /// buffers or chains, or with no chain held yet.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ReceiveResult ReceiveIntoChains(GuestMemory<RamAccessor> memory, ReadOnlySpan<IoSegment> frame, int packet, uint needed, ulong headerLow, uint headerHigh)
    {
        bool mergeable = (_netFeatures & VirtioNetFeatures.MrgRxbuf) != 0;
        int chainsNeeded = mergeable ? CountChains(needed) : (HaveHeld() ? 1 : 0);
        if (chainsNeeded == 0)
        {
            return NoBuffers();
        }

        if (chainsNeeded < 0 || (!mergeable && _chains[_heldStart].WritableBytes < needed))
        {
            // The driver's buffers can never hold this frame: drop it, keep the buffers.
            Stats.DropsField++;
            return ReceiveResult.Dropped;
        }

        headerHigh = VirtioNetHeader.WithNumBuffers(headerHigh, (ushort)chainsNeeded);
        int sourceOffset = VirtioNetHeader.Size;
        int remaining = packet;
        for (int c = 0; c < chainsNeeded; c++)
        {
            ref readonly var chain = ref _chains[_heldStart];
            var writable = chain.Writable(_segments);
            int written = 0;
            if (c == 0)
            {
                written = WriteHeader(memory, writable, headerLow, headerHigh);
            }

            int n = (int)Math.Min((uint)remaining, chain.WritableBytes - (uint)written);
            CopyInto(memory, writable, written, frame, sourceOffset, n);
            sourceOffset += n;
            remaining -= n;
            Ring.PushUsed(chain.Head, (uint)(written + n));
            _heldStart++;
        }

        return Delivered(packet);
    }

    /// <summary>Counts a delivered frame and publishes every <see cref="PublishEvery"/> entries.</summary>
    private ReceiveResult Delivered(int packet)
    {
        Stats.PacketsField++;
        Stats.BytesField += packet;
        if (Ring.UnpublishedUsed >= PublishEvery)
        {
            Ring.FlushUsed();
        }

        return ReceiveResult.Delivered;
    }

    /// <summary>Publishes what <see cref="Receive"/> wrote and interrupts the driver if it asked.</summary>
    public void Flush() => Publish();

    private protected override void OnStarted()
    {
        _guestHeader = VirtioNetHeader.SizeFor(Features);
        _netFeatures = (VirtioNetFeatures)Features;
        _heldStart = 0;
        _heldEnd = 0;
        _waiting = false;
    }

    private protected override void OnKick()
    {
        // New buffers (or a start): a backend that met an empty ring retries now.
        if (Ring.IsRunning)
        {
                _spaceAvailable(_pair);
        }
    }

    private protected override void ReleaseHeld()
    {
        if (_heldEnd > _heldStart && Ring.IsRunning)
        {
            Ring.Unpop(_heldEnd - _heldStart);
        }

        _heldStart = 0;
        _heldEnd = 0;
    }

    private protected override bool Poll()
    {
        // A backend met an empty ring: tell it when buffers are there (what the kick does
        // when not polling).
        if (_waiting && Ring.IsRunning && (_heldEnd > _heldStart || Ring.AvailPending() > 0))
        {
            _waiting = false;
            _spaceAvailable(_pair);
            return true;
        }

        return false;
    }

    private ReceiveResult NoBuffers()
    {
        _waiting = true;
        Stats.FullField++;
        return ReceiveResult.NoBuffers;
    }

    private bool HaveHeld() => _heldEnd > _heldStart || Refill() == RefillResult.Added;

    /// <summary>How many held chains, from the first, hold <paramref name="needed"/> bytes;
    /// 0 when the ring runs dry first (wait for buffers), -1 when even the most we may hold
    /// cannot (drop the frame).</summary>
    private int CountChains(uint needed)
    {
        ulong have = 0;
        int i = 0;
        while (true)
        {
            for (; i < _heldEnd - _heldStart; i++)
            {
                have += _chains[_heldStart + i].WritableBytes;
                if (have >= needed)
                {
                    return i + 1;
                }
            }

            switch (Refill())
            {
                case RefillResult.Empty:
                    return 0;
                case RefillResult.NoRoom:
                    return -1;
            }
        }
    }

    /// <summary>Pops more chains behind the held ones. With no buffers left, asks the driver
    /// for a kick when it adds some (re-checking, so buffers added meanwhile are not missed).</summary>
    private RefillResult Refill()
    {
        Compact();
        // Compacted: the held chains start at 0.
        int segEnd = _heldEnd == 0 ? 0 : SegmentEnd(_chains[_heldEnd - 1]);
        if (_segments.Length - segEnd < MaxChainSegments || _heldEnd == MaxHeldChains)
        {
            return RefillResult.NoRoom;
        }

        var chains = _chains.AsSpan(_heldEnd);
        var segments = _segments.AsSpan(segEnd);
        int n = Ring.PopAvail(chains, segments, segEnd);
        if (n == 0 && Ring.IsRunning && !Polling && Ring.EnableNotifications())
        {
            n = Ring.PopAvail(chains, segments, segEnd);
        }

        if (n == 0)
        {
            return RefillResult.Empty;
        }

        // The driver is refilling: no kicks needed until we run dry again.
        if (!Polling)
        {
            Ring.DisableNotifications();
        }
        for (int i = 0; i < n; i++)
        {
            ref readonly var chain = ref chains[i];
            if (chain.ReadableSegments != 0 || chain.WritableBytes == 0)
            {
                // The queue is dead from here on; nothing held matters any more.
                Ring.Break(QueueError.WrongDirection, $"receive chain {chain.Head} has {chain.ReadableSegments} device-readable buffers and {chain.WritableBytes} writable bytes");
                _heldStart = 0;
                _heldEnd = 0;
                return RefillResult.Empty;
            }
        }

        ClaimLines(chains[..n]);
        _heldEnd += n;
        return RefillResult.Added;
    }

    /// <summary>
    /// Stores into the first two cache lines of each new chain's first buffer (where the
    /// header and a small frame go), long before the frame is copied there.
    /// </summary>
    /// <remarks>
    /// The driver read those lines when it took the last frame from the buffer, so each
    /// store must first fetch its line from the driver's core. Stores leave the core in
    /// order: stores made a frame at a time, between the ring's own stores, have a few lines
    /// in flight at once, and every frame waits for the ones before. Stored back to back for
    /// a whole refill, the lines come in parallel, and the frames find them already ours.
    /// The buffer is the device's to write from the moment it is available.
    /// </remarks>
    private void ClaimLines(ReadOnlySpan<DescriptorChain> chains)
    {
        var access = Ring.Memory.Access;
        uint reach = (uint)_guestHeader + 8;
        foreach (ref readonly var chain in chains)
        {
            ref readonly var first = ref _segments[chain.SegmentStart];
            if (first.Length >= reach)
            {
                access.StoreU64(first.Host, 0);
                access.StoreU64(first.Host + _guestHeader, 0);
            }
        }
    }

    /// <summary>Moves the held chains and their segments to the front of the arrays.</summary>
    private void Compact()
    {
        if (_heldStart == 0)
        {
            return;
        }

        int count = _heldEnd - _heldStart;
        if (count == 0)
        {
            _heldStart = 0;
            _heldEnd = 0;
            return;
        }

        int firstSeg = _chains[_heldStart].SegmentStart;
        int endSeg = SegmentEnd(_chains[_heldEnd - 1]);
        Array.Copy(_segments, firstSeg, _segments, 0, endSeg - firstSeg);
        for (int i = 0; i < count; i++)
        {
            var c = _chains[_heldStart + i];
            _chains[i] = new DescriptorChain(c.Head, c.SegmentStart - firstSeg, c.ReadableSegments, c.WritableSegments, c.ReadableBytes, c.WritableBytes);
        }

        _heldStart = 0;
        _heldEnd = count;
    }

    /// <summary>Writes the driver's header (12 or, legacy, 10 bytes) at the start of its buffers.</summary>
    /// <remarks>The header goes from the source frame to the guest in registers. Staged in a
    /// buffer, amended there (num_buffers) and read back, it would be read with 8-byte loads
    /// that overlap the 2-byte amending store, which x86 cannot forward: such a load waits
    /// until every older store has reached the cache, including the last frame's stores into
    /// guest lines still on their way from the driver's core, so each frame would wait out
    /// the previous one's cache misses.</remarks>
    private int WriteHeader(GuestMemory<RamAccessor> memory, ReadOnlySpan<IoSegment> writable, ulong low, uint high)
    {
        if (writable[0].Length >= (uint)_guestHeader)
        {
            StoreHeader(memory, writable[0].Host, low, high);
            return _guestHeader;
        }

        // The driver split its header across buffers (allowed, never seen in practice).
        BinaryPrimitives.WriteUInt64LittleEndian(_header, low);
        BinaryPrimitives.WriteUInt32LittleEndian(_header.AsSpan(8), high);
        return memory.Scatter(writable, 0, _header.AsSpan(0, _guestHeader));
    }

    /// <summary>Stores the driver's header at <paramref name="at"/>: 12 bytes, or 10 for a
    /// legacy driver (which has no num_buffers).</summary>
    private void StoreHeader(GuestMemory<RamAccessor> memory, nint at, ulong low, uint high)
    {
        memory.Access.StoreU64(at, low);
        if (_guestHeader == VirtioNetHeader.Size)
        {
            memory.Access.StoreU32(at + 8, high);
        }
        else
        {
            memory.Access.StoreU16(at + 8, (ushort)high);
        }
    }

    private static int SegmentEnd(in DescriptorChain c) => c.SegmentStart + c.ReadableSegments + c.WritableSegments;

    /// <summary>Copies <paramref name="count"/> bytes of the source frame, from
    /// <paramref name="sourceOffset"/>, into <paramref name="destination"/> from <paramref name="destOffset"/>.</summary>
    private static unsafe void CopyInto(GuestMemory<RamAccessor> memory, ReadOnlySpan<IoSegment> destination, int destOffset, ReadOnlySpan<IoSegment> source, int sourceOffset, int count)
    {
        int s = 0;
        while (s < source.Length && sourceOffset >= source[s].Length)
        {
            sourceOffset -= (int)source[s].Length;
            s++;
        }

        while (count > 0 && s < source.Length)
        {
            int n = (int)Math.Min((uint)count, source[s].Length - (uint)sourceOffset);
            var piece = new ReadOnlySpan<byte>((byte*)source[s].Host + sourceOffset, n);
            int w = memory.Scatter(destination, destOffset, piece);
            destOffset += w;
            count -= n;
            sourceOffset = 0;
            s++;
        }
    }

    private enum RefillResult
    {
        Added,
        Empty,
        NoRoom,
    }
}
