using System.Diagnostics.CodeAnalysis;
using PciVirtio.HwSim.Client;
using PciVirtio.HwSim.Device;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Signals;

namespace PciVirtio.Bridge.Hardware;

/// <summary>
/// The link over one port of hw-sim's emulated NTB (<see cref="SimNtbPort"/>, in this
/// process or received from a <c>pcivirtio-hwsim serve</c>). The port already mirrors
/// <c>ntb.h</c>, so this is a thin mapping; it uses memory window 0 both ways: at open it
/// translates our whole window 0 onto the start of our local memory (our inbound window),
/// and the peer's translation of its window 0 is our outbound window. Remote accesses are
/// hw-sim's own counters, so the server's <c>stats</c> and this object agree.
/// </summary>
public sealed class SimNtbHardware : INtbHardware
{
    private const int Window = 0;

    private readonly SimNtbPort _port;
    private readonly Lock _mapLock = new();
    private MemoryMapping? _peerMapping;
    private NtbPeerWindow? _peerWindow;
    private volatile bool _disposed;

    /// <summary>Takes ownership of <paramref name="port"/> (disposed with this object, or at
    /// once if this fails) and exposes our inbound window to the peer.</summary>
    public SimNtbHardware(SimNtbPort port, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(port);
        _port = port;
        Name = name ?? $"hw-sim port {port.Port}";
        ScratchpadCount = port.ScratchpadCount;
        DoorbellCount = port.DoorbellCount;
        DoorbellValidMask = port.DoorbellValidMask;
        try
        {
            ulong granted = port.SetTranslation(Window, 0, port.WindowMaxSize(Window));
            LocalWindow = new NtbLocalWindow(port.LocalMemory.Address, granted, NtbMemoryKind.Ram);
        }
        catch
        {
            port.Dispose();
            throw;
        }
    }

    public string Name { get; }

    /// <summary>The hw-sim port underneath (fault injection and raw counters in tests).</summary>
    public SimNtbPort Port => _port;

    public bool IsLinkUp => Live.LinkIsUp;

    public INotificationSource LinkEvent => _port.LinkEvent;

    public int ScratchpadCount { get; }

    public int DoorbellCount { get; }

    public ulong DoorbellValidMask { get; }

    public ulong DoorbellMask => Live.DoorbellMaskRead();

    public NtbLocalWindow LocalWindow { get; }

    /// <summary>The peer's grant for its window 0, once the link is up.</summary>
    public ulong PeerWindowSize => Live.LinkIsUp ? _port.PeerWindowSize(Window) : 0;

    public NtbPeerWindow PeerWindow => TryGetPeerWindow(out NtbPeerWindow? window)
        ? window
        : throw new InvalidOperationException($"{Name}: no peer window yet (link {(IsLinkUp ? "up" : "down")}, the peer has not exposed its window)");

    public RemoteAccessCounts RemoteAccesses
    {
        get
        {
            PortCounters c = Live.Counters;
            return new RemoteAccessCounts(c.RemoteReads, c.RemoteWrites, c.RemoteReadBytes, c.RemoteWrittenBytes);
        }
    }

    /// <summary>The link status register is live, so this is a plain read.</summary>
    public bool RefreshLinkState() => Live.LinkIsUp;

    public uint ReadScratchpad(int index) => Live.ScratchpadRead(index);

    public void WritePeerScratchpad(int index, uint value) => Live.PeerScratchpadWrite(index, value);

    public void RingPeerDoorbell(int bit) => Live.PeerDoorbellSet(Bit(bit));

    public INotificationSource DoorbellEvent(int bit)
    {
        CheckBit(bit);
        return _port.DoorbellEvent(bit);
    }

    public ulong ReadDoorbell() => Live.DoorbellRead();

    public void ClearDoorbell(ulong bits) => Live.DoorbellClear(bits & DoorbellValidMask);

    public void MaskDoorbell(ulong bits) => Live.DoorbellMask(bits & DoorbellValidMask);

    public void UnmaskDoorbell(ulong bits) => Live.DoorbellUnmask(bits & DoorbellValidMask);

    public bool TryGetPeerWindow([NotNullWhen(true)] out NtbPeerWindow? window)
    {
        lock (_mapLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_peerWindow is null && PeerWindowSize != 0)
            {
                // Mapped once and kept: the link holds addresses into it, and the peer grants
                // the same translation for as long as it runs.
                _peerMapping = _port.MapPeerWindow(Window);
                _peerWindow = NtbPeerWindow.OverSimulatedWindow(_peerMapping.Address, _peerMapping.Length, LocalWindow, _port.PeerWindowAccessor);
            }

            window = _peerWindow;
            return window is not null;
        }
    }

    public void Dispose()
    {
        lock (_mapLock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
        }

        // The peer's outbound window goes away with us, as when a driver clears its
        // translation on unload.
        _port.ClearTranslation(Window);
        _peerMapping?.Dispose();
        _port.Dispose();
    }

    public override string ToString() => Name;

    /// <summary>The port, checked: its registers are unmapped once we are disposed, and a
    /// register access then would fault the process rather than throw.</summary>
    private SimNtbPort Live
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _port;
        }
    }

    private ulong Bit(int bit)
    {
        CheckBit(bit);
        return 1UL << bit;
    }

    private void CheckBit(int bit)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bit);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(bit, DoorbellCount);
    }
}
