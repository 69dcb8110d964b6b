using Tmds.Linux;

namespace PciVirtio.Mmio.Interop;

/// <summary>Turns -1 results into exceptions naming the call and errno, retrying EINTR.</summary>
internal static class Syscall
{
    /// <summary>Throws <see cref="NativeCallException"/> when <paramref name="result"/> is negative.</summary>
    public static int Check(int result, string call, string? subject = null) =>
        result >= 0 ? result : throw new NativeCallException(call, LibC.errno, subject);

    public static long Check(long result, string call, string? subject = null) =>
        result >= 0 ? result : throw new NativeCallException(call, LibC.errno, subject);

    /// <summary>Runs <paramref name="operation"/> until it does not fail with EINTR.</summary>
    public static int RetryOnInterrupt(Func<int> operation, string call, string? subject = null)
    {
        while (true)
        {
            int rc = operation();
            if (rc >= 0)
            {
                return rc;
            }

            int errno = LibC.errno;
            if (errno != Errno.EINTR)
            {
                throw new NativeCallException(call, errno, subject);
            }
        }
    }
}
