using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Xunit.Abstractions;
using Executable = PciVirtio.Integration.Tests.LinkProcessTests.Executable;
using HostProcess = PciVirtio.Integration.Tests.LinkProcessTests.HostProcess;

namespace PciVirtio.Integration.Tests;

/// <summary>A fact that needs root and util-linux's <c>unshare</c> (a PID namespace) and
/// <c>runuser</c> (another user).</summary>
public sealed class SystemdNotifyFactAttribute : FactAttribute
{
    public SystemdNotifyFactAttribute()
    {
        if (!Environment.IsPrivilegedProcess)
        {
            Skip = "needs root (a PID namespace for the daemon)";
        }
        else if (DaemonProcessTests.FindOnPath("unshare") is null || DaemonProcessTests.FindOnPath("runuser") is null)
        {
            Skip = "needs unshare and runuser (util-linux)";
        }
    }
}

/// <summary>
/// <c>Type=notify</c> without systemd: systemd hands a service the datagram socket of
/// <c>NOTIFY_SOCKET</c> and waits for <c>READY=1</c>. Hosting's systemd support speaks only
/// when it believes systemd started it, which it also believes of a process that is PID 1
/// with NOTIFY_SOCKET set (a service in a container), so the daemon runs as PID 1 of a PID
/// namespace of its own, and the test is systemd: it binds the socket and reads what comes.
/// </summary>
public sealed class DaemonSystemdTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    [SystemdNotifyFact(Timeout = 120_000)]
    public async Task Under_a_service_manager_the_daemon_says_ready_once_its_devices_are_up_and_stopping_on_sigterm()
    {
        var work = Directory.CreateTempSubdirectory("pcivirtio-notify-");
        HostProcess? daemon = null;
        try
        {
            string notify = Path.Combine(work.FullName, "notify.sock");
            using var manager = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
            manager.Bind(new UnixDomainSocketEndPoint(notify));
            var (a, b, control, config) = await WritePairConfigAsync(work.FullName);

            // unshare --fork waits for its child and exits with the child's status; the child
            // (env, which execs the daemon) is PID 1 of the new namespace.
            var pcivirtio = Executable.Pcivirtio.Value;
            var inNamespace = new Executable(DaemonProcessTests.FindOnPath("unshare")!,
                ["--pid", "--fork", "--kill-child", "env", $"NOTIFY_SOCKET={notify}", pcivirtio.Program, .. pcivirtio.Prefix]);
            daemon = HostProcess.Start(inNamespace, ["run", "--config", config], output.WriteLine);

            string ready = await ReceiveAsync(manager, "READY=1");
            output.WriteLine($"notify: {ready.ReplaceLineEndings(" ")}");

            // Ready means serving: both vhost-user sockets and the control socket are bound.
            Assert.True(File.Exists(a) && File.Exists(b), "READY=1 came before the vhost-user sockets were bound");
            Assert.True(File.Exists(control), "READY=1 came before the control socket was bound");

            int pid = DaemonPid(daemon.Pid);
            output.WriteLine($"daemon: pid {pid} (1 in its namespace)");
            Assert.Equal(0, LinkProcessNative.Kill(pid, LinkProcessNative.SIGTERM));
            string stopping = await ReceiveAsync(manager, "STOPPING=1");
            output.WriteLine($"notify: {stopping.ReplaceLineEndings(" ")}");
            Assert.True(await daemon.WaitForExitAsync(Timeout), "the daemon did not exit after SIGTERM");
            Assert.True(daemon.ExitCode == 0, $"exit code {daemon.ExitCode}:\n{string.Join('\n', daemon.Lines)}");
            Assert.False(File.Exists(a) || File.Exists(b) || File.Exists(control), "a socket file is left");
        }
        finally
        {
            daemon?.Dispose();
            work.Delete(recursive: true);
        }
    }

    [SystemdNotifyFact(Timeout = 120_000)]
    public async Task As_an_unprivileged_user_the_daemon_serves_vhost_user_from_a_directory_it_owns_and_says_plainly_that_a_tap_needs_cap_net_admin()
    {
        string runuser = DaemonProcessTests.FindOnPath("runuser")!;
        var work = Directory.CreateTempSubdirectory("pcivirtio-nobody-");
        HostProcess? daemon = null;
        try
        {
            // What a unit's RuntimeDirectory= gives the service user: a directory of its own.
            const string User = "nobody";
            Assert.Equal(0, (await HostProcess.RunAsync(new Executable("chown", []), [User, work.FullName], Timeout)).ExitCode);

            // The build output may sit below a directory only root can enter (/root): the
            // user runs a copy of it from the directory it owns.
            var pcivirtio = CopyProgram(Executable.Pcivirtio.Value, Path.Combine(work.FullName, "program"));
            var asUser = new Executable(runuser, ["-u", User, "--", pcivirtio.Program, .. pcivirtio.Prefix]);
            var probe = await HostProcess.RunAsync(asUser, ["--help"], Timeout);
            Assert.True(probe.ExitCode == 0, $"{User} cannot run the program: {probe.Output}");

            var (a, b, control, config) = await WritePairConfigAsync(work.FullName);
            daemon = HostProcess.Start(asUser, ["run", "--config", config], output.WriteLine);
            await daemon.WaitForLineAsync(l => l.Contains("Application started", StringComparison.Ordinal), Timeout);
            foreach (string socket in new[] { a, b, control })
            {
                var owner = await HostProcess.RunAsync(new Executable("stat", []), ["-c", "%U", socket], Timeout);
                Assert.Equal(User, owner.Output.Trim());
            }

            var stats = await HostProcess.RunAsync(asUser, ["stats", "--control", control, "--json"], Timeout);
            Assert.True(stats.ExitCode == 0, stats.Output);
            Assert.Contains("\"pair.1\"", stats.Output, StringComparison.Ordinal);
            // The daemon itself, not runuser: runuser answers a signal by ending its session.
            Assert.Equal(0, LinkProcessNative.Kill(DaemonPid(daemon.Pid), LinkProcessNative.SIGTERM));
            Assert.True(await daemon.WaitForExitAsync(Timeout), "the daemon did not exit after SIGTERM");
            Assert.True(daemon.ExitCode == 0, $"exit code {daemon.ExitCode}:\n{string.Join('\n', daemon.Lines)}");
            Assert.False(File.Exists(a) || File.Exists(b) || File.Exists(control), "a socket file is left");

            // A backend bridged to a new TAP needs CAP_NET_ADMIN, which this user lacks: the
            // start fails at once, exit 1, with the call and the errno.
            await File.WriteAllTextAsync(config, $$"""
                { "PciVirtio": { "ControlSocket": "{{control}}",
                  "Backends": [ { "Name": "vm", "Socket": "{{a}}", "Tap": "pvnobody{{Environment.ProcessId % 1000}}" } ] } }
                """);
            var refused = await HostProcess.RunAsync(asUser, ["run", "--config", config], Timeout);
            output.WriteLine(refused.Output);
            Assert.Equal(1, refused.ExitCode);
            Assert.Contains("backend vm", refused.Output, StringComparison.Ordinal);
            Assert.Contains("EPERM", refused.Output, StringComparison.Ordinal);
            Assert.Contains("needs CAP_NET_ADMIN", refused.Output, StringComparison.Ordinal);
            Assert.DoesNotContain("   at ", refused.Output, StringComparison.Ordinal); // one line, no stack trace
            Assert.False(File.Exists(a) || File.Exists(control), "a socket file is left after the refused start");
        }
        finally
        {
            daemon?.Dispose();
            work.Delete(recursive: true);
        }
    }

    /// <summary>A configuration in <paramref name="directory"/>: one port-to-port backend
    /// ("pair") on two sockets there, and the control socket there.</summary>
    private static async Task<(string A, string B, string Control, string Config)> WritePairConfigAsync(string directory)
    {
        string a = Path.Combine(directory, "a.sock");
        string b = Path.Combine(directory, "b.sock");
        string control = Path.Combine(directory, "control.sock");
        string config = Path.Combine(directory, "pcivirtio.json");
        await File.WriteAllTextAsync(config, $$"""
            { "PciVirtio": { "ControlSocket": "{{control}}",
              "Backends": [ { "Name": "pair", "Sockets": [ "{{a}}", "{{b}}" ] } ] } }
            """);
        return (a, b, control, config);
    }

    /// <summary>A copy of the program's build output in <paramref name="directory"/>, run the
    /// same way as <paramref name="program"/> (its last argument is the apphost or the dll).</summary>
    private static Executable CopyProgram(Executable program, string directory)
    {
        string entry = program.Prefix[^1];
        string source = Path.GetDirectoryName(entry)!;
        foreach (string file in Directory.EnumerateFiles(source, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(directory, Path.GetRelativePath(source, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }

        return program with { Prefix = [.. program.Prefix.SkipLast(1), Path.Combine(directory, Path.GetFileName(entry))] };
    }

    /// <summary>Datagrams until one holds <paramref name="line"/>; all of them.</summary>
    private static async Task<string> ReceiveAsync(Socket manager, string line)
    {
        var seen = new StringBuilder();
        var buffer = new byte[4096];
        using var limit = new CancellationTokenSource(Timeout);
        while (true)
        {
            int n;
            try
            {
                n = await manager.ReceiveAsync(buffer, SocketFlags.None, limit.Token);
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"no {line} within {Timeout.TotalSeconds:0} s; received: '{seen}'");
            }

            string message = Encoding.UTF8.GetString(buffer, 0, n);
            seen.Append(message).Append('|');
            if (message.Split('\n').Contains(line))
            {
                return seen.ToString();
            }
        }
    }

    /// <summary>The daemon's PID as we see it: the only child of the wrapper (unshare, runuser).</summary>
    private static int DaemonPid(int unsharePid)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < Timeout)
        {
            string children = File.ReadAllText($"/proc/{unsharePid}/task/{unsharePid}/children").Trim();
            if (children.Length > 0)
            {
                return int.Parse(children.Split(' ')[0], CultureInfo.InvariantCulture);
            }

            Thread.Sleep(20);
        }

        throw new TimeoutException($"unshare ({unsharePid}) started no child");
    }
}
