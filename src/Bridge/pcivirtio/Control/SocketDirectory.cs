using System.Text;
using Tmds.Linux;

namespace PciVirtio.Host.Control;

/// <summary>
/// Checks the directory a socket is bound in. Inside a directory everyone may write to
/// (/tmp, where the control socket of a user without XDG_RUNTIME_DIR goes), anyone could
/// have created our directory first, or a symbolic link by its name, and would then own or
/// redirect the socket (and <c>pcivirtio stats</c> would talk to them). There the directory
/// must be a real directory of this user that no one else can write to.
/// </summary>
internal static class SocketDirectory
{
    private const uint TypeMask = 0xf000; // S_IFMT
    private const uint Directory = 0x4000; // S_IFDIR
    private const uint SymbolicLink = 0xa000; // S_IFLNK
    private const uint OthersWrite = 0x2; // S_IWOTH
    private const uint GroupOrOthersWrite = 0x12; // S_IWGRP | S_IWOTH

    /// <summary>Why <paramref name="directory"/> is not safe for a socket, or null when it is
    /// (including every directory whose parent only its owner can write to).</summary>
    public static unsafe string? Problem(string directory)
    {
        string full = Path.GetFullPath(directory).TrimEnd('/');
        string? parent = Path.GetDirectoryName(full);
        if (parent is null || !Stat(parent, follow: true, out var parentStat) || ((uint)parentStat.st_mode & OthersWrite) == 0)
        {
            return null;
        }

        if (!Stat(full, follow: false, out var own))
        {
            return $"{full}: cannot be examined (lstat failed)";
        }

        uint mode = (uint)own.st_mode;
        if ((mode & TypeMask) == SymbolicLink)
        {
            return $"{full} is a symbolic link inside the world-writable {parent}: refusing to put a socket behind it";
        }

        if ((mode & TypeMask) != Directory)
        {
            return $"{full} is not a directory";
        }

        uint owner = (uint)own.st_uid;
        uint self = (uint)LibC.geteuid();
        if (owner != self)
        {
            return $"{full} belongs to uid {owner}, not to this user (uid {self}), inside the world-writable {parent}: someone else made it first";
        }

        if ((mode & GroupOrOthersWrite) != 0)
        {
            return $"{full} is writable by group or others (mode {Convert.ToString(mode & 0xfff, 8)}) inside the world-writable {parent}";
        }

        return null;
    }

    private static unsafe bool Stat(string path, bool follow, out stat result)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(path + '\0');
        stat buffer;
        int rc;
        fixed (byte* p = bytes)
        {
            rc = follow ? LibC.stat(p, &buffer) : LibC.lstat(p, &buffer);
        }

        result = buffer;
        return rc == 0;
    }
}
