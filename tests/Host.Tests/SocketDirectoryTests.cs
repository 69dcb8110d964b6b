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
        Directory.CreateDirectory(_shared);
        File.SetUnixFileMode(_shared, (UnixFileMode)0x3ff | UnixFileMode.StickyBit);
    }

    [Fact]
    public void Our_private_directory_in_a_shared_one_is_fine()
    {
        string dir = Path.Combine(_shared, "mine");
        Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute);
        Assert.Null(SocketDirectory.Problem(dir));
    }

    [Fact]
    public void A_directory_in_a_private_parent_is_not_examined()
    {
        string parent = Path.Combine(_shared, "private");
        Directory.CreateDirectory(parent, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        string dir = Path.Combine(parent, "open");
        Directory.CreateDirectory(dir);
        File.SetUnixFileMode(dir, (UnixFileMode)0x1ff);
        Assert.Null(SocketDirectory.Problem(dir));
    }

    [Fact]
    public void A_symbolic_link_is_refused()
    {
        string target = Path.Combine(_shared, "target");
        Directory.CreateDirectory(target, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        string link = Path.Combine(_shared, "link");
        File.CreateSymbolicLink(link, target);
        Assert.Contains("is a symbolic link", SocketDirectory.Problem(link), StringComparison.Ordinal);
    }

    [Fact]
    public void A_directory_others_can_write_to_is_refused()
    {
        string dir = Path.Combine(_shared, "open");
        Directory.CreateDirectory(dir);
        File.SetUnixFileMode(dir, (UnixFileMode)0x1ff);
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

        string dir = Path.Combine(_shared, "theirs");
        Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        using (var chown = Process.Start("chown", ["65534", dir]))
        {
            chown.WaitForExit();
            Assert.Equal(0, chown.ExitCode);
        }

        Assert.Contains("belongs to uid 65534, not to this user (uid 0)", SocketDirectory.Problem(dir), StringComparison.Ordinal);
    }

    public void Dispose() => Directory.Delete(_shared, recursive: true);
}
