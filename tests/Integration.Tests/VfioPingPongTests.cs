using System.Diagnostics;
using System.Globalization;
using PciVirtio.HwSim.Device;
using PciVirtio.HwSim.Ivshmem;
using PciVirtio.HwSim.Server;
using PciVirtio.Tests.Guest;
using Xunit.Abstractions;

namespace PciVirtio.Integration.Tests;

/// <summary>
/// The proof on the real VFIO path: two QEMU guests (TCG, q35 + intel-iommu) whose
/// ivshmem-doorbell devices share one memory region through hw-sim's <see cref="IvshmemServer"/> endpoint
/// bind the device to vfio-pci and run a NativeAOT build of tests/VfioPingPong. It uses Vfio.Net
/// to map BAR0 and BAR2 and to wire MSI-X vectors 0 and 1 to eventfds, and the two exchange
/// <see cref="Messages"/> messages of 1..4096 bytes and their replies through the shared memory
/// (<see cref="PciVirtio.Mmio.Memory.IoMemoryAccessor"/> accesses only), each announced by a
/// doorbell write that arrives as the peer's MSI-X interrupt; every byte is checked in the guests.
/// Then one guest masks its vector 0 the way the link's ivshmem hardware does on vfio-pci
/// (routing it to a parked eventfd) and unmasks it, and both check where the doorbells landed.
/// </summary>
public sealed class VfioPingPongTests(VfioPingPongProgram program, ITestOutputHelper output) : IClassFixture<VfioPingPongProgram>
{
    private const int Messages = 300;

    /// <summary>Doorbells rung while the responder's vector 0 is parked (tests/VfioPingPong).</summary>
    private const int ParkedRings = 3;

    /// <summary>The test body, both boots included; xunit's Timeout is the backstop.</summary>
    private static readonly TimeSpan Budget = TimeSpan.FromMinutes(5);

    /// <summary>Both guests boot at once on 2 cores under TCG, next to other work.</summary>
    private static readonly TimeSpan BootTimeout = TimeSpan.FromMinutes(2.5);

    /// <summary>From both guests ready to both verdicts: the program's own waits are bounded
    /// (handshake 120 s, 15 s per interrupt), so it reports a failure well before this.</summary>
    private static readonly TimeSpan ExchangeTimeout = TimeSpan.FromMinutes(2.5);

    private static readonly TimeSpan ShutdownTimeout = TimeSpan.FromSeconds(60);

