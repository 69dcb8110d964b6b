using System.Globalization;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Vfio.Interop;

namespace PciVirtio.Mmio.Vfio;

/// <summary>
/// The sysfs lookups VFIO setup needs: which IOMMU group a PCI device is in, which driver a
/// device is bound to, and which devices share a group. They exist mainly to turn the kernel's
/// terse failures into errors that say what to fix. The root is a parameter so tests can point
/// it at a fake tree.
/// </summary>
internal static class VfioSysfs
{
    public const string DefaultRoot = "/sys";

    public static string DeviceDirectory(string sysfsRoot, PciAddress address) =>
        Path.Combine(sysfsRoot, "bus", "pci", "devices", address.ToString());

    /// <summary>The IOMMU group number of <paramref name="address"/>, from the
    /// <c>iommu_group</c> link ("../../../kernel/iommu_groups/N").</summary>
    public static int ResolveIommuGroup(PciAddress address, string sysfsRoot)
    {
        string deviceDirectory = DeviceDirectory(sysfsRoot, address);
        string link = Path.Combine(deviceDirectory, "iommu_group");
        string target;
        try
        {
            target = VfioSyscalls.ReadLink(link);
        }
        catch (NativeCallException e) when (e.Errno == Errno.ENOENT)
        {
            if (!Directory.Exists(deviceDirectory))
            {
                throw new VfioException(
                    $"PCI device {address} does not exist: {deviceDirectory} is missing (list devices with 'lspci -D')", e);
            }

            throw new VfioException(
                $"PCI device {address} has no IOMMU group ({link} is missing): the kernel has no IOMMU for it. " +
                "Boot with intel_iommu=on (or amd_iommu=on); in a QEMU guest add '-machine q35 -device intel-iommu'. " +
                "Without an IOMMU only vfio's unsafe no-IOMMU mode can work.", e);
        }

        string name = Path.GetFileName(target.TrimEnd('/'));
        if (!int.TryParse(name, NumberStyles.None, CultureInfo.InvariantCulture, out int group))
        {
            throw new VfioException($"{link} points to '{target}', which does not end in an IOMMU group number");
        }

        return group;
    }

    /// <summary>The driver bound to device <paramref name="name"/> ("vfio-pci"), or null when
    /// none is (or the device is unknown).</summary>
    public static string? DriverOf(string name, string sysfsRoot)
    {
        try
        {
            return Path.GetFileName(VfioSyscalls.ReadLink(Path.Combine(sysfsRoot, "bus", "pci", "devices", name, "driver")).TrimEnd('/'));
        }
        catch (NativeCallException)
        {
            return null;
        }
    }

    /// <summary>The devices in IOMMU group <paramref name="group"/>, each with its driver, for
    /// messages; empty when sysfs cannot tell.</summary>
    public static IReadOnlyList<string> DescribeGroupMembers(int group, string sysfsRoot)
    {
        string directory = Path.Combine(sysfsRoot, "kernel", "iommu_groups", group.ToString(CultureInfo.InvariantCulture), "devices");
        try
        {
            var members = Directory.GetFileSystemEntries(directory).Select(Path.GetFileName).OfType<string>().ToList();
            members.Sort(StringComparer.Ordinal);
            return members.ConvertAll(m => $"{m} ({DriverOf(m, sysfsRoot) ?? "no driver"})");
        }
        catch (IOException)
        {
            return [];
        }
        catch (UnauthorizedAccessException)
        {
            return [];
        }
    }
}
