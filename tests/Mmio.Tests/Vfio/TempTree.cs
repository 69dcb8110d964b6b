namespace PciVirtio.Mmio.Tests.Vfio;

/// <summary>A temporary directory (fake sysfs trees, files standing in for device fds).</summary>
public sealed class TempTree : IDisposable
{
    public TempTree()
    {
        Root = Path.Combine(Path.GetTempPath(), "vfio-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Root);
    }

    public string Root { get; }

    public string Dir(string relative)
    {
        string path = Path.Combine(Root, relative);
        Directory.CreateDirectory(path);
        return path;
    }

    public void Link(string relative, string target)
    {
        string path = Path.Combine(Root, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.CreateSymbolicLink(path, target);
    }

    /// <summary>A fake sysfs device whose iommu_group link points to group <paramref name="group"/>
    /// and whose driver link names <paramref name="driver"/> (null: unbound).</summary>
    public void PciDevice(string bdf, int? group, string? driver)
    {
        Dir($"bus/pci/devices/{bdf}");
        if (group is int g)
        {
            Dir($"kernel/iommu_groups/{g}/devices");
            Link($"bus/pci/devices/{bdf}/iommu_group", $"../../../kernel/iommu_groups/{g}");
            Link($"kernel/iommu_groups/{g}/devices/{bdf}", $"../../../../bus/pci/devices/{bdf}");
        }

        if (driver is not null)
        {
            Dir($"bus/pci/drivers/{driver}");
            Link($"bus/pci/devices/{bdf}/driver", $"../../../bus/pci/drivers/{driver}");
        }
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
