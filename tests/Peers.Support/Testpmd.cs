using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using PciVirtio.Tests.Shared;

namespace PciVirtio.Tests.Peers;

/// <summary>One line of testpmd's output: its number since start-up, when it arrived, its text.</summary>
public sealed record TestpmdLine(long Index, TimeSpan At, string Text);

/// <summary>
/// A running dpdk-testpmd in interactive mode (<c>-i</c>), driven through its stdin. EAL runs
/// without hugepages or PCI (<c>--no-huge -m 512 --no-pci</c>) under a file prefix of its own;
/// its output (stdout and stderr, unbuffered through stdbuf) is read as it comes, kept in a
/// bounded log (<see cref="Lines"/>) and passed to a callback (the test output). A command is
/// written when testpmd shows its prompt, and its output is what arrives until the next prompt.
/// Every wait is bounded. Disposing kills the process by its pid when it still runs — also when
/// the test failed — and removes its EAL runtime directory; processes still running when the test
/// process exits are killed then.
/// </summary>
public sealed partial class Testpmd : IAsyncDisposable
{
    /// <summary>testpmd's prompt (no newline after it).</summary>
    public const string Prompt = "testpmd> ";

    private static readonly ConcurrentDictionary<int, Testpmd> Running = new();
    private static int _instances;

    private readonly TestpmdOptions _options;
    private readonly Process _process;
    private readonly Stopwatch _clock;
    private readonly Action<string>? _sink;
    private readonly object _gate = new();
    private readonly Queue<TestpmdLine> _lines = new();
    private readonly SemaphoreSlim _commandGate = new(1, 1);
    private readonly Task _stdoutReader;
    private readonly Task _stderrReader;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _lineCount;
    private int _prompts;
    private int _commandsSent;
    private string? _pendingEcho;
    private StringBuilder? _response;
    private string? _lastResponse;
    private string? _fatalLine;
    private bool _stdoutClosed;
    private bool _quitting;
    private int _disposed;

