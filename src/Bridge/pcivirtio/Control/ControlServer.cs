using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using PciVirtio.Host.Daemon;

namespace PciVirtio.Host.Control;

/// <summary>
/// The daemon's control socket: a unix stream socket that answers one request line per
/// connection. <c>stats</c> gives every counter as one line of JSON (<see cref="DaemonStatus"/>);
/// anything else gives <c>{"error": …}</c>. It only reads: nothing sent here can change a
/// device, so who may connect is a question of who may see the counters (the socket is
/// mode 0660, owner and group).
/// </summary>
public sealed partial class ControlServer : BackgroundService
{
    /// <summary>A request is one short line; more is not a request of ours.</summary>
    private const int MaxRequest = 256;

    private static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(5);

    private readonly string _path;
    private readonly RunningDevices _devices;
    private readonly ILogger<ControlServer> _logger;
    private Socket? _listener;

    public ControlServer(string path, RunningDevices devices, ILogger<ControlServer> logger)
    {
        _path = path;
        _devices = devices;
        _logger = logger;
    }

    public string Path => _path;

    public override Task StartAsync(CancellationToken cancellationToken)
    {
        // Bind before the host reports started (and systemd hears READY=1), so `stats`
        // works the moment the daemon says it runs.
        string? dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(_path));
        // (Linux only, as the whole program; the guards keep the platform analyzer content.)
        if (dir is not null && !Directory.Exists(dir) && !OperatingSystem.IsWindows())
        {
            // Owner and group only, as the socket itself: the fallback for a user without
            // XDG_RUNTIME_DIR is a predictable name under /tmp.
            Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
                | UnixFileMode.GroupRead | UnixFileMode.GroupExecute);
        }

        if (dir is not null && SocketDirectory.Problem(dir) is { } problem)
        {
            throw new IOException($"control socket {_path}: {problem}");
        }

        RemoveStale(_path);
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(_path));
            if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(_path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite);
            }

            listener.Listen(16);
        }
        catch (SocketException e)
        {
            listener.Dispose();
            throw new IOException($"control socket {_path}: bind/listen failed: {e.SocketErrorCode} ({e.Message})", e);
        }

        _listener = listener;
        Log.Listening(_logger, _path);
        return base.StartAsync(cancellationToken);
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        // Cancel the accept loop first, then close the socket under it.
        await base.StopAsync(cancellationToken).ConfigureAwait(false);
        Close();
    }

    public override void Dispose()
    {
        // A host whose start failed after this service started is disposed without being
        // stopped: the socket file goes here then.
        Close();
        base.Dispose();
    }

    /// <summary>Closes the listener and removes the socket file, once (a later daemon may
    /// have bound the path since).</summary>
    private void Close()
    {
        var listener = Interlocked.Exchange(ref _listener, null);
        if (listener is null)
        {
            return;
        }

        listener.Dispose();
        try
        {
            File.Delete(_path);
        }
        catch (IOException)
        {
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var listener = _listener!;
        while (!stoppingToken.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync(stoppingToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException) when (stoppingToken.IsCancellationRequested || Volatile.Read(ref _listener) is null)
            {
                return;
            }
            catch (SocketException e)
            {
                Log.AcceptFailed(_logger, _path, e.SocketErrorCode.ToString());
                continue;
            }

            _ = ServeAsync(client, stoppingToken);
        }
    }

    /// <summary>The answer to <paramref name="request"/> (one line, no newline).</summary>
    public string Answer(string request) => request.Trim() switch
    {
        "stats" => JsonSerializer.Serialize(_devices.Status(), ControlJsonContext.Default.DaemonStatus),
        var other => JsonSerializer.Serialize(new ControlError($"unknown request '{Shorten(other)}'; the control socket answers 'stats'"), ControlJsonContext.Default.ControlError),
    };

    private async Task ServeAsync(Socket client, CancellationToken stoppingToken)
    {
        using (client)
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
            timeout.CancelAfter(RequestTimeout);
            try
            {
                var buffer = new byte[MaxRequest];
                int filled = 0;
                int newline = -1;
                while (newline < 0 && filled < buffer.Length)
                {
                    int n = await client.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None, timeout.Token).ConfigureAwait(false);
                    if (n == 0)
                    {
                        break;
                    }

                    newline = Array.IndexOf(buffer, (byte)'\n', filled, n);
                    filled += n;
                }

                string request = Encoding.UTF8.GetString(buffer, 0, newline >= 0 ? newline : filled);
                byte[] answer = Encoding.UTF8.GetBytes(Answer(request) + "\n");
                await client.SendAsync(answer, SocketFlags.None, timeout.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                // A reader that went away or never asked: nothing to keep.
            }
        }
    }

    private static string Shorten(string s) => s.Length <= 40 ? s : s[..40] + "…";

    /// <summary>A socket file left by a daemon that died is removed; one a live daemon
    /// answers on is not ours to take.</summary>
    private static void RemoveStale(string path)
    {
        if (!File.Exists(path))
        {
            return;
        }

        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
        }
        catch (SocketException)
        {
            File.Delete(path);
            return;
        }

        throw new IOException($"control socket {path}: another pcivirtio daemon answers on it (stop it, or give this one PciVirtio:ControlSocket)");
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Information, Message = "control socket {Path}: listening for pcivirtio stats")]
        public static partial void Listening(ILogger logger, string path);

        [LoggerMessage(Level = LogLevel.Warning, Message = "control socket {Path}: accept failed: {Error}")]
        public static partial void AcceptFailed(ILogger logger, string path, string error);
    }
}
