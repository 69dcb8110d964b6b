using System.Runtime.InteropServices;
using System.Text;
using PciVirtio.Mmio.Interop;
using Tmds.Linux;

namespace PciVirtio.Mmio.Sockets;

/// <summary>
/// A unix stream socket with file-descriptor passing (SCM_RIGHTS), through raw system calls
/// because .NET's <c>Socket</c> cannot carry descriptors. Every descriptor we create or
/// receive is close-on-exec; every received descriptor is wrapped in a
/// <see cref="FileDescriptor"/> at once, so none leaks on any error path. Errors are
/// <see cref="NativeCallException"/>s naming the call and errno.
/// </summary>
public sealed unsafe class UnixStreamSocket : IDisposable
{
    /// <summary>The most descriptors one message may carry (the vhost-user limit); more
    /// arrive truncated (MSG_CTRUNC) and make <see cref="Receive"/> fail.</summary>
    public const int MaxFdsPerMessage = 8;

    private const int MaxPathBytes = 107;
    private const int SockaddrUnSize = 2 + MaxPathBytes + 1;
    private const int ECONNABORTED = 103;

    private UnixStreamSocket(FileDescriptor handle, bool nonBlocking)
    {
        Handle = handle;
        IsNonBlocking = nonBlocking;
    }

    public FileDescriptor Handle { get; }

    /// <summary>Non-blocking sockets (for the event loop) return
    /// <see cref="ReceiveStatus.WouldBlock"/> instead of waiting.</summary>
    public bool IsNonBlocking { get; }

