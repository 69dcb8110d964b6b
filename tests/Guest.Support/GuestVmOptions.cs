namespace PciVirtio.Tests.Guest;

/// <summary>How to start one QEMU guest (TCG, serial console on stdio).</summary>
public sealed record GuestVmOptions
{
    /// <summary>Names the guest in logs and its console log file.</summary>
    public required string Name { get; init; }

    /// <summary>The initramfs (from <see cref="GuestEnvironment.BuildInitramfsAsync"/>).</summary>
    public required string Initramfs { get; init; }

    public string Machine { get; init; } = "q35";

    public int MemoryMiB { get; init; } = 256;

    /// <summary>Virtual CPUs (<c>-smp</c> when more than one). Under TCG each is a host thread.</summary>
    public int Cpus { get; init; } = 1;

    /// <summary>An emulated intel-iommu (<c>-device intel-iommu</c>, <c>intel_iommu=on</c>): what
    /// vfio-pci needs in the guest.</summary>
    public bool Iommu { get; init; }

    /// <summary>The ivshmem server's socket: adds an <c>ivshmem-doorbell</c> device connected to it.</summary>
    public string? IvshmemSocket { get; init; }

    /// <summary>MSI-X vectors of the ivshmem-doorbell device (the server's vectors per peer).</summary>
    public int IvshmemVectors { get; init; } = 2;

    /// <summary>The guest powers itself off after this long (pcivirtio.deadline=), whatever
    /// happens to the host side.</summary>
    public TimeSpan GuestDeadline { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>More kernel command-line words (after console=ttyS0 quiet panic=-1 no_timer_check ...).</summary>
    public IReadOnlyList<string> KernelArguments { get; init; } = [];

    /// <summary>More QEMU arguments, appended.</summary>
    public IReadOnlyList<string> QemuArguments { get; init; } = [];

    /// <summary>Where the console log goes ({Name}.console.log); default
    /// $PCIVIRTIO_GUEST_LOGS or /tmp/pcivirtio-guest-logs.</summary>
    public string? LogDirectory { get; init; }
}
