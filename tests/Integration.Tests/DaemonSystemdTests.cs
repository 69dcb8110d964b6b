using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Xunit.Abstractions;
using Executable = PciVirtio.Integration.Tests.LinkProcessTests.Executable;
using HostProcess = PciVirtio.Integration.Tests.LinkProcessTests.HostProcess;

namespace PciVirtio.Integration.Tests;

/// <summary>A fact that needs root and util-linux's <c>unshare</c> (a PID namespace).</summary>
public sealed class SystemdNotifyFactAttribute : FactAttribute
{
    public SystemdNotifyFactAttribute()
    {
        if (!Environment.IsPrivilegedProcess)
        {
            Skip = "needs root (a PID namespace for the daemon)";
        }
        else if (DaemonProcessTests.FindOnPath("unshare") is null)
        {
            Skip = "needs unshare (util-linux)";
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
            string a = Path.Combine(work.FullName, "a.sock");
            string b = Path.Combine(work.FullName, "b.sock");
            string control = Path.Combine(work.FullName, "control.sock");
            string config = Path.Combine(work.FullName, "pcivirtio.json");
            await File.WriteAllTextAsync(config, $$"""
                { "PciVirtio": { "ControlSocket": "{{control}}",
                  "Backends": [ { "Name": "pair", "Sockets": [ "{{a}}", "{{b}}" ] } ] } }
                """);

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

    /// <summary>The daemon's PID as we see it: the only child of unshare.</summary>
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
