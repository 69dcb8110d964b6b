using System.Diagnostics;
using PciVirtio.Host.Control;

namespace PciVirtio.Host.Tests;

/// <summary>The control socket's directory inside a world-writable directory (the /tmp
/// fallback) must be a real directory of ours that no one else can write to.</summary>
public sealed class SocketDirectoryTests : IDisposable
{
    private readonly string _shared;

    public SocketDirectoryTests()
    {
        // A world-writable, sticky directory of our own, standing in for /tmp.
        _shared = Path.Combine(Path.GetTempPath(), $"pv-shared-{Environment.ProcessId}-{Guid.NewGuid():N}");
        MakeDirectory(_shared, 0x3ff); // 01777
    }

    [Fact]
    public void Our_private_directory_in_a_shared_one_is_fine() =>
        Assert.Null(SocketDirectory.Problem(MakeDirectory(Path.Combine(_shared, "mine"), 0x1e8))); // 0750

    [Fact]
    public void A_directory_in_a_private_parent_is_not_examined()
    {
        string parent = MakeDirectory(Path.Combine(_shared, "private"), 0x1c0); // 0700
        Assert.Null(SocketDirectory.Problem(MakeDirectory(Path.Combine(parent, "open"), 0x1ff)));
    }

    [Fact]
    public void A_symbolic_link_is_refused()
    {
        string target = MakeDirectory(Path.Combine(_shared, "target"), 0x1c0);
        string link = Path.Combine(_shared, "link");
        File.CreateSymbolicLink(link, target);
        Assert.Contains("is a symbolic link", SocketDirectory.Problem(link), StringComparison.Ordinal);
    }

    [Fact]
    public void A_directory_others_can_write_to_is_refused()
    {
        string dir = MakeDirectory(Path.Combine(_shared, "open"), 0x1ff); // 0777
        Assert.Contains("writable by group or others (mode 777)", SocketDirectory.Problem(dir), StringComparison.Ordinal);
    }

    [Fact]
    public void A_file_is_refused()
    {
        string file = Path.Combine(_shared, "file");
        File.WriteAllText(file, "x");
        Assert.Contains("is not a directory", SocketDirectory.Problem(file), StringComparison.Ordinal);
    }

    [Fact]
    public void A_directory_someone_else_made_first_is_refused()
    {
        if (Environment.UserName != "root")
        {
            return; // only root can give a directory away
        }

        string dir = MakeDirectory(Path.Combine(_shared, "theirs"), 0x1c0);
        using (var chown = Process.Start("chown", ["65534", dir]))
        {
            chown.WaitForExit();
            Assert.Equal(0, chown.ExitCode);
        }

        Assert.Contains("belongs to uid 65534, not to this user (uid 0)", SocketDirectory.Problem(dir), StringComparison.Ordinal);
    }

    public void Dispose() => Directory.Delete(_shared, recursive: true);

    /// <summary>A directory with exactly <paramref name="mode"/> (the umask does not apply).</summary>
    private static string MakeDirectory(string path, int mode)
    {
        Directory.CreateDirectory(path);
        File.SetUnixFileMode(path, (UnixFileMode)mode);
        return path;
    }
}