    static Testpmd()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var testpmd in Running.Values)
            {
                testpmd.TryKill();
                testpmd.RemoveRuntimeDirectory();
            }
        };
    }

    private Testpmd(TestpmdOptions options, Process process, Stopwatch clock, string filePrefix, string commandLine, Action<string>? sink)
    {
        _options = options;
        _process = process;
        _clock = clock;
        _sink = sink;
        Name = options.Name;
        FilePrefix = filePrefix;
        RuntimeDirectory = Path.Combine(RuntimeRoot(), filePrefix);
        CommandLine = commandLine;
        Pid = process.Id;
        _stdoutReader = Task.Run(() => ReadAsync(process.StandardOutput.BaseStream, isStdout: true));
        _stderrReader = Task.Run(() => ReadAsync(process.StandardError.BaseStream, isStdout: false));
    }

    public string Name { get; }

    /// <summary>testpmd's process id (the harness starts it through sh and stdbuf, which both exec).</summary>
    public int Pid { get; }

    /// <summary>EAL's <c>--file-prefix</c>, unique per instance.</summary>
    public string FilePrefix { get; }

    /// <summary>EAL's runtime directory (/var/run/dpdk/PREFIX as root), removed on dispose.</summary>
    public string RuntimeDirectory { get; }

    /// <summary>The testpmd command, quoted for a shell.</summary>
    public string CommandLine { get; }

    /// <summary>Time since the process was started.</summary>
    public TimeSpan Elapsed => _clock.Elapsed;

    /// <summary>How long start-up took until the first prompt; null before it.</summary>
    public TimeSpan? StartupTime { get; private set; }

    public bool HasExited => _process.HasExited;

    /// <summary>The exit code once it exited: 0 after <c>quit</c>; 141 (SIGPIPE) when a virtio-user
    /// port's backend had gone away, as closing the port then writes to the dead socket; 137 when killed.</summary>
    public int? ExitCode => _process.HasExited ? _process.ExitCode : null;

    /// <summary>The output lines kept so far (at most <see cref="TestpmdOptions.LogCapacity"/>);
    /// stderr lines start with "[stderr] ", commands appear as "testpmd> COMMAND".</summary>
    public IReadOnlyList<TestpmdLine> Lines
    {
        get
        {
            lock (_gate)
            {
                return [.. _lines];
            }
        }
    }

    /// <summary>The number of output lines so far (also those no longer kept).</summary>
    public long LineCount
    {
        get
        {
            lock (_gate)
            {
                return _lineCount;
            }
        }
    }

    /// <summary>
    /// Starts testpmd and waits (up to <see cref="TestpmdOptions.StartTimeout"/>) for its first
    /// prompt. Throws <see cref="TestpmdException"/>, with the last output lines, when it exits
    /// first, reports an EAL error, a device that failed to probe or "No probed ethernet devices",
    /// or a port that failed to configure or start; the process is killed and cleaned up then.
    /// Output lines go to <paramref name="log"/> too (e.g. ITestOutputHelper.WriteLine).
    /// </summary>
    public static async Task<Testpmd> StartAsync(TestpmdOptions options, Action<string>? log = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Executable is null)
        {
            _ = await TestpmdInstallation.EnsureInstalledAsync(log, cancellationToken).ConfigureAwait(false);
        }

        var testpmd = Launch(options, log);
        try
        {
            await testpmd.WaitUntilReadyAsync(options.StartTimeout, cancellationToken).ConfigureAwait(false);
            return testpmd;
        }
        catch
        {
            await testpmd.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Starts testpmd and returns at once, before its prompt: for a virtio-user port in server
    /// mode, which blocks start-up until a backend connects. Follow with
    /// <see cref="WaitUntilReadyAsync"/>; <see cref="WaitForLineAsync"/> can wait for
    /// "waiting for client connection" first. Dispose the result in any case.
    /// </summary>
    public static Testpmd Launch(TestpmdOptions options, Action<string>? log = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        string executable = options.Executable
            ?? TestpmdInstallation.FindExecutable()
            ?? throw new TestpmdException($"{TestpmdInstallation.ExecutableName} is not installed (Debian package {TestpmdInstallation.DebianPackage})");
        string prefix = MakeFilePrefix(options.Name);

        // sh joins stderr to stdout, so the two stay in order; stdbuf -o0 makes testpmd's stdio
        // unbuffered (into a pipe it would be block-buffered: a command's output would arrive
        // after the next prompt, or at exit). Both exec, so the pid is testpmd's.
        var start = new ProcessStartInfo("/bin/sh")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardInputEncoding = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false),
        };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add("exec stdbuf -o0 -e0 \"$@\" 2>&1");
        start.ArgumentList.Add("testpmd-harness");
        var command = new List<string> { executable };
        command.AddRange(CoreArguments(options.Cores));
        command.AddRange(["--no-huge", "-m", Text(options.MemoryMiB), "--no-pci", "--file-prefix", prefix]);
        foreach (string vdev in options.Vdevs)
        {
            command.Add("--vdev");
            command.Add(vdev);
        }

        command.AddRange(options.EalArguments);
        command.Add("--");
        command.Add("-i");
        command.Add($"--total-num-mbufs={Text(options.TotalMbufs)}");
        AddIf(command, "--rxq", options.RxQueues);
        AddIf(command, "--txq", options.TxQueues);
        AddIf(command, "--rxd", options.RxDescriptors);
        AddIf(command, "--txd", options.TxDescriptors);
        if (options.ForwardMode is not null)
        {
            command.Add($"--forward-mode={options.ForwardMode}");
        }

        command.AddRange(options.AppArguments);
        foreach (string argument in command)
        {
            start.ArgumentList.Add(argument);
        }

        string commandLine = string.Join(' ', command.Select(SessionProcess.Quote));
        var process = new Process { StartInfo = start };
        var clock = Stopwatch.StartNew();
        try
        {
            process.Start();
        }
        catch
        {
            process.Dispose();
            throw;
        }

        var testpmd = new Testpmd(options, process, clock, prefix, commandLine, log);
        Running[testpmd.Pid] = testpmd;
        testpmd.Emit($"# pid {testpmd.Pid}: {commandLine}", addToLog: true);
        return testpmd;
    }

    /// <summary>Waits for the first prompt; throws as <see cref="StartAsync"/> describes (without
    /// killing: dispose does).</summary>
    public async Task WaitUntilReadyAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        var deadline = _clock.Elapsed + timeout;
        try
        {
            await WaitUntilAsync(() => _prompts > 0 || _fatalLine is not null, deadline, "its first prompt", cancellationToken).ConfigureAwait(false);
        }
        catch (TestpmdException) when (_process.HasExited || _stdoutClosed)
        {
            throw new TestpmdException(StartFailure(null));
        }

        string? fatal;
        lock (_gate)
        {
            fatal = _fatalLine;
        }

        if (fatal is not null)
        {
            // Let the rest of the output arrive: EAL prints its cause on the next line and exits;
            // without ports testpmd goes on to its prompt.
            try
            {
                await WaitUntilAsync(() => _prompts > 0, _clock.Elapsed + TimeSpan.FromSeconds(2), "the prompt", cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is TimeoutException or TestpmdException)
            {
                // it exited, or printed no prompt: the message says what there is
            }

            throw new TestpmdException(StartFailure(fatal));
        }

        StartupTime ??= _clock.Elapsed;
    }

    /// <summary>
    /// Sends one command line when testpmd shows its prompt and returns what it printed until
    /// the next prompt (without the echoed command). Lines that other threads print meanwhile
    /// (link events, vhost messages) are part of it. Commands run one at a time. Throws
    /// <see cref="TimeoutException"/> after <paramref name="timeout"/> (default
    /// <see cref="TestpmdOptions.CommandTimeout"/>) and <see cref="TestpmdException"/> when testpmd exits.
    /// </summary>
    public async Task<string> SendCommandAsync(string command, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(command);
        if (command.Contains('\n', StringComparison.Ordinal) || command.Contains('\r', StringComparison.Ordinal))
        {
            throw new ArgumentException("one command line at a time", nameof(command));
        }

        var limit = timeout ?? _options.CommandTimeout;
        var deadline = _clock.Elapsed + limit;
        if (!await _commandGate.WaitAsync(limit, cancellationToken).ConfigureAwait(false))
        {
            throw new TimeoutException($"{Name}: \"{command}\" waited {limit.TotalSeconds:0.#} s for the previous command:\n{Tail()}");
        }

        try
        {
            await WaitUntilAsync(() => _prompts > _commandsSent, deadline, $"the prompt for \"{command}\"", cancellationToken).ConfigureAwait(false);
            int target;
            lock (_gate)
            {
                _commandsSent++;
                target = _commandsSent + 1;
                _pendingEcho = command;
                _response = new StringBuilder();
                _lastResponse = null;
            }

            await WriteInputAsync(command).ConfigureAwait(false);
            await WaitUntilAsync(() => _prompts >= target, deadline, $"the prompt after \"{command}\"", cancellationToken).ConfigureAwait(false);
            lock (_gate)
            {
                return _lastResponse ?? string.Empty;
            }
        }
        finally
        {
            _commandGate.Release();
        }
    }

    /// <summary><c>set fwd MODE</c> (io, txonly, rxonly, macswap, ...); checks testpmd took it.</summary>
    public async Task SetForwardModeAsync(string mode, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(mode);
        string output = await SendCommandAsync($"set fwd {mode}", cancellationToken: cancellationToken).ConfigureAwait(false);
        if (!output.Contains($"Set {mode} packet forwarding mode", StringComparison.Ordinal))
        {
            throw new TestpmdException($"{Name}: set fwd {mode} was refused:\n{output}");
        }
    }

    /// <summary>
    /// <c>set txpkts LEN[,LEN...]</c>: the length of the packets txonly sends (one segment each
    /// unless more lengths are given); checked with <c>show config txpkts</c>. Packets are at
    /// least 42 bytes (the Ethernet, IPv4 and UDP headers txonly writes).
    /// </summary>
    public async Task SetTxPacketLengthAsync(params int[] segmentLengths)
    {
        ArgumentNullException.ThrowIfNull(segmentLengths);
        if (segmentLengths.Length == 0 || segmentLengths.Any(length => length <= 0))
        {
            throw new ArgumentException("one or more positive segment lengths", nameof(segmentLengths));
        }

        string list = string.Join(',', segmentLengths.Select(Text));
        string output = await SendCommandAsync($"set txpkts {list}").ConfigureAwait(false);
        string config = await SendCommandAsync("show config txpkts").ConfigureAwait(false);
        var sizes = SegmentSizes().Match(config);
        if (!sizes.Success || !string.Equals(string.Join(',', sizes.Groups[1].Value.Split(' ', StringSplitOptions.RemoveEmptyEntries)), list, StringComparison.Ordinal))
        {
            throw new TestpmdException($"{Name}: set txpkts {list} did not take:\n{output}\n{config}");
        }
    }

    /// <summary><c>start</c> (or <c>start tx_first</c>, which first sends one burst on every port,
    /// to prime a loop); checks that forwarding started.</summary>
    public async Task<string> StartForwardingAsync(bool txFirst = false, CancellationToken cancellationToken = default)
    {
        string output = await SendCommandAsync(txFirst ? "start tx_first" : "start", cancellationToken: cancellationToken).ConfigureAwait(false);
        if (!output.Contains("packet forwarding - ports=", StringComparison.Ordinal))
        {
            throw new TestpmdException($"{Name}: forwarding did not start:\n{output}");
        }

        return output;
    }

    /// <summary><c>stop</c>: stops forwarding and returns testpmd's forward statistics (its
    /// per-stream counts; the port counters stay for <see cref="GetPortStatsAsync"/>).</summary>
    public async Task<string> StopForwardingAsync(CancellationToken cancellationToken = default)
    {
        string output = await SendCommandAsync("stop", cancellationToken: cancellationToken).ConfigureAwait(false);
        if (!output.Contains("Done.", StringComparison.Ordinal) && !output.Contains("Packet forwarding not started", StringComparison.Ordinal))
        {
            throw new TestpmdException($"{Name}: stop did not finish:\n{output}");
        }

        return output;
    }

    /// <summary><c>show port stats N</c>, parsed.</summary>
    public async Task<PortStats> GetPortStatsAsync(int port, CancellationToken cancellationToken = default)
    {
        string output = await SendCommandAsync($"show port stats {Text(port)}", cancellationToken: cancellationToken).ConfigureAwait(false);
        ThrowIfInvalidPort(port, output);
        return PortStats.Parse(port, output);
    }

    /// <summary><c>clear port stats N</c>: the port counters start again from zero.</summary>
    public async Task ClearPortStatsAsync(int port, CancellationToken cancellationToken = default)
    {
        string output = await SendCommandAsync($"clear port stats {Text(port)}", cancellationToken: cancellationToken).ConfigureAwait(false);
        ThrowIfInvalidPort(port, output);
    }

    /// <summary><c>show port info N</c>, parsed (link status, queues, driver, ...).</summary>
    public async Task<PortInfo> GetPortInfoAsync(int port, CancellationToken cancellationToken = default)
    {
        string output = await SendCommandAsync($"show port info {Text(port)}", cancellationToken: cancellationToken).ConfigureAwait(false);
        ThrowIfInvalidPort(port, output);
        return PortInfo.Parse(port, output);
    }

    /// <summary>Whether port N's link is up now.</summary>
    public async Task<bool> IsLinkUpAsync(int port, CancellationToken cancellationToken = default) =>
        (await GetPortInfoAsync(port, cancellationToken).ConfigureAwait(false)).LinkUp;

    /// <summary>
    /// Polls <c>show port info N</c> (every 100 ms) until the link is <paramref name="up"/>, and
    /// returns that info. Throws <see cref="TimeoutException"/> after <paramref name="timeout"/>.
    /// </summary>
    public async Task<PortInfo> WaitForLinkAsync(int port, bool up, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        var deadline = _clock.Elapsed + timeout;
        while (true)
        {
            var left = deadline - _clock.Elapsed;
            var info = await GetPortInfoAsync(port, cancellationToken).ConfigureAwait(false);
            if (info.LinkUp == up)
            {
                return info;
            }

            if (_clock.Elapsed >= deadline)
            {
                throw new TimeoutException($"{Name}: port {port} link still {info.LinkStatus} after {timeout.TotalSeconds:0.#} s:\n{Tail()}");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(100, Math.Max(1, left.TotalMilliseconds))), cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Waits for an output line (from line number <paramref name="fromIndex"/> on, among those
    /// still kept) that <paramref name="match"/> accepts. Throws <see cref="TimeoutException"/>
    /// after <paramref name="timeout"/> and <see cref="TestpmdException"/> when the output ends first.
    /// </summary>
    public async Task<TestpmdLine> WaitForLineAsync(Func<string, bool> match, TimeSpan timeout, long fromIndex = 0,
        string? description = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(match);
        TestpmdLine? found = null;
        await WaitUntilAsync(() =>
        {
            found = _lines.FirstOrDefault(line => line.Index >= fromIndex && match(line.Text));
            return found is not null;
        }, _clock.Elapsed + timeout, description ?? "a matching line", cancellationToken).ConfigureAwait(false);
        return found!;
    }

    /// <summary>
    /// <c>quit</c> (it stops forwarding and closes the ports), then waits for the exit; returns the
    /// exit code (see <see cref="ExitCode"/>). Throws <see cref="TimeoutException"/> when testpmd
    /// still runs after <paramref name="timeout"/> (dispose kills it).
    /// </summary>
    public async Task<int> QuitAsync(TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        var limit = timeout ?? TimeSpan.FromSeconds(20);
        if (!_process.HasExited)
        {
            lock (_gate)
            {
                _quitting = true;
                _pendingEcho = "quit";
            }

            try
            {
                await WriteInputAsync("quit").ConfigureAwait(false);
            }
            catch (IOException)
            {
                // it exited meanwhile
            }
        }

        if (!await WaitForExitQuietlyAsync(limit, cancellationToken).ConfigureAwait(false))
        {
            throw new TimeoutException($"{Name}: testpmd (pid {Pid}) still runs {limit.TotalSeconds:0.#} s after quit:\n{Tail()}");
        }

        Emit($"# exit code {ExitCodeText()} after {_clock.Elapsed.TotalSeconds:0.00} s", addToLog: true);
        return _process.ExitCode;
    }

    /// <summary>Waits for the process to exit and its output to end; false after <paramref name="timeout"/>.</summary>
    public async Task<bool> WaitForExitAsync(TimeSpan timeout, CancellationToken cancellationToken = default) =>
        await WaitForExitQuietlyAsync(timeout, cancellationToken).ConfigureAwait(false);

    /// <summary>Kills testpmd (SIGKILL to its pid) if it still runs.</summary>
    public void Kill()
    {
        if (TryKill())
        {
            Emit($"# killed by the harness (SIGKILL to pid {Pid})", addToLog: true);
        }
    }

    /// <summary>Kills testpmd if it still runs, waits for it (10 s at most) and removes its runtime
    /// directory. Throws <see cref="TestpmdException"/> if it survives SIGKILL.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        Kill();
        bool exited = await WaitForExitQuietlyAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        RemoveRuntimeDirectory();
        Running.TryRemove(Pid, out _);
        if (!exited)
        {
            throw new TestpmdException($"{Name}: testpmd (pid {Pid}) did not exit after SIGKILL");
        }

        // Process.Dispose leaves streams that were used open until they are collected: close
        // the pipes now, so a test counting descriptors sees none of ours.
        try
        {
            await _stdoutReader.WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        }
        catch (Exception e) when (e is TimeoutException or IOException or ObjectDisposedException)
        {
            // the reader ends with the pipe anyway
        }

        _process.StandardInput.Dispose();
        _process.StandardOutput.Dispose();
        _process.StandardError.Dispose();
        _process.Dispose();
        _commandGate.Dispose();
    }

    /// <summary>The last <paramref name="count"/> output lines, one per line, with their times.</summary>
    public string Tail(int count = 40)
    {
        lock (_gate)
        {
            return string.Join('\n', _lines.Skip(Math.Max(0, _lines.Count - count)).Select(l => $"  +{l.At.TotalSeconds,7:0.000} {l.Text}"));
        }
    }

    /// <summary>The EAL lcore arguments: <c>-l LIST</c>, or for one CPU two lcores on it.</summary>
    internal static IReadOnlyList<string> CoreArguments(string cores)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(cores);
        return int.TryParse(cores, NumberStyles.None, CultureInfo.InvariantCulture, out int cpu)
            ? ["--lcores", $"(0-1)@{Text(cpu)}"]
            : ["-l", cores];
    }

    private static string MakeFilePrefix(string name)
    {
        // The prefix names a directory and is part of unix socket paths (mp_socket): keep it short.
        string cleaned = new([.. name.Where(char.IsAsciiLetterOrDigit).Take(12)]);
        int serial = Interlocked.Increment(ref _instances);
        return $"pv{Environment.ProcessId}-{serial}{(cleaned.Length > 0 ? "-" + cleaned : string.Empty)}";
    }

    /// <summary>Where EAL keeps its runtime files: /var/run/dpdk as root, else
    /// $XDG_RUNTIME_DIR/dpdk or /tmp/dpdk.</summary>
    private static string RuntimeRoot() =>
        Environment.IsPrivilegedProcess
            ? "/var/run/dpdk"
            : Path.Combine(Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR") is { Length: > 0 } xdg ? xdg : "/tmp", "dpdk");

    /// <summary>Start-up output that means testpmd will not be usable.</summary>
    private static bool IsFatal(string line) =>
        line.Contains("EAL: Error", StringComparison.Ordinal)
        || line.Contains("EAL: FATAL", StringComparison.Ordinal)
        || line.Contains("No probed ethernet devices", StringComparison.Ordinal)
        || line.Contains("failed to initialize", StringComparison.Ordinal)
        || line.StartsWith("Fail to ", StringComparison.Ordinal);

    private static void AddIf(List<string> command, string flag, int? value)
    {
        if (value is { } number)
        {
            command.Add($"{flag}={Text(number)}");
        }
    }

    private static string Text(int value) => value.ToString(CultureInfo.InvariantCulture);

    private void ThrowIfInvalidPort(int port, string output)
    {
        if (output.Contains("Invalid port", StringComparison.Ordinal))
        {
            throw new TestpmdException($"{Name}: no port {port}:\n{output.Trim()}");
        }
    }

    private async Task WriteInputAsync(string line)
    {
        var input = _process.StandardInput;
        await input.WriteAsync(line + "\n").ConfigureAwait(false);
        await input.FlushAsync().ConfigureAwait(false);
    }

    /// <summary>Waits until <paramref name="condition"/> (evaluated under the lock) holds.</summary>
    private async Task WaitUntilAsync(Func<bool> condition, TimeSpan deadline, string description, CancellationToken cancellationToken)
    {
        while (true)
        {
            Task changed;
            lock (_gate)
            {
                if (condition())
                {
                    return;
                }

                if (_stdoutClosed)
                {
                    break;
                }

                changed = _changed.Task;
            }

            var left = deadline - _clock.Elapsed;
            if (left <= TimeSpan.Zero)
            {
                throw new TimeoutException($"{Name}: no {description} after {_clock.Elapsed.TotalSeconds:0.0} s:\n{Tail()}");
            }

            try
            {
                await changed.WaitAsync(left, cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                // checked once more at the top
            }
        }

        // The output ended: testpmd exited (or is exiting). Give the exit a moment, for the message.
        await WaitForExitQuietlyAsync(TimeSpan.FromSeconds(2), cancellationToken).ConfigureAwait(false);
        throw new TestpmdException($"{Name}: testpmd exited (code {ExitCodeText()}) before {description}:\n{Tail()}");
    }

    private async Task<bool> WaitForExitQuietlyAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        try
        {
            await _process.WaitForExitAsync(cancellationToken).WaitAsync(timeout, cancellationToken).ConfigureAwait(false);
            await Task.WhenAll(_stdoutReader, _stderrReader).WaitAsync(TimeSpan.FromSeconds(5), cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (TimeoutException)
        {
            return _process.HasExited;
        }
    }

    private bool TryKill()
    {
        try
        {
            if (_process.HasExited)
            {
                return false;
            }

            _process.Kill(); // SIGKILL to this pid: the testpmd we started
            return true;
        }
        catch (InvalidOperationException)
        {
            return false; // exited meanwhile, or never started
        }
    }

    private void RemoveRuntimeDirectory()
    {
        try
        {
            if (Directory.Exists(RuntimeDirectory))
            {
                Directory.Delete(RuntimeDirectory, recursive: true);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Emit($"# could not remove {RuntimeDirectory}: {e.Message}", addToLog: true);
        }
    }

    /// <summary>Why start-up failed: the first fatal line, whether testpmd exited, the lines that
    /// look like errors (EAL prints its reason before a long usage text), then the last lines.</summary>
    private string StartFailure(string? fatal)
    {
        string state = _process.HasExited ? $"exited with code {ExitCodeText()}" : "still runs (killed on dispose)";
        string[] errors;
        lock (_gate)
        {
            errors = [.. _lines.Select(l => l.Text).Where(LooksLikeError).Take(20)];
        }

        var text = new StringBuilder($"{Name}: testpmd failed to start");
        text.Append(fatal is null ? string.Empty : $" ({fatal})").Append($"; it {state}");
        if (errors.Length > 0)
        {
            text.Append("\nerror lines:\n  ").AppendJoin("\n  ", errors);
        }

        return text.Append($"\nlast lines:\n{Tail()}").ToString();
    }

    private static bool LooksLikeError(string line) =>
        !line.StartsWith('#')
        && (line.Contains("error", StringComparison.OrdinalIgnoreCase)
            || line.Contains("fail", StringComparison.OrdinalIgnoreCase)
            || line.Contains("invalid", StringComparison.OrdinalIgnoreCase)
            || line.Contains("unavailable", StringComparison.OrdinalIgnoreCase)
            || line.Contains("cannot", StringComparison.OrdinalIgnoreCase)
            || line.Contains("Cause:", StringComparison.Ordinal)
            || line.Contains("No probed", StringComparison.Ordinal));

    private string ExitCodeText() => _process.HasExited ? _process.ExitCode.ToString(CultureInfo.InvariantCulture) : "(running)";

    /// <summary>
    /// Reads one output stream byte by byte as it comes: lines end at '\n' ('\r' is dropped), and
    /// the prompt, which has no newline, counts the moment its last character arrives — also
    /// when more output follows in the same read.
    /// </summary>
    private async Task ReadAsync(Stream stream, bool isStdout)
    {
        var buffer = new byte[16384];
        var partial = new StringBuilder();
        try
        {
            while (true)
            {
                int count = await stream.ReadAsync(buffer).ConfigureAwait(false);
                if (count == 0)
                {
                    break;
                }

                for (int i = 0; i < count; i++)
                {
                    char c = (char)buffer[i]; // DPDK prints ASCII
                    if (c == '\n')
                    {
                        CompleteLine(partial.ToString(), isStdout);
                        partial.Clear();
                    }
                    else if (c != '\r')
                    {
                        partial.Append(c);
                        if (isStdout && c == ' ' && EndsWithPrompt(partial))
                        {
                            if (partial.Length > Prompt.Length)
                            {
                                CompleteLine(partial.ToString(0, partial.Length - Prompt.Length), isStdout);
                            }

                            partial.Clear();
                            OnPrompt();
                        }
                    }
                }
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // the process was disposed
        }
        finally
        {
            if (partial.Length > 0)
            {
                CompleteLine(partial.ToString(), isStdout);
            }

            if (isStdout)
            {
                TaskCompletionSource changed;
                lock (_gate)
                {
                    _stdoutClosed = true;
                    changed = _changed;
                    _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                }

                changed.TrySetResult();
            }
        }
    }

    private static bool EndsWithPrompt(StringBuilder text)
    {
        if (text.Length < Prompt.Length)
        {
            return false;
        }

        for (int i = 0; i < Prompt.Length; i++)
        {
            if (text[text.Length - Prompt.Length + i] != Prompt[i])
            {
                return false;
            }
        }

        return true;
    }

    private void CompleteLine(string text, bool isStdout)
    {
        TaskCompletionSource changed;
        string shown;
        lock (_gate)
        {
            if (isStdout && _pendingEcho is not null && string.Equals(text.Trim(), _pendingEcho, StringComparison.Ordinal))
            {
                // testpmd echoes each command line it reads.
                shown = Prompt + _pendingEcho;
                _pendingEcho = null;
            }
            else
            {
                shown = isStdout ? text : "[stderr] " + text;
                _response?.AppendLine(text);
                if (_prompts == 0 && _fatalLine is null && !_quitting && IsFatal(text))
                {
                    _fatalLine = text.Trim();
                }
            }

            AddLineLocked(shown);
            changed = SwapChangedLocked();
        }

        changed.TrySetResult();
        Forward(shown);
    }

    private void OnPrompt()
    {
        TaskCompletionSource changed;
        lock (_gate)
        {
            _prompts++;
            if (_response is not null && _prompts > _commandsSent)
            {
                _lastResponse = _response.ToString();
                _response = null;
            }

            changed = SwapChangedLocked();
        }

        changed.TrySetResult();
    }

    private void Emit(string text, bool addToLog)
    {
        if (addToLog)
        {
            TaskCompletionSource changed;
            lock (_gate)
            {
                AddLineLocked(text);
                changed = SwapChangedLocked();
            }

            changed.TrySetResult();
        }

        Forward(text);
    }

    private void AddLineLocked(string text)
    {
        _lines.Enqueue(new TestpmdLine(_lineCount++, _clock.Elapsed, text));
        while (_lines.Count > Math.Max(1, _options.LogCapacity))
        {
            _lines.Dequeue();
        }
    }

    private TaskCompletionSource SwapChangedLocked()
    {
        var changed = _changed;
        _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        return changed;
    }

    private void Forward(string text)
    {
        try
        {
            _sink?.Invoke($"[{Name} +{_clock.Elapsed.TotalSeconds:0.000}s] {text}");
        }
        catch (InvalidOperationException)
        {
            // the test that owned the output has finished
        }
    }

    /// <summary>"Segment sizes: 64" in <c>show config txpkts</c>.</summary>
    [GeneratedRegex(@"Segment sizes:\s*([0-9 ]+)")]
    private static partial Regex SegmentSizes();
}
