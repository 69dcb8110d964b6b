using BenchmarkDotNet.Running;

// `--quick` is shorthand for `--job short` (see the comment at the top of SplitRingBenchmarks.cs).
var effectiveArgs = args.Contains("--quick")
    ? [.. args.Where(a => a != "--quick"), "--job", "short"]
    : args;

BenchmarkSwitcher.FromAssembly(typeof(PciVirtio.Benchmarks.SplitRingBenchmarks).Assembly).Run(effectiveArgs);
