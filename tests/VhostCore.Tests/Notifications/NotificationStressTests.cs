using System.Collections.Concurrent;
using System.Diagnostics;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;
using Xunit.Abstractions;

namespace PciVirtio.VhostCore.Tests.Notifications;

/// <summary>
/// The real driver and the real device on two threads, each sleeping on a semaphore (its
/// kick or interrupt line) only after Enable*() returned false, as a real backend and a
/// real guest driver do. A lost kick or interrupt leaves both sides asleep: the run then
/// cannot complete and a side's wait expires with work outstanding, which fails the test.
/// </summary>
public class NotificationStressTests(ITestOutputHelper output)
{
    private const int MaxBuffers = 1_000_000;

    /// <summary>The driver stops adding after this long once it has sent <see cref="MinBuffers"/>
    /// (the buffers in flight are still drained).</summary>
    private static readonly TimeSpan AddBudget = TimeSpan.FromSeconds(1.5);

    /// <summary>On a loaded machine the driver may go on adding until this long to reach <see cref="MinBuffers"/>.</summary>
    private static readonly TimeSpan AddLimit = TimeSpan.FromSeconds(5);

    private const int MinBuffers = 20_000;

    /// <summary>No side waits this long for a peer that is working: a wait this long is a lost wake-up.</summary>
    private static readonly TimeSpan IdleLimit = TimeSpan.FromSeconds(3);

    /// <summary>Whatever happens, the run ends by then.</summary>
    private static readonly TimeSpan HardLimit = TimeSpan.FromSeconds(10);

    public static TheoryData<VirtioFeatures> Modes => new()
    {
        VirtioFeatures.Version1,
        VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx,
    };

    private sealed class Run(RingHarness h)
    {
        public readonly ConcurrentQueue<string> Failures = new();
        public readonly Stopwatch Clock = Stopwatch.StartNew();
        public readonly SemaphoreSlim Kick = new(0);
        public readonly SemaphoreSlim Interrupt = new(0);
        public readonly bool[] Seen = new bool[MaxBuffers];
        public int Done;
        public long Sent;
        public long Reaped;
        public long Kicks;
        public long Interrupts;
        public long DeviceSleeps;
        public long DriverSleeps;
        public long DeviceRechecks;
        public long DriverRechecks;
        public long DeviceSleptTicks;
        public long DriverSleptTicks;
        public long LongestSleepTicks;

        public RingHarness H { get; } = h;

        public bool Stopping => Volatile.Read(ref Done) != 0 || !Failures.IsEmpty;

