using PciVirtio.Tests.Guest;
using Xunit.Abstractions;

namespace PciVirtio.Integration.Tests;

/// <summary>The guest harness itself: a guest that never prints what the test waits for fails
/// the wait in time, with its console in the message, and is killed by pid on dispose.</summary>
public sealed class GuestVmTests(ITestOutputHelper output)
{
    [Fact(Timeout = 180_000)]
    public async Task A_guest_that_never_reaches_the_marker_times_out_and_is_killed_on_dispose()
    {
        var environment = GuestEnvironment.Get();
        var work = Directory.CreateTempSubdirectory("pcivirtio-guestvm-");
        try
        {
            string script = Path.Combine(work.FullName, "hang.sh");
            await File.WriteAllTextAsync(script, "echo hanging now\nwhile true; do sleep 1; done\n");
            string initramfs = await environment.BuildInitramfsAsync(script, [], Path.Combine(work.FullName, "hang.cpio"));

            int pid;
            string log;
            using (var vm = GuestVm.Start(environment, new GuestVmOptions { Name = "hang", Initramfs = initramfs }, output.WriteLine))
            {
                pid = vm.Pid;
                log = vm.LogPath;
                await vm.WaitForMarkerAsync("hanging now", TimeSpan.FromMinutes(2));
                var timeout = await Assert.ThrowsAsync<TimeoutException>(
                    () => vm.WaitForMarkerAsync("never printed", TimeSpan.FromSeconds(2)));
                Assert.Contains("hanging now", timeout.Message, StringComparison.Ordinal);
                Assert.Contains(vm.LogPath, timeout.Message, StringComparison.Ordinal);
                Assert.False(vm.HasExited);
            }

            Assert.False(Directory.Exists($"/proc/{pid}"), $"QEMU pid {pid} was killed");
            Assert.Contains("# killed by the host", await File.ReadAllTextAsync(log), StringComparison.Ordinal);
        }
        finally
        {
            work.Delete(recursive: true);
        }
    }
}
