namespace PciVirtio.Benchmarks;

public class SplitRingBenchmarks
{
}
