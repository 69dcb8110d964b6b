using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using PciVirtio.Tests.Shared;

namespace PciVirtio.Tests.Guest;

/// <summary>One line of a guest's serial console: when it arrived (since QEMU started), its
/// text without terminal escapes, and its index in <see cref="GuestVm.Lines"/>.</summary>
public sealed record GuestLine(int Index, TimeSpan At, string Text)
{
    /// <summary>The text from <paramref name="marker"/> on (a marker may follow other output on
    /// the same console line), or null when the line has no such marker.</summary>
    public string? From(string marker)
    {
        int at = Text.IndexOf(marker, StringComparison.Ordinal);
        return at < 0 ? null : Text[at..];
    }
}

/// <summary>
/// A running qemu-system-x86_64 guest (TCG). Its serial console (QEMU's stdio) is captured line
/// by line into <see cref="Lines"/>, a log file and an optional sink (the test output); lines
/// sent with <see cref="SendLineAsync"/> reach the guest's console input. Disposing kills the
/// QEMU process (by its pid) when it is still running — also when the test failed — and every
/// guest still running when the test process exits is killed then.
/// </summary>
public sealed partial class GuestVm : IDisposable, IAsyncDisposable
{
    private static readonly ConcurrentDictionary<int, Process> Running = new();

    private readonly Process _process;
    private readonly Stopwatch _clock;
    private readonly Action<string>? _sink;
    private readonly StreamWriter _log;
    private readonly List<GuestLine> _lines = [];
    private readonly object _gate = new();
    private readonly Task _stdoutReader;
    private readonly Task _stderrReader;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private bool _stdoutClosed;
    private bool _disposed;

