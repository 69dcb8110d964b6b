namespace PciVirtio.Tests.Guest;

/// <summary>A file to put into a guest's initramfs at <see cref="GuestPath"/> (absolute).</summary>
public sealed record GuestFile
{
    private GuestFile(string guestPath, string? hostPath, string? text, bool withLibraries)
    {
        if (!guestPath.StartsWith('/'))
        {
            throw new ArgumentException($"guest path {guestPath} must be absolute", nameof(guestPath));
        }

        GuestPath = guestPath;
        HostPath = hostPath;
        Text = text;
        WithLibraries = withLibraries;
    }

    public string GuestPath { get; }

    /// <summary>The host file to copy, or null for <see cref="Text"/>.</summary>
    public string? HostPath { get; }

    public string? Text { get; }

    /// <summary>Also copy the shared libraries <c>ldd</c> lists for the file (executables).</summary>
    public bool WithLibraries { get; }

    /// <summary>A host file, copied as it is (executable if it is on the host).</summary>
    public static GuestFile Copy(string hostPath, string guestPath) => new(guestPath, hostPath, null, withLibraries: false);

    /// <summary>A dynamically linked program (e.g. a NativeAOT build): the file, executable, plus
    /// the glibc libraries and loader <c>ldd</c> lists for it, at their host paths.</summary>
    public static GuestFile Program(string hostPath, string guestPath) => new(guestPath, hostPath, null, withLibraries: true);

    /// <summary>A file with the given contents.</summary>
    public static GuestFile FromText(string guestPath, string text) => new(guestPath, null, text, withLibraries: false);
}
