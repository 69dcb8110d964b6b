using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Signals;

namespace PciVirtio.HwSim.Ivshmem;

/// <summary>
/// An ivshmem client: what QEMU's <c>ivshmem-doorbell</c> device does with the server's
/// messages, without QEMU (see <see cref="IvshmemServer"/> for the protocol). <see cref="Connect"/>
/// reads the setup (version, id, shared memory, the peers present, our own eventfds); later
/// messages (peers joining and leaving) are read by <see cref="Pump"/> and
/// <see cref="WaitUntil"/>. Single-threaded: no background reader.
/// <para>
/// The eventfds in <see cref="OwnVectors"/> are this client's interrupts: a peer that writes the
/// eventfd it holds for (our id, v) makes <c>OwnVectors[v]</c> readable.
/// <see cref="Notify"/> rings a peer's vector the same way.
/// </para>
/// </summary>
public sealed class IvshmemClient : IDisposable
{
    private readonly FileDescriptor _socket;
    private readonly List<EventFd> _own = [];
    private readonly SortedDictionary<int, List<EventFd>> _peers = [];
    private FileDescriptor? _sharedMemory;
    private bool _disposed;

    private IvshmemClient(FileDescriptor socket, int vectors)
    {
        _socket = socket;
        Vectors = vectors;
    }

    /// <summary>Our peer id (what the device shows in IVPosition).</summary>
    public int Id { get; private set; } = -1;

    /// <summary>The version the server sent (0).</summary>
    public long Version { get; private set; }

    /// <summary>The vectors this client expects per peer (the device's <c>vectors=</c>).</summary>
    public int Vectors { get; }

    /// <summary>The shared memory the server handed out (map it with MemoryMapping).</summary>
    public FileDescriptor SharedMemory => _sharedMemory ?? throw new InvalidOperationException("no shared memory received");

    /// <summary>Our own eventfds, one per vector, in vector order.</summary>
    public IReadOnlyList<EventFd> OwnVectors => _own;

    /// <summary>The ids of the other connected peers we know of, ascending.</summary>
    public IReadOnlyList<int> PeerIds => [.. _peers.Keys];

    /// <summary>False once the server closed the connection.</summary>
    public bool IsConnected { get; private set; } = true;