    static GuestVm()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var process in Running.Values)
            {
                TryKill(process);
            }
        };
    }

    private GuestVm(string name, Process process, Stopwatch clock, StreamWriter log, string logPath, string commandLine, Action<string>? sink)
    {
        Name = name;
        _process = process;
        _clock = clock;
        _log = log;
        LogPath = logPath;
        CommandLine = commandLine;
        _sink = sink;
        Pid = process.Id;
        _stdoutReader = Task.Run(() => ReadAsync(process.StandardOutput, isStdout: true));
        _stderrReader = Task.Run(() => ReadAsync(process.StandardError, isStdout: false));
    }

    public string Name { get; }

    /// <summary>QEMU's process id.</summary>
    public int Pid { get; }

    /// <summary>The console log file (each line with its time since start).</summary>
    public string LogPath { get; }

    /// <summary>The QEMU command, quoted for a shell.</summary>
    public string CommandLine { get; }

    /// <summary>Time since QEMU was started.</summary>
    public TimeSpan Elapsed => _clock.Elapsed;

    public bool HasExited => _process.HasExited;

    /// <summary>QEMU's exit code, once it exited.</summary>
    public int? ExitCode => _process.HasExited ? _process.ExitCode : null;

    /// <summary>A snapshot of the console lines so far (stderr lines start with "[qemu] ").</summary>
    public IReadOnlyList<GuestLine> Lines
    {
        get
        {
            lock (_gate)
            {
                return [.. _lines];
            }
        }
    }

    /// <summary>
    /// Starts QEMU with the flags measured to work here (real-peers.md): TCG, <c>-cpu max</c>,
    /// <c>-nographic -no-reboot</c>, the prepared kernel and <paramref name="options"/>'
    /// initramfs, <c>console=ttyS0 quiet panic=-1 no_timer_check</c>; with <see cref="GuestVmOptions.Iommu"/> an
    /// intel-iommu, with <see cref="GuestVmOptions.IvshmemSocket"/> an ivshmem-doorbell device.
    /// Console lines go to <paramref name="sink"/> too (e.g. ITestOutputHelper.WriteLine).
    /// </summary>
    public static GuestVm Start(GuestEnvironment environment, GuestVmOptions options, Action<string>? sink = null)
    {
        ArgumentNullException.ThrowIfNull(environment);
        ArgumentNullException.ThrowIfNull(options);
        if (!File.Exists(options.Initramfs))
        {
            throw new FileNotFoundException("initramfs not found", options.Initramfs);
        }

        // no_timer_check: under TCG on a busy host the kernel's check that the timer interrupt
        // ticks through the IO-APIC can fail, and with intel-iommu's interrupt remapping that is a
        // panic ("timer doesn't work through Interrupt-remapped IO-APIC"), seen at load 20.
        var kernelArguments = new List<string> { "console=ttyS0", "quiet", "panic=-1", "no_timer_check" };
        var start = new ProcessStartInfo("qemu-system-x86_64")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.Latin1,
            StandardErrorEncoding = Encoding.Latin1,
        };
        var args = start.ArgumentList;
        void Add(params string[] values)
        {
            foreach (string value in values)
            {
                args.Add(value);
            }
        }

        Add("-accel", "tcg", "-machine", options.Machine);
        if (options.Iommu)
        {
            // Before any other PCI device, as QEMU requires.
            Add("-device", "intel-iommu");
            kernelArguments.Add("intel_iommu=on");
        }

        Add("-cpu", "max", "-m", $"{options.MemoryMiB}M", "-nographic", "-no-reboot", "-nic", "none", "-vga", "none");
        if (options.Cpus > 1)
        {
            Add("-smp", options.Cpus.ToString(CultureInfo.InvariantCulture));
        }

        Add("-kernel", environment.Kernel, "-initrd", options.Initramfs);
        if (options.IvshmemSocket is not null)
        {
            Add("-chardev", $"socket,id=iv,path={options.IvshmemSocket}");
            Add("-device", $"ivshmem-doorbell,chardev=iv,vectors={options.IvshmemVectors}");
        }

        kernelArguments.Add($"pcivirtio.deadline={(int)Math.Ceiling(options.GuestDeadline.TotalSeconds)}");
        kernelArguments.AddRange(options.KernelArguments);
        Add("-append", string.Join(' ', kernelArguments));
        foreach (string extra in options.QemuArguments)
        {
            args.Add(extra);
        }

        string logDirectory = options.LogDirectory
            ?? (Environment.GetEnvironmentVariable("PCIVIRTIO_GUEST_LOGS") is { Length: > 0 } logs ? logs : Path.Combine(Path.GetTempPath(), "pcivirtio-guest-logs"));
        Directory.CreateDirectory(logDirectory);
        string logPath = Path.Combine(logDirectory, $"{options.Name}.console.log");
        var log = new StreamWriter(logPath, append: false, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false)) { AutoFlush = true };
        string commandLine = "qemu-system-x86_64 " + string.Join(' ', args.Select(SessionProcess.Quote));
        log.WriteLine($"# {commandLine}");
        sink?.Invoke($"[{options.Name}] {commandLine}");

        var process = new Process { StartInfo = start };
        var clock = Stopwatch.StartNew();
        try
        {
            process.Start();
        }
        catch
        {
            log.Dispose();
            process.Dispose();
            throw;
        }

        Running[process.Id] = process;
        log.WriteLine($"# pid {process.Id}");
        return new GuestVm(options.Name, process, clock, log, logPath, commandLine, sink);
    }

    /// <summary>
    /// Waits for the first console line (from index <paramref name="fromIndex"/>) that
    /// <paramref name="match"/> accepts. Throws <see cref="TimeoutException"/> after
    /// <paramref name="timeout"/>, and <see cref="GuestVmException"/> when the guest's console
    /// ends first; both messages name <paramref name="description"/> and hold the last console lines.
    /// </summary>
    public async Task<GuestLine> WaitForLineAsync(Func<string, bool> match, TimeSpan timeout, int fromIndex = 0,
        string? description = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(match);
        var deadline = _clock.Elapsed + timeout;
        int index = fromIndex;
        while (true)
        {
            Task changed;
            bool ended;
            lock (_gate)
            {
                for (; index < _lines.Count; index++)
                {
                    if (match(_lines[index].Text))
                    {
                        return _lines[index];
                    }
                }

                ended = _stdoutClosed;
                changed = _changed.Task;
            }

            if (ended)
            {
                // The console closes as QEMU exits: give the exit a moment to be seen, for the message.
                await _process.WaitForExitAsync(cancellationToken).WaitAsync(TimeSpan.FromSeconds(2), cancellationToken)
                    .ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default).ConfigureAwait(false);
                throw new GuestVmException($"{Name}: the console ended (QEMU exit code {ExitCodeText()}) before {description ?? "the awaited line"}; log {LogPath}\n{Tail()}");
            }

            var left = deadline - _clock.Elapsed;
            if (left <= TimeSpan.Zero)
            {
                throw new TimeoutException($"{Name}: no {description ?? "matching line"} within {timeout.TotalSeconds:0} s; log {LogPath}\n{Tail()}");
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

    /// <summary>Waits for a line holding <paramref name="marker"/>; returns the line.</summary>
    public Task<GuestLine> WaitForMarkerAsync(string marker, TimeSpan timeout, int fromIndex = 0, CancellationToken cancellationToken = default) =>
        WaitForLineAsync(text => text.Contains(marker, StringComparison.Ordinal), timeout, fromIndex, $"\"{marker}\"", cancellationToken);

    /// <summary>Sends one line to the guest's serial console input.</summary>
    public async Task SendLineAsync(string line)
    {
        WriteLog($"# host -> guest: {line}");
        await _process.StandardInput.WriteAsync(line + "\n").ConfigureAwait(false);
        await _process.StandardInput.FlushAsync().ConfigureAwait(false);
    }

    /// <summary>Waits for QEMU to exit; false when it still runs after <paramref name="timeout"/>.</summary>
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

        await Task.WhenAll(_stdoutReader, _stderrReader).WaitAsync(TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
        return true;
    }

    /// <summary>Kills QEMU (SIGKILL to its pid) if it still runs.</summary>
    public void Kill()
    {
        if (TryKill(_process))
        {
            WriteLog("# killed by the host");
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        Kill();
        if (!_process.WaitForExit(10_000))
        {
            throw new GuestVmException($"{Name}: QEMU (pid {Pid}) did not exit after SIGKILL");
        }

        Task.WhenAll(_stdoutReader, _stderrReader).Wait(TimeSpan.FromSeconds(10));
        Running.TryRemove(Pid, out _);
        WriteLog($"# exit code {ExitCodeText()} after {_clock.Elapsed.TotalSeconds:0.00} s");
        lock (_gate)
        {
            _log.Dispose();
        }

        _process.Dispose();
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>The last <paramref name="count"/> console lines, one per line.</summary>
    public string Tail(int count = 40)
    {
        lock (_gate)
        {
            return TailLocked(count);
        }
    }

    private static bool TryKill(Process process)
    {
        try
        {
            if (process.HasExited)
            {
                return false;
            }

            process.Kill(); // SIGKILL to this pid: the QEMU process we started
            return true;
        }
        catch (InvalidOperationException)
        {
            return false; // exited meanwhile
        }
    }

    private string TailLocked(int count = 40) =>
        string.Join('\n', _lines.Skip(Math.Max(0, _lines.Count - count)).Select(l => $"  +{l.At.TotalSeconds,7:0.00} {l.Text}"));

    private string ExitCodeText() => _process.HasExited ? _process.ExitCode.ToString(CultureInfo.InvariantCulture) : "(running)";

    private async Task ReadAsync(StreamReader reader, bool isStdout)
    {
        try
        {
            while (await reader.ReadLineAsync().ConfigureAwait(false) is { } raw)
            {
                string text = TerminalEscapes().Replace(raw, string.Empty).Replace("\r", string.Empty, StringComparison.Ordinal);
                if (!isStdout)
                {
                    text = "[qemu] " + text;
                }

                GuestLine line;
                TaskCompletionSource changed;
                lock (_gate)
                {
                    line = new GuestLine(_lines.Count, _clock.Elapsed, text);
                    _lines.Add(line);
                    changed = _changed;
                    _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    WriteLogLocked($"+{line.At.TotalSeconds,7:0.000} {text}");
                }

                changed.TrySetResult();
                try
                {
                    _sink?.Invoke($"[{Name} +{line.At.TotalSeconds:0.00}s] {text}");
                }
                catch (InvalidOperationException)
                {
                    // the test that owned the output has finished
                }
            }
        }
        catch (ObjectDisposedException)
        {
            // the process was disposed
        }
        finally
        {
            if (isStdout)
            {
                TaskCompletionSource changed;
                lock (_gate)
                {
                    _stdoutClosed = true;
                    changed = _changed;
                }

                changed.TrySetResult();
            }
        }
    }

    private void WriteLog(string text)
    {
        lock (_gate)
        {
            WriteLogLocked(text);
        }
    }

    private void WriteLogLocked(string text)
    {
        try
        {
            _log.WriteLine(text);
        }
        catch (ObjectDisposedException)
        {
            // the log was closed
        }
    }

    /// <summary>CSI sequences (ESC [ ... final byte) and two-byte escapes such as ESC c (reset),
    /// which SeaBIOS and the kernel put on the serial console.</summary>
    [GeneratedRegex(@"\x1B\[[0-?]*[ -/]*[@-~]|\x1B[^\[]")]
    private static partial Regex TerminalEscapes();
}

/// <summary>A guest did not behave: its console ended early or QEMU did not die.</summary>
public sealed class GuestVmException : Exception
{
    public GuestVmException()
    {
    }

    public GuestVmException(string message)
        : base(message)
    {
    }

    public GuestVmException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
