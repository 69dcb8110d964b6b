using PciVirtio.HwSim.Ivshmem;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Sockets;

namespace PciVirtio.HwSim.Tests.Ivshmem;

public class UnixSocketFdCountTests
{
    [Fact]
    public void An_ivshmem_message_with_one_fd_carries_exactly_one_fd()
    {
        var (a, b) = UnixStreamSocket.Pair();
        using (a)
        using (b)
        using (var memfd = MemFd.Create("one-fd", 4096))
        {
            Assert.Equal(UnixSocket.SendResult.Sent, UnixSocket.TrySend(a.Handle, -1, memfd));
            var fds = new List<FileDescriptor>();
            var buffer = new byte[8];
            Assert.Equal(ReceiveStatus.Data, b.Receive(buffer, fds, out int received));
            try
            {
                Assert.Equal(8, received);
                Assert.Equal(-1L, BitConverter.ToInt64(buffer));
                Assert.Single(fds);
            }
            finally
            {
                fds.ForEach(f => f.Dispose());
            }
        }
    }
}