    /// <summary>
    /// Connects to the server at <paramref name="socketPath"/> and reads the setup: version 0,
    /// our id, the shared memory, every present peer's eventfds and our own
    /// <paramref name="vectors"/> eventfds. Throws <see cref="IOException"/> when the server
    /// breaks the protocol or closes the connection first (e.g. because it has its maximum
    /// number of peers), <see cref="TimeoutException"/> when the setup does not arrive in time.
    /// </summary>
    public static IvshmemClient Connect(string socketPath, int vectors, TimeSpan timeout)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(vectors, 1);
        long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        var client = new IvshmemClient(UnixSocket.Connect(socketPath), vectors);
        try
        {
            client.Version = client.ReadSetup(deadline, "the protocol version", expectFd: false);
            if (client.Version != IvshmemServer.ProtocolVersion)
            {
                throw new IOException($"ivshmem server {socketPath} speaks protocol version {client.Version}; expected {IvshmemServer.ProtocolVersion}");
            }

            long id = client.ReadSetup(deadline, "our id", expectFd: false);
            if (id is < 0 or >= IvshmemServer.MaxPeerLimit)
            {
                throw new IOException($"ivshmem server {socketPath} assigned id {id}, outside 0..65535");
            }

            client.Id = (int)id;
            long shm = client.ReadSetup(deadline, "the shared memory", expectFd: true);
            if (shm != IvshmemServer.SharedMemoryMessage)
            {
                throw new IOException($"ivshmem server {socketPath} sent {shm} with the shared memory fd; expected -1");
            }

            while (client._own.Count < vectors)
            {
                if (!client.ReadOne(RemainingMs(deadline)))
                {
                    throw client.IsConnected
                        ? new TimeoutException($"ivshmem server {socketPath}: {client._own.Count} of {vectors} own vectors within {timeout}")
                        : new IOException($"ivshmem server {socketPath} closed the connection during setup");
                }
            }

            return client;
        }
        catch
        {
            client.Dispose();
            throw;
        }
    }

    /// <summary>Our eventfds for peer <paramref name="peerId"/>, in vector order (empty when the
    /// peer is unknown).</summary>
    public IReadOnlyList<EventFd> PeerVectors(int peerId) =>
        _peers.TryGetValue(peerId, out var list) ? list : [];

    /// <summary>Rings vector <paramref name="vector"/> of peer <paramref name="peerId"/>.</summary>
    public void Notify(int peerId, int vector)
    {
        var vectors = PeerVectors(peerId);
        if ((uint)vector >= (uint)vectors.Count)
        {
            throw new ArgumentOutOfRangeException(nameof(vector), $"peer {peerId} has {vectors.Count} known vectors");
        }

        vectors[vector].Signal();
    }

    /// <summary>Reads the messages that arrive within <paramref name="timeout"/> (stopping at the
    /// first quiet moment after it); returns how many were read.</summary>
    public int Pump(TimeSpan timeout)
    {
        int count = 0;
        int wait = (int)timeout.TotalMilliseconds;
        while (ReadOne(wait))
        {
            count++;
            wait = 0;
        }

        return count;
    }

    /// <summary>Reads messages until <paramref name="condition"/> holds (it is checked first and
    /// after every message); false on timeout.</summary>
    public bool WaitUntil(Func<IvshmemClient, bool> condition, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(condition);
        long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        while (!condition(this))
        {
            if (!ReadOne(RemainingMs(deadline)) && (RemainingMs(deadline) == 0 || !IsConnected))
            {
                return condition(this);
            }
        }

        return true;
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _socket.Dispose();
        _sharedMemory?.Dispose();
        foreach (var fd in _own)
        {
            fd.Dispose();
        }

        foreach (var list in _peers.Values)
        {
            DisposeAll(list);
        }

        _peers.Clear();
    }

    private static int RemainingMs(long deadline) => (int)Math.Clamp(deadline - Environment.TickCount64, 0, int.MaxValue);

    private static void DisposeAll(List<EventFd> list)
    {
        foreach (var fd in list)
        {
            fd.Dispose();
        }
    }

    /// <summary>Reads one setup message that must (or must not) carry an fd.</summary>
    private long ReadSetup(long deadline, string what, bool expectFd)
    {
        if (!UnixSocket.WaitReadable(_socket, RemainingMs(deadline)))
        {
            throw new TimeoutException($"ivshmem: no {what} from the server in time");
        }

        if (!UnixSocket.Receive(_socket, out long value, out var fd))
        {
            IsConnected = false;
            throw new IOException($"ivshmem: the server closed the connection before sending {what} (too many peers?)");
        }

        if (expectFd != fd is not null)
        {
            fd?.Dispose();
            throw new IOException($"ivshmem: {what} ({value}) came {(expectFd ? "without" : "with")} a file descriptor");
        }

        if (fd is not null)
        {
            _sharedMemory = fd;
        }

        return value;
    }

    /// <summary>Waits up to <paramref name="timeoutMs"/> for one message and applies it; false when
    /// none came or the connection ended.</summary>
    private bool ReadOne(int timeoutMs)
    {
        if (!IsConnected || !UnixSocket.WaitReadable(_socket, timeoutMs))
        {
            return false;
        }

        if (!UnixSocket.Receive(_socket, out long value, out var fd))
        {
            IsConnected = false;
            return false;
        }

        if (value < 0 || value >= IvshmemServer.MaxPeerLimit)
        {
            // Only setup sends -1; nothing else is defined. Ignore, as QEMU does.
            fd?.Dispose();
            return true;
        }

        int id = (int)value;
        if (fd is null)
        {
            // A peer left: forget (and close) our eventfds for it.
            if (_peers.Remove(id, out var gone))
            {
                DisposeAll(gone);
            }

            return true;
        }

        var eventFd = new EventFd(fd);
        if (id == Id)
        {
            _own.Add(eventFd);
        }
        else
        {
            if (!_peers.TryGetValue(id, out var list))
            {
                _peers.Add(id, list = []);
            }

            list.Add(eventFd);
        }

        return true;
    }
}
