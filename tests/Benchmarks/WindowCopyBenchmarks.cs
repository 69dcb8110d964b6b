// The copy of a frame into a peer's window (IoMemoryAccessor.CopyTo) against the platform's
// copy of the same bytes (Span.CopyTo), both into ordinary memory as hw-sim's window is.
//
//   dotnet run -c Release --project tests/Benchmarks -- --filter '*WindowCopy*' --job short
//
// Read the Ratio column: PlatformCopy is the baseline. Each invocation copies 64 frames into
// consecutive 64-aligned places of a 1 MiB area, as the link's sender fills the receiver's
// buffer area; Mean is per frame.

using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using PciVirtio.Mmio.Memory;

namespace PciVirtio.Benchmarks;

[MemoryDiagnoser]
public unsafe class WindowCopyBenchmarks
{
    private const int Frames = 64;
    private const int Area = 1 << 20;
    private byte* _source;
    private byte* _area;
    private int _stride;
    private int _at;

    /// <summary>Frame bytes: a 64-, 1500- and 65535-byte packet after the 12-byte vnet header.</summary>
    [Params(76, 1512, 65547)]
    public int FrameBytes { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _stride = (FrameBytes + 63) & ~63;
        _source = (byte*)NativeMemory.AlignedAlloc((nuint)FrameBytes, 64);
        _area = (byte*)NativeMemory.AlignedAlloc(Area, 4096);
        var source = new Span<byte>(_source, FrameBytes);
        for (int i = 0; i < source.Length; i++)
        {
            source[i] = (byte)(i * 7);
        }

        new Span<byte>(_area, Area).Clear();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        NativeMemory.AlignedFree(_source);
        NativeMemory.AlignedFree(_area);
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Frames)]
    public void PlatformCopy()
    {
        var source = new ReadOnlySpan<byte>(_source, FrameBytes);
        for (int i = 0; i < Frames; i++)
        {
            source.CopyTo(new Span<byte>(_area + Next(), FrameBytes));
        }
    }

    [Benchmark(OperationsPerInvoke = Frames)]
    public void WindowCopy()
    {
        var source = new ReadOnlySpan<byte>(_source, FrameBytes);
        var io = new IoMemoryAccessor(null);
        for (int i = 0; i < Frames; i++)
        {
            io.CopyTo((nint)(_area + Next()), source);
        }
    }

    /// <summary>The next 64-aligned place for a frame, back to 0 at the end of the area.</summary>
    private int Next()
    {
        int at = _at;
        _at = at + (2 * _stride) > Area ? 0 : at + _stride;
        return at;
    }
}