    [Fact(Timeout = 360_000)]
    public async Task Two_guests_exchange_messages_over_vfio_through_shared_bar2_with_doorbells_and_msix()
    {
        var clock = Stopwatch.StartNew();
        using var budget = new CancellationTokenSource(Budget);
        output.WriteLine($"NativeAOT publish: {program.PublishDuration.TotalSeconds:0.0} s ({program.PublishCommand}); " +
                         $"{program.ExecutablePath} has {new FileInfo(program.ExecutablePath).Length} bytes");
        var environment = GuestEnvironment.Get();
        output.WriteLine($"guest kernel {environment.KernelPackage} ({environment.Kernel}); prepare.sh took {environment.PrepareResult.Duration.TotalSeconds:0.0} s");

        var work = Directory.CreateTempSubdirectory("pcivirtio-pingpong-");
        var pids = new List<int>();
        try
        {
            string socket = Path.Combine(work.FullName, "ivshmem.sock");
            // hw-sim's server is the ivshmem server: its shared memory is the emulated NTB's local
            // memory (two ports × one 512 KiB window = 1 MiB), so the two guests are the two ends.
            using var device = HwSimDevice.Create(windows: 1, windowSize: 1 << 19);
            using var hwsim = new HwSimServer(Path.Combine(work.FullName, "ntb.sock"), device, ivshmemSocketPath: socket, ivshmemVectors: 2, ivshmemMaxPeers: 2);
            IvshmemServer server = hwsim.Ivshmem ?? throw new InvalidOperationException("hw-sim started no ivshmem endpoint");
            var guestProgram = new GuestProgram(program.ExecutablePath, ["--messages", Messages.ToString(CultureInfo.InvariantCulture)]);
            string initramfs = await VfioGuest.BuildInitramfsAsync(environment, Path.Combine(work.FullName, "pingpong.cpio"), guestProgram,
                cancellationToken: budget.Token);
            var setupDone = clock.Elapsed;

            await using var a = GuestVm.Start(environment, VfioGuest.Options("pingpong-a", initramfs, socket), output.WriteLine);
            pids.Add(a.Pid);
            await using var b = GuestVm.Start(environment, VfioGuest.Options("pingpong-b", initramfs, socket), output.WriteLine);
            pids.Add(b.Pid);
            output.WriteLine($"QEMU pids: {a.Name} {a.Pid}, {b.Name} {b.Pid}");

            var ready = await Task.WhenAll(
                VfioGuest.WaitForReadyAsync(a, BootTimeout, budget.Token),
                VfioGuest.WaitForReadyAsync(b, BootTimeout, budget.Token));
            Assert.Equal([0, 1], server.PeerIds);
            Assert.Equal([0, 1], ready.Select(r => r.IvPosition ?? -1).Order());

            // Both verdicts: "PINGPONG OK ..." or "PINGPONG FAIL reason". The first failure fails
            // the test at once (its peer would only time out after it).
            var waits = new[]
            {
                VfioGuest.WaitForProgramLineAsync(a, IsVerdict, ExchangeTimeout, cancellationToken: budget.Token),
                VfioGuest.WaitForProgramLineAsync(b, IsVerdict, ExchangeTimeout, cancellationToken: budget.Token),
            };
            var pending = waits.ToList();
            while (pending.Count > 0)
            {
                var done = await Task.WhenAny(pending);
                pending.Remove(done);
                string verdict = await done;
                var vm = done == waits[0] ? a : b;
                Assert.True(verdict.StartsWith("PINGPONG OK ", StringComparison.Ordinal),
                    $"{vm.Name}: {verdict}\n{ProgramOutput(a)}\n{ProgramOutput(b)}");
            }

            string[] verdicts = [await waits[0], await waits[1]];

            var exitCodes = await Task.WhenAll(
                VfioGuest.WaitForProgramExitAsync(a, ShutdownTimeout, budget.Token),
                VfioGuest.WaitForProgramExitAsync(b, ShutdownTimeout, budget.Token));
            Assert.Equal([0, 0], exitCodes);

            // Cross-check the two summaries: one initiator (peer 0), one responder (peer 1), each
            // saw one vector-0 interrupt per message and one vector-1 interrupt, and what one sent
            // is what the other received. After the messages the responder parked its vector 0
            // (routed it to an eventfd nobody waits on, as masking a doorbell does on vfio-pci):
            // the initiator's three doorbells then landed there, and one more after the vector
            // was routed back arrived on the vector's own eventfd.
            var summaries = verdicts.Select(v => GuestMarkers.Fields(v)).ToArray();
            var initiator = Assert.Single(summaries, s => s["role"] == "initiator");
            var responder = Assert.Single(summaries, s => s["role"] == "responder");
            Assert.Equal("0", initiator["id"]);
            Assert.Equal("1", responder["id"]);
            foreach (var s in summaries)
            {
                Assert.Equal(Messages, Number(s, "messages"));
                Assert.Equal(1, Number(s, "vector1-interrupts"));
                Assert.True(Number(s, "bar2-reads") > 0 && Number(s, "bar2-writes") > 0, "BAR2 was accessed through the counted accessor");
            }

            Assert.Equal(Messages, Number(initiator, "vector0-interrupts"));
            Assert.Equal(Messages + 1, Number(initiator, "interrupts"));
            Assert.Equal(0, Number(initiator, "parked-interrupts"));
            Assert.Equal(Messages + 1 + ParkedRings + 1, Number(initiator, "doorbells"));
            Assert.Equal(Messages + 1, Number(responder, "vector0-interrupts"));
            Assert.Equal(Messages + 2, Number(responder, "interrupts"));
            Assert.Equal(ParkedRings, Number(responder, "parked-interrupts"));
            Assert.Equal(Messages + 1, Number(responder, "doorbells"));

            Assert.Equal(Number(initiator, "bytes-sent"), Number(responder, "bytes-received"));
            Assert.Equal(Number(responder, "bytes-sent"), Number(initiator, "bytes-received"));
            Assert.True(Number(initiator, "bytes-sent") > Messages, "messages of varying sizes up to 4096 bytes");
            var exchangeDone = clock.Elapsed;

            // What the guests wrote to BAR2 is in the emulated NTB's local memory.
            using (var port0 = device.OpenPort(0))
            using (var port1 = device.OpenPort(1))
            {
                Assert.True(port0.LocalMemory.Span.IndexOfAnyExcept((byte)0) >= 0 || port1.LocalMemory.Span.IndexOfAnyExcept((byte)0) >= 0,
                    "the guests' shared memory is hw-sim's local memory");
            }

            await Task.WhenAll(a.SendLineAsync("poweroff"), b.SendLineAsync("poweroff"));
            foreach (var vm in new[] { a, b })
            {
                Assert.True(await vm.WaitForExitAsync(ShutdownTimeout, budget.Token), $"{vm.Name} (pid {vm.Pid}) powers off");
                Assert.Equal(0, vm.ExitCode);
                var exit = await vm.WaitForMarkerAsync(GuestMarkers.Exit, TimeSpan.Zero);
                Assert.Equal("0", GuestMarkers.Fields(exit.From(GuestMarkers.Exit)!)["rc"]);
                Assert.False(ProcessExists(vm.Pid), $"QEMU pid {vm.Pid} is gone");
            }

            Assert.True(server.WaitForPeerCount(0, TimeSpan.FromSeconds(10)), "the server saw both guests leave");
            foreach (var (vm, r, verdict) in new[] { (a, ready[0], verdicts[0]), (b, ready[1], verdicts[1]) })
            {
                output.WriteLine(await TimesAsync(vm, r));
                output.WriteLine($"{vm.Name}: {verdict}");
            }

            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"times: NativeAOT publish {program.PublishDuration.TotalSeconds:0.0} s (fixture); test {clock.Elapsed.TotalSeconds:0.0} s = " +
                $"initramfs {setupDone.TotalSeconds:0.0} s + boots and exchange {(exchangeDone - setupDone).TotalSeconds:0.0} s + " +
                $"power-off {(clock.Elapsed - exchangeDone).TotalSeconds:0.0} s; exchange of {Messages} round trips " +
                $"{initiator["elapsed-ms"]} ms in the initiator ({initiator["per-message-us"]} µs each)"));
        }
        finally
        {
            // The guests were disposed (killed by pid if still running) when their scope ended,
            // the server too.
            work.Delete(recursive: true);
        }

        foreach (int pid in pids)
        {
            Assert.False(ProcessExists(pid), $"QEMU pid {pid} is gone after the guests were disposed");
        }
    }

    private static string ProgramOutput(GuestVm vm) =>
        $"{vm.Name} program output so far:\n  {string.Join("\n  ", VfioGuest.ProgramLines(vm))}";

    private static bool IsVerdict(string line) =>
        line.StartsWith("PINGPONG OK ", StringComparison.Ordinal) || line.StartsWith("PINGPONG FAIL", StringComparison.Ordinal);

    private static long Number(IReadOnlyDictionary<string, string> fields, string key) =>
        fields.TryGetValue(key, out string? text) ? long.Parse(text, CultureInfo.InvariantCulture) : throw new KeyNotFoundException($"summary has no {key}=");

    private static async Task<string> TimesAsync(GuestVm vm, VfioGuestReady ready)
    {
        var init = await vm.WaitForMarkerAsync(GuestMarkers.Init, TimeSpan.Zero);
        var verdict = await vm.WaitForMarkerAsync(VfioGuest.ProgramLinePrefix + "PINGPONG ", TimeSpan.Zero);
        var programExit = await vm.WaitForMarkerAsync(VfioGuest.ProgramExitMarker, TimeSpan.Zero);
        var exit = await vm.WaitForMarkerAsync(GuestMarkers.Exit, TimeSpan.Zero);
        return string.Create(CultureInfo.InvariantCulture,
            $"times {vm.Name} (since QEMU started): /init {init.At.TotalSeconds:0.00} s, vfio-pci bound {ready.At.TotalSeconds:0.00} s, " +
            $"verdict {verdict.At.TotalSeconds:0.00} s, program exit {programExit.At.TotalSeconds:0.00} s, powered off {exit.At.TotalSeconds:0.00} s; log {vm.LogPath}");
    }

    private static bool ProcessExists(int pid) => Directory.Exists($"/proc/{pid}");
}
