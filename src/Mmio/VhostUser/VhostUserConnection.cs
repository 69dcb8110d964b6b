using System.Buffers;
using System.Runtime.InteropServices;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Sockets;
using PciVirtio.VhostCore.VhostUser;

namespace PciVirtio.Mmio.VhostUser;

/// <summary>
/// One frontend connection: reads messages (header, payload, descriptors) from a
/// non-blocking unix socket as they arrive — across partial reads — feeds them to its
/// <see cref="VhostUserSession"/> and sends the replies. Owns the socket and the session.
/// </summary>
public sealed class VhostUserConnection : IDisposable
{
    private readonly byte[] _buffer = new byte[VhostUserConstants.HeaderSize + VhostUserConstants.MaxPayloadSize];
    private readonly List<FileDescriptor> _fds = [];
    private readonly ArrayBufferWriter<byte> _reply = new(64);
    private int _have;
    private VhostUserHeader? _header;

    public VhostUserConnection(UnixStreamSocket socket, VhostUserSession session)
    {
        Socket = socket;
        Session = session;
    }

    public UnixStreamSocket Socket { get; }

    public VhostUserSession Session { get; }

    /// <summary>Why the connection ended: the session's reason, "frontend closed the
    /// connection", or the socket error.</summary>
    public string? EndReason { get; private set; }

    /// <summary>
    /// Reads and handles whatever is available. False when the connection is over (end of
    /// stream, socket error, or the session rejected a message); the caller then disposes it.
    /// </summary>
    public bool OnReadable()
    {
        try
        {
            while (true)
            {
                int want = _header is { } h ? VhostUserConstants.HeaderSize + (int)Math.Min(h.Size, (uint)VhostUserConstants.MaxPayloadSize) : VhostUserConstants.HeaderSize;
                if (_have < want)
                {
                    var status = Socket.Receive(_buffer.AsSpan(_have, want - _have), _fds, out int n);
                    if (status == ReceiveStatus.WouldBlock)
                    {
                        return true;
                    }

                    if (status == ReceiveStatus.Closed)
                    {
                        EndReason = _have == 0 ? "frontend closed the connection" : $"frontend closed the connection inside a message ({_have} bytes)";
                        return false;
                    }

                    _have += n;
                    if (_have < want)
                    {
                        continue;
                    }
                }

                if (_header is null)
                {
                    _header = VhostUserHeader.Read(_buffer);
                    if (_header.Value.Size != 0 && _header.Value.Size <= VhostUserConstants.MaxPayloadSize)
                    {
                        continue;
                    }
                }

                // A whole message (or a header whose size is beyond any message: the session
                // rejects it without our reading an unbounded payload).
                var header = _header.Value;
                var payload = _buffer.AsSpan(VhostUserConstants.HeaderSize, _have - VhostUserConstants.HeaderSize);
                var fds = _fds.ToArray<SafeHandle>();
                _fds.Clear();
                _have = 0;
                _header = null;
                _reply.Clear();
                if (!Session.Handle(header, payload, fds, _reply))
                {
                    EndReason = Session.FailureReason;
                    return false;
                }

                if (_reply.WrittenCount > 0)
                {
                    Socket.Send(_reply.WrittenSpan);
                }
            }
        }
        catch (Exception e) when (e is IOException or TimeoutException)
        {
            EndReason = e.Message;
            return false;
        }
    }

    public void Dispose()
    {
        Session.Dispose();
        foreach (var fd in _fds)
        {
            fd.Dispose();
        }

        _fds.Clear();
        Socket.Dispose();
    }
}
