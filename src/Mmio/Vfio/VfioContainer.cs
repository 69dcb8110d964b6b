using System.Runtime.CompilerServices;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Vfio.Interop;

namespace PciVirtio.Mmio.Vfio;

/// <summary>
/// A VFIO container (<c>/dev/vfio/vfio</c>): the IOMMU context that one or more groups share.
/// It exists as its own object because the kernel insists on an order — attach a group, then
/// choose the IOMMU type, then map DMA — and this type enforces that order with clear errors
/// instead of the kernel's EINVAL. It owns the container fd; disposing it after its groups and
/// devices releases the IOMMU context (and every DMA mapping in it).
/// </summary>
public sealed unsafe class VfioContainer : IDisposable
{
    /// <summary>Where the VFIO container device lives.</summary>
    public const string DefaultPath = "/dev/vfio/vfio";

    private static readonly VfioIommuType[] DefaultIommuPreference = [VfioIommuType.Type1v2, VfioIommuType.Type1];

    private int _attachedGroups;

    internal VfioContainer(FileDescriptor handle, string path)
    {
        Handle = handle;
        Path = path;
    }

    /// <summary>The container fd (groups are attached by passing it to VFIO_GROUP_SET_CONTAINER).</summary>
    public FileDescriptor Handle { get; }

    public string Path { get; }

    /// <summary>The IOMMU type set with <see cref="SetIommu(VfioIommuType)"/>; None before.</summary>
    public VfioIommuType IommuType { get; private set; }

    /// <summary>How many of our <see cref="VfioGroup"/>s are attached to this container.</summary>
    public int AttachedGroups => Volatile.Read(ref _attachedGroups);

