using System.Numerics;
using PciVirtio.HwSim.Device;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Signals;

namespace PciVirtio.HwSim.Client;

/// <summary>
/// One port of the emulated NTB as its host sees it, mirroring the Linux <c>ntb_dev</c> ops
/// (include/linux/ntb.h): link state and a link-change interrupt, memory windows with the
/// owner's inbound translation (<c>mw_set_trans</c>) and the outbound peer window
/// (<c>peer_mw_get_addr</c>), doorbells with mask and one interrupt eventfd per bit (the MSI
/// stand-in), scratchpads of both ends, and the counters. Registers live in shared memory,
/// so this works the same in-process and across processes.
/// </summary>
public sealed class SimNtbPort : IDisposable
{
    private readonly HwSimDevice _device;
    private readonly bool _ownsDevice;
    private readonly RegisterPage _own;
    private readonly RegisterPage _peer;
    private readonly MemoryMapping _local;
    private readonly MemoryMapping _registers;
    private bool _disposed;

    internal SimNtbPort(HwSimDevice device, int port, bool ownsDevice)
    {
        _device = device;
        _ownsDevice = ownsDevice;
        Port = port;
        // The port's own mapping of both register pages, so a delayed doorbell still in flight
        // can hold it alive (SafeHandle reference) while the port is being disposed.
        _registers = MemoryMapping.Map(device.RegistersFd, 0, 2 * NtbRegisters.PageSize);
        _own = new RegisterPage(_registers.Address + (port * NtbRegisters.PageSize));
        _peer = new RegisterPage(_registers.Address + ((1 - port) * NtbRegisters.PageSize));
        try
        {
            _local = MemoryMapping.Map(device.LocalMemoryFd, _own.Read64(NtbRegisters.LocalMemoryOffset), _own.Read64(NtbRegisters.LocalMemorySize));
        }
        catch
        {
            _registers.Dispose();
            throw;
        }
    }

    public HwSimDevice Device => _device;

    /// <summary>0 or 1.</summary>
    public int Port { get; }

    public bool LinkIsUp => (_own.Read32(NtbRegisters.LinkStatus) & 1) != 0;

    /// <summary>Signalled on every link change (the link event of ntb_ctx_ops).</summary>
    public EventFd LinkEvent => _device.LinkEvent(Port);

    public int MemoryWindowCount => (int)_own.Read32(NtbRegisters.WindowCount);

    public int DoorbellCount => (int)_own.Read32(NtbRegisters.DoorbellBits);

    public ulong DoorbellValidMask => (1UL << DoorbellCount) - 1;

    public int ScratchpadCount => (int)_own.Read32(NtbRegisters.ScratchpadBits);

    /// <summary>This port's own register block (for diagnostics and tests).</summary>
    public RegisterPage Registers => _own;

    /// <summary>This port's local memory: the inbound target of the peer's windows. Accesses
    /// to it are local, never counted.</summary>
    public MemoryMapping LocalMemory => _local;

    /// <summary>An accessor for the outbound window (link/fault aware, counted).</summary>
    public SimWindowAccessor PeerWindowAccessor => new(_own);

    /// <summary>The largest translation window <paramref name="window"/> accepts (ntb_mw_get_align's max size).</summary>
    public ulong WindowMaxSize(int window) => _own.Read64(WindowReg(window, NtbRegisters.WindowMaxSize));

    /// <summary>
    /// Sets where in this port's local memory the peer's writes through window
    /// <paramref name="window"/> land (ntb_mw_set_trans). Returns the size granted, which a
    /// fault may make smaller than asked.
    /// </summary>
    public ulong SetTranslation(int window, ulong localOffset, ulong size)
    {
        ulong max = WindowMaxSize(window);
        if (localOffset % NtbRegisters.PageSize != 0 || size == 0 || size % NtbRegisters.PageSize != 0)
        {
            throw new ArgumentException($"translation 0x{localOffset:x}+0x{size:x} must be page-aligned and non-empty");
        }

        if (size > max || localOffset > _local.Length || size > _local.Length - localOffset)
        {
            throw new ArgumentOutOfRangeException(nameof(size), $"translation 0x{localOffset:x}+0x{size:x} exceeds the window (0x{max:x}) or local memory (0x{_local.Length:x})");
        }

        ulong limit = _own.Read64(NtbRegisters.FaultWindowLimit);
        ulong granted = limit != 0 ? Math.Min(size, limit) : size;
        _own.Write64(WindowReg(window, NtbRegisters.WindowXlatSize), 0);
        _own.Write64(WindowReg(window, NtbRegisters.WindowXlatOffset), localOffset);
        _own.Write64(WindowReg(window, NtbRegisters.WindowXlatSize), granted);
        return granted;
    }

    /// <summary>Removes window <paramref name="window"/>'s translation (ntb_mw_clear_trans).</summary>
    public void ClearTranslation(int window) => _own.Write64(WindowReg(window, NtbRegisters.WindowXlatSize), 0);

    /// <summary>This port's translation of window <paramref name="window"/>: (local offset, size).</summary>
    public (ulong Offset, ulong Size) Translation(int window) =>
        (_own.Read64(WindowReg(window, NtbRegisters.WindowXlatOffset)), _own.Read64(WindowReg(window, NtbRegisters.WindowXlatSize)));

    /// <summary>The peer's translation of window <paramref name="window"/>: the size of this
    /// port's outbound window (0 until the peer has translated it).</summary>
    public ulong PeerWindowSize(int window) => _peer.Read64(WindowReg(window, NtbRegisters.WindowXlatSize));

