using System.Runtime.InteropServices;
using PciVirtio.HwSim.Client;
using PciVirtio.HwSim.Device;
using PciVirtio.HwSim.Ivshmem;
using PciVirtio.HwSim.Server;
using PciVirtio.Mmio.Memory;

namespace PciVirtio.HwSim.Tests.Server;

public sealed class HwSimServerTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);
    private readonly string _dir = Directory.CreateTempSubdirectory("hwsim-srv-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Ports_opened_over_the_socket_share_the_servers_device()
    {
        using var device = HwSimDevice.Create(windows: 1, windowSize: 16384);
        using var server = new HwSimServer(Path.Combine(_dir, "ntb.sock"), device);
        using SimNtbPort a = HwSimClient.OpenPort(server.SocketPath, 0, Timeout);
        using SimNtbPort b = HwSimClient.OpenPort(server.SocketPath, 1, Timeout);
        Assert.Equal(0, a.Port);
        Assert.Equal(1, b.Port);
        Assert.Equal(1, server.Opens(0));
        Assert.Equal(1, server.Opens(1));

        b.SetTranslation(0, 0, 16384);
        using MemoryMapping window = a.MapPeerWindow(0);
        a.PeerWindowAccessor.StoreU64(window.Address + 64, 0xFEEDFACECAFEBEEF);
        Assert.Equal(0xFEEDFACECAFEBEEFUL, MemoryMarshal.Read<ulong>(b.LocalMemory.Span[64..]));
        a.PeerDoorbellSet(1UL << 7);
        Assert.True(UnixSocket.WaitReadable(b.DoorbellEvent(7).Handle, 2000));
        Assert.True(UnixSocket.WaitReadable(device.DoorbellEvent(1, 7).Handle, 0), "the server's eventfd is the same one");

        using HwSimDevice control = HwSimClient.Control(server.SocketPath, Timeout);
        control.SetLink(false);
        Assert.False(a.LinkIsUp);
        Assert.True(UnixSocket.WaitReadable(a.LinkEvent.Handle, 2000));
        Assert.Equal(1, device.Counters(0).RemoteWrites);
    }

    [Fact]
    public async Task Two_threads_exchange_a_stream_through_the_window_with_doorbells()
    {
        using var device = HwSimDevice.Create(windows: 1, windowSize: 65536);
        using var server = new HwSimServer(Path.Combine(_dir, "ntb.sock"), device);
        using SimNtbPort a = HwSimClient.OpenPort(server.SocketPath, 0, Timeout);
        using SimNtbPort b = HwSimClient.OpenPort(server.SocketPath, 1, Timeout);
        var receiver = Task.Run(() => PeerExchange.Run(b, 300_000, 3000, 5, TimeSpan.FromSeconds(30)));
        var sent = PeerExchange.Run(a, 300_000, 3000, 5, TimeSpan.FromSeconds(30));
        Assert.Equal(sent, await receiver.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(100, sent.Chunks);
        Assert.Equal(300_000, device.Counters(0).RemoteWrittenBytes);
        Assert.Equal(0, device.Counters(0).RemoteReads);
        Assert.Equal(0, device.Counters(1).RemoteReads);
        Assert.Equal(100, device.Counters(1).InterruptsRaised);
        Assert.Equal(100, device.Counters(0).InterruptsRaised);
    }

    [Fact]
    public async Task A_corrupted_byte_is_detected_by_the_exchange()
    {
        using var device = HwSimDevice.Create(windows: 1, windowSize: 65536);
        using SimNtbPort a = device.OpenPort(0);
        using SimNtbPort b = device.OpenPort(1);
        // The receiver checks against a different seed: the first chunk must fail.
        var receiver = Task.Run(() => PeerExchange.Run(b, 8192, 4096, 6, TimeSpan.FromSeconds(5)));
        _ = Assert.ThrowsAny<Exception>(() => PeerExchange.Run(a, 8192, 4096, 5, TimeSpan.FromSeconds(2)));
        await Assert.ThrowsAsync<InvalidDataException>(() => receiver.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public void The_ivshmem_endpoint_serves_the_devices_local_memory()
    {
        using var device = HwSimDevice.Create(windows: 1, windowSize: 65536);
        using var server = new HwSimServer(Path.Combine(_dir, "ntb.sock"), device, Path.Combine(_dir, "ivshmem.sock"));
        Assert.NotNull(server.Ivshmem);
        using IvshmemClient guest = IvshmemClient.Connect(server.Ivshmem.SocketPath, 1, Timeout);
        using MemoryMapping shared = MemoryMapping.Map(guest.SharedMemory, 0, 2 * 65536);

        using SimNtbPort a = device.OpenPort(0);
        using SimNtbPort b = device.OpenPort(1);
        b.SetTranslation(0, 0, 4096);
        using MemoryMapping window = a.MapPeerWindow(0);
        a.PeerWindowAccessor.StoreU32(window.Address + 12, 0xA5A5_5A5A);
        // Port 1's local memory starts at 64 KiB in the shared memory.
        Assert.Equal(0xA5A5_5A5Au, MemoryMarshal.Read<uint>(shared.Span[(65536 + 12)..]));
        server.Dispose();
        // The device (and its memory) outlives the ivshmem endpoint.
        Assert.Equal(0xA5A5_5A5Au, MemoryMarshal.Read<uint>(b.LocalMemory.Span[12..]));
    }

    [Fact]
    public void An_unknown_request_gets_no_descriptors()
    {
        using var device = HwSimDevice.Create(windows: 1, windowSize: 4096);
        using var server = new HwSimServer(Path.Combine(_dir, "ntb.sock"), device);
        using var socket = UnixSocket.Connect(server.SocketPath);
        Assert.Equal(UnixSocket.SendResult.Sent, UnixSocket.TrySend(socket, 99, null));
        Assert.True(UnixSocket.WaitReadable(socket, 5000));
        Assert.True(UnixSocket.Receive(socket, out long reply, out var fd));
        Assert.Equal(-1, reply);
        Assert.Null(fd);
    }

    [Fact]
    public void The_ivshmem_endpoint_needs_a_power_of_two_local_memory()
    {
        using var device = HwSimDevice.Create(windows: 3, windowSize: 4096);
        var e = Assert.Throws<ArgumentException>(() => new HwSimServer(Path.Combine(_dir, "ntb.sock"), device, Path.Combine(_dir, "ivshmem.sock")));
        Assert.Contains("power of two", e.Message);
        Assert.False(File.Exists(Path.Combine(_dir, "ntb.sock")), "the hw-sim socket is removed again");
    }
}
