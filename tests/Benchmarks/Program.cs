using BenchmarkDotNet.Running;
using PciVirtio.Benchmarks;

// `vhost`: our vhost-user backend against DPDK's vhost PMD with one DPDK frontend (see VhostBenchmark).
if (args.Length > 0 && args[0] == "vhost")
{
    return await VhostBenchmark.RunAsync(args[1..]);
}

// `link`: the host-to-host link over hw-sim, packet API and TAP-to-TAP TCP (see LinkBenchmark).
if (args.Length > 0 && args[0] == "link")
{
    return await LinkBenchmark.RunAsync(args[1..]);
}

// `--quick` is shorthand for `--job short` (see the comment at the top of SplitRingBenchmarks.cs).
var effectiveArgs = args.Contains("--quick")
    ? [.. args.Where(a => a != "--quick"), "--job", "short"]
    : args;

BenchmarkSwitcher.FromAssembly(typeof(SplitRingBenchmarks).Assembly).Run(effectiveArgs);
return 0;
