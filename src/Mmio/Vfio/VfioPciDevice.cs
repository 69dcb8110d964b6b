using System.Globalization;
using PciVirtio.Mmio.Interop;

namespace PciVirtio.Mmio.Vfio;

/// <summary>
/// Knobs for <see cref="VfioPciDevice.Open(string, VfioOpenOptions?)"/>. They exist so the unsafe
/// no-IOMMU mode is an explicit opt-in, and so the sysfs and /dev/vfio locations can be moved
/// (containers, tests with a fake tree).
/// </summary>
public sealed class VfioOpenOptions
{
    public static VfioOpenOptions Default { get; } = new();

    /// <summary>Accept vfio's no-IOMMU mode (groups "/dev/vfio/noiommu-N", no DMA mapping, no
    /// isolation). Off by default: it only exists when the administrator enabled it.</summary>
    public bool AllowNoIommu { get; init; }

    public string SysfsRoot { get; init; } = "/sys";

    public string VfioDirectory { get; init; } = VfioGroup.DefaultDirectory;

    public string ContainerPath { get; init; } = VfioContainer.DefaultPath;
}

/// <summary>
/// A vfio-pci device opened the one correct way: resolve its IOMMU group from sysfs, open the
/// container, open the group and check it is viable, attach the group, choose the IOMMU type
/// (Type1v2, else Type1), and only then get the device fd. Getting this order wrong yields bare
/// EINVALs from the kernel, and a failure halfway must close what was opened; this type does
/// both, and disposes device, group and container in reverse order. For several devices in one
/// container, use <see cref="VfioContainer"/>, <see cref="VfioGroup"/> and <see cref="VfioDevice"/> directly.
/// </summary>
public sealed class VfioPciDevice : IDisposable
{
    private VfioPciDevice(PciAddress address, int groupId, VfioContainer container, VfioGroup group, VfioDevice device)
    {
        Address = address;
        GroupId = groupId;
        Container = container;
        Group = group;
        Device = device;
    }

    public PciAddress Address { get; }

    public int GroupId { get; }

    public VfioContainer Container { get; }

    public VfioGroup Group { get; }

    public VfioDevice Device { get; }

    public VfioIommuType IommuType => Container.IommuType;

    /// <summary>Opens the vfio-pci device at <paramref name="address"/> ("0000:00:03.0" or "00:03.0").</summary>
    public static VfioPciDevice Open(string address, VfioOpenOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(address);
        if (!PciAddress.TryParse(address, out PciAddress pci))
        {
            throw new ArgumentException($"'{address}' is not a PCI address: expected DDDD:BB:DD.F (e.g. 0000:00:03.0) or BB:DD.F", nameof(address));
        }

        return Open(pci, options);
    }

    /// <summary>Opens the vfio-pci device at <paramref name="address"/>.</summary>
    public static VfioPciDevice Open(PciAddress address, VfioOpenOptions? options = null)
    {
        options ??= VfioOpenOptions.Default;
        int groupId = VfioSysfs.ResolveIommuGroup(address, options.SysfsRoot);

        VfioContainer? container = null;
        VfioGroup? group = null;
        VfioDevice? device = null;
        try
        {
            container = OpenContainer(options);
            group = OpenGroup(address, groupId, options);
            group.SetContainer(container);
            ReadOnlySpan<VfioIommuType> preference = options.AllowNoIommu
                ? [VfioIommuType.Type1v2, VfioIommuType.Type1, VfioIommuType.NoIommu]
                : [VfioIommuType.Type1v2, VfioIommuType.Type1];
            container.SetIommu(preference);
            device = group.OpenDevice(address.ToString());
            return new VfioPciDevice(address, groupId, container, group, device);
        }
        catch
        {
            device?.Dispose();
            group?.Dispose();
            container?.Dispose();
            throw;
        }
    }

    /// <summary>The IOMMU group of <paramref name="address"/> (from
    /// <c>/sys/bus/pci/devices/ADDRESS/iommu_group</c>), with a clear error when the device does
    /// not exist or has no IOMMU group.</summary>
    public static int ResolveIommuGroup(string address, string sysfsRoot = "/sys")
    {
        ArgumentNullException.ThrowIfNull(address);
        ArgumentException.ThrowIfNullOrEmpty(sysfsRoot);
        return PciAddress.TryParse(address, out PciAddress pci)
            ? VfioSysfs.ResolveIommuGroup(pci, sysfsRoot)
            : throw new ArgumentException($"'{address}' is not a PCI address: expected DDDD:BB:DD.F (e.g. 0000:00:03.0) or BB:DD.F", nameof(address));
    }

    /// <summary>Closes the device, then the group (detaching it), then the container.</summary>
    public void Dispose()
    {
        Device.Dispose();
        Group.Dispose();
        Container.Dispose();
    }

    public override string ToString() => $"vfio-pci {Address} (IOMMU group {GroupId}, {IommuType})";

    private static VfioContainer OpenContainer(VfioOpenOptions options)
    {
        try
        {
            return VfioContainer.Open(options.ContainerPath);
        }
        catch (NativeCallException e) when (e.Call == "open" && e.Errno == Errno.ENOENT)
        {
            throw new VfioException($"{options.ContainerPath} does not exist: load the VFIO modules (modprobe vfio-pci)", e);
        }
    }

    private static VfioGroup OpenGroup(PciAddress address, int groupId, VfioOpenOptions options)
    {
        string id = groupId.ToString(CultureInfo.InvariantCulture);
        string path = Path.Combine(options.VfioDirectory, id);
        if (options.AllowNoIommu && !File.Exists(path))
        {
            string noIommu = Path.Combine(options.VfioDirectory, "noiommu-" + id);
            if (File.Exists(noIommu))
            {
                path = noIommu;
            }
        }

        try
        {
            return VfioGroup.Open(path, options.SysfsRoot);
        }
        catch (NativeCallException e) when (e.Errno == Errno.ENOENT)
        {
            string driver = VfioSysfs.DriverOf(address.ToString(), options.SysfsRoot) ?? "no driver";
            throw new VfioException(
                $"{path} does not exist: PCI device {address} (IOMMU group {groupId}) is bound to {driver}, not vfio-pci. " +
                $"Bind it with: echo vfio-pci > /sys/bus/pci/devices/{address}/driver_override; echo {address} > /sys/bus/pci/drivers_probe", e);
        }
        catch (NativeCallException e) when (e.Errno == Errno.EBUSY)
        {
            throw new VfioException($"{path} is busy: another process (a VM, another driver instance) already has IOMMU group {groupId} open", e);
        }
    }
}
