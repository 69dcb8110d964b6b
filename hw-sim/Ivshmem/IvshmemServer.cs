using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Signals;
using Tmds.Linux;

namespace PciVirtio.HwSim.Ivshmem;

/// <summary>
/// An ivshmem server (what QEMU's <c>ivshmem-server</c> does; Debian ships none): QEMU's
/// <c>ivshmem-doorbell</c> devices and <see cref="IvshmemClient"/>s connect to its unix socket and
/// get one shared-memory memfd and, for every peer, one eventfd per interrupt vector.
/// <para>
/// Protocol (QEMU docs/specs/ivshmem-spec.rst): every message is one little-endian int64, some
/// with one file descriptor (SCM_RIGHTS). To a new client: the protocol version 0; its id; -1 with
/// the shared-memory fd; for every other connected peer, that peer's id once per vector, each with
/// that peer's eventfd for the vector; then its own id once per vector, each with its own eventfd.
/// Every other client then gets the new id once per vector with the new eventfds. When a client
/// disconnects, the others get its id without an fd and the server closes its eventfds.
/// </para>
/// Ids are the lowest free ones from 0 (a freed id is reused); a client beyond
/// <see cref="MaxPeers"/> is disconnected at once, before the version message. One thread per
/// server polls the listener and the clients; <see cref="Dispose"/> stops it and closes everything.
/// </summary>
public sealed partial class IvshmemServer : IDisposable
{
    /// <summary>The protocol version the server sends first.</summary>
    public const long ProtocolVersion = 0;

    /// <summary>The message value that comes with the shared-memory fd.</summary>
    public const long SharedMemoryMessage = -1;

    /// <summary>ivshmem-server's limit; QEMU's device takes at most this many too.</summary>
    public const int MaxVectors = 64;

    /// <summary>Ids travel in the upper 16 bits of the doorbell register.</summary>
    public const int MaxPeerLimit = 65536;

    private readonly ILogger _logger;
    private readonly FileDescriptor _listener;
    private readonly EventFd _wake = new();
    private readonly Thread _thread;
    private readonly SortedDictionary<int, Peer> _peers = [];
    private readonly object _stateLock = new(); // a Monitor: WaitForPeers waits on it
    private volatile bool _stopping;
    private readonly bool _ownsSharedMemory;
    private bool _disposed;
    private Exception? _fault;

    /// <summary>
    /// Creates the shared memory, listens on <paramref name="socketPath"/> (which must not
    /// exist) and starts serving.
    /// </summary>
    /// <param name="socketPath">The unix socket path (at most 107 bytes).</param>
    /// <param name="sharedMemorySize">Bytes of shared memory, a power of two (BAR2 of the device).</param>
    /// <param name="vectors">Interrupt vectors per peer (the device's <c>vectors=</c>), 1..64.</param>
    /// <param name="maxPeers">How many clients may be connected at once, 1..65536.</param>
    /// <param name="logger">Connections and departures are logged at Information level.</param>
    public IvshmemServer(string socketPath, ulong sharedMemorySize, int vectors = 1, int maxPeers = 16, ILogger? logger = null)
        : this(socketPath, sharedMemorySize, null, vectors, maxPeers, logger)
    {
    }

    /// <summary>
    /// Serves an existing shared memory (for example hw-sim's NTB local memory, so QEMU guests
    /// become the two ends of the emulated bridge). The memfd stays owned by the caller and must
    /// be at least <paramref name="sharedMemorySize"/> bytes and outlive the server.
    /// </summary>
    public IvshmemServer(string socketPath, FileDescriptor sharedMemory, ulong sharedMemorySize, int vectors = 1, int maxPeers = 16, ILogger? logger = null)
        : this(socketPath, sharedMemorySize, sharedMemory ?? throw new ArgumentNullException(nameof(sharedMemory)), vectors, maxPeers, logger)
    {
    }