        /// <summary>Sleeps on <paramref name="line"/>; false (after recording why, unless the
        /// run is over) when the wait expired.</summary>
        public bool Sleep(SemaphoreSlim line, string side, ref long sleptTicks)
        {
            var started = Clock.Elapsed;
            while (true)
            {
                if (line.Wait(TimeSpan.FromMilliseconds(50)))
                {
                    long slept = (Clock.Elapsed - started).Ticks;
                    sleptTicks += slept;
                    long longest;
                    while (slept > (longest = Interlocked.Read(ref LongestSleepTicks))
                        && Interlocked.CompareExchange(ref LongestSleepTicks, slept, longest) != longest)
                    {
                    }

                    return true;
                }

                if (Stopping)
                {
                    return false;
                }

                var waited = Clock.Elapsed - started;
                if (waited > IdleLimit || Clock.Elapsed > HardLimit)
                {
                    Failures.Enqueue($"{side} slept {waited.TotalSeconds:F1} s with no wake-up: sent {Interlocked.Read(ref Sent)}, " +
                        $"reaped {Interlocked.Read(ref Reaped)}, avail.idx {H.ReadU16(H.State.AvailRing + 2)}, used.idx {H.ReadU16(H.State.UsedRing + 2)}, " +
                        $"device next avail {H.Device.State.NextAvail}, used flags {H.ReadU16(H.State.UsedRing)}, avail flags {H.ReadU16(H.State.AvailRing)}");
                    return false;
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void Two_threads_never_lose_a_kick_or_an_interrupt(VirtioFeatures features)
    {
        using var h = new RingHarness(queueSize: 64, features: features);
        var run = new Run(h);
        var device = new Thread(() => Guard(run, "device", () => DeviceLoop(run))) { IsBackground = true, Name = "stress-device" };
        var driver = new Thread(() => Guard(run, "driver", () => DriverLoop(run))) { IsBackground = true, Name = "stress-driver" };
        device.Start();
        driver.Start();

        var joinLimit = HardLimit + TimeSpan.FromSeconds(5);
        bool driverEnded = driver.Join(joinLimit);
        Volatile.Write(ref run.Done, 1);
        run.Kick.Release();
        bool deviceEnded = device.Join(TimeSpan.FromSeconds(5));

        output.WriteLine($"{features}: {run.Sent} sent, {run.Reaped} reaped in {run.Clock.Elapsed.TotalMilliseconds:F0} ms; " +
            $"kicks {run.Kicks} (suppressed {h.Driver.KicksSuppressed}), interrupts {run.Interrupts} (suppressed {h.Device.InterruptsSuppressed}); " +
            $"device slept {run.DeviceSleeps} times ({TimeSpan.FromTicks(run.DeviceSleptTicks).TotalMilliseconds:F0} ms), re-polled after Enable {run.DeviceRechecks}; " +
            $"driver slept {run.DriverSleeps} times ({TimeSpan.FromTicks(run.DriverSleptTicks).TotalMilliseconds:F0} ms), re-polled {run.DriverRechecks}; " +
            $"longest sleep {TimeSpan.FromTicks(run.LongestSleepTicks).TotalMilliseconds:F1} ms");

        Assert.True(driverEnded, "the driver thread did not finish");
        Assert.True(deviceEnded, "the device thread did not finish");
        Assert.True(run.Failures.IsEmpty, string.Join(Environment.NewLine, run.Failures));
        Assert.False(h.Driver.IsBroken, h.Driver.BrokenReason);
        Assert.False(h.Device.IsBroken, h.Device.BrokenReason);
        Assert.Equal(run.Sent, run.Reaped);
        Assert.True(run.Sent >= 1_000, $"only {run.Sent} buffers went through");
        int missing = Array.IndexOf(run.Seen, false, 0, (int)run.Sent);
        Assert.True(missing < 0, $"buffer {missing} never came back");

        Assert.Equal(0, h.Driver.InFlight);
        Assert.Equal(64, h.Driver.FreeDescriptors);
    }

    private static void Guard(Run run, string side, Action loop)
    {
        try
        {
            loop();
        }
#pragma warning disable CA1031 // a failure on a worker thread is reported to the test, not lost
        catch (Exception e)
#pragma warning restore CA1031
        {
            run.Failures.Enqueue($"{side} threw: {e}");
        }
    }

    private static void DeviceLoop(Run run)
    {
        var device = run.H.Device;
        var chains = new DescriptorChain[32];
        var segments = new IoSegment[64];
        var rnd = new Random(7);
        while (!run.Stopping)
        {
            int n = device.PopAvail(chains.AsSpan(0, rnd.Next(1, chains.Length + 1)), segments);
            if (n > 0)
            {
                for (int i = 0; i < n; i++)
                {
                    device.PushUsed(chains[i].Head, chains[i].WritableBytes);
                }

                device.FlushUsed();
                if (device.NeedsInterrupt())
                {
                    Interlocked.Increment(ref run.Interrupts);
                    run.Interrupt.Release();
                }

                if (rnd.Next(8) == 0)
                {
                    Thread.SpinWait(rnd.Next(1, 200));
                }

                continue;
            }

            if (device.IsBroken)
            {
                run.Failures.Enqueue($"device broke: {device.Error} {device.BrokenReason}");
                return;
            }

            // Ring empty: go to sleep, but only if re-enabling notifications finds nothing.
            // Kicks that arrived before this point are for entries the re-check below sees,
            // so consume them first (as a backend reads its kick eventfd): a stale kick must
            // not hide a lost one.
            while (run.Kick.Wait(0))
            {
            }

            if (device.EnableNotifications())
            {
                run.DeviceRechecks++;
                device.DisableNotifications();
                continue;
            }

            run.DeviceSleeps++;
            if (!run.Sleep(run.Kick, "device", ref run.DeviceSleptTicks))
            {
                return;
            }

            // Both are valid: poll with notifications off (the usual way), or leave them on
            // and take the extra kicks.
            if (rnd.Next(4) != 0)
            {
                device.DisableNotifications();
            }
        }
    }

    private static void DriverLoop(Run run)
    {
        var driver = run.H.Driver;
        var used = new UsedBuffer[64];
        var rnd = new Random(11);
        while (true)
        {
            if (run.Clock.Elapsed > HardLimit)
            {
                run.Failures.Enqueue($"driver still running at the hard limit: sent {run.Sent}, reaped {run.Reaped}");
                return;
            }

            if (!run.Failures.IsEmpty)
            {
                return;
            }

            long sent = run.Sent;
            var elapsed = run.Clock.Elapsed;
            bool adding = sent < MaxBuffers && (elapsed < AddBudget || (sent < MinBuffers && elapsed < AddLimit));
            if (!adding && run.Reaped == sent)
            {
                return;
            }

            int added = 0;
            int batch = rnd.Next(1, 33);
            while (adding && added < batch && sent < MaxBuffers)
            {
                ulong token = (ulong)sent;
                var buffer = new GuestBuffer(RingHarness.Buffer((int)(token % 64)), 16 + (uint)(token % 48));
                if (!driver.TryAdd([], [buffer], token))
                {
                    break;
                }

                sent++;
                added++;
            }

            Interlocked.Exchange(ref run.Sent, sent);
            if (added > 0)
            {
                driver.Publish();
                if (driver.NeedsKick())
                {
                    Interlocked.Increment(ref run.Kicks);
                    run.Kick.Release();
                }
            }

            int r = driver.Reap(used.AsSpan(0, rnd.Next(1, used.Length + 1)));
            for (int i = 0; i < r; i++)
            {
                ulong token = used[i].Token;
                if (token >= (ulong)sent || run.Seen[token])
                {
                    run.Failures.Enqueue($"token {token} came back twice or was never sent");
                    return;
                }

                if (used[i].Length != 16 + (uint)(token % 48))
                {
                    run.Failures.Enqueue($"token {token} came back with length {used[i].Length}");
                    return;
                }

                run.Seen[token] = true;
            }

            Interlocked.Add(ref run.Reaped, r);
            if (driver.IsBroken)
            {
                run.Failures.Enqueue($"driver broke: {driver.Error} {driver.BrokenReason}");
                return;
            }

            if (added > 0 || r > 0)
            {
                continue;
            }

            // Nothing to add and nothing to reap: sleep, but only if re-enabling interrupts
            // finds nothing. Stale interrupts are consumed first (see the device loop).
            while (run.Interrupt.Wait(0))
            {
            }

            if (driver.EnableInterrupts())
            {
                run.DriverRechecks++;
                driver.DisableInterrupts();
                continue;
            }

            run.DriverSleeps++;
            if (!run.Sleep(run.Interrupt, "driver", ref run.DriverSleptTicks))
            {
                return;
            }

            // Poll with interrupts off (NAPI style) or leave them on (with EVENT_IDX each reap
            // then moves used_event).
            if (rnd.Next(4) != 0)
            {
                driver.DisableInterrupts();
            }
        }
    }
}
