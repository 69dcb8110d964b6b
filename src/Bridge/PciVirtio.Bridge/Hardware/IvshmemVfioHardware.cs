using System.Diagnostics.CodeAnalysis;
using System.Numerics;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Signals;

namespace PciVirtio.Bridge.Hardware;

/// <summary>
/// The link over an ivshmem-doorbell device: two QEMU guests (or hosts) whose devices share
/// one memory, driven from user space through vfio-pci. ivshmem has memory, doorbells and
/// MSI-X but no NTB registers, so the rest is built on the shared memory:
/// <list type="bullet">
/// <item>BAR2 is split in two halves; the lower IVPosition owns the lower half. Each half
/// starts with a link area (<see cref="IvshmemLinkArea"/>) that only the other side writes;
/// the rest of our half is our inbound window, the rest of the other half our outbound
/// window.</item>
/// <item>Scratchpads are fields of the link area: the peer writes ours, we read them.</item>
/// <item>Doorbell bit b is MSI-X vector b + 1, rung through the Doorbell register
/// (<c>(peerId &lt;&lt; 16) | vector</c>). The ring first bumps the bit's count in the
/// peer's link area, which is the latch (pending = count moved since the last clear); a
/// masked bit's vector is routed to a parking eventfd, so it latches without
/// notifying.</item>
/// <item>Vector 0 is the link event. The link is up while the peer's attach record in our
/// area is valid and, if the peer heartbeats, its heartbeat moves; each side rings the
/// other's vector 0 on attach and detach, and a background timer writes our heartbeat and
/// reports a peer that fell silent.</item>
/// </list>
/// Both halves are the same RAM to both sides, so a read of the peer window costs no more
/// than a local one here: the read-local rule is about placement (what a real NTB would
/// make remote), and the peer window's reads are counted all the same.
/// </summary>
public sealed class IvshmemVfioHardware : INtbHardware
{
    private const int LinkVector = 0;

    private readonly IIvshmemDevice _device;
    private readonly ILogger _logger;
    private readonly IoMemoryAccessor _registers = new(null);
    private readonly AccessCounters _remote;
    private readonly NtbPeerWindow _peerWindow;
    private readonly EventFd _parked = new();
    private readonly nint _ownArea;
    private readonly nint _peerArea;
    private readonly long _timeoutMs;
    private readonly Lock _linkLock = new();
    private readonly Lock _doorbellLock = new();
    private readonly uint[] _sent;
    private readonly uint[] _cleared;
    private readonly ulong _session;
    private readonly ITimer? _timer;
    private readonly TimeProvider _time;
    private readonly long _intervalMs;
    private HeartbeatWatch _watch;
    private ulong _mask;
    private ulong _heartbeat;
    private ulong _peerSession;
    private ulong _peerHeartbeat;
    private long _peerHeartbeatSeenAt;
    private bool _foreignReported;
    private volatile bool _linkUp;
    private volatile bool _peerWindowExposed;
    private volatile bool _disposed;

