using System.Runtime.InteropServices;

namespace PciVirtio.Tests.Peers;

internal static partial class NativeMethods
{
    public const int SIGKILL = 9;

    /// <summary>kill(2): a negative pid names a process group.</summary>
    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);
}
