using CsCheck;

namespace PciVirtio.VhostCore.Tests.Properties;

/// <summary>
/// Runs a CsCheck property over a fixed, reproducible series of seeds (so the suite is
/// deterministic), and hands the first failing seed to CsCheck's Sample to shrink it to a
/// minimal case, whose replay seed ends up in the failure message.
/// </summary>
internal static class PropertyRunner
{
    /// <remarks>Runs seeds <paramref name="first"/> .. <paramref name="first"/> + <paramref name="iterations"/> - 1
    /// of <paramref name="stream"/>, so a series can be split between runs (e.g. one half per memory).</remarks>
    public static void Run<T>(Gen<T> gen, Action<T> property, int iterations, uint stream, Func<T, string>? print = null, int first = 0)
    {
        for (int i = first; i < first + iterations; i++)
        {
            var pcg = new PCG(stream, ((ulong)i * 0x9E37_79B9_7F4A_7C15UL) + 1);
            string seed = pcg.ToString();
            var value = gen.Generate(pcg, null, out _);
            try
            {
                property(value);
            }
#pragma warning disable CA1031 // any failure is handed to CsCheck to shrink and report
            catch (Exception failure)
#pragma warning restore CA1031
            {
                // Throws CsCheckException with the shrunk case and a seed to replay it.
                gen.Sample(property, seed: seed, iter: 1000, threads: 1, print: print);
                throw new InvalidOperationException($"property failed at iteration {i} (seed {seed}) but passed when replayed", failure);
            }
        }
    }

    /// <summary>Runs <paramref name="body"/> on a worker thread and fails if it does not end in
    /// time (a property that loops forever must fail, not hang the suite).</summary>
    public static void WithTimeout(TimeSpan limit, Action body)
    {
        var task = Task.Factory.StartNew(body, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        if (Task.WhenAny(task, Task.Delay(limit)).GetAwaiter().GetResult() != task)
        {
            Assert.Fail($"the property did not finish within {limit.TotalSeconds} s (an operation does not terminate)");
        }

        task.GetAwaiter().GetResult();
    }
}
