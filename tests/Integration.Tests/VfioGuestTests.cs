using System.Globalization;
using System.Text.RegularExpressions;
using PciVirtio.HwSim.Ivshmem;
using PciVirtio.Tests.Guest;
using Xunit.Abstractions;

namespace PciVirtio.Integration.Tests;

/// <summary>
/// Two QEMU guests (TCG, q35 + intel-iommu) share one ivshmem-doorbell device through our
/// <see cref="IvshmemServer"/>, and each binds its device to vfio-pci. This is the ground the
/// VFIO tests stand on: the guest program hook (<see cref="GuestProgram"/>, see
/// <see cref="VfioGuest"/>) runs here with a stand-in program; <see cref="VfioPingPongTests"/>
/// runs the NativeAOT build using Vfio.Net (tests/VfioPingPong) on the same ground.
/// </summary>
public sealed partial class VfioGuestTests(ITestOutputHelper output)
{
    /// <summary>The whole test, both boots included; xunit's Timeout is the backstop.</summary>
    private static readonly TimeSpan Budget = TimeSpan.FromMinutes(4);

    /// <summary>Both guests boot at once on 2 cores under TCG, next to other builds.</summary>
    private static readonly TimeSpan BootTimeout = TimeSpan.FromMinutes(2);

    private static readonly TimeSpan ShutdownTimeout = TimeSpan.FromSeconds(60);

    [Fact(Timeout = 300_000)]
    public async Task Two_guests_on_one_ivshmem_server_bind_their_device_to_vfio_pci()
    {
        using var budget = new CancellationTokenSource(Budget);
        var environment = GuestEnvironment.Get();
        output.WriteLine($"guest kernel {environment.KernelPackage} ({environment.Kernel}); prepare.sh took {environment.PrepareResult.Duration.TotalSeconds:0.0} s");

        var work = Directory.CreateTempSubdirectory("pcivirtio-vfio-");
        try
        {
            string socket = Path.Combine(work.FullName, "ivshmem.sock");
            using var server = new IvshmemServer(socket, sharedMemorySize: 1 << 20, vectors: 2, maxPeers: 2);

            // Stand-in for the Vfio.Net guest program: coreutils' env (a dynamically linked host
            // program, so its glibc travels too) runs the guest's shell with an argument holding
            // a space, and reports what the hook hands a program.
            var program = new GuestProgram("/usr/bin/env",
            [
                "PCIVIRTIO_ARG=two words", "/bin/sh", "-c",
                "echo \"group=$VFIO_GROUP bdf=$VFIO_BDF id=$IVSHMEM_ID arg=$PCIVIRTIO_ARG\"; echo to-stderr >&2",
            ]);
            string initramfs = await VfioGuest.BuildInitramfsAsync(environment, Path.Combine(work.FullName, "vfio-guest.cpio"), program,
                cancellationToken: budget.Token);

            await using var a = GuestVm.Start(environment, VfioGuest.Options("vfio-a", initramfs, socket), output.WriteLine);
            await using var b = GuestVm.Start(environment, VfioGuest.Options("vfio-b", initramfs, socket), output.WriteLine);
            output.WriteLine($"QEMU pids: vfio-a {a.Pid}, vfio-b {b.Pid}");

            var ready = await Task.WhenAll(
                VfioGuest.WaitForReadyAsync(a, BootTimeout, budget.Token),
                VfioGuest.WaitForReadyAsync(b, BootTimeout, budget.Token));
            foreach (var r in ready)
            {
                Assert.Matches(VfioGroup(), r.Group);
                Assert.Matches(PciAddress(), r.Bdf);
            }

            // Each guest's device sees the id our server gave it.
            Assert.Equal([0, 1], server.PeerIds);
            Assert.Equal([0, 1], ready.Select(r => r.IvPosition ?? -1).Order());

            // The program hook: arguments, environment, stdout and stderr, exit status.
            foreach (var (vm, r) in new[] { (a, ready[0]), (b, ready[1]) })
            {
                Assert.Equal(0, await VfioGuest.WaitForProgramExitAsync(vm, ShutdownTimeout, budget.Token));
                var lines = VfioGuest.ProgramLines(vm);
                Assert.Contains($"group={r.Group} bdf={r.Bdf} id={r.IvPosition} arg=two words", lines);
                Assert.Contains("to-stderr", lines);
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
            foreach (var vm in new[] { a, b })
            {
                output.WriteLine(await BootTimesAsync(vm));
            }
        }
        finally
        {
            work.Delete(recursive: true);
        }
    }

    private static async Task<string> BootTimesAsync(GuestVm vm)
    {
        var init = await vm.WaitForMarkerAsync(GuestMarkers.Init, TimeSpan.Zero);
        var ready = await vm.WaitForMarkerAsync(VfioGuest.ReadyMarker, TimeSpan.Zero);
        var exit = await vm.WaitForMarkerAsync(GuestMarkers.Exit, TimeSpan.Zero);
        string Uptime(GuestLine line, string marker) => GuestMarkers.Fields(line.From(marker)!)["uptime"];
        return string.Create(CultureInfo.InvariantCulture,
            $"boot times {vm.Name}: /init at {init.At.TotalSeconds:0.00} s after QEMU started (guest uptime {Uptime(init, GuestMarkers.Init)} s), " +
            $"vfio-pci bound at {ready.At.TotalSeconds:0.00} s (uptime {Uptime(ready, VfioGuest.ReadyMarker)} s), " +
            $"powered off at {exit.At.TotalSeconds:0.00} s; log {vm.LogPath}");
    }

    private static bool ProcessExists(int pid) => Directory.Exists($"/proc/{pid}");

    [GeneratedRegex(@"^/dev/vfio/[0-9]+$")]
    private static partial Regex VfioGroup();

    [GeneratedRegex(@"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")]
    private static partial Regex PciAddress();
}
