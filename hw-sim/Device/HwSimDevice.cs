using PciVirtio.HwSim.Client;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Signals;

namespace PciVirtio.HwSim.Device;

/// <summary>
/// The emulated non-transparent bridge: two ports, each with a register page (one memfd of two
/// pages), a local memory (one memfd holding port 0's then port 1's, the inbound targets of the
/// peer's windows), one interrupt eventfd per doorbell bit and one link-change eventfd. Created
/// fresh (<see cref="Create"/>, the in-process mode and the server) or rebuilt from descriptors
/// received over the hw-sim socket (<see cref="Attach"/>). Also the fault injector: faults are
/// register writes plus link interrupts, so any holder of the descriptors can inject them.
/// </summary>
public sealed class HwSimDevice : IDisposable
{
    /// <summary>Descriptors per device as transferred: registers, local memory, then per port
    /// <see cref="NtbRegisters.DoorbellCount"/> doorbell eventfds and one link eventfd.</summary>
    public const int DescriptorCount = 2 + (2 * (NtbRegisters.DoorbellCount + 1));

    private readonly FileDescriptor _registers;
    private readonly FileDescriptor _localMemory;
    private readonly MemoryMapping _registerMapping;
    private readonly EventFd[][] _doorbells;
    private readonly EventFd[] _links;
    private bool _disposed;

    private HwSimDevice(FileDescriptor registers, FileDescriptor localMemory, EventFd[][] doorbells, EventFd[] links)
    {
        _registers = registers;
        _localMemory = localMemory;
        _doorbells = doorbells;
        _links = links;
        _registerMapping = MemoryMapping.Map(registers, 0, 2 * NtbRegisters.PageSize);
    }

    /// <summary>Creates a device with <paramref name="windows"/> memory windows of
    /// <paramref name="windowSize"/> bytes per port, link up.</summary>
    public static HwSimDevice Create(int windows = 2, ulong windowSize = 1 << 20)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(windows, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(windows, NtbRegisters.MaxWindows);
        if (windowSize < NtbRegisters.PageSize || windowSize % NtbRegisters.PageSize != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(windowSize), windowSize, "the window size must be a non-zero multiple of 4 KiB");
        }

