using System.Globalization;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Vfio.Interop;

namespace PciVirtio.Mmio.Vfio;

/// <summary>
/// An IOMMU group opened through VFIO (<c>/dev/vfio/N</c>). The group, not the device, is the
/// unit of isolation the kernel hands out: it must be viable and attached to a container before
/// any of its devices can be opened. This type checks viability with an explanation of what is
/// wrong (which device is bound to which driver) and keeps the container's bookkeeping right.
/// Dispose it after its devices and before its container.
/// </summary>
public sealed unsafe class VfioGroup : IDisposable
{
    /// <summary>Where VFIO creates group nodes.</summary>
    public const string DefaultDirectory = "/dev/vfio";

    private const int MaxDeviceNameBytes = 256;

    private VfioContainer? _container;

    internal VfioGroup(FileDescriptor handle, string path, int? id, string sysfsRoot = VfioSysfs.DefaultRoot)
    {
        Handle = handle;
        Path = path;
        Id = id;
        SysfsRoot = sysfsRoot;
    }

    public FileDescriptor Handle { get; }

    public string Path { get; }

    /// <summary>The IOMMU group number when the path ends in one ("/dev/vfio/7", "noiommu-7").</summary>
    public int? Id { get; }

    /// <summary>The container this group is attached to, if any.</summary>
    public VfioContainer? Container => _container;

    internal string SysfsRoot { get; }

    /// <summary>Opens <c>/dev/vfio/<paramref name="groupId"/></c>.</summary>
    public static VfioGroup Open(int groupId) => Open(groupId, DefaultDirectory);

