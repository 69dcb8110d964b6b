using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using PciVirtio.Tests.Shared;

namespace PciVirtio.Tests.Guest;

/// <summary>
/// A network namespace of its own for one test (needs root and iproute2): a unique name, the
/// interfaces moved into it (e.g. the TAP a backend created), commands run in it with
/// <c>ip netns exec</c>, and processes started in it that live until the namespace is disposed.
/// Disposing kills those processes (by pid) and deletes the namespace, also when the test failed;
/// namespaces still there when the test process exits are deleted then. Interfaces moved in go
/// with it (a TAP or veth is destroyed with its namespace).
/// </summary>
public sealed class NetNamespace : IDisposable, IAsyncDisposable
{
    /// <summary>Bound on each <c>ip</c> command this class runs.</summary>
    public static readonly TimeSpan IpTimeout = TimeSpan.FromSeconds(20);

    private static readonly ConcurrentDictionary<string, NetNamespace> Existing = new(StringComparer.Ordinal);

    private readonly Action<string>? _log;
    private readonly List<NetNamespaceProcess> _processes = [];
    private readonly object _gate = new();
    private bool _disposed;

    static NetNamespace()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var ns in Existing.Values)
            {
                ns.Dispose();
            }
        };
    }

    private NetNamespace(string name, Action<string>? log)
    {
        Name = name;
        _log = log;
    }

    /// <summary>The namespace's name (<c>ip netns list</c>), e.g. pcv-4242-1a2b3c.</summary>
    public string Name { get; }

    /// <summary>Creates a namespace named <paramref name="prefix"/>-PID-RANDOM with its loopback up.
    /// <paramref name="log"/> receives the commands run and the started processes' output.</summary>
    public static async Task<NetNamespace> CreateAsync(string prefix = "pcv", Action<string>? log = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(prefix);
        string name = string.Create(CultureInfo.InvariantCulture, $"{prefix}-{Environment.ProcessId}-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3))}");
        var ns = new NetNamespace(name, log);
        await ns.IpAsync(["netns", "add", name], cancellationToken).ConfigureAwait(false);
        Existing[name] = ns;
        try
        {
            await ns.IpAsync(["-n", name, "link", "set", "lo", "up"], cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await ns.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return ns;
    }

    /// <summary>Waits up to <paramref name="timeout"/> for the interface <paramref name="name"/> to
    /// appear in this process's namespace (a backend creates its TAP while it starts) and moves it
    /// into this namespace.</summary>
    public async Task MoveInterfaceAsync(string name, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        var clock = Stopwatch.StartNew();
        while (!Directory.Exists(Path.Combine("/sys/class/net", name)))
        {
            if (clock.Elapsed > timeout)
            {
                throw new TimeoutException($"no interface {name} appeared within {timeout.TotalSeconds:0} s");
            }

            await Task.Delay(50, cancellationToken).ConfigureAwait(false);
        }

        await IpAsync(["link", "set", name, "netns", Name], cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Adds <paramref name="address"/> (e.g. 10.1.2.1/24) to <paramref name="device"/>.</summary>
    public Task AddAddressAsync(string device, string address, CancellationToken cancellationToken = default) =>
        IpAsync(["-n", Name, "addr", "add", address, "dev", device], cancellationToken);

    /// <summary>Sets <paramref name="device"/> up.</summary>
    public Task SetUpAsync(string device, CancellationToken cancellationToken = default) =>
        IpAsync(["-n", Name, "link", "set", device, "up"], cancellationToken);

    /// <summary>Runs <paramref name="command"/> in the namespace (<c>ip netns exec</c>) and returns
    /// its exit code and output; kills it (by pid) and throws <see cref="TimeoutException"/> when
    /// it runs longer than <paramref name="timeout"/>.</summary>
    public Task<ScriptResult> RunAsync(IReadOnlyList<string> command, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(command);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return ExecAsync("ip", ["netns", "exec", Name, .. command], timeout, _log, cancellationToken);
    }

    /// <summary>Starts <paramref name="program"/> in the namespace; it runs until it exits, is
    /// killed, or the namespace is disposed (which kills it by pid). Its stdout and stderr lines
    /// go to <see cref="NetNamespaceProcess.Lines"/> and the log.</summary>
    public NetNamespaceProcess Start(string program, IEnumerable<string> arguments)
    {
        ArgumentException.ThrowIfNullOrEmpty(program);
        ArgumentNullException.ThrowIfNull(arguments);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            // ip netns exec enters the namespace and execs the program: the pid is the program's.
            var process = NetNamespaceProcess.Start("ip", ["netns", "exec", Name, program, .. arguments], _log);
            _processes.Add(process);
            return process;
        }
    }

    /// <summary>Kills the processes started here (by pid) and deletes the namespace.</summary>
    public void Dispose()
    {
        List<NetNamespaceProcess> processes;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            processes = [.. _processes];
        }

        foreach (var process in processes)
        {
            process.Dispose();
        }

        if (Existing.ContainsKey(Name))
        {
            try
            {
                var result = ExecAsync("ip", ["netns", "delete", Name], IpTimeout, _log, CancellationToken.None).GetAwaiter().GetResult();
                if (!result.Succeeded)
                {
                    Log($"could not delete network namespace {Name}: {result.Output}");
                }
            }
            catch (TimeoutException e)
            {
                Log($"could not delete network namespace {Name}: {e.Message}");
            }

            Existing.TryRemove(Name, out _);
        }
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>Runs a program with a time limit (killing it by pid when it passes).</summary>
    internal static async Task<ScriptResult> ExecAsync(string program, IReadOnlyList<string> arguments, TimeSpan timeout, Action<string>? log,
        CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        string command = string.Join(' ', start.ArgumentList.Prepend(program).Select(SessionProcess.Quote));
        SafeLog(log, $"$ {command}");
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {command}");
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var stderr = process.StandardError.ReadToEndAsync(CancellationToken.None);
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        limit.CancelAfter(timeout);
        try
        {
            await process.WaitForExitAsync(limit.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            KillPid(process);
            await process.WaitForExitAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10), CancellationToken.None).ConfigureAwait(false);
            string why = cancellationToken.IsCancellationRequested ? "was cancelled" : $"did not finish within {timeout.TotalSeconds:0} s";
            throw new TimeoutException($"{command} {why}; its output:\n{await stdout.ConfigureAwait(false)}{await stderr.ConfigureAwait(false)}");
        }

        string output = await stdout.ConfigureAwait(false) + await stderr.ConfigureAwait(false);
        if (output.Length > 0)
        {
            SafeLog(log, output.TrimEnd('\n'));
        }

        return new ScriptResult(command, process.ExitCode, output, clock.Elapsed);
    }

    internal static void KillPid(Process process)
    {
        try
        {
            if (!process.HasExited)
            {
                process.Kill(); // SIGKILL to that pid only: a process this class started
            }
        }
        catch (InvalidOperationException)
        {
            // exited meanwhile
        }
    }

    private async Task IpAsync(IReadOnlyList<string> arguments, CancellationToken cancellationToken)
    {
        var result = await ExecAsync("ip", arguments, IpTimeout, _log, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
        {
            throw new InvalidOperationException($"{result.Command} failed (exit code {result.ExitCode}): {result.Output.Trim()}");
        }
    }

    internal static void SafeLog(Action<string>? log, string text)
    {
        try
        {
            log?.Invoke(text);
        }
        catch (InvalidOperationException)
        {
            // the test that owned the output has finished
        }
    }

    private void Log(string text) => SafeLog(_log, text);
}

/// <summary>A process started in a <see cref="NetNamespace"/> (see
/// <see cref="NetNamespace.Start"/>): its output lines, bounded waits, kill by pid.</summary>
public sealed class NetNamespaceProcess : IDisposable
{
    private readonly Process _process;
    private readonly Action<string>? _log;
    private readonly List<string> _lines = [];
    private readonly object _gate = new();
    private readonly Task _stdout;
    private readonly Task _stderr;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private bool _disposed;

    private NetNamespaceProcess(Process process, string commandLine, Action<string>? log)
    {
        _process = process;
        _log = log;
        CommandLine = commandLine;
        Pid = process.Id;
        _stdout = Task.Run(() => ReadAsync(process.StandardOutput));
        _stderr = Task.Run(() => ReadAsync(process.StandardError));
    }

    public int Pid { get; }

    public string CommandLine { get; }

    public bool HasExited => _process.HasExited;

    public int? ExitCode => _process.HasExited ? _process.ExitCode : null;

    /// <summary>The stdout and stderr lines so far, as they came.</summary>
    public IReadOnlyList<string> Lines
    {
        get
        {
            lock (_gate)
            {
                return [.. _lines];
            }
        }
    }

    /// <summary>Waits for an output line that <paramref name="match"/> accepts; throws
    /// <see cref="TimeoutException"/> after <paramref name="timeout"/> and
    /// <see cref="InvalidOperationException"/> when the process ends first.</summary>
    public async Task<string> WaitForLineAsync(Func<string, bool> match, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(match);
        var clock = Stopwatch.StartNew();
        int index = 0;
        while (true)
        {
            Task changed;
            bool ended;
            lock (_gate)
            {
                // Read before the scan: a reader adds its last line before it completes.
                ended = _stdout.IsCompleted && _stderr.IsCompleted;
                for (; index < _lines.Count; index++)
                {
                    if (match(_lines[index]))
                    {
                        return _lines[index];
                    }
                }

                changed = _changed.Task;
            }

            if (ended)
            {
                throw new InvalidOperationException($"{CommandLine} (pid {Pid}) ended before the awaited line; its output:\n{string.Join('\n', Lines)}");
            }

            var left = timeout - clock.Elapsed;
            if (left <= TimeSpan.Zero)
            {
                throw new TimeoutException($"{CommandLine} (pid {Pid}) printed no awaited line within {timeout.TotalSeconds:0} s; its output:\n{string.Join('\n', Lines)}");
            }

            try
            {
                await changed.WaitAsync(left, cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                // checked at the top once more
            }
        }
    }

    /// <summary>Waits for the process to exit; false when it still runs after <paramref name="timeout"/>.</summary>
    public async Task<bool> WaitForExitAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        try
        {
            await _process.WaitForExitAsync(cancellationToken).WaitAsync(timeout, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            return false;
        }

        await Task.WhenAll(_stdout, _stderr).WaitAsync(TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
        return true;
    }

    /// <summary>SIGKILL to the pid, if it still runs.</summary>
    public void Kill() => NetNamespace.KillPid(_process);

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        Kill();
        _process.WaitForExit(10_000);
        Task.WhenAll(_stdout, _stderr).Wait(TimeSpan.FromSeconds(10));
        _process.Dispose();
    }

    internal static NetNamespaceProcess Start(string program, IReadOnlyList<string> arguments, Action<string>? log)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        string commandLine = string.Join(' ', start.ArgumentList.Prepend(program).Select(SessionProcess.Quote));
        NetNamespace.SafeLog(log, $"$ {commandLine} &");
        var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {commandLine}");
        process.StandardInput.Close();
        NetNamespace.SafeLog(log, $"  pid {process.Id}");
        return new NetNamespaceProcess(process, commandLine, log);
    }

    private async Task ReadAsync(StreamReader reader)
    {
        try
        {
            while (await reader.ReadLineAsync().ConfigureAwait(false) is { } line)
            {
                TaskCompletionSource changed;
                lock (_gate)
                {
                    _lines.Add(line);
                    changed = _changed;
                    _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                }

                changed.TrySetResult();
                NetNamespace.SafeLog(_log, $"[pid {Pid}] {line}");
            }
        }
        catch (ObjectDisposedException)
        {
            // disposed
        }
        finally
        {
            TaskCompletionSource changed;
            lock (_gate)
            {
                changed = _changed;
            }

            changed.TrySetResult();
        }
    }
}
