using System.Runtime.InteropServices;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Sockets;

namespace PciVirtio.Mmio.Tests.Sockets;

[Collection("fd-counting")]
public sealed class UnixStreamSocketTests
{
    internal static int OpenFds()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        return Directory.GetFiles("/proc/self/fd").Length;
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(8)]
    public void Round_trip_carries_payload_and_descriptors(int fdCount)
    {
        var (a, b) = UnixStreamSocket.Pair();
        using (a)
        using (b)
        {
            var memfds = Enumerable.Range(0, fdCount).Select(i => MemFd.Create($"t{i}", 4096)).ToArray();
            int before = OpenFds();
            byte[] payload = Enumerable.Range(0, 100).Select(i => (byte)i).ToArray();
            a.Send(payload, memfds.Cast<SafeHandle>().ToArray());
            var buffer = new byte[100];
            var fds = new List<FileDescriptor>();
            Assert.True(b.ReceiveExactly(buffer, fds, 5000));
            Assert.Equal(payload, buffer);
            Assert.Equal(fdCount, fds.Count);
            Assert.Equal(before + fdCount, OpenFds());
            for (int i = 0; i < fdCount; i++)
            {
                // The received descriptor refers to the same memfd: its name shows in the link.
                string target = File.ResolveLinkTarget($"/proc/self/fd/{fds[i].Value}", false)!.ToString();
                Assert.Contains($"memfd:t{i}", target, StringComparison.Ordinal);
                fds[i].Dispose();
            }

            Assert.Equal(before, OpenFds());
            foreach (var m in memfds)
            {
                m.Dispose();
            }
        }
    }

    [Fact]
    public void Payload_read_in_pieces_is_reassembled()
    {
        var (a, b) = UnixStreamSocket.Pair();
        using (a)
        using (b)
        {
            a.Send(new byte[] { 1, 2, 3 });
            a.Send(new byte[] { 4, 5 });
            var buffer = new byte[5];
            Assert.True(b.ReceiveExactly(buffer, [], 5000));
            Assert.Equal(new byte[] { 1, 2, 3, 4, 5 }, buffer);
        }
    }

    [Fact]
    public void Too_many_descriptors_are_closed_and_reported()
    {
        var (a, b) = UnixStreamSocket.Pair();
        using (a)
        using (b)
        {
            using var memfd = MemFd.Create("ctrunc", 4096);
            int before = OpenFds();
            // Nine descriptors through a raw sendmsg (Send refuses more than eight).
            SendNine(a, memfd.Value);
            var fds = new List<FileDescriptor>();
            var e = Assert.Throws<NativeCallException>(() => b.ReceiveExactly(new byte[1], fds, 5000));
            Assert.Contains("truncated", e.Message, StringComparison.Ordinal);
            Assert.Empty(fds);
            Assert.Equal(before, OpenFds());
        }
    }

    private static unsafe void SendNine(UnixStreamSocket socket, int fd)
    {
        int controlSize = Tmds.Linux.LibC.CMSG_SPACE(sizeof(int) * 9);
        byte* control = stackalloc byte[controlSize];
        new Span<byte>(control, controlSize).Clear();
        byte data = 7;
        Tmds.Linux.iovec iov = default;
        iov.iov_base = &data;
        iov.iov_len = 1;
        Tmds.Linux.msghdr message = default;
        message.msg_iov = &iov;
        message.msg_iovlen = 1;
        message.msg_control = control;
        message.msg_controllen = controlSize;
        var header = Tmds.Linux.LibC.CMSG_FIRSTHDR(&message);
        header->cmsg_level = Tmds.Linux.LibC.SOL_SOCKET;
        header->cmsg_type = Tmds.Linux.LibC.SCM_RIGHTS;
        header->cmsg_len = Tmds.Linux.LibC.CMSG_LEN(sizeof(int) * 9);
        for (int i = 0; i < 9; i++)
        {
            ((int*)Tmds.Linux.LibC.CMSG_DATA(header))[i] = fd;
        }

        Assert.Equal(1, Tmds.Linux.LibC.sendmsg(socket.Handle.Value, &message, 0));
    }

    [Fact]
    public void End_of_stream_is_reported()
    {
        var (a, b) = UnixStreamSocket.Pair();
        using (b)
        {
            a.Dispose();
            Assert.False(b.ReceiveExactly(new byte[4], [], 5000));
        }
    }

    [Fact]
    public void Non_blocking_receive_would_block_then_times_out()
    {
        var (a, b) = UnixStreamSocket.Pair(nonBlocking: true);
        using (a)
        using (b)
        {
            Assert.Equal(ReceiveStatus.WouldBlock, b.Receive(new byte[4], [], out _));
            Assert.Throws<TimeoutException>(() => b.ReceiveExactly(new byte[4], [], 50));
        }
    }

    [Fact]
    public void Listen_replaces_a_stale_file_but_not_a_live_listener()
    {
        string path = Path.Combine(Path.GetTempPath(), $"vu-sock-{Guid.NewGuid():N}.sock");
        try
        {
            var first = UnixStreamSocket.Listen(path);
            var e = Assert.Throws<NativeCallException>(() => UnixStreamSocket.Listen(path));
            Assert.Contains("another process listens", e.Message, StringComparison.Ordinal);
            first.Dispose(); // the file stays: stale now
            Assert.True(File.Exists(path));
            using var second = UnixStreamSocket.Listen(path, nonBlocking: true);
            Assert.Null(second.Accept());
            using var client = UnixStreamSocket.Connect(path);
            Assert.True(second.WaitReadable(5000));
            using var server = second.Accept();
            Assert.NotNull(server);
            client.Send(new byte[] { 9 });
            var buffer = new byte[1];
            Assert.True(server.ReceiveExactly(buffer, [], 5000));
            Assert.Equal(9, buffer[0]);
        }
        finally
        {
            UnixStreamSocket.Unlink(path);
        }
    }

    [Fact]
    public void Connect_to_missing_path_names_the_call()
    {
        var e = Assert.Throws<NativeCallException>(() => UnixStreamSocket.Connect("/tmp/definitely-missing-vu.sock"));
        Assert.Equal("connect", e.Call);
        Assert.Equal(Errno.ENOENT, e.Errno);
    }
}

[CollectionDefinition("fd-counting", DisableParallelization = true)]
public sealed class FdCountingCollection;