    /// <summary>Opens group <paramref name="groupId"/> under <paramref name="directory"/>.</summary>
    public static VfioGroup Open(int groupId, string directory)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(groupId);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        return Open(System.IO.Path.Combine(directory, groupId.ToString(CultureInfo.InvariantCulture)));
    }

    /// <summary>Opens a group node by path (e.g. "/dev/vfio/noiommu-0").</summary>
    public static VfioGroup Open(string path) => Open(path, VfioSysfs.DefaultRoot);

    internal static VfioGroup Open(string path, string sysfsRoot)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        FileDescriptor fd = VfioSyscalls.Open(path);
        return new VfioGroup(fd, path, ParseGroupId(path), sysfsRoot);
    }

    /// <summary>VFIO_GROUP_GET_STATUS.</summary>
    public VfioGroupFlags GetStatus()
    {
        var arg = new VfioGroupStatusArg { Argsz = (uint)sizeof(VfioGroupStatusArg) };
        VfioSyscalls.Ioctl(Handle, VfioIoctl.GroupGetStatus, &arg, VfioIoctl.GroupGetStatusCall, Path);
        return (VfioGroupFlags)arg.Flags;
    }

    /// <summary>Throws a <see cref="VfioException"/> naming the group's devices and their drivers
    /// unless the group is viable.</summary>
    public void EnsureViable() => ThrowIfNotViable(GetStatus(), Path, Id, SysfsRoot);

    /// <summary>
    /// VFIO_GROUP_SET_CONTAINER, after checking viability (the kernel would accept a non-viable
    /// group here and fail later, with a bare EINVAL, when a device is opened).
    /// </summary>
    public void SetContainer(VfioContainer container)
    {
        ArgumentNullException.ThrowIfNull(container);
        if (_container is not null)
        {
            throw new InvalidOperationException($"{Path} is already attached to {_container.Path}");
        }

        EnsureViable();
        bool added = false;
        try
        {
            container.Handle.DangerousAddRef(ref added);
            int containerFd = container.Handle.Value;
            VfioSyscalls.Ioctl(Handle, VfioIoctl.GroupSetContainer, &containerFd, VfioIoctl.GroupSetContainerCall, Path);
        }
        finally
        {
            if (added)
            {
                container.Handle.DangerousRelease();
            }
        }

        _container = container;
        container.OnGroupAttached();
    }

    /// <summary>VFIO_GROUP_UNSET_CONTAINER; the group's device fds must be closed first. Closing
    /// the group does the same implicitly.</summary>
    public void UnsetContainer()
    {
        VfioContainer container = _container ?? throw new InvalidOperationException($"{Path} is not attached to a container");
        VfioSyscalls.Ioctl(Handle, VfioIoctl.GroupUnsetContainer, null, VfioIoctl.GroupUnsetContainerCall, Path);
        _container = null;
        container.OnGroupDetached();
    }

    /// <summary>
    /// VFIO_GROUP_GET_DEVICE_FD: a new fd for device <paramref name="deviceName"/> of this group
    /// (a PCI address such as "0000:00:03.0"; short forms like "00:03.0" are normalised). The
    /// group must be attached to a container whose IOMMU type is set.
    /// </summary>
    public FileDescriptor GetDeviceFd(string deviceName)
    {
        string name = NormalizeDeviceName(deviceName);
        if (_container is null || _container.IommuType == VfioIommuType.None)
        {
            throw new InvalidOperationException(
                $"cannot open {name} from {Path} before the group is attached to a container with an IOMMU type (SetContainer, then SetIommu)");
        }

        Span<byte> buffer = stackalloc byte[MaxDeviceNameBytes];
        VfioSyscalls.EncodeNulTerminated(name, buffer, nameof(deviceName));
        int fd;
        fixed (byte* p = buffer)
        {
            fd = VfioSyscalls.Ioctl(Handle, VfioIoctl.GroupGetDeviceFd, p, VfioIoctl.GroupGetDeviceFdCall, $"{Path} ({name})");
        }

        return new FileDescriptor(fd);
    }

    /// <summary><see cref="GetDeviceFd"/> wrapped in a <see cref="VfioDevice"/>.</summary>
    public VfioDevice OpenDevice(string deviceName)
    {
        string name = NormalizeDeviceName(deviceName);
        return new VfioDevice(GetDeviceFd(name), name);
    }

    /// <summary>Closes the group fd, which also detaches it from its container.</summary>
    public void Dispose()
    {
        if (Handle.IsClosed)
        {
            return;
        }

        Handle.Dispose();
        VfioContainer? container = Interlocked.Exchange(ref _container, null);
        container?.OnGroupDetached();
    }

    public override string ToString() => $"VFIO group {Path}";

    internal static void ThrowIfNotViable(VfioGroupFlags status, string path, int? id, string sysfsRoot)
    {
        if ((status & VfioGroupFlags.Viable) != 0)
        {
            return;
        }

        IReadOnlyList<string> members = id is int group ? VfioSysfs.DescribeGroupMembers(group, sysfsRoot) : [];
        string detail = members.Count == 0 ? string.Empty : $"; {path} contains {string.Join(", ", members)}";
        throw new VfioException(
            $"group not viable: all devices in the group must be bound to vfio-pci (or to no driver){detail}. " +
            "Bind each with: echo vfio-pci > /sys/bus/pci/devices/BDF/driver_override; echo BDF > /sys/bus/pci/drivers_probe");
    }

    internal static string NormalizeDeviceName(string deviceName)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(deviceName);
        if (PciAddress.TryParse(deviceName, out PciAddress address))
        {
            return address.ToString();
        }

        if (deviceName.Contains('/', StringComparison.Ordinal) || deviceName.Contains('\0', StringComparison.Ordinal))
        {
            throw new ArgumentException($"'{deviceName}' is not a VFIO device name", nameof(deviceName));
        }

        return deviceName;
    }

    private static int? ParseGroupId(string path)
    {
        string name = System.IO.Path.GetFileName(path);
        if (name.StartsWith("noiommu-", StringComparison.Ordinal))
        {
            name = name["noiommu-".Length..];
        }

        return int.TryParse(name, NumberStyles.None, CultureInfo.InvariantCulture, out int id) ? id : null;
    }
}