    /// <summary>
    /// Attaches to the link over <paramref name="device"/>, which this object then owns
    /// (disposed with it, or at once if attaching fails).
    /// </summary>
    /// <exception cref="InvalidOperationException">The device does not fit the link: fewer
    /// than two vectors, shared memory too small, ids that do not name two peers.</exception>
    public IvshmemVfioHardware(IIvshmemDevice device, IvshmemNtbOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        options ??= IvshmemNtbOptions.Default;
        _device = device;
        try
        {
            _logger = options.Logger ?? NullLogger.Instance;
            if (device.VectorCount < 2)
            {
                throw new InvalidOperationException($"{device.Name}: {device.VectorCount} MSI-X vectors; the link needs one for link events and at least one doorbell");
            }

            ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxDoorbells, 1, nameof(options));
            DoorbellCount = Math.Min(Math.Min(device.VectorCount - 1, options.MaxDoorbells), IvshmemLinkArea.MaxDoorbells);
            DoorbellValidMask = (1UL << DoorbellCount) - 1;

            Id = device.ReadRegister(IvshmemRegister.IvPosition);
            PeerId = options.PeerId ?? Id switch
            {
                0 => 1u,
                1 => 0u,
                _ => throw new InvalidOperationException($"{device.Name}: IVPosition is {Id}; name the peer's id (options.PeerId)"),
            };
            if (PeerId == Id || PeerId > ushort.MaxValue)
            {
                throw new InvalidOperationException($"{device.Name}: peer id {PeerId} cannot be the other end of peer {Id}");
            }

            Name = $"{device.Name} id {Id}";
            MemoryMapping shared = device.SharedMemory;
            ulong half = shared.Length / 2;
            ulong page = (ulong)Environment.SystemPageSize;
            if (half <= IvshmemLinkArea.Size || half % page != 0 || half % IvshmemLinkArea.Size != 0)
            {
                throw new InvalidOperationException(
                    $"{device.Name}: shared memory of 0x{shared.Length:x} bytes cannot hold two page-aligned halves larger than the 0x{IvshmemLinkArea.Size:x}-byte link area");
            }

            // The lower id owns the lower half, whatever the ids are, so both sides agree.
            nint lower = shared.Address;
            nint upper = shared.Address + (nint)half;
            _ownArea = Id < PeerId ? lower : upper;
            _peerArea = Id < PeerId ? upper : lower;
            ulong windowSize = half - IvshmemLinkArea.Size;
            LocalWindow = new NtbLocalWindow(_ownArea + IvshmemLinkArea.Size, windowSize, NtbMemoryKind.IoMemory);
            _remote = new AccessCounters(_peerArea + IvshmemLinkArea.Size, windowSize);
            _peerWindow = NtbPeerWindow.OverIoMemory(_peerArea + IvshmemLinkArea.Size, windowSize, LocalWindow, new IoMemoryAccessor(_remote));

            _time = options.TimeProvider;
            long intervalMs = (long)options.HeartbeatInterval.TotalMilliseconds;
            _intervalMs = intervalMs;
            _timeoutMs = (long)options.LinkTimeout.TotalMilliseconds;
            _sent = new uint[DoorbellCount];
            _cleared = new uint[DoorbellCount];

            // What the peer wrote before we came is its business: the counts seen now are the
            // baseline, so nothing reads as pending at open.
            for (int bit = 0; bit < DoorbellCount; bit++)
            {
                _cleared[bit] = Own32(IvshmemLinkArea.DoorbellRing(bit));
            }

            _peerSession = Own64(IvshmemLinkArea.Session);
            _peerHeartbeat = Own64(IvshmemLinkArea.Heartbeat);
            _peerHeartbeatSeenAt = NowMs();
            _session = NewSession();
            Attach(intervalMs);
            HardwareLog.Attached(_logger, Name, Id, PeerId, windowSize, DoorbellCount, intervalMs);
            lock (_linkLock)
            {
                Evaluate();
            }

            // The peer learns we are here from its link vector; if it is not there yet it
            // finds our record when it attaches.
            _device.WriteRegister(IvshmemRegister.Doorbell, DoorbellValue(LinkVector));
            if (intervalMs > 0)
            {
                var interval = TimeSpan.FromMilliseconds(intervalMs);
                _timer = _time.CreateTimer(static state => ((IvshmemVfioHardware)state!).Tick(), this, interval, interval);
            }
        }
        catch
        {
            _parked.Dispose();
            device.Dispose();
            throw;
        }
    }

    /// <summary>Opens the ivshmem device at <paramref name="bdf"/> through vfio-pci and attaches.</summary>
    public static IvshmemVfioHardware Open(string bdf, IvshmemNtbOptions? options = null)
    {
        options ??= IvshmemNtbOptions.Default;
        int vectors = 1 + Math.Clamp(options.MaxDoorbells, 1, IvshmemLinkArea.MaxDoorbells);
        return new IvshmemVfioHardware(VfioIvshmemDevice.Open(bdf, vectors, options.Vfio), options);
    }

    public string Name { get; }

    /// <summary>Our IVPosition.</summary>
    public uint Id { get; }

    /// <summary>The other end's IVPosition.</summary>
    public uint PeerId { get; }

    public bool IsLinkUp => _linkUp;

    /// <summary>MSI-X vector 0: rung by the peer on attach and detach, and signalled by our
    /// heartbeat check when the peer falls silent.</summary>
    public INotificationSource LinkEvent => _device.Vector(LinkVector);

    public int ScratchpadCount => IvshmemLinkArea.ScratchpadCount;

    public int DoorbellCount { get; }

    public ulong DoorbellValidMask { get; }

    public ulong DoorbellMask
    {
        get
        {
            lock (_doorbellLock)
            {
                return _mask;
            }
        }
    }

    public NtbLocalWindow LocalWindow { get; }

    /// <summary>The other half less its link area, once the link is up.</summary>
    public ulong PeerWindowSize => _linkUp ? _peerWindow.Size : 0;

    public NtbPeerWindow PeerWindow => TryGetPeerWindow(out NtbPeerWindow? window)
        ? window
        : throw new InvalidOperationException($"{Name}: no peer window while peer {PeerId} has not attached");

    public RemoteAccessCounts RemoteAccesses => new(_remote.Reads, _remote.Writes, _remote.ReadBytes, _remote.WrittenBytes);

    public bool TryGetPeerWindow([NotNullWhen(true)] out NtbPeerWindow? window)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_peerWindowExposed && _linkUp)
        {
            _peerWindowExposed = true;
        }

        window = _peerWindowExposed ? _peerWindow : null;
        return window is not null;
    }

    public bool RefreshLinkState()
    {
        lock (_linkLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            Evaluate();
            return _linkUp;
        }
    }

    public uint ReadScratchpad(int index)
    {
        CheckScratchpad(index);
        return Own32(IvshmemLinkArea.Scratchpad(index));
    }

    public void WritePeerScratchpad(int index, uint value)
    {
        CheckScratchpad(index);
        _registers.StoreU32(_peerArea + IvshmemLinkArea.Scratchpad(index), value);
    }

    public void RingPeerDoorbell(int bit)
    {
        CheckBit(bit);
        lock (_doorbellLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);

            // The latch first, then the interrupt (WriteRegister fences between them): when
            // the peer takes the interrupt, or unmasks, the count has already moved.
            uint count = ++_sent[bit];
            _registers.StoreU32(_peerArea + IvshmemLinkArea.DoorbellRing(bit), count);
            _device.WriteRegister(IvshmemRegister.Doorbell, DoorbellValue(bit + 1));
        }
    }

    public INotificationSource DoorbellEvent(int bit)
    {
        CheckBit(bit);
        return _device.Vector(bit + 1);
    }

    public ulong ReadDoorbell()
    {
        lock (_doorbellLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return Pending();
        }
    }

    public void ClearDoorbell(ulong bits)
    {
        bits &= DoorbellValidMask;
        lock (_doorbellLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            for (; bits != 0; bits &= bits - 1)
            {
                int bit = BitOperations.TrailingZeroCount(bits);
                _cleared[bit] = Own32(IvshmemLinkArea.DoorbellRing(bit));
            }
        }
    }

    public void MaskDoorbell(ulong bits)
    {
        lock (_doorbellLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            for (ulong newly = bits & DoorbellValidMask & ~_mask; newly != 0; newly &= newly - 1)
            {
                int bit = BitOperations.TrailingZeroCount(newly);

                // vfio-pci cannot mask an MSI-X vector, so the vector is pointed at an eventfd
                // nobody watches; the latch in our link area still moves.
                _device.RouteVector(bit + 1, _parked);
                _mask |= 1UL << bit;
            }
        }
    }

    public void UnmaskDoorbell(ulong bits)
    {
        lock (_doorbellLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            ulong unmasked = bits & _mask;
            for (ulong rest = unmasked; rest != 0; rest &= rest - 1)
            {
                int bit = BitOperations.TrailingZeroCount(rest);
                _device.RouteVector(bit + 1, null);
                _mask &= ~(1UL << bit);
            }

            // Interrupts taken while parked carry nothing the latch does not: drop them, then
            // raise what is pending, as unmasking a level-triggered source does.
            _parked.Consume();
            for (ulong raise = Pending() & unmasked; raise != 0; raise &= raise - 1)
            {
                _device.Vector(BitOperations.TrailingZeroCount(raise) + 1).Signal();
            }
        }
    }

    /// <summary>Tells the peer we are gone (link area, then its link vector), stops the
    /// heartbeat and closes the device.</summary>
    public void Dispose()
    {
        lock (_linkLock)
        {
            lock (_doorbellLock)
            {
                if (_disposed)
                {
                    return;
                }

                _disposed = true;
            }
        }

        _timer?.Dispose();
        try
        {
            _registers.StoreU32(_peerArea + IvshmemLinkArea.State, (uint)IvshmemPeerState.Detached);
            _device.WriteRegister(IvshmemRegister.Doorbell, DoorbellValue(LinkVector));
            HardwareLog.Detached(_logger, Name);
        }
        finally
        {
            _device.Dispose();
            _parked.Dispose();
        }
    }

    public override string ToString() => Name;

    private static ulong NewSession()
    {
        Span<byte> bytes = stackalloc byte[8];
        RandomNumberGenerator.Fill(bytes);
        return BitConverter.ToUInt64(bytes) | 1;
    }

    /// <summary>Writes our attach record into the peer's link area, state last.</summary>
    private void Attach(long heartbeatIntervalMs)
    {
        // Our doorbell counts restart at zero; the peer resets its view of them when it
        // sees the new session, so no count of ours can be mistaken for an old one.
        for (int bit = 0; bit < IvshmemLinkArea.MaxDoorbells; bit++)
        {
            Peer32(IvshmemLinkArea.DoorbellRing(bit), 0);
        }

        _registers.StoreU64(_peerArea + IvshmemLinkArea.Session, _session);
        _registers.StoreU64(_peerArea + IvshmemLinkArea.Heartbeat, 0);
        Peer32(IvshmemLinkArea.HeartbeatIntervalMs, (uint)Math.Min(heartbeatIntervalMs, uint.MaxValue));
        Peer32(IvshmemLinkArea.DoorbellBits, (uint)DoorbellCount);
        Peer32(IvshmemLinkArea.WriterId, Id);
        Peer32(IvshmemLinkArea.Version, IvshmemLinkArea.VersionValue);
        Peer32(IvshmemLinkArea.Magic, IvshmemLinkArea.MagicValue);
        _registers.FullBarrier();
        Peer32(IvshmemLinkArea.State, (uint)IvshmemPeerState.Attached);
    }

    private void Tick()
    {
        lock (_linkLock)
        {
            if (_disposed)
            {
                return;
            }

            try
            {
                _registers.StoreU64(_peerArea + IvshmemLinkArea.Heartbeat, ++_heartbeat);
                if (Evaluate())
                {
                    // A change the peer could not announce (it died): tell the event loop.
                    _device.Vector(LinkVector).Signal();
                }
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                HardwareLog.HeartbeatFailed(_logger, e, Name);
            }
        }
    }

    private long NowMs() => (long)(_time.GetTimestamp() * 1000.0 / _time.TimestampFrequency);

    /// <summary>Reads the peer's record in our area and updates the link state; true when it
    /// changed. Caller holds the link lock.</summary>
    private bool Evaluate()
    {
        long now = NowMs();

        // Judged only over time we were watching (our timer, or the link asking):
        // HeartbeatWatch.
        _peerHeartbeatSeenAt += _watch.Look(now, _intervalMs);
        uint magic = Own32(IvshmemLinkArea.Magic);
        uint version = Own32(IvshmemLinkArea.Version);
        uint writer = Own32(IvshmemLinkArea.WriterId);
        var state = (IvshmemPeerState)Own32(IvshmemLinkArea.State);
        ulong session = Own64(IvshmemLinkArea.Session);
        ulong heartbeat = Own64(IvshmemLinkArea.Heartbeat);
        uint peerInterval = Own32(IvshmemLinkArea.HeartbeatIntervalMs);

        bool ours = magic == IvshmemLinkArea.MagicValue && version == IvshmemLinkArea.VersionValue && writer == PeerId;
        if (magic == IvshmemLinkArea.MagicValue && !ours && !_foreignReported)
        {
            // Another program, another version or a third peer: said once, not every tick.
            _foreignReported = true;
            HardwareLog.ForeignPeer(_logger, Name, version, writer, IvshmemLinkArea.VersionValue, PeerId);
        }
        else if (ours)
        {
            _foreignReported = false;
        }

        bool attached = ours && state == IvshmemPeerState.Attached;
        if (attached && session != _peerSession)
        {
            // The peer (re)attached: it zeroed its counts in our area before publishing the
            // session, so our view of them starts from zero too.
            _peerSession = session;
            _peerHeartbeat = heartbeat;
            _peerHeartbeatSeenAt = now;
            lock (_doorbellLock)
            {
                Array.Clear(_cleared);
            }

            uint peerDoorbells = Own32(IvshmemLinkArea.DoorbellBits);
            if (peerDoorbells != (uint)DoorbellCount)
            {
                HardwareLog.DoorbellCountDiffers(_logger, Name, peerDoorbells, DoorbellCount);
            }
        }
        else if (heartbeat != _peerHeartbeat)
        {
            _peerHeartbeat = heartbeat;
            _peerHeartbeatSeenAt = now;
        }

        long silentFor = now - _peerHeartbeatSeenAt;
        bool silent = attached && peerInterval != 0 && _timeoutMs > 0 && silentFor > Math.Max(_timeoutMs, 4L * peerInterval);
        bool up = attached && !silent;
        if (up == _linkUp)
        {
            return false;
        }

        _linkUp = up;
        if (up)
        {
            HardwareLog.LinkUp(_logger, Name, PeerId, session);
        }
        else
        {
            HardwareLog.LinkDown(_logger, Name, silent
                ? $"peer {PeerId} silent for {silentFor} ms"
                : state == IvshmemPeerState.Detached ? $"peer {PeerId} detached" : $"peer {PeerId} not attached");
        }

        return true;
    }

    /// <summary>Bits whose ring count moved since their last clear. Caller holds the doorbell lock.</summary>
    private ulong Pending()
    {
        ulong pending = 0;
        for (int bit = 0; bit < DoorbellCount; bit++)
        {
            if (Own32(IvshmemLinkArea.DoorbellRing(bit)) != _cleared[bit])
            {
                pending |= 1UL << bit;
            }
        }

        return pending;
    }

    private uint DoorbellValue(int vector) => (PeerId << 16) | (uint)vector;

    private uint Own32(int field) => _registers.LoadU32(_ownArea + field);

    private ulong Own64(int field) => _registers.LoadU64(_ownArea + field);

    private void Peer32(int field, uint value) => _registers.StoreU32(_peerArea + field, value);

    private void CheckBit(int bit)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bit);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(bit, DoorbellCount);
    }

    private void CheckScratchpad(int index)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, IvshmemLinkArea.ScratchpadCount);
    }
}
