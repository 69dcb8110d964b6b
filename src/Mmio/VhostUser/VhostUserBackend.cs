using Microsoft.Extensions.Logging;
using PciVirtio.Mmio.EventLoop;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Sockets;
using PciVirtio.VhostCore.VhostUser;

namespace PciVirtio.Mmio.VhostUser;

/// <summary>
/// Serves one device over a vhost-user socket on an <see cref="EpollEventLoop"/>. Server
/// mode listens on a path and takes one frontend at a time (a second one is turned away
/// while the first is connected); client mode connects to a frontend's socket and connects
/// again, every <see cref="ReconnectInterval"/>, whenever the connection is lost (the
/// frontend restarted). Many backends share one loop; a connection's failure ends only its
/// own session (queues stopped, descriptors and mappings released) and never another
/// device's.
/// </summary>
public sealed class VhostUserBackend : IDisposable
{
    private readonly EpollEventLoop _loop;
    private readonly Func<VhostUserSession> _newSession;
    private readonly ILogger? _logger;
    private readonly UnixStreamSocket? _listener;
    private readonly EventRegistration? _listenerRegistration;
    private readonly Timer? _reconnectTimer;
    private VhostUserConnection? _connection;
    private EventRegistration? _connectionRegistration;
    private volatile bool _disposed;
    private int _sessionsEnded;

    private VhostUserBackend(EpollEventLoop loop, string path, bool serverMode, Func<VhostUserSession> newSession, ILogger? logger, TimeSpan reconnectInterval)
    {
        _loop = loop;
        Path = path;
        IsServerMode = serverMode;
        _newSession = newSession;
        _logger = logger;
        ReconnectInterval = reconnectInterval;
        if (serverMode)
        {
            _listener = UnixStreamSocket.Listen(path, backlog: 4, nonBlocking: true);
            try
            {
                _listenerRegistration = loop.Add(_listener.Handle, EpollEvents.In, _ => OnAcceptable());
            }
            catch
            {
                _listener.Dispose();
                throw;
            }
        }
        else
        {
            _reconnectTimer = new Timer(_ => TryPostConnect(), null, Timeout.Infinite, Timeout.Infinite);
            TryPostConnect();
        }
    }

    public string Path { get; }

    public bool IsServerMode { get; }

    public TimeSpan ReconnectInterval { get; }

    /// <summary>The session of the current connection (loop thread), if any.</summary>
    public VhostUserSession? Session => _connection?.Session;

    public bool IsConnected => Volatile.Read(ref _connection) is not null;

    /// <summary>How many connections have ended.</summary>
    public int SessionsEnded => Volatile.Read(ref _sessionsEnded);

    /// <summary>Why the last connection ended.</summary>
    public string? LastEndReason { get; private set; }

    /// <summary>Listens on <paramref name="path"/> (replacing a stale socket file).</summary>
    public static VhostUserBackend Listen(EpollEventLoop loop, string path, Func<VhostUserSession> newSession, ILogger? logger = null) =>
        new(loop, path, serverMode: true, newSession, logger, TimeSpan.Zero);

    /// <summary>Connects to the frontend's socket at <paramref name="path"/>, retrying
    /// every <paramref name="reconnectInterval"/> until it is there and after every disconnect.</summary>
    public static VhostUserBackend Connect(EpollEventLoop loop, string path, Func<VhostUserSession> newSession, TimeSpan reconnectInterval, ILogger? logger = null) =>
        new(loop, path, serverMode: false, newSession, logger, reconnectInterval);

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _reconnectTimer?.Dispose();
        var done = new ManualResetEventSlim();
        void Teardown()
        {
            try
            {
                CloseConnection("backend disposed");
                _listenerRegistration?.Dispose();
                if (_listener is not null)
                {
                    _listener.Dispose();

                    // The socket file is ours (we bound it): leave nothing behind for a
                    // frontend to connect to and hang on.
                    try
                    {
                        UnixStreamSocket.Unlink(Path);
                    }
                    catch (NativeCallException)
                    {
                    }
                }
            }
            finally
            {
                done.Set();
            }
        }

        if (_loop.IsRunning && !_loop.IsOnLoopThread)
        {
            _loop.Post(Teardown);
            done.Wait(TimeSpan.FromSeconds(10));
        }
        else
        {
            Teardown();
        }

        done.Dispose();
    }

    private void OnAcceptable()
    {
        while (_listener!.Accept() is { } socket)
        {
            if (_connection is not null || _disposed)
            {
                // One frontend per device: turn the second away.
                socket.Dispose();
                continue;
            }

            Attach(socket);
        }
    }

    private void TryPostConnect()
    {
        if (_disposed)
        {
            return;
        }

        try
        {
            _loop.Post(ConnectNow);
        }
        catch (ObjectDisposedException)
        {
        }
    }

    private void ConnectNow()
    {
        if (_disposed || _connection is not null)
        {
            return;
        }

        try
        {
            Attach(UnixStreamSocket.Connect(Path, nonBlocking: true));
        }
        catch (NativeCallException e)
        {
            // The frontend is not (yet, or no longer) there — ENOENT, ECONNREFUSED — or
            // refuses us for now: the one reconnect policy is to try again later.
            LastEndReason = e.Message;
            _reconnectTimer!.Change(ReconnectInterval, Timeout.InfiniteTimeSpan);
        }
    }

    private void Attach(UnixStreamSocket socket)
    {
        VhostUserConnection connection;
        try
        {
            connection = new VhostUserConnection(socket, _newSession());
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        _connection = connection;
        _connectionRegistration = _loop.Add(socket.Handle, EpollEvents.In | EpollEvents.ReadHangUp, _ =>
        {
            bool keep;
            try
            {
                keep = connection.OnReadable();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                keep = false;
                LastEndReason = e.Message;
            }

            if (!keep)
            {
                CloseConnection(connection.EndReason ?? LastEndReason ?? "connection failed");
            }
        });
    }

    private void CloseConnection(string reason)
    {
        var connection = _connection;
        if (connection is null)
        {
            return;
        }

        _connectionRegistration?.Dispose();
        _connectionRegistration = null;
        connection.Dispose();
        LastEndReason = reason;
        Volatile.Write(ref _connection, null);
        Interlocked.Increment(ref _sessionsEnded);
        if (_logger is not null)
        {
            BackendLog.ConnectionEnded(_logger, Path, reason);
        }

        if (!IsServerMode && !_disposed)
        {
            _reconnectTimer!.Change(ReconnectInterval, Timeout.InfiniteTimeSpan);
        }
    }
}

internal static partial class BackendLog
{
    [LoggerMessage(EventId = 220, Level = LogLevel.Information, Message = "vhost-user {Path}: connection ended: {Reason}")]
    public static partial void ConnectionEnded(ILogger logger, string path, string reason);
}