    /// <summary>Opens the container and checks that the kernel speaks VFIO API version 0.</summary>
    public static VfioContainer Open(string path = DefaultPath)
    {
        FileDescriptor fd = VfioSyscalls.Open(path);
        try
        {
            int version = VfioSyscalls.Ioctl(fd, VfioIoctl.GetApiVersion, null, VfioIoctl.GetApiVersionCall, path);
            if (version != VfioIoctl.ApiVersion)
            {
                throw new VfioException($"{path} reports VFIO API version {version}; this library speaks version {VfioIoctl.ApiVersion}");
            }

            return new VfioContainer(fd, path);
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>VFIO_CHECK_EXTENSION: the kernel's raw answer (0 = unsupported, positive = supported).</summary>
    public int CheckExtension(int extension) =>
        VfioSyscalls.IoctlValue(Handle, VfioIoctl.CheckExtension, extension, VfioIoctl.CheckExtensionCall, Path);

    /// <summary>Whether the kernel offers IOMMU type <paramref name="type"/> for this container.</summary>
    public bool CheckExtension(VfioIommuType type)
    {
        ThrowIfNotKernelType(type);
        return CheckExtension((int)type) > 0;
    }

    /// <summary>
    /// VFIO_SET_IOMMU with exactly <paramref name="type"/>. The kernel only accepts it once a group
    /// is attached (<see cref="VfioGroup.SetContainer"/>), and only once per container.
    /// </summary>
    public void SetIommu(VfioIommuType type)
    {
        ThrowIfNotKernelType(type);
        if (IommuType != VfioIommuType.None)
        {
            throw new InvalidOperationException($"{Path} already uses IOMMU type {IommuType}");
        }

        if (AttachedGroups == 0)
        {
            throw new InvalidOperationException(
                $"cannot set the IOMMU type of {Path} before a group is attached: call VfioGroup.SetContainer first");
        }

        VfioSyscalls.IoctlValue(Handle, VfioIoctl.SetIommu, (int)type, VfioIoctl.SetIommuCall, Path);
        IommuType = type;
    }

    /// <summary>
    /// Sets the first IOMMU type of <paramref name="preferred"/> that the kernel supports
    /// (by default Type1v2, then Type1) and returns it. NoIommu is only tried when listed.
    /// </summary>
    public VfioIommuType SetIommu(params ReadOnlySpan<VfioIommuType> preferred)
    {
        if (preferred.IsEmpty)
        {
            preferred = DefaultIommuPreference;
        }

        foreach (VfioIommuType type in preferred)
        {
            if (CheckExtension(type))
            {
                SetIommu(type);
                return type;
            }
        }

        throw new VfioException(
            $"{Path} supports none of the IOMMU types {string.Join(", ", preferred.ToArray())}: " +
            "is vfio_iommu_type1 loaded, and does the machine have an enabled IOMMU?");
    }

    /// <summary>VFIO_IOMMU_GET_INFO: the IOMMU page sizes and usable IOVA ranges (type1 only).</summary>
    public VfioIommuInfo GetIommuInfo()
    {
        ThrowIfNoDmaIommu();
        var arg = new VfioIommuType1InfoArg { Argsz = (uint)sizeof(VfioIommuType1InfoArg) };
        VfioSyscalls.Ioctl(Handle, VfioIoctl.IommuGetInfo, &arg, VfioIoctl.IommuGetInfoCall, Path);
        var info = new VfioIommuInfo((VfioIommuInfoFlags)arg.Flags, arg.IovaPageSizes);
        if ((arg.Flags & (uint)VfioIommuInfoFlags.Caps) == 0 || arg.Argsz <= (uint)sizeof(VfioIommuType1InfoArg))
        {
            return info;
        }

        // The chain did not fit: the kernel told us the size it needs in argsz.
        byte[] buffer = AllocateInfoBuffer(arg.Argsz);
        fixed (byte* p = buffer)
        {
            var header = (VfioIommuType1InfoArg*)p;
            header->Argsz = (uint)buffer.Length;
            VfioSyscalls.Ioctl(Handle, VfioIoctl.IommuGetInfo, p, VfioIoctl.IommuGetInfoCall, Path);
            info = new VfioIommuInfo((VfioIommuInfoFlags)header->Flags, header->IovaPageSizes);
            if ((header->Flags & (uint)VfioIommuInfoFlags.Caps) != 0 && header->CapOffset != 0)
            {
                info = VfioCapabilityChain.ApplyIommuCaps(info, buffer, header->CapOffset);
            }
        }

        return info;
    }

    /// <summary>
    /// VFIO_IOMMU_MAP_DMA: lets the devices of this container reach <paramref name="size"/> bytes
    /// of our memory at <paramref name="virtualAddress"/> under IO address <paramref name="iova"/>.
    /// The kernel pins the pages; the memory must stay mapped until <see cref="UnmapDma"/>.
    /// Address, IOVA and size must be page aligned.
    /// </summary>
    public void MapDma(nint virtualAddress, ulong iova, ulong size, VfioDmaMapFlags flags = VfioDmaMapFlags.ReadWrite)
    {
        if ((flags & VfioDmaMapFlags.ReadWrite) == 0 || (flags & ~VfioDmaMapFlags.ReadWrite) != 0)
        {
            throw new ArgumentException($"DMA map flags must be Read, Write or ReadWrite, not {flags}", nameof(flags));
        }

        ThrowIfBadDmaRange(iova, size);
        ulong page = (ulong)Environment.SystemPageSize;
        if (virtualAddress == 0 || (ulong)virtualAddress % page != 0)
        {
            throw new ArgumentException($"virtual address 0x{virtualAddress:x} is not page aligned", nameof(virtualAddress));
        }

        ThrowIfNoDmaIommu();

        var arg = new VfioDmaMapArg
        {
            Argsz = (uint)sizeof(VfioDmaMapArg),
            Flags = (uint)flags,
            Vaddr = (ulong)virtualAddress,
            Iova = iova,
            Size = size,
        };
        VfioSyscalls.Ioctl(Handle, VfioIoctl.IommuMapDma, &arg, VfioIoctl.IommuMapDmaCall, Path);
    }

    /// <summary>Maps all of <paramref name="mapping"/> (its length rounded up to whole pages, as
    /// mmap itself does) at <paramref name="iova"/>.</summary>
    public void MapDma(MemoryMapping mapping, ulong iova, VfioDmaMapFlags flags = VfioDmaMapFlags.ReadWrite)
    {
        ArgumentNullException.ThrowIfNull(mapping);
        ulong page = (ulong)Environment.SystemPageSize;
        ulong size = (mapping.Length + page - 1) & ~(page - 1);
        bool added = false;
        try
        {
            mapping.DangerousAddRef(ref added);
            MapDma(mapping.Address, iova, size, flags);
        }
        finally
        {
            if (added)
            {
                mapping.DangerousRelease();
            }
        }
    }

    /// <summary>VFIO_IOMMU_UNMAP_DMA; returns how many bytes the kernel unmapped (0 when nothing
    /// was mapped there). Type1 unmaps whole mappings only, so pass what was mapped.</summary>
    public ulong UnmapDma(ulong iova, ulong size)
    {
        ThrowIfBadDmaRange(iova, size);
        ThrowIfNoDmaIommu();
        var arg = new VfioDmaUnmapArg { Argsz = (uint)sizeof(VfioDmaUnmapArg), Iova = iova, Size = size };
        VfioSyscalls.Ioctl(Handle, VfioIoctl.IommuUnmapDma, &arg, VfioIoctl.IommuUnmapDmaCall, Path);
        return arg.Size;
    }

    public void Dispose() => Handle.Dispose();

    public override string ToString() => $"VFIO container {Path} ({IommuType})";

    internal void OnGroupAttached() => Interlocked.Increment(ref _attachedGroups);

    internal void OnGroupDetached() => Interlocked.Decrement(ref _attachedGroups);

    internal static byte[] AllocateInfoBuffer(uint argsz)
    {
        const uint limit = 1 << 20;
        return argsz > limit
            ? throw new VfioException($"the kernel asks for a {argsz}-byte VFIO info buffer; refusing more than {limit}")
            : new byte[argsz];
    }

    private static void ThrowIfNotKernelType(VfioIommuType type, [CallerArgumentExpression(nameof(type))] string? name = null)
    {
        if (type is not (VfioIommuType.Type1 or VfioIommuType.Type1v2 or VfioIommuType.NoIommu))
        {
            throw new ArgumentOutOfRangeException(name, type, "not a VFIO IOMMU type");
        }
    }

    private static void ThrowIfBadDmaRange(ulong iova, ulong size)
    {
        ulong page = (ulong)Environment.SystemPageSize;
        ArgumentOutOfRangeException.ThrowIfZero(size);
        if (iova % page != 0 || size % page != 0)
        {
            throw new ArgumentException($"IOVA range 0x{iova:x}+0x{size:x} is not page aligned", nameof(iova));
        }

        if (size - 1 > ulong.MaxValue - iova)
        {
            throw new ArgumentException($"IOVA range 0x{iova:x}+0x{size:x} wraps around", nameof(size));
        }
    }

    private void ThrowIfNoDmaIommu()
    {
        switch (IommuType)
        {
            case VfioIommuType.None:
                throw new InvalidOperationException($"{Path} has no IOMMU type yet: attach a group and call SetIommu first");
            case VfioIommuType.NoIommu:
                throw new InvalidOperationException($"{Path} runs in no-IOMMU mode, which offers no DMA mapping");
            default:
                break;
        }
    }
}