    private IvshmemServer(string socketPath, ulong sharedMemorySize, FileDescriptor? sharedMemory, int vectors, int maxPeers, ILogger? logger)
    {
        ArgumentException.ThrowIfNullOrEmpty(socketPath);
        if (sharedMemorySize == 0 || !ulong.IsPow2(sharedMemorySize))
        {
            throw new ArgumentOutOfRangeException(nameof(sharedMemorySize), sharedMemorySize, "the shared memory size must be a power of two");
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(vectors, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(vectors, MaxVectors);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxPeers, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(maxPeers, MaxPeerLimit);

        SocketPath = socketPath;
        SharedMemorySize = sharedMemorySize;
        Vectors = vectors;
        MaxPeers = maxPeers;
        _logger = logger ?? NullLogger.Instance;

        try
        {
            _ownsSharedMemory = sharedMemory is null;
            SharedMemory = sharedMemory ?? MemFd.Create("ivshmem", sharedMemorySize);
            _listener = UnixSocket.Listen(socketPath, backlog: 16);
        }
        catch
        {
            if (_ownsSharedMemory)
            {
                SharedMemory?.Dispose();
            }

            _wake.Dispose();
            throw;
        }

        _thread = new Thread(Run) { IsBackground = true, Name = $"ivshmem-server {Path.GetFileName(socketPath)}" };
        _thread.Start();
    }

    public string SocketPath { get; }

    public ulong SharedMemorySize { get; }

    public int Vectors { get; }

    public int MaxPeers { get; }

    /// <summary>The server's own handle on the shared memory, e.g. to map it and watch the peers.</summary>
    public FileDescriptor SharedMemory { get; }

    /// <summary>The ids of the connected peers, ascending.</summary>
    public IReadOnlyList<int> PeerIds
    {
        get
        {
            lock (_stateLock)
            {
                return [.. _peers.Keys];
            }
        }
    }

    /// <summary>What stopped the server thread, if it failed (it then serves no one).</summary>
    public Exception? Fault
    {
        get
        {
            lock (_stateLock)
            {
                return _fault;
            }
        }
    }

    /// <summary>Waits until <paramref name="predicate"/> holds for the connected peer ids (checked
    /// after every change); false on timeout or when the server stopped.</summary>
    public bool WaitForPeers(Func<IReadOnlyList<int>, bool> predicate, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(predicate);
        long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        lock (_stateLock)
        {
            while (true)
            {
                if (predicate([.. _peers.Keys]))
                {
                    return true;
                }

                long left = deadline - Environment.TickCount64;
                if (left <= 0 || _fault is not null || _stopping)
                {
                    return false;
                }

                Monitor.Wait(_stateLock, TimeSpan.FromMilliseconds(left));
            }
        }
    }

    /// <summary>Waits until exactly <paramref name="count"/> peers are connected.</summary>
    public bool WaitForPeerCount(int count, TimeSpan timeout) => WaitForPeers(ids => ids.Count == count, timeout);

    /// <summary>Stops serving: closes the listener (and removes the socket file), every client
    /// socket, every eventfd and the shared memory.</summary>
    public void Dispose()
    {
        lock (_stateLock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            _stopping = true;
            Monitor.PulseAll(_stateLock);
        }

        _wake.Signal();
        _thread.Join();

        lock (_stateLock)
        {
            foreach (var peer in _peers.Values)
            {
                peer.Dispose();
            }

            _peers.Clear();
        }

        _listener.Dispose();
        try
        {
            UnixSocket.Unlink(SocketPath);
        }
        catch (NativeCallException ex)
        {
            LogUnlinkFailed(_logger, SocketPath, ex);
        }

        if (_ownsSharedMemory)
        {
            SharedMemory.Dispose();
        }
        _wake.Dispose();
    }

    private unsafe void Run()
    {
        try
        {
            var entries = new pollfd[2 + MaxPeers];
            var polled = new Peer[MaxPeers];
            while (!_stopping)
            {
                int count = 0;
                entries[count++] = new pollfd { fd = _wake.Handle.Value, events = LibC.POLLIN };
                entries[count++] = new pollfd { fd = _listener.Value, events = LibC.POLLIN };
                foreach (var peer in _peers.Values)
                {
                    polled[count - 2] = peer;
                    entries[count++] = new pollfd { fd = peer.Socket.Value, events = (short)(LibC.POLLIN | LibC.POLLRDHUP) };
                }

                fixed (pollfd* p = entries)
                {
                    UnixSocket.Poll(p, count, -1);
                }

                if (_stopping)
                {
                    break;
                }

                for (int i = 2; i < count; i++)
                {
                    if (entries[i].revents != 0 && !UnixSocket.DrainAndCheckOpen(polled[i - 2].Socket))
                    {
                        RemovePeer(polled[i - 2]);
                    }
                }

                if ((entries[1].revents & LibC.POLLIN) != 0)
                {
                    while (UnixSocket.Accept(_listener) is { } socket)
                    {
                        AddPeer(socket);
                    }
                }
            }
        }
#pragma warning disable CA1031 // the thread must not take the process down; the failure is kept and logged
        catch (Exception ex)
#pragma warning restore CA1031
        {
            LogServerFailed(_logger, SocketPath, ex);
            lock (_stateLock)
            {
                _fault = ex;
                Monitor.PulseAll(_stateLock);
            }
        }
    }

    private void AddPeer(FileDescriptor socket)
    {
        int id = LowestFreeId();
        if (id < 0)
        {
            LogPeerRejected(_logger, SocketPath, MaxPeers);
            socket.Dispose();
            return;
        }

        var peer = new Peer(id, socket, Vectors);
        bool sent = Send(peer, ProtocolVersion, null)
            && Send(peer, id, null)
            && Send(peer, SharedMemoryMessage, SharedMemory);
        foreach (var other in _peers.Values)
        {
            for (int v = 0; v < Vectors && sent; v++)
            {
                sent = Send(peer, other.Id, other.Vectors[v].Handle);
            }
        }

        for (int v = 0; v < Vectors && sent; v++)
        {
            sent = Send(peer, id, peer.Vectors[v].Handle);
        }

        if (!sent)
        {
            // Not announced to anyone yet: just forget it.
            LogPeerLost(_logger, SocketPath, id);
            peer.Dispose();
            return;
        }

        var lost = new List<Peer>();
        foreach (var other in _peers.Values)
        {
            for (int v = 0; v < Vectors; v++)
            {
                if (!Send(other, id, peer.Vectors[v].Handle))
                {
                    lost.Add(other);
                    break;
                }
            }
        }

        lock (_stateLock)
        {
            _peers.Add(id, peer);
            Monitor.PulseAll(_stateLock);
        }

        LogPeerConnected(_logger, SocketPath, id, Vectors);
        foreach (var other in lost)
        {
            RemovePeer(other);
        }
    }

    /// <summary>Forgets <paramref name="peer"/>, tells the others (its id, no fd) and closes its
    /// socket and eventfds. Peers found broken while telling them go the same way.</summary>
    private void RemovePeer(Peer peer)
    {
        var pending = new Queue<Peer>();
        pending.Enqueue(peer);
        while (pending.TryDequeue(out var gone))
        {
            lock (_stateLock)
            {
                if (!_peers.Remove(gone.Id))
                {
                    continue;
                }

                Monitor.PulseAll(_stateLock);
            }

            gone.Dispose();
            LogPeerDisconnected(_logger, SocketPath, gone.Id);
            foreach (var other in _peers.Values)
            {
                if (!Send(other, gone.Id, null))
                {
                    pending.Enqueue(other);
                }
            }
        }
    }

    private static bool Send(Peer peer, long value, FileDescriptor? fd) =>
        UnixSocket.TrySend(peer.Socket, value, fd) == UnixSocket.SendResult.Sent;

    private int LowestFreeId()
    {
        if (_peers.Count >= MaxPeers)
        {
            return -1;
        }

        int id = 0;
        foreach (int used in _peers.Keys)
        {
            if (used != id)
            {
                break;
            }

            id++;
        }

        return id;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "ivshmem {Socket}: peer {Id} connected ({Vectors} vectors)")]
    private static partial void LogPeerConnected(ILogger logger, string socket, int id, int vectors);

    [LoggerMessage(Level = LogLevel.Information, Message = "ivshmem {Socket}: peer {Id} disconnected")]
    private static partial void LogPeerDisconnected(ILogger logger, string socket, int id);

    [LoggerMessage(Level = LogLevel.Warning, Message = "ivshmem {Socket}: peer {Id} lost while it was being set up")]
    private static partial void LogPeerLost(ILogger logger, string socket, int id);

    [LoggerMessage(Level = LogLevel.Warning, Message = "ivshmem {Socket}: connection refused, {MaxPeers} peers already connected")]
    private static partial void LogPeerRejected(ILogger logger, string socket, int maxPeers);

    [LoggerMessage(Level = LogLevel.Error, Message = "ivshmem {Socket}: server stopped")]
    private static partial void LogServerFailed(ILogger logger, string socket, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "ivshmem {Socket}: could not remove the socket file")]
    private static partial void LogUnlinkFailed(ILogger logger, string socket, Exception exception);

    /// <summary>One connected client: its socket and one eventfd per vector.</summary>
    private sealed class Peer : IDisposable
    {
        public Peer(int id, FileDescriptor socket, int vectors)
        {
            Id = id;
            Socket = socket;
            Vectors = new EventFd[vectors];
            try
            {
                for (int v = 0; v < vectors; v++)
                {
                    Vectors[v] = new EventFd();
                }
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        public int Id { get; }

        public FileDescriptor Socket { get; }

        public EventFd[] Vectors { get; }

        public void Dispose()
        {
            Socket.Dispose();
            foreach (var vector in Vectors)
            {
                vector?.Dispose();
            }
        }
    }
}