    /// <summary>
    /// Binds and listens on <paramref name="path"/>. An existing socket file is removed only
    /// when nothing listens on it (a stale file left by a crashed process); a live listener
    /// makes this fail with EADDRINUSE.
    /// </summary>
    public static UnixStreamSocket Listen(string path, int backlog = 16, bool nonBlocking = true)
    {
        RemoveStaleSocket(path);
        var socket = FileDescriptor.FromResult(
            LibC.socket(LibC.AF_UNIX, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC | (nonBlocking ? LibC.SOCK_NONBLOCK : 0), 0), "socket(AF_UNIX)", path);
        try
        {
            byte* address = stackalloc byte[SockaddrUnSize];
            int length = FillAddress(address, path);
            if (LibC.bind(socket.Value, (sockaddr*)address, length) != 0)
            {
                throw new NativeCallException("bind", LibC.errno, path);
            }

            if (LibC.listen(socket.Value, backlog) != 0)
            {
                throw new NativeCallException("listen", LibC.errno, path);
            }

            return new UnixStreamSocket(socket, nonBlocking);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Connects to <paramref name="path"/> (the connect itself always completes
    /// before return; <paramref name="nonBlocking"/> sets the mode afterwards).</summary>
    public static UnixStreamSocket Connect(string path, bool nonBlocking = false)
    {
        var socket = FileDescriptor.FromResult(LibC.socket(LibC.AF_UNIX, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0), "socket(AF_UNIX)", path);
        try
        {
            byte* address = stackalloc byte[SockaddrUnSize];
            int length = FillAddress(address, path);
            while (LibC.connect(socket.Value, (sockaddr*)address, length) != 0)
            {
                int errno = LibC.errno;
                if (errno != Errno.EINTR)
                {
                    throw new NativeCallException("connect", errno, path);
                }
            }

            if (nonBlocking)
            {
                SetNonBlocking(socket);
            }

            return new UnixStreamSocket(socket, nonBlocking);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>A connected pair (socketpair), for tests and in-process links.</summary>
    public static (UnixStreamSocket First, UnixStreamSocket Second) Pair(bool nonBlocking = false)
    {
        int* sv = stackalloc int[2];
        Syscall.Check(LibC.socketpair(LibC.AF_UNIX, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC | (nonBlocking ? LibC.SOCK_NONBLOCK : 0), 0, sv), "socketpair");
        return (new UnixStreamSocket(new FileDescriptor(sv[0]), nonBlocking), new UnixStreamSocket(new FileDescriptor(sv[1]), nonBlocking));
    }

    /// <summary>Accepts one pending connection (in the listener's mode); null when none is
    /// pending on a non-blocking listener.</summary>
    public UnixStreamSocket? Accept()
    {
        while (true)
        {
            int fd = LibC.accept4(Handle.Value, null, null, LibC.SOCK_CLOEXEC | (IsNonBlocking ? LibC.SOCK_NONBLOCK : 0));
            if (fd >= 0)
            {
                return new UnixStreamSocket(new FileDescriptor(fd), IsNonBlocking);
            }

            int errno = LibC.errno;
            if (errno == Errno.EAGAIN || errno == ECONNABORTED)
            {
                return null;
            }

            if (errno != Errno.EINTR)
            {
                throw new NativeCallException("accept4", errno);
            }
        }
    }

    /// <summary>
    /// Sends all of <paramref name="data"/>, with <paramref name="fds"/> attached to the first
    /// byte as SCM_RIGHTS. Retries EINTR and short writes; on a non-blocking socket waits
    /// (poll) while the buffer is full. Never raises SIGPIPE: a gone peer is EPIPE.
    /// </summary>
    public void Send(ReadOnlySpan<byte> data, ReadOnlySpan<SafeHandle> fds = default)
    {
        if (fds.Length > MaxFdsPerMessage)
        {
            throw new ArgumentException($"{fds.Length} descriptors exceed the {MaxFdsPerMessage} one message carries", nameof(fds));
        }

        int[] raw = new int[fds.Length];
        int added = 0;
        try
        {
            for (; added < fds.Length; added++)
            {
                bool ok = false;
                fds[added].DangerousAddRef(ref ok);
                raw[added] = (int)fds[added].DangerousGetHandle();
            }

            SendRaw(data, raw);
        }
        finally
        {
            for (int i = 0; i < added; i++)
            {
                fds[i].DangerousRelease();
            }
        }
    }

    /// <summary>Sends with raw descriptor numbers (not owned; the caller keeps them open).</summary>
    public void SendRaw(ReadOnlySpan<byte> data, ReadOnlySpan<int> fds)
    {
        if (fds.Length > MaxFdsPerMessage)
        {
            throw new ArgumentException($"{fds.Length} descriptors exceed the {MaxFdsPerMessage} one message carries", nameof(fds));
        }

        int controlSize = LibC.CMSG_SPACE(sizeof(int) * MaxFdsPerMessage);
        byte* control = stackalloc byte[controlSize];
        new Span<byte>(control, controlSize).Clear();
        int sent = 0;
        bool fdsPending = !fds.IsEmpty;
        bool added = false;
        try
        {
            Handle.DangerousAddRef(ref added);
            while (sent < data.Length || fdsPending)
            {
                fixed (byte* p = data)
                {
                    iovec iov = default;
                    iov.iov_base = p + sent;
                    iov.iov_len = data.Length - sent;
                    msghdr message = default;
                    message.msg_iov = &iov;
                    message.msg_iovlen = 1;
                    if (fdsPending)
                    {
                        message.msg_control = control;
                        message.msg_controllen = LibC.CMSG_SPACE(sizeof(int) * fds.Length);
                        cmsghdr* header = LibC.CMSG_FIRSTHDR(&message);
                        header->cmsg_level = LibC.SOL_SOCKET;
                        header->cmsg_type = LibC.SCM_RIGHTS;
                        header->cmsg_len = CmsgLen(sizeof(int) * fds.Length);
                        fds.CopyTo(new Span<int>(LibC.CMSG_DATA(header), fds.Length));
                    }

                    long n = LibC.sendmsg(Handle.Value, &message, LibC.MSG_NOSIGNAL);
                    if (n < 0)
                    {
                        int errno = LibC.errno;
                        if (errno == Errno.EINTR)
                        {
                            continue;
                        }

                        if (errno == Errno.EAGAIN)
                        {
                            WaitFor(LibC.POLLOUT, -1);
                            continue;
                        }

                        throw new NativeCallException("sendmsg", errno);
                    }

                    fdsPending = false;
                    sent += (int)n;
                }
            }
        }
        finally
        {
            if (added)
            {
                Handle.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// One recvmsg: up to <paramref name="buffer"/>.Length bytes (a partial read is normal on
    /// a stream) and any descriptors that came with them, appended to <paramref name="fds"/>
    /// (owned by the caller). Truncated control data (more than
    /// <see cref="MaxFdsPerMessage"/> descriptors) closes what arrived and throws.
    /// </summary>
    public ReceiveStatus Receive(Span<byte> buffer, List<FileDescriptor> fds, out int received)
    {
        received = 0;
        int controlSize = LibC.CMSG_SPACE(sizeof(int) * MaxFdsPerMessage);
        byte* control = stackalloc byte[controlSize];
        bool added = false;
        try
        {
            Handle.DangerousAddRef(ref added);
            while (true)
            {
                long n;
                int flags;
                int firstNew = fds.Count;
                fixed (byte* p = buffer)
                {
                    iovec iov = default;
                    iov.iov_base = p;
                    iov.iov_len = buffer.Length;
                    msghdr message = default;
                    message.msg_iov = &iov;
                    message.msg_iovlen = 1;
                    message.msg_control = control;
                    message.msg_controllen = controlSize;
                    n = LibC.recvmsg(Handle.Value, &message, LibC.MSG_CMSG_CLOEXEC);
                    if (n < 0)
                    {
                        int errno = LibC.errno;
                        if (errno == Errno.EINTR)
                        {
                            continue;
                        }

                        if (errno == Errno.EAGAIN)
                        {
                            return ReceiveStatus.WouldBlock;
                        }

                        if (errno == Errno.ECONNRESET)
                        {
                            return ReceiveStatus.Closed;
                        }

                        throw new NativeCallException("recvmsg", errno);
                    }

                    flags = message.msg_flags;

                    // Walk the control messages by hand, bounded by the length the kernel
                    // returned (Tmds.LibC's CMSG_NXTHDR reads past a short buffer).
                    long controlLength = (uint)message.msg_controllen;
                    long offset = 0;
                    int headerSize = sizeof(cmsghdr);
                    while (offset + headerSize <= controlLength)
                    {
                        cmsghdr* header = (cmsghdr*)(control + offset);
                        long length = (uint)header->cmsg_len;
                        if (length < CmsgLen(0) || offset + length > controlLength)
                        {
                            break;
                        }

                        if (header->cmsg_level == LibC.SOL_SOCKET && header->cmsg_type == LibC.SCM_RIGHTS)
                        {
                            int count = (int)(length - CmsgLen(0)) / sizeof(int);
                            int* data = (int*)LibC.CMSG_DATA(header);
                            for (int i = 0; i < count; i++)
                            {
                                fds.Add(new FileDescriptor(data[i]));
                            }
                        }

                        offset += (length + 7) & ~7L;
                    }
                }

                if ((flags & LibC.MSG_CTRUNC) != 0)
                {
                    for (int i = fds.Count - 1; i >= firstNew; i--)
                    {
                        fds[i].Dispose();
                        fds.RemoveAt(i);
                    }

                    throw new NativeCallException(
                        $"recvmsg: control data truncated (more than {MaxFdsPerMessage} descriptors in one message); the ones that arrived were closed");
                }

                received = (int)n;
                return n == 0 && !buffer.IsEmpty ? ReceiveStatus.Closed : ReceiveStatus.Data;
            }
        }
        finally
        {
            if (added)
            {
                Handle.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Reads exactly <paramref name="buffer"/>.Length bytes (descriptors appended to
    /// <paramref name="fds"/>), across partial reads; on a non-blocking socket waits up to
    /// <paramref name="timeoutMs"/> (-1: no limit) for each piece. False on end of stream
    /// before the first byte; end of stream inside the buffer throws.
    /// </summary>
    public bool ReceiveExactly(Span<byte> buffer, List<FileDescriptor> fds, int timeoutMs = -1)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            var status = Receive(buffer[total..], fds, out int n);
            switch (status)
            {
                case ReceiveStatus.Closed when total == 0:
                    return false;
                case ReceiveStatus.Closed:
                    throw new IOException($"end of stream inside a message ({total} of {buffer.Length} bytes)");
                case ReceiveStatus.WouldBlock:
                    if (!WaitFor(LibC.POLLIN, timeoutMs))
                    {
                        throw new TimeoutException($"no data within {timeoutMs} ms ({total} of {buffer.Length} bytes)");
                    }

                    break;
                default:
                    total += n;
                    break;
            }
        }

        return true;
    }

    /// <summary>Waits until the socket is readable or hung up; false on timeout.</summary>
    public bool WaitReadable(int timeoutMs) => WaitFor(LibC.POLLIN, timeoutMs);

    public void Dispose() => Handle.Dispose();

    /// <summary>Removes the socket file at <paramref name="path"/> (if any).</summary>
    public static void Unlink(string path)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* p = utf8)
        {
            if (LibC.unlink(p) != 0 && LibC.errno != Errno.ENOENT)
            {
                throw new NativeCallException("unlink", LibC.errno, path);
            }
        }
    }

    private static void RemoveStaleSocket(string path)
    {
        if (!File.Exists(path))
        {
            return;
        }

        try
        {
            using var probe = Connect(path);
        }
        catch (NativeCallException e) when (e.Errno == Errno.ECONNREFUSED)
        {
            Unlink(path);
            return;
        }

        throw new NativeCallException("bind", EADDRINUSE, $"{path} (another process listens on it)");
    }

    private const int EADDRINUSE = 98;

    /// <summary>CMSG_LEN: the header plus <paramref name="dataBytes"/>, unpadded (Tmds.LibC
    /// pads the data, which would make the kernel read one descriptor too many).</summary>
    private static int CmsgLen(int dataBytes) => ((sizeof(cmsghdr) + 7) & ~7) + dataBytes;

    private static void SetNonBlocking(FileDescriptor socket)
    {
        const int F_GETFL = 3, F_SETFL = 4, O_NONBLOCK = 0x800;
        int flags = Syscall.Check(LibC.fcntl(socket.Value, F_GETFL, 0), "fcntl(F_GETFL)");
        Syscall.Check(LibC.fcntl(socket.Value, F_SETFL, flags | O_NONBLOCK), "fcntl(F_SETFL)");
    }

    private bool WaitFor(short events, int timeoutMs)
    {
        pollfd entry = default;
        entry.fd = Handle.Value;
        entry.events = events;
        while (true)
        {
            int rc = LibC.poll(&entry, 1, timeoutMs);
            if (rc >= 0)
            {
                return rc > 0;
            }

            int errno = LibC.errno;
            if (errno != Errno.EINTR)
            {
                throw new NativeCallException("poll", errno);
            }
        }
    }

    private static int FillAddress(byte* address, string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        int byteCount = Encoding.UTF8.GetByteCount(path);
        if (byteCount > MaxPathBytes)
        {
            throw new ArgumentException($"unix socket path is {byteCount} bytes; at most {MaxPathBytes} fit in sun_path: {path}", nameof(path));
        }

        new Span<byte>(address, SockaddrUnSize).Clear();
        *(ushort*)address = (ushort)LibC.AF_UNIX;
        Encoding.UTF8.GetBytes(path, new Span<byte>(address + 2, MaxPathBytes));
        return 2 + byteCount + 1;
    }
}

/// <summary>The outcome of one <see cref="UnixStreamSocket.Receive"/>.</summary>
public enum ReceiveStatus
{
    Data,

    /// <summary>Nothing to read now (non-blocking socket).</summary>
    WouldBlock,

    /// <summary>The peer closed its end (or reset the connection).</summary>
    Closed,
}
