using BenchmarkDotNet.Running;

BenchmarkSwitcher.FromAssembly(typeof(PciVirtio.Benchmarks.SplitRingBenchmarks).Assembly).Run(args);
