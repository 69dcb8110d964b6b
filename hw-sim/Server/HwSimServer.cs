using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using PciVirtio.HwSim.Device;
using PciVirtio.HwSim.Ivshmem;
using PciVirtio.Mmio.Interop;

namespace PciVirtio.HwSim.Server;

/// <summary>
/// The hw-sim process side: owns an <see cref="HwSimDevice"/> and hands its descriptors to
/// whoever connects to the unix socket (protocol in docs/hw-sim.md): the client sends one
/// int64 request (<see cref="OpenPort0"/>, <see cref="OpenPort1"/> or <see cref="Control"/>), the
/// server answers with <see cref="Magic"/>, the descriptor count, then each descriptor (SCM_RIGHTS)
/// with its index, and closes. Optionally also runs an <see cref="IvshmemServer"/> whose shared
/// memory is the device's local memory.
/// </summary>
public sealed partial class HwSimServer : IDisposable
{
    public const long OpenPort0 = 0;
    public const long OpenPort1 = 1;

    /// <summary>Request for the fault and stats commands (no port is opened).</summary>
    public const long Control = 2;

    /// <summary>First word of every reply: "HWSIMNTB".</summary>
    public const long Magic = 0x42544E4D49535748;

    private readonly FileDescriptor _listener;
    private readonly Thread _thread;
    private readonly ILogger _logger;
    private readonly bool _ownsDevice;
    private readonly long[] _opens = new long[3];
    private volatile bool _stopping;
    private bool _disposed;

    /// <param name="socketPath">The hw-sim socket (must not exist).</param>
    /// <param name="device">The device served; disposed with the server when <paramref name="ownsDevice"/>.</param>
    /// <param name="ivshmemSocketPath">When set, also serve the ivshmem-server protocol there, with
    /// the device's local memory (both ports', a power of two in size) as the shared memory.</param>
    /// <param name="ivshmemVectors">Interrupt vectors per ivshmem peer.</param>
    /// <param name="ivshmemMaxPeers">ivshmem peers at once.</param>
    /// <param name="ownsDevice">Dispose the device with the server.</param>
    /// <param name="logger">Connections are logged at Information level.</param>
    public HwSimServer(string socketPath, HwSimDevice device, string? ivshmemSocketPath = null, int ivshmemVectors = 1, int ivshmemMaxPeers = 16,
        bool ownsDevice = false, ILogger? logger = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(socketPath);
        SocketPath = socketPath;
        Device = device;
        _ownsDevice = ownsDevice;
        _logger = logger ?? NullLogger.Instance;
        _listener = UnixSocket.Listen(socketPath, backlog: 16);
        try
        {
            if (ivshmemSocketPath is not null)
            {
                ulong size = 2 * device.LocalMemorySize;
                if (!ulong.IsPow2(size))
                {
                    throw new ArgumentException($"the ivshmem shared memory (2 ports × {device.WindowCount} windows × {device.WindowMaxSize} B = {size} B) must be a power of two", nameof(ivshmemSocketPath));
                }

                Ivshmem = new IvshmemServer(ivshmemSocketPath, device.LocalMemoryFd, size, ivshmemVectors, ivshmemMaxPeers, _logger);
            }
        }
        catch
        {
            _listener.Dispose();
            UnixSocket.Unlink(socketPath);
            throw;
        }

        _thread = new Thread(Run) { IsBackground = true, Name = $"hw-sim {Path.GetFileName(socketPath)}" };
        _thread.Start();
    }

    public string SocketPath { get; }

    public HwSimDevice Device { get; }

    /// <summary>The ivshmem-server endpoint, when one was asked for.</summary>
    public IvshmemServer? Ivshmem { get; }

    /// <summary>How many times port <paramref name="port"/> was opened (2 = control connections).</summary>
    public long Opens(int port) => Interlocked.Read(ref _opens[port]);

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _stopping = true;
        _thread.Join();
        _listener.Dispose();
        UnixSocket.Unlink(SocketPath);
        Ivshmem?.Dispose();
        if (_ownsDevice)
        {
            Device.Dispose();
        }
    }

    private void Run()
    {
        while (!_stopping)
        {
            try
            {
                if (!UnixSocket.WaitReadable(_listener, 100))
                {
                    continue;
                }

                using FileDescriptor? client = UnixSocket.Accept(_listener);
                if (client is not null)
                {
                    Serve(client);
                }
            }
            catch (Exception e) when (e is IOException or NativeCallException or InvalidDataException)
            {
                LogClientFailed(e.Message);
            }
        }
    }

    private void Serve(FileDescriptor client)
    {
        if (!UnixSocket.WaitReadable(client, 2000) || !UnixSocket.Receive(client, out long request, out FileDescriptor? stray))
        {
            throw new InvalidDataException("the client sent no request");
        }

        stray?.Dispose();
        if (request is < OpenPort0 or > Control)
        {
            _ = UnixSocket.TrySend(client, -1, null);
            throw new InvalidDataException($"unknown request {request}");
        }

        Interlocked.Increment(ref _opens[request]);
        IReadOnlyList<FileDescriptor> fds = Device.Descriptors;
        if (UnixSocket.TrySend(client, Magic, null) != UnixSocket.SendResult.Sent ||
            UnixSocket.TrySend(client, fds.Count, null) != UnixSocket.SendResult.Sent)
        {
            throw new IOException("the client went away");
        }

        for (int i = 0; i < fds.Count; i++)
        {
            if (UnixSocket.TrySend(client, i, fds[i]) != UnixSocket.SendResult.Sent)
            {
                throw new IOException("the client went away");
            }
        }

        LogServed(request);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "hw-sim: served request {Request}")]
    private partial void LogServed(long request);

    [LoggerMessage(Level = LogLevel.Warning, Message = "hw-sim: client failed: {Reason}")]
    private partial void LogClientFailed(string reason);
}
