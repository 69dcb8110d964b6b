using System.Runtime.InteropServices;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Sockets;
using Tmds.Linux;

namespace PciVirtio.HwSim.Ivshmem;

/// <summary>
/// The ivshmem protocol over unix stream sockets, through raw system calls: every message is
/// one little-endian int64 with at most one file descriptor passed as SCM_RIGHTS, which .NET's
/// <c>Socket</c> cannot send. Listening, connecting and removing the socket file are
/// <see cref="UnixStreamSocket"/>'s. All descriptors are close-on-exec.
/// </summary>
internal static unsafe class UnixSocket
{
    /// <summary>accept4: a pending connection was aborted before we took it.</summary>
    private const int ECONNABORTED = 103;

    /// <summary>The outcome of <see cref="TrySend"/>.</summary>
    internal enum SendResult
    {
        Sent,

        /// <summary>The peer is gone (EPIPE, ECONNRESET) or does not read (EAGAIN on a full
        /// socket buffer): either way it cannot follow the protocol any more.</summary>
        PeerLost,
    }

    /// <summary>Binds and listens on <paramref name="path"/> (non-blocking, for poll + accept);
    /// a stale socket file is replaced, a live listener refused (see <see cref="UnixStreamSocket.Listen"/>).</summary>
    public static FileDescriptor Listen(string path, int backlog) => UnixStreamSocket.Listen(path, backlog, nonBlocking: true).Handle;

    /// <summary>Connects a blocking stream socket to <paramref name="path"/>.</summary>
    public static FileDescriptor Connect(string path) => UnixStreamSocket.Connect(path).Handle;

