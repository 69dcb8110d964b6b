namespace PciVirtio.Mmio.Vfio;

/// <summary>
/// A VFIO setup problem that is not one failed system call: a group that is not viable, a
/// device without an IOMMU group, an unsupported API version. Such errors need a message that
/// says what to fix on the machine (bind to vfio-pci, enable the IOMMU), which a bare errno
/// cannot; when a failed call revealed the problem it is the <see cref="Exception.InnerException"/>.
/// Failed calls themselves throw <see cref="PciVirtio.Mmio.Interop.NativeCallException"/>.
/// </summary>
public sealed class VfioException : IOException
{
    public VfioException()
    {
    }

    public VfioException(string message)
        : base(message)
    {
    }

    public VfioException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
