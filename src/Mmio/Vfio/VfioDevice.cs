using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Signals;
using PciVirtio.Mmio.Vfio.Interop;

namespace PciVirtio.Mmio.Vfio;

/// <summary>
/// A device fd from VFIO: the only handle user space gets on the device's BARs, config space and
/// interrupts. Everything is addressed by region or interrupt index, so this type hides the fd
/// offsets (looked up once per region and cached), validates ranges, alignments and vector counts
/// up front — the kernel answers mistakes with a bare EINVAL — and names the device in every
/// error. Methods are safe to call from several threads; disposing closes the fd (existing
/// <see cref="MemoryMapping"/>s of its regions stay valid until they are disposed).
/// </summary>
public sealed unsafe class VfioDevice : IDisposable
{
    /// <summary>Offset of the PCI COMMAND register in config space.</summary>
    public const int PciCommandOffset = 4;

    private const int MaxStackIrqs = 256;

    private readonly Lock _lock = new();
    private readonly Dictionary<uint, VfioRegionInfo> _regions = [];
    private readonly Dictionary<uint, VfioIrqInfo> _irqs = [];

    /// <summary>Wraps a device fd (from <see cref="VfioGroup.GetDeviceFd"/> or received from
    /// another process); takes ownership of <paramref name="handle"/>.</summary>
    public VfioDevice(FileDescriptor handle, string name)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentException.ThrowIfNullOrEmpty(name);
        Handle = handle;
        Name = name;
    }

    public FileDescriptor Handle { get; }

    /// <summary>The device name (its PCI address for vfio-pci), used in messages.</summary>
    public string Name { get; }

    /// <summary>VFIO_DEVICE_GET_INFO.</summary>
    public VfioDeviceInfo GetInfo()
    {
        var arg = new VfioDeviceInfoArg { Argsz = VfioDeviceInfoArg.MinimumArgsz };
        VfioSyscalls.Ioctl(Handle, VfioIoctl.DeviceGetInfo, &arg, VfioIoctl.DeviceGetInfoCall, Name);
        return new VfioDeviceInfo((VfioDeviceFlags)arg.Flags, arg.NumRegions, arg.NumIrqs);
    }

    /// <summary>VFIO_DEVICE_GET_REGION_INFO with its capabilities (sparse mmap areas, MSI-X
    /// mappability, region type); cached, since a region never moves while the fd is open.</summary>
    public VfioRegionInfo GetRegionInfo(VfioRegionIndex index)
    {
        lock (_lock)
        {
            if (_regions.TryGetValue((uint)index, out VfioRegionInfo? cached))
            {
                return cached;
            }
        }

        VfioRegionInfo info = QueryRegionInfo(index);
        lock (_lock)
        {
            _regions[(uint)index] = info;
        }

        return info;
    }

    /// <summary>VFIO_DEVICE_GET_IRQ_INFO; cached like region info.</summary>
    public VfioIrqInfo GetIrqInfo(VfioIrqIndex index)
    {
        lock (_lock)
        {
            if (_irqs.TryGetValue((uint)index, out VfioIrqInfo cached))
            {
                return cached;
            }
        }

        var arg = new VfioIrqInfoArg { Argsz = (uint)sizeof(VfioIrqInfoArg), Index = (uint)index };
        VfioSyscalls.Ioctl(Handle, VfioIoctl.DeviceGetIrqInfo, &arg, VfioIoctl.DeviceGetIrqInfoCall, $"{Name} {index}");
        var info = new VfioIrqInfo(index, (VfioIrqInfoFlags)arg.Flags, arg.Count);
        lock (_lock)
        {
            _irqs[(uint)index] = info;
        }

        return info;
    }

    /// <summary>
    /// mmaps a whole region (a BAR with <see cref="VfioRegionFlags.Mmap"/>), so it can be accessed
    /// with plain loads and stores. The mapping is uncached device memory: use aligned volatile
    /// accesses of the width the device accepts.
    /// </summary>
    public MemoryMapping MapRegion(VfioRegionIndex index, MappingProtection protection = MappingProtection.ReadWrite)
    {
        VfioRegionInfo info = GetRegionInfo(index);
        ThrowIfNotMappable(info, protection);
        if (info.SparseMmapAreas.Count > 0 && !(info.SparseMmapAreas.Count == 1 && info.SparseMmapAreas[0] == new VfioSparseMmapArea(0, info.Size)))
        {
            throw new InvalidOperationException(
                $"{Describe(index)} may only be mmapped in parts ({string.Join(", ", info.SparseMmapAreas.Select(a => $"0x{a.Offset:x}+0x{a.Size:x}"))}): " +
                "map each with MapRegion(index, offset, length)");
        }

        return MemoryMapping.Map(Handle, info.Offset, info.Size, protection, subject: Describe(index));
    }

    /// <summary>mmaps <paramref name="length"/> bytes of a region from <paramref name="offset"/>
    /// (page aligned), e.g. one sparse mmap area.</summary>
    public MemoryMapping MapRegion(VfioRegionIndex index, ulong offset, ulong length, MappingProtection protection = MappingProtection.ReadWrite)
    {
        VfioRegionInfo info = GetRegionInfo(index);
        ThrowIfNotMappable(info, protection);
        ThrowIfOutside(info, offset, length);
        if (offset % (ulong)Environment.SystemPageSize != 0)
        {
            throw new ArgumentException($"offset 0x{offset:x} into {Describe(index)} is not page aligned", nameof(offset));
        }

        if (info.SparseMmapAreas.Count > 0 && !info.SparseMmapAreas.Any(a => offset >= a.Offset && length <= a.Size && offset - a.Offset <= a.Size - length))
        {
            throw new ArgumentOutOfRangeException(nameof(offset),
                $"0x{offset:x}+0x{length:x} is not inside one mmappable area of {Describe(index)}");
        }

        return MemoryMapping.Map(Handle, info.Offset + offset, length, protection, subject: Describe(index));
    }

    /// <summary>Reads <paramref name="buffer"/>.Length bytes of a region at <paramref name="offset"/>
    /// through the kernel (pread): the way into regions that cannot be mmapped, such as config space.</summary>
    public void ReadRegion(VfioRegionIndex index, ulong offset, Span<byte> buffer)
    {
        VfioRegionInfo info = GetRegionInfo(index);
        if (!info.CanRead)
        {
            throw new InvalidOperationException($"{Describe(index)} is not readable (flags {info.Flags})");
        }

        ThrowIfOutside(info, offset, (ulong)buffer.Length);
        VfioSyscalls.ReadExactly(Handle, buffer, info.Offset + offset, Describe(index));
    }

    /// <summary>Writes <paramref name="data"/> to a region at <paramref name="offset"/> through the kernel (pwrite).</summary>
    public void WriteRegion(VfioRegionIndex index, ulong offset, ReadOnlySpan<byte> data)
    {
        VfioRegionInfo info = GetRegionInfo(index);
        if (!info.CanWrite)
        {
            throw new InvalidOperationException($"{Describe(index)} is not writable (flags {info.Flags})");
        }

        ThrowIfOutside(info, offset, (ulong)data.Length);
        VfioSyscalls.WriteExactly(Handle, data, info.Offset + offset, Describe(index));
    }

    public byte ReadConfig8(int offset)
    {
        Span<byte> b = stackalloc byte[1];
        ReadConfig(offset, b);
        return b[0];
    }

    public ushort ReadConfig16(int offset)
    {
        Span<byte> b = stackalloc byte[2];
        ReadConfig(offset, b);
        return BinaryPrimitives.ReadUInt16LittleEndian(b);
    }

    public uint ReadConfig32(int offset)
    {
        Span<byte> b = stackalloc byte[4];
        ReadConfig(offset, b);
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    public void WriteConfig8(int offset, byte value) => WriteConfig(offset, [value]);

    public void WriteConfig16(int offset, ushort value)
    {
        Span<byte> b = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(b, value);
        WriteConfig(offset, b);
    }

    public void WriteConfig32(int offset, uint value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        WriteConfig(offset, b);
    }

    /// <summary>Sets the memory-space and bus-master bits of the PCI COMMAND register
    /// (read-modify-write; nothing is written when both are already set) and returns the result.</summary>
    public PciCommand EnableMemoryAndBusMaster()
    {
        var command = (PciCommand)ReadConfig16(PciCommandOffset);
        PciCommand wanted = command | PciCommand.MemorySpace | PciCommand.BusMaster;
        if (wanted != command)
        {
            WriteConfig16(PciCommandOffset, (ushort)wanted);
        }

        return wanted;
    }

    /// <summary>
    /// Binds eventfds to vectors <paramref name="start"/>.. of <paramref name="index"/>
    /// (DATA_EVENTFD | ACTION_TRIGGER): the kernel signals an eventfd when its vector fires. A null
    /// entry unbinds that vector (-1). For MSI and MSI-X the first binding enables the index.
    /// </summary>
    public void SetIrqEventFds(VfioIrqIndex index, uint start, ReadOnlySpan<EventFd?> eventFds)
    {
        if (eventFds.IsEmpty)
        {
            throw new ArgumentException("give at least one eventfd; DisableIrqs disables an index", nameof(eventFds));
        }

        VfioIrqInfo irq = GetIrqInfo(index);
        if (!irq.SupportsEventFd)
        {
            throw new InvalidOperationException($"{index} of {Name} does not support eventfds (flags {irq.Flags}, {irq.Count} vectors)");
        }

        if (start >= irq.Count || (uint)eventFds.Length > irq.Count - start)
        {
            throw new ArgumentOutOfRangeException(nameof(start),
                $"{index} of {Name} has {irq.Count} vectors; cannot bind {start}..{start + (uint)eventFds.Length - 1}");
        }

        int count = eventFds.Length;
        Span<int> fds = count <= MaxStackIrqs ? stackalloc int[count] : new int[count];
        Span<bool> added = count <= MaxStackIrqs ? stackalloc bool[count] : new bool[count];
        added.Clear();
        try
        {
            for (int i = 0; i < count; i++)
            {
                EventFd? e = eventFds[i];
                if (e is null)
                {
                    fds[i] = -1;
                    continue;
                }

                e.Handle.DangerousAddRef(ref added[i]);
                fds[i] = e.Handle.Value;
            }

            int size = IrqSetSize(count);
            Span<byte> buffer = size <= 1024 ? stackalloc byte[size] : new byte[size];
            BuildIrqSet(buffer, VfioIrqSetFlags.DataEventFd | VfioIrqSetFlags.ActionTrigger, index, start, fds);
            SetIrqs(buffer, index);
        }
        finally
        {
            for (int i = 0; i < count; i++)
            {
                if (added[i])
                {
                    eventFds[i]!.Handle.DangerousRelease();
                }
            }
        }
    }

    /// <summary>Disables every vector of <paramref name="index"/> and unbinds their eventfds
    /// (DATA_NONE | ACTION_TRIGGER with count 0).</summary>
    public void DisableIrqs(VfioIrqIndex index)
    {
        Span<byte> buffer = stackalloc byte[IrqSetSize(0)];
        BuildIrqSet(buffer, VfioIrqSetFlags.DataNone | VfioIrqSetFlags.ActionTrigger, index, 0, count: 0);
        SetIrqs(buffer, index);
    }

    /// <summary>Masks one vector (DATA_NONE | ACTION_MASK); vfio-pci supports this for INTx.</summary>
    public void MaskIrq(VfioIrqIndex index = VfioIrqIndex.IntX, uint subIndex = 0) =>
        SetIrqsNoData(index, VfioIrqSetFlags.ActionMask, subIndex);

    /// <summary>Unmasks one vector (DATA_NONE | ACTION_UNMASK): INTx is automasked after each
    /// interrupt, so an INTx handler calls this when it is done.</summary>
    public void UnmaskIrq(VfioIrqIndex index = VfioIrqIndex.IntX, uint subIndex = 0) =>
        SetIrqsNoData(index, VfioIrqSetFlags.ActionUnmask, subIndex);

    /// <summary>Fires one vector from software (DATA_NONE | ACTION_TRIGGER, count 1): its
    /// eventfd is signalled as if the device had raised it, which tests the wiring end to end.</summary>
    public void TriggerIrq(VfioIrqIndex index, uint subIndex) =>
        SetIrqsNoData(index, VfioIrqSetFlags.ActionTrigger, subIndex);

    /// <summary>VFIO_DEVICE_RESET (needs <see cref="VfioDeviceFlags.Reset"/> in <see cref="GetInfo"/>).</summary>
    public void Reset() =>
        VfioSyscalls.Ioctl(Handle, VfioIoctl.DeviceReset, null, VfioIoctl.DeviceResetCall, Name);

    /// <summary>
    /// VFIO_DEVICE_IOEVENTFD: whenever <paramref name="eventFd"/> is signalled, the kernel itself
    /// writes <paramref name="data"/> (<paramref name="accessSize"/> bytes: 1, 2, 4 or 8) at
    /// <paramref name="offset"/> of BAR <paramref name="index"/> — a doorbell rung by another
    /// process or a VM without a trip through ours. vfio-pci supports BARs only, excluding the MSI-X table.
    /// </summary>
    public void AddIoEventFd(VfioRegionIndex index, ulong offset, int accessSize, ulong data, EventFd eventFd)
    {
        ArgumentNullException.ThrowIfNull(eventFd);
        VfioIoEventFdArg arg = PrepareIoEventFd(index, offset, accessSize, data);
        bool added = false;
        try
        {
            eventFd.Handle.DangerousAddRef(ref added);
            arg.Fd = eventFd.Handle.Value;
            VfioSyscalls.Ioctl(Handle, VfioIoctl.DeviceIoEventFd, &arg, VfioIoctl.DeviceIoEventFdCall, $"{Describe(index)}+0x{offset:x}");
        }
        finally
        {
            if (added)
            {
                eventFd.Handle.DangerousRelease();
            }
        }
    }

    /// <summary>Removes the ioeventfd registered with the same index, offset, size and data (fd -1).</summary>
    public void RemoveIoEventFd(VfioRegionIndex index, ulong offset, int accessSize, ulong data)
    {
        VfioIoEventFdArg arg = PrepareIoEventFd(index, offset, accessSize, data);
        arg.Fd = -1;
        VfioSyscalls.Ioctl(Handle, VfioIoctl.DeviceIoEventFd, &arg, VfioIoctl.DeviceIoEventFdCall, $"{Describe(index)}+0x{offset:x}");
    }

    public void Dispose() => Handle.Dispose();

    public override string ToString() => $"VFIO device {Name}";

    /// <summary>Seeds the region cache (tests use it to drive the pread/pwrite/mmap paths over a
    /// plain file).</summary>
    internal void CacheRegionInfo(VfioRegionInfo info)
    {
        lock (_lock)
        {
            _regions[(uint)info.Index] = info;
        }
    }

    internal void CacheIrqInfo(VfioIrqInfo info)
    {
        lock (_lock)
        {
            _irqs[(uint)info.Index] = info;
        }
    }

    internal static int IrqSetSize(int count) => Unsafe.SizeOf<VfioIrqSetArg>() + (count * sizeof(int));

    /// <summary>Lays out a vfio_irq_set with one s32 per vector in <paramref name="destination"/>.</summary>
    internal static void BuildIrqSet(Span<byte> destination, VfioIrqSetFlags flags, VfioIrqIndex index, uint start, ReadOnlySpan<int> fds) =>
        BuildIrqSet(destination, flags, index, start, (uint)fds.Length, fds);

    internal static void BuildIrqSet(Span<byte> destination, VfioIrqSetFlags flags, VfioIrqIndex index, uint start, uint count, ReadOnlySpan<int> fds = default)
    {
        int size = IrqSetSize(fds.Length);
        if (destination.Length != size)
        {
            throw new ArgumentException($"vfio_irq_set needs exactly {size} bytes", nameof(destination));
        }

        var header = new VfioIrqSetArg
        {
            Argsz = (uint)size,
            Flags = (uint)flags,
            Index = (uint)index,
            Start = start,
            Count = count,
        };
        MemoryMarshal.Write(destination, in header);
        Span<byte> data = destination[Unsafe.SizeOf<VfioIrqSetArg>()..];
        for (int i = 0; i < fds.Length; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(data[(i * sizeof(int))..], fds[i]);
        }
    }

    /// <summary>Validates an ioeventfd request and builds its argument (fd still unset).</summary>
    internal VfioIoEventFdArg PrepareIoEventFd(VfioRegionIndex index, ulong offset, int accessSize, ulong data)
    {
        if (index > VfioRegionIndex.Bar5)
        {
            throw new ArgumentOutOfRangeException(nameof(index), index, "ioeventfds can only write to BAR regions");
        }

        if (accessSize is not (1 or 2 or 4 or 8))
        {
            throw new ArgumentOutOfRangeException(nameof(accessSize), accessSize, "the access size must be 1, 2, 4 or 8 bytes");
        }

        if (offset % (ulong)accessSize != 0)
        {
            throw new ArgumentException($"offset 0x{offset:x} is not aligned to the {accessSize}-byte access", nameof(offset));
        }

        if (accessSize < 8 && data >> (accessSize * 8) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(data), $"0x{data:x} does not fit in {accessSize} byte(s)");
        }

        VfioRegionInfo info = GetRegionInfo(index);
        ThrowIfOutside(info, offset, (ulong)accessSize);
        return new VfioIoEventFdArg
        {
            Argsz = (uint)sizeof(VfioIoEventFdArg),
            Flags = (uint)accessSize, // VFIO_DEVICE_IOEVENTFD_8/16/32/64 are 1, 2, 4, 8: the size in bytes
            Offset = info.Offset + offset,
            Data = data,
        };
    }

    private VfioRegionInfo QueryRegionInfo(VfioRegionIndex index)
    {
        string subject = Describe(index);
        var arg = new VfioRegionInfoArg { Argsz = (uint)sizeof(VfioRegionInfoArg), Index = (uint)index };
        VfioSyscalls.Ioctl(Handle, VfioIoctl.DeviceGetRegionInfo, &arg, VfioIoctl.DeviceGetRegionInfoCall, subject);
        var info = new VfioRegionInfo(index, (VfioRegionFlags)arg.Flags, arg.Size, arg.Offset);
        if ((arg.Flags & (uint)VfioRegionFlags.Caps) == 0 || arg.Argsz <= (uint)sizeof(VfioRegionInfoArg))
        {
            return info;
        }

        // The capability chain did not fit: argsz now says how much room it needs.
        byte[] buffer = VfioContainer.AllocateInfoBuffer(arg.Argsz);
        fixed (byte* p = buffer)
        {
            var full = (VfioRegionInfoArg*)p;
            full->Argsz = (uint)buffer.Length;
            full->Index = (uint)index;
            VfioSyscalls.Ioctl(Handle, VfioIoctl.DeviceGetRegionInfo, p, VfioIoctl.DeviceGetRegionInfoCall, subject);
            info = new VfioRegionInfo(index, (VfioRegionFlags)full->Flags, full->Size, full->Offset);
            if ((full->Flags & (uint)VfioRegionFlags.Caps) != 0 && full->CapOffset != 0)
            {
                info = VfioCapabilityChain.ApplyRegionCaps(info, buffer, full->CapOffset);
            }
        }

        return info;
    }

    private void SetIrqs(Span<byte> buffer, VfioIrqIndex index)
    {
        fixed (byte* p = buffer)
        {
            VfioSyscalls.Ioctl(Handle, VfioIoctl.DeviceSetIrqs, p, VfioIoctl.DeviceSetIrqsCall, $"{Name} {index}");
        }
    }

    private void SetIrqsNoData(VfioIrqIndex index, VfioIrqSetFlags action, uint subIndex)
    {
        Span<byte> buffer = stackalloc byte[IrqSetSize(0)];
        BuildIrqSet(buffer, VfioIrqSetFlags.DataNone | action, index, subIndex, count: 1);
        SetIrqs(buffer, index);
    }

    private void ReadConfig(int offset, Span<byte> value)
    {
        ThrowIfBadConfigOffset(offset, value.Length);
        ReadRegion(VfioRegionIndex.Config, (ulong)offset, value);
    }

    private void WriteConfig(int offset, ReadOnlySpan<byte> value)
    {
        ThrowIfBadConfigOffset(offset, value.Length);
        WriteRegion(VfioRegionIndex.Config, (ulong)offset, value);
    }

    private static void ThrowIfBadConfigOffset(int offset, int size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        if (offset % size != 0)
        {
            throw new ArgumentException($"config offset 0x{offset:x} is not aligned to the {size}-byte access", nameof(offset));
        }
    }

    private void ThrowIfNotMappable(VfioRegionInfo info, MappingProtection protection)
    {
        if (!info.IsImplemented)
        {
            throw new InvalidOperationException($"{Describe(info.Index)} is not implemented (size 0)");
        }

        if (!info.CanMmap)
        {
            throw new InvalidOperationException(
                $"{Describe(info.Index)} cannot be mmapped (flags {info.Flags}); use ReadRegion/WriteRegion");
        }

        if (((protection & MappingProtection.Read) != 0 && !info.CanRead) || ((protection & MappingProtection.Write) != 0 && !info.CanWrite))
        {
            throw new InvalidOperationException($"{Describe(info.Index)} does not allow {protection} access (flags {info.Flags})");
        }
    }

    private void ThrowIfOutside(VfioRegionInfo info, ulong offset, ulong length)
    {
        if (offset > info.Size || length > info.Size - offset)
        {
            throw new ArgumentOutOfRangeException(nameof(offset),
                $"0x{offset:x}+0x{length:x} is outside {Describe(info.Index)}, which has 0x{info.Size:x} bytes");
        }
    }

    private string Describe(VfioRegionIndex index) => $"{Name} {index}";
}
