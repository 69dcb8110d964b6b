using Tmds.Linux;

namespace PciVirtio.Mmio.Interop;

/// <summary>Turns -1 results into exceptions naming the call and errno.</summary>
internal static class Syscall
{
    /// <summary>Throws <see cref="NativeCallException"/> when <paramref name="result"/> is negative.</summary>
    public static int Check(int result, string call, string? subject = null) =>
        result >= 0 ? result : throw new NativeCallException(call, LibC.errno, subject);

    public static long Check(long result, string call, string? subject = null) =>
        result >= 0 ? result : throw new NativeCallException(call, LibC.errno, subject);
}
