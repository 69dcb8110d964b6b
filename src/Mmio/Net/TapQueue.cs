using System.Runtime.InteropServices;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Net.Interop;
using PciVirtio.VhostCore.Memory;
using Tmds.Linux;

namespace PciVirtio.Mmio.Net;

/// <summary>
/// One queue of a <see cref="TapDevice"/>: an fd on /dev/net/tun attached to the interface.
/// A read takes one frame the kernel sends out of the interface; a write hands one frame to
/// the kernel as if it arrived on the interface. With a vnet header configured, every frame
/// in both directions starts with it.
/// <para>
/// The data path allocates nothing and copies nothing on our side: writes gather straight
/// from the caller's memory (guest memory, a BAR) with writev, reads scatter straight into it
/// with readv. Up to <see cref="StackSegments"/> segments the iovecs live on the stack;
/// beyond that in a per-queue array allocated with the queue, one for reads and one for
/// writes. So one thread may read while another writes, but two threads must not write (or
/// read) the same queue at once; doing so with many segments throws
/// <see cref="InvalidOperationException"/> rather than corrupting the other call's frame.
/// </para>
/// </summary>
public sealed unsafe class TapQueue
{
    /// <summary>The most segments one frame may have (IOV_MAX).</summary>
    public const int MaxSegments = VectoredIo.MaxVectors;

    /// <summary>Up to this many segments the iovecs are stackalloc'ed; a vnet header, an
    /// Ethernet frame in one or two guest buffers and a few page crossings fit.</summary>
    public const int StackSegments = 8;

    private readonly iovec[] _writeVectors = GC.AllocateArray<iovec>(MaxSegments, pinned: true);
    private readonly iovec[] _readVectors = GC.AllocateArray<iovec>(MaxSegments, pinned: true);
    private readonly string _interfaceName;
    private readonly int _vnetHeaderSize;
    private int _writeVectorsInUse;
    private int _readVectorsInUse;

    internal TapQueue(int index, FileDescriptor handle, string interfaceName, int vnetHeaderSize)
    {
        Index = index;
        Handle = handle;
        _interfaceName = interfaceName;
        _vnetHeaderSize = vnetHeaderSize;
    }

    /// <summary>The queue's position in <see cref="TapDevice.Queues"/>.</summary>
    public int Index { get; }

    /// <summary>The queue's fd, owned by the device: wait on it (EpollEventLoop, poll) for
    /// EPOLLIN when frames are waiting and EPOLLOUT after <see cref="TapWriteResult.WouldBlock"/>.</summary>
    public FileDescriptor Handle { get; }