    /// <summary>
    /// Maps the outbound window <paramref name="window"/> (ntb_peer_mw_get_addr): what is written
    /// through it lands in the peer's local memory at the peer's translation. The caller owns
    /// the mapping and accesses it through <see cref="PeerWindowAccessor"/>; remap after the
    /// peer changes its translation.
    /// </summary>
    public MemoryMapping MapPeerWindow(int window)
    {
        ulong size = PeerWindowSize(window);
        if (size == 0)
        {
            throw new InvalidOperationException($"the peer has not translated window {window}");
        }

        ulong offset = _peer.Read64(WindowReg(window, NtbRegisters.WindowXlatOffset));
        return MemoryMapping.Map(_device.LocalMemoryFd, _peer.Read64(NtbRegisters.LocalMemoryOffset) + offset, size);
    }

    /// <summary>Pending doorbell bits (ntb_db_read).</summary>
    public ulong DoorbellRead() => _own.Read64(NtbRegisters.Doorbell);

    /// <summary>Clears doorbell bits (ntb_db_clear: write 1 to clear).</summary>
    public void DoorbellClear(ulong bits) => _own.AndNot64(NtbRegisters.Doorbell, bits & NtbRegisters.DoorbellValidMask);

    public ulong DoorbellMaskRead() => _own.Read64(NtbRegisters.DoorbellMask);

    /// <summary>Masks doorbell interrupts (ntb_db_set_mask): the bits still latch.</summary>
    public void DoorbellMask(ulong bits) => _own.Or64(NtbRegisters.DoorbellMask, bits & NtbRegisters.DoorbellValidMask);

    /// <summary>Unmasks doorbell interrupts (ntb_db_clear_mask); bits already pending raise
    /// their interrupt now, as a level-triggered source would.</summary>
    public void DoorbellUnmask(ulong bits)
    {
        bits &= NtbRegisters.DoorbellValidMask;
        _own.AndNot64(NtbRegisters.DoorbellMask, bits);
        Raise(Port, _own, _own.Read64(NtbRegisters.Doorbell) & bits);
    }

    /// <summary>The interrupt (MSI stand-in) for doorbell bit <paramref name="bit"/>.</summary>
    public EventFd DoorbellEvent(int bit) => _device.DoorbellEvent(Port, bit);

    /// <summary>Rings the peer (ntb_peer_db_set): atomic OR into its doorbell register and its
    /// interrupt for each unmasked bit. Dropped with the link down or by a drop fault; late by
    /// a delay fault.</summary>
    public void PeerDoorbellSet(ulong bits)
    {
        bits &= NtbRegisters.DoorbellValidMask;
        if (bits == 0)
        {
            return;
        }

        if (!LinkIsUp || _own.TryDecrement64(NtbRegisters.FaultDropDoorbells))
        {
            _own.Add64(NtbRegisters.DoorbellsDropped, 1);
            return;
        }

        ulong delay = _own.Read64(NtbRegisters.FaultDoorbellDelayMs);
        if (delay == 0)
        {
            Deliver(bits);
            return;
        }

        DeliverLater(bits, delay);
    }

    /// <summary>A delayed doorbell (fault injection). Its own method: a lambda in
    /// <see cref="PeerDoorbellSet"/> would allocate its closure on every doorbell, delayed or not.</summary>
    private void DeliverLater(ulong bits, ulong delay)
    {
        _ = Task.Run(async () =>
        {
            await Task.Delay(TimeSpan.FromMilliseconds(delay)).ConfigureAwait(false);
            bool added = false;
            try
            {
                _registers.DangerousAddRef(ref added);
                Deliver(bits);
            }
            catch (ObjectDisposedException)
            {
                // The port or the device went away while the doorbell was in flight: it is lost.
            }
            finally
            {
                if (added)
                {
                    _registers.DangerousRelease();
                }
            }
        });
    }

    public uint ScratchpadRead(int index) => _own.Read32(Spad(index));

    public void ScratchpadWrite(int index, uint value) => _own.Write32(Spad(index), value);

    /// <summary>Reads the peer's scratchpad (ntb_peer_spad_read).</summary>
    public uint PeerScratchpadRead(int index) => LinkIsUp ? _peer.Read32(Spad(index)) : uint.MaxValue;

    /// <summary>Writes the peer's scratchpad (ntb_peer_spad_write); dropped with the link down.</summary>
    public void PeerScratchpadWrite(int index, uint value)
    {
        if (LinkIsUp)
        {
            _peer.Write32(Spad(index), value);
        }
    }

    public PortCounters Counters => PortCounters.Read(_own);

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _local.Dispose();
        _registers.Dispose();
        if (_ownsDevice)
        {
            _device.Dispose();
        }
    }

    private void Deliver(ulong bits)
    {
        _peer.Or64(NtbRegisters.Doorbell, bits);
        _own.Add64(NtbRegisters.DoorbellsSent, 1);
        _peer.Add64(NtbRegisters.DoorbellsReceived, 1);
        Raise(1 - Port, _peer, bits & ~_peer.Read64(NtbRegisters.DoorbellMask));
    }

    private void Raise(int port, RegisterPage page, ulong bits)
    {
        while (bits != 0)
        {
            int bit = BitOperations.TrailingZeroCount(bits);
            bits &= bits - 1;
            page.Add64(NtbRegisters.InterruptsRaised, 1);
            _device.DoorbellEvent(port, bit).Signal();
        }
    }

    private int WindowReg(int window, int register)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(window);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(window, MemoryWindowCount);
        return NtbRegisters.WindowRegister(window, register);
    }

    private static int Spad(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, NtbRegisters.ScratchpadCount);
        return NtbRegisters.Scratchpad + (index * 4);
    }
}