        ulong localSize = checked((ulong)windows * windowSize);
        var doorbells = new EventFd[2][];
        var links = new EventFd[2];
        FileDescriptor? registers = null;
        FileDescriptor? local = null;
        try
        {
            registers = MemFd.Create("hwsim-ntb-registers", 2 * NtbRegisters.PageSize);
            local = MemFd.Create("hwsim-ntb-local", 2 * localSize);
            for (int port = 0; port < 2; port++)
            {
                doorbells[port] = new EventFd[NtbRegisters.DoorbellCount];
                for (int bit = 0; bit < NtbRegisters.DoorbellCount; bit++)
                {
                    doorbells[port][bit] = new EventFd();
                }

                links[port] = new EventFd();
            }

            var device = new HwSimDevice(registers, local, doorbells, links);
            for (int port = 0; port < 2; port++)
            {
                RegisterPage page = device.Page(port);
                page.Write32(NtbRegisters.Id, NtbRegisters.IdValue);
                page.Write32(NtbRegisters.Version, NtbRegisters.VersionValue);
                page.Write32(NtbRegisters.PortIndex, (uint)port);
                page.Write32(NtbRegisters.WindowCount, (uint)windows);
                page.Write32(NtbRegisters.DoorbellBits, NtbRegisters.DoorbellCount);
                page.Write32(NtbRegisters.ScratchpadBits, NtbRegisters.ScratchpadCount);
                page.Write64(NtbRegisters.LocalMemorySize, localSize);
                page.Write64(NtbRegisters.LocalMemoryOffset, (ulong)port * localSize);
                for (int w = 0; w < windows; w++)
                {
                    page.Write64(NtbRegisters.WindowRegister(w, NtbRegisters.WindowMaxSize), windowSize);
                }

                page.Write32(NtbRegisters.LinkStatus, 1);
            }

            return device;
        }
        catch
        {
            registers?.Dispose();
            local?.Dispose();
            foreach (EventFd[]? set in doorbells)
            {
                foreach (EventFd? e in set ?? [])
                {
                    e?.Dispose();
                }
            }

            foreach (EventFd? e in links)
            {
                e?.Dispose();
            }

            throw;
        }
    }

    /// <summary>Rebuilds a device from the <see cref="DescriptorCount"/> descriptors in
    /// <see cref="Descriptors"/> order (takes ownership of them).</summary>
    public static HwSimDevice Attach(IReadOnlyList<FileDescriptor> descriptors)
    {
        if (descriptors.Count != DescriptorCount)
        {
            throw new ArgumentException($"expected {DescriptorCount} descriptors, got {descriptors.Count}", nameof(descriptors));
        }

        var doorbells = new EventFd[2][];
        var links = new EventFd[2];
        int i = 2;
        for (int port = 0; port < 2; port++)
        {
            doorbells[port] = new EventFd[NtbRegisters.DoorbellCount];
            for (int bit = 0; bit < NtbRegisters.DoorbellCount; bit++)
            {
                doorbells[port][bit] = new EventFd(descriptors[i++]);
            }

            links[port] = new EventFd(descriptors[i++]);
        }

        var device = new HwSimDevice(descriptors[0], descriptors[1], doorbells, links);
        if (device.Page(0).Read32(NtbRegisters.Id) != NtbRegisters.IdValue || device.Page(0).Read32(NtbRegisters.Version) != NtbRegisters.VersionValue)
        {
            device.Dispose();
            throw new InvalidDataException("the register memfd does not hold an hw-sim NTB (id/version mismatch)");
        }

        return device;
    }

    /// <summary>The descriptors in transfer order (still owned by the device).</summary>
    public IReadOnlyList<FileDescriptor> Descriptors
    {
        get
        {
            var list = new List<FileDescriptor>(DescriptorCount) { _registers, _localMemory };
            for (int port = 0; port < 2; port++)
            {
                list.AddRange(_doorbells[port].Select(e => e.Handle));
                list.Add(_links[port].Handle);
            }

            return list;
        }
    }

    public FileDescriptor RegistersFd => _registers;

    /// <summary>The local memory of both ports: port p's at <c>p × LocalMemorySize</c>. This is
    /// also the ivshmem shared memory when the server speaks the ivshmem protocol.</summary>
    public FileDescriptor LocalMemoryFd => _localMemory;

    public int WindowCount => (int)Page(0).Read32(NtbRegisters.WindowCount);

    public ulong LocalMemorySize => Page(0).Read64(NtbRegisters.LocalMemorySize);

    public ulong WindowMaxSize => Page(0).Read64(NtbRegisters.WindowRegister(0, NtbRegisters.WindowMaxSize));

    public bool LinkIsUp => (Page(0).Read32(NtbRegisters.LinkStatus) & 1) != 0;

    /// <summary>Port <paramref name="port"/>'s register block.</summary>
    public RegisterPage Page(int port)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckPort(port);
        return new RegisterPage(_registerMapping.Address + (port * NtbRegisters.PageSize));
    }

    /// <summary>Port <paramref name="port"/>'s interrupt eventfd for doorbell bit <paramref name="bit"/>.</summary>
    public EventFd DoorbellEvent(int port, int bit)
    {
        CheckPort(port);
        ArgumentOutOfRangeException.ThrowIfNegative(bit);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(bit, NtbRegisters.DoorbellCount);
        return _doorbells[port][bit];
    }

    /// <summary>Port <paramref name="port"/>'s link-change eventfd.</summary>
    public EventFd LinkEvent(int port)
    {
        CheckPort(port);
        return _links[port];
    }

    /// <summary>Opens port <paramref name="port"/> (the device must outlive it unless
    /// <paramref name="ownsDevice"/>).</summary>
    public SimNtbPort OpenPort(int port, bool ownsDevice = false)
    {
        CheckPort(port);
        return new SimNtbPort(this, port, ownsDevice);
    }

    /// <summary>Counters of port <paramref name="port"/>.</summary>
    public PortCounters Counters(int port) => PortCounters.Read(Page(port));

    /// <summary>Takes the link down (peer-window reads return all-ones, writes are dropped) or
    /// up; updates both link status registers and raises the link interrupt at both ends.</summary>
    public void SetLink(bool up)
    {
        for (int port = 0; port < 2; port++)
        {
            RegisterPage page = Page(port);
            uint old = page.Read32(NtbRegisters.LinkStatus);
            page.Write32(NtbRegisters.LinkStatus, up ? 1u : 0u);
            if (((old & 1) != 0) != up)
            {
                page.Add64(NtbRegisters.LinkChanges, 1);
            }
        }

        Interlocked.MemoryBarrier();
        _links[0].Signal();
        _links[1].Signal();
    }

    /// <summary>Drops the next <paramref name="count"/> doorbells each port sends.</summary>
    public void DropDoorbells(long count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ForBoth(NtbRegisters.FaultDropDoorbells, (ulong)count);
    }

    /// <summary>Delivers every doorbell <paramref name="milliseconds"/> late (0 = on time).</summary>
    public void DelayDoorbells(long milliseconds)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(milliseconds);
        ForBoth(NtbRegisters.FaultDoorbellDelayMs, (ulong)milliseconds);
    }

    /// <summary>Every remote read spins <paramref name="nanoseconds"/> (0 = none).</summary>
    public void SetReadDelay(long nanoseconds)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(nanoseconds);
        ForBoth(NtbRegisters.FaultReadDelayNs, (ulong)nanoseconds);
    }

    /// <summary>Translations grant at most <paramref name="bytes"/> (0 = no limit).</summary>
    public void ShrinkWindows(ulong bytes) => ForBoth(NtbRegisters.FaultWindowLimit, bytes);

    /// <summary>Zeroes every counter.</summary>
    public void ResetCounters()
    {
        for (int port = 0; port < 2; port++)
        {
            for (int offset = NtbRegisters.Counters; offset < NtbRegisters.Faults; offset += 8)
            {
                Page(port).Write64(offset, 0);
            }
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _registerMapping.Dispose();
        _registers.Dispose();
        _localMemory.Dispose();
        foreach (EventFd[] set in _doorbells)
        {
            foreach (EventFd e in set)
            {
                e.Dispose();
            }
        }

        foreach (EventFd e in _links)
        {
            e.Dispose();
        }
    }

    private void ForBoth(int register, ulong value)
    {
        Page(0).Write64(register, value);
        Page(1).Write64(register, value);
    }

    private static void CheckPort(int port)
    {
        if (port is not (0 or 1))
        {
            throw new ArgumentOutOfRangeException(nameof(port), port, "an NTB has ports 0 and 1");
        }
    }
}