    /// <summary>
    /// Reads one frame into <paramref name="frame"/> (vnet header first when the device has
    /// one). Returns the frame's length, or 0 when no frame is waiting (EAGAIN on a
    /// non-blocking queue). Size the buffer for the largest frame: one longer than the buffer
    /// is cut to fit, the rest dropped, and the return value is then just
    /// <paramref name="frame"/>.Length, so a cut frame cannot be told from one that fits
    /// exactly. 65535 bytes past the vnet header hold every frame up to the TAP's largest MTU
    /// (65521) and every GSO frame; only a VLAN tag the kernel inserts on a frame of that MTU
    /// adds 4 more. A buffer with no room past the vnet header throws
    /// <see cref="ArgumentException"/>; other errors throw <see cref="NativeCallException"/>.
    /// </summary>
    public int Read(Span<byte> frame)
    {
        ThrowIfTooSmall(frame.Length, nameof(frame));
        bool added = false;
        try
        {
            Handle.DangerousAddRef(ref added);
            fixed (byte* p = frame)
            {
                while (true)
                {
                    long rc = LibC.read(Handle.Value, p, frame.Length);
                    if (rc >= 0)
                    {
                        return (int)rc;
                    }

                    int errno = LibC.errno;
                    if (errno == Errno.EAGAIN)
                    {
                        return 0;
                    }

                    if (errno != Errno.EINTR)
                    {
                        throw new NativeCallException("read", errno, Subject);
                    }
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
    /// Reads one frame scattered over <paramref name="segments"/> (host pointers, e.g. guest
    /// receive buffers, filled in order; readv). Same results as
    /// <see cref="Read(Span{byte})"/>: the frame length, 0 when none is waiting, the segments'
    /// total when the frame filled them (and was perhaps cut). At most
    /// <see cref="MaxSegments"/> segments.
    /// </summary>
    public int Read(ReadOnlySpan<IoSegment> segments)
    {
        if (segments.Length > MaxSegments)
        {
            throw new ArgumentException($"{segments.Length} segments; readv takes at most {MaxSegments}", nameof(segments));
        }

        if (segments.Length <= StackSegments)
        {
            iovec* vectors = stackalloc iovec[StackSegments];
            ThrowIfTooSmall(Fill(segments, vectors), nameof(segments));
            return ReadVectors(vectors, segments.Length);
        }

        Claim(ref _readVectorsInUse, "read");
        try
        {
            fixed (iovec* vectors = _readVectors)
            {
                ThrowIfTooSmall(Fill(segments, vectors), nameof(segments));
                return ReadVectors(vectors, segments.Length);
            }
        }
        finally
        {
            Volatile.Write(ref _readVectorsInUse, 0);
        }
    }

    /// <summary>Writes one frame (vnet header first when the device has one). The kernel
    /// copies it before returning, so the buffer is free again at once. Never throws for a
    /// kernel error: <paramref name="errno"/> is 0 when written, EAGAIN for
    /// <see cref="TapWriteResult.WouldBlock"/>, the kernel's reason for
    /// <see cref="TapWriteResult.Rejected"/>.</summary>
    public TapWriteResult Write(ReadOnlySpan<byte> frame, out int errno)
    {
        bool added = false;
        try
        {
            Handle.DangerousAddRef(ref added);
            fixed (byte* p = frame)
            {
                while (true)
                {
                    if (LibC.write(Handle.Value, p, frame.Length) >= 0)
                    {
                        errno = 0;
                        return TapWriteResult.Written;
                    }

                    errno = LibC.errno;
                    if (errno != Errno.EINTR)
                    {
                        return errno == Errno.EAGAIN ? TapWriteResult.WouldBlock : TapWriteResult.Rejected;
                    }
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
    /// Writes one frame gathered from <paramref name="segments"/> (host pointers: a frame in
    /// guest memory goes to the kernel without a copy of ours; writev), in order. More than
    /// <see cref="MaxSegments"/> segments is <see cref="TapWriteResult.Rejected"/> with
    /// EMSGSIZE, without a system call. Results as for <see cref="Write(ReadOnlySpan{byte}, out int)"/>;
    /// memory the kernel cannot read is Rejected with EFAULT.
    /// </summary>
    public TapWriteResult Write(ReadOnlySpan<IoSegment> segments, out int errno)
    {
        if (segments.Length > MaxSegments)
        {
            errno = LibC.EMSGSIZE;
            return TapWriteResult.Rejected;
        }

        if (segments.Length <= StackSegments)
        {
            iovec* vectors = stackalloc iovec[StackSegments];
            Fill(segments, vectors);
            return WriteVectors(vectors, segments.Length, out errno);
        }

        Claim(ref _writeVectorsInUse, "write");
        try
        {
            fixed (iovec* vectors = _writeVectors)
            {
                Fill(segments, vectors);
                return WriteVectors(vectors, segments.Length, out errno);
            }
        }
        finally
        {
            Volatile.Write(ref _writeVectorsInUse, 0);
        }
    }

    public override string ToString() => Subject;

    private string Subject => $"{_interfaceName} queue {Index}";

    /// <summary>Copies the segments into iovecs; returns their total length.</summary>
    private static long Fill(ReadOnlySpan<IoSegment> segments, iovec* vectors)
    {
        long total = 0;
        for (int i = 0; i < segments.Length; i++)
        {
            vectors[i].iov_base = (void*)segments[i].Host;
            vectors[i].iov_len = segments[i].Length;
            total += segments[i].Length;
        }

        return total;
    }

    private void Claim(ref int inUse, string direction)
    {
        if (Interlocked.Exchange(ref inUse, 1) != 0)
        {
            throw new InvalidOperationException(
                $"two threads {direction} {Subject} at once; its preallocated iovecs serve one {direction}r at a time");
        }
    }

    /// <summary>
    /// A read needs room past the vnet header: the kernel refuses a buffer smaller than the
    /// header (EINVAL), and an empty buffer would make it drop a waiting frame and return 0,
    /// which reads as "nothing waiting".
    /// </summary>
    private void ThrowIfTooSmall(long length, string paramName)
    {
        if (length <= _vnetHeaderSize)
        {
            throw new ArgumentException(
                $"a {length}-byte buffer holds no frame after the {_vnetHeaderSize}-byte vnet header; size it for 65535 + {_vnetHeaderSize}", paramName);
        }
    }

    private int ReadVectors(iovec* vectors, int count)
    {
        bool added = false;
        try
        {
            Handle.DangerousAddRef(ref added);
            while (true)
            {
                nint rc = VectoredIo.ReadV(Handle.Value, vectors, count);
                if (rc >= 0)
                {
                    return (int)rc;
                }

                int errno = Marshal.GetLastPInvokeError();
                if (errno == Errno.EAGAIN)
                {
                    return 0;
                }

                if (errno != Errno.EINTR)
                {
                    throw new NativeCallException("readv", errno, Subject);
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

    private TapWriteResult WriteVectors(iovec* vectors, int count, out int errno)
    {
        bool added = false;
        try
        {
            Handle.DangerousAddRef(ref added);
            while (true)
            {
                if (VectoredIo.WriteV(Handle.Value, vectors, count) >= 0)
                {
                    errno = 0;
                    return TapWriteResult.Written;
                }

                errno = Marshal.GetLastPInvokeError();
                if (errno != Errno.EINTR)
                {
                    return errno == Errno.EAGAIN ? TapWriteResult.WouldBlock : TapWriteResult.Rejected;
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
}