    /// <summary>Accepts one pending connection as a non-blocking socket; null when none is pending.</summary>
    public static FileDescriptor? Accept(FileDescriptor listener)
    {
        while (true)
        {
            int fd = LibC.accept4(listener.Value, null, null, LibC.SOCK_CLOEXEC | LibC.SOCK_NONBLOCK);
            if (fd >= 0)
            {
                return new FileDescriptor(fd);
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

    /// <summary>Sends <paramref name="value"/> (little-endian int64) with <paramref name="fd"/>
    /// attached as SCM_RIGHTS when it is not null. Never raises SIGPIPE.</summary>
    public static SendResult TrySend(FileDescriptor socket, long value, SafeHandle? fd)
    {
        long payload = BitConverter.IsLittleEndian ? value : System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(value);
        int controlSize = LibC.CMSG_SPACE(sizeof(int));
        byte* control = stackalloc byte[controlSize];
        new Span<byte>(control, controlSize).Clear();

        iovec iov = default;
        iov.iov_base = &payload;
        iov.iov_len = sizeof(long);
        msghdr message = default;
        message.msg_iov = &iov;
        message.msg_iovlen = 1;

        bool added = false;
        try
        {
            if (fd is not null)
            {
                fd.DangerousAddRef(ref added);
                message.msg_control = control;
                message.msg_controllen = controlSize;
                cmsghdr* header = LibC.CMSG_FIRSTHDR(&message);
                header->cmsg_level = LibC.SOL_SOCKET;
                header->cmsg_type = LibC.SCM_RIGHTS;
                // The length is the aligned header plus exactly one int: Tmds.LibC's CMSG_LEN pads
                // the data, which makes the kernel pass a second descriptor (a copy of fd 0).
                header->cmsg_len = (socklen_t)(((sizeof(cmsghdr) + 7) & ~7) + sizeof(int));
                *(int*)LibC.CMSG_DATA(header) = (int)fd.DangerousGetHandle();
            }

            while (true)
            {
                long sent = LibC.sendmsg(socket.Value, &message, LibC.MSG_NOSIGNAL);
                if (sent == sizeof(long))
                {
                    return SendResult.Sent;
                }

                int errno = sent < 0 ? LibC.errno : Errno.EIO;
                switch (errno)
                {
                    case Errno.EINTR:
                        continue;
                    case Errno.EPIPE or Errno.ECONNRESET or Errno.ENOTCONN or Errno.EAGAIN:
                        return SendResult.PeerLost;
                    default:
                        throw new NativeCallException(sent < 0 ? "sendmsg" : "sendmsg (short write)", errno);
                }
            }
        }
        finally
        {
            if (added)
            {
                fd!.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Receives one message: fills <paramref name="value"/> and returns true, with any descriptor
    /// that came with it in <paramref name="fd"/> (owned by the caller; extra descriptors are
    /// closed). Returns false at end of stream. Blocks until the whole 8 bytes arrived.
    /// </summary>
    public static bool Receive(FileDescriptor socket, out long value, out FileDescriptor? fd)
    {
        value = 0;
        fd = null;
        long payload = 0;
        int received = 0;
        const int MaxFds = 8;
        int controlSize = LibC.CMSG_SPACE(sizeof(int) * MaxFds);
        byte* control = stackalloc byte[controlSize];
        try
        {
            while (received < sizeof(long))
            {
                iovec iov = default;
                iov.iov_base = (byte*)&payload + received;
                iov.iov_len = sizeof(long) - received;
                msghdr message = default;
                message.msg_iov = &iov;
                message.msg_iovlen = 1;
                message.msg_control = control;
                message.msg_controllen = controlSize;

                long n = LibC.recvmsg(socket.Value, &message, LibC.MSG_CMSG_CLOEXEC);
                if (n < 0)
                {
                    int errno = LibC.errno;
                    if (errno == Errno.EINTR)
                    {
                        continue;
                    }

                    if (errno == Errno.ECONNRESET)
                    {
                        return false;
                    }

                    throw new NativeCallException("recvmsg", errno);
                }

                for (cmsghdr* header = LibC.CMSG_FIRSTHDR(&message); header != null; header = LibC.CMSG_NXTHDR(&message, header))
                {
                    if (header->cmsg_level != LibC.SOL_SOCKET || header->cmsg_type != LibC.SCM_RIGHTS)
                    {
                        continue;
                    }

                    int count = ((int)header->cmsg_len - LibC.CMSG_LEN(0)) / sizeof(int);
                    int* fds = (int*)LibC.CMSG_DATA(header);
                    for (int i = 0; i < count; i++)
                    {
                        if (fd is null)
                        {
                            fd = new FileDescriptor(fds[i]);
                        }
                        else
                        {
                            _ = LibC.close(fds[i]);
                        }
                    }
                }

                if ((message.msg_flags & LibC.MSG_CTRUNC) != 0)
                {
                    throw new IOException("recvmsg: control data truncated (more descriptors than one message carries)");
                }

                if (n == 0)
                {
                    if (received != 0)
                    {
                        throw new IOException($"end of stream inside a message ({received} of 8 bytes)");
                    }

                    fd?.Dispose();
                    fd = null;
                    return false;
                }

                received += (int)n;
            }

            value = BitConverter.IsLittleEndian ? payload : System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(payload);
            return true;
        }
        catch
        {
            fd?.Dispose();
            fd = null;
            throw;
        }
    }

    /// <summary>Reads and discards whatever a peer sent (the protocol has no client messages);
    /// false when the peer closed its end or the connection broke.</summary>
    public static bool DrainAndCheckOpen(FileDescriptor socket)
    {
        byte* buffer = stackalloc byte[256];
        while (true)
        {
            long n = LibC.recv(socket.Value, buffer, 256, LibC.MSG_DONTWAIT);
            if (n > 0)
            {
                continue;
            }

            if (n == 0)
            {
                return false;
            }

            int errno = LibC.errno;
            if (errno == Errno.EINTR)
            {
                continue;
            }

            return errno == Errno.EAGAIN;
        }
    }

    /// <summary>Waits until <paramref name="fd"/> is readable (or hung up); false on timeout.
    /// A negative <paramref name="timeoutMs"/> waits without limit.</summary>
    public static bool WaitReadable(FileDescriptor fd, int timeoutMs)
    {
        pollfd entry = default;
        entry.fd = fd.Value;
        entry.events = LibC.POLLIN;
        return Poll(&entry, 1, timeoutMs) > 0;
    }

    /// <summary>poll(2), retrying EINTR with the full timeout (callers bound the total themselves).</summary>
    public static int Poll(pollfd* entries, int count, int timeoutMs)
    {
        while (true)
        {
            int rc = LibC.poll(entries, (ulong_t)(ulong)count, timeoutMs);
            if (rc >= 0)
            {
                return rc;
            }

            int errno = LibC.errno;
            if (errno != Errno.EINTR)
            {
                throw new NativeCallException("poll", errno);
            }
        }
    }

    /// <summary>Removes the socket file at <paramref name="path"/>, if any.</summary>
    public static void Unlink(string path) => UnixStreamSocket.Unlink(path);
}
