using PciVirtio.HwSim.Ivshmem;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Memory;

// The descriptor-count test reads /proc/self/fd: nothing else in this assembly may open
// descriptors meanwhile.
[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace PciVirtio.HwSim.Tests.Ivshmem;

public sealed class IvshmemServerTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);
    private const ulong ShmSize = 1 << 20;

    private readonly string _socketPath = Path.Combine(Path.GetTempPath(), $"ivshmem-test-{Guid.NewGuid():N}.sock");

    public void Dispose()
    {
        if (File.Exists(_socketPath))
        {
            File.Delete(_socketPath);
        }
    }

    [Fact]
    public void The_setup_messages_follow_the_protocol_exactly()
    {
        using var server = new IvshmemServer(_socketPath, ShmSize, vectors: 2);
        using var first = UnixSocket.Connect(_socketPath);
        var firstSetup = ReadMessages(first, 5);
        Assert.Equal(
            [(0L, false), (0L, false), (-1L, true), (0L, true), (0L, true)],
            firstSetup.Select(m => (m.Value, m.Fd is not null)));

        using var second = UnixSocket.Connect(_socketPath);
        var secondSetup = ReadMessages(second, 7);
        Assert.Equal(
            [(0L, false), (1L, false), (-1L, true), (0L, true), (0L, true), (1L, true), (1L, true)],
            secondSetup.Select(m => (m.Value, m.Fd is not null)));

        // The first peer learns of the second: its id once per vector, each with an eventfd.
        var joined = ReadMessages(first, 2);
        Assert.Equal([(1L, true), (1L, true)], joined.Select(m => (m.Value, m.Fd is not null)));
        Assert.False(UnixSocket.WaitReadable(first, 100), "nothing more is sent");

        second.Dispose();
        var left = ReadMessages(first, 1);
        Assert.Equal([(1L, false)], left.Select(m => (m.Value, m.Fd is not null)));

        foreach (var m in firstSetup.Concat(secondSetup).Concat(joined))
        {
            m.Fd?.Dispose();
        }
    }

    [Fact]
    public void Two_clients_see_each_others_eventfds_for_every_vector()
    {
        using var server = new IvshmemServer(_socketPath, ShmSize, vectors: 3);
        using var a = IvshmemClient.Connect(_socketPath, 3, Timeout);
        using var b = IvshmemClient.Connect(_socketPath, 3, Timeout);

        Assert.Equal(0, a.Id);
        Assert.Equal(1, b.Id);
        Assert.Equal(0, a.Version);
        Assert.Equal(3, a.OwnVectors.Count);
        Assert.Equal(3, b.OwnVectors.Count);
        Assert.Equal([0], b.PeerIds);
        Assert.Equal(3, b.PeerVectors(0).Count);

        Assert.True(a.WaitUntil(c => c.PeerVectors(1).Count == 3, Timeout));
        Assert.Equal([1], a.PeerIds);
        Assert.Equal([0, 1], server.PeerIds);
    }

    [Fact]
    public void Ringing_a_peers_vector_signals_that_peers_own_eventfd_for_the_vector()
    {
        using var server = new IvshmemServer(_socketPath, ShmSize, vectors: 2);
        using var a = IvshmemClient.Connect(_socketPath, 2, Timeout);
        using var b = IvshmemClient.Connect(_socketPath, 2, Timeout);
        Assert.True(a.WaitUntil(c => c.PeerVectors(b.Id).Count == 2, Timeout));

        for (int v = 0; v < 2; v++)
        {
            a.Notify(b.Id, v);
            Assert.Equal(1UL, b.OwnVectors[v].Consume());
            Assert.Equal(0UL, b.OwnVectors[1 - v].Consume());
            Assert.Equal(0UL, a.OwnVectors[v].Consume());

            b.Notify(a.Id, v);
            b.Notify(a.Id, v);
            Assert.Equal(2UL, a.OwnVectors[v].Consume());
            Assert.Equal(0UL, b.OwnVectors[v].Consume());
        }
    }

    [Fact]
    public void The_shared_memory_fds_map_the_same_memory()
    {
        using var server = new IvshmemServer(_socketPath, ShmSize, vectors: 1);
        using var a = IvshmemClient.Connect(_socketPath, 1, Timeout);
        using var b = IvshmemClient.Connect(_socketPath, 1, Timeout);

        using var viewA = MemoryMapping.Map(a.SharedMemory, 0, ShmSize);
        using var viewB = MemoryMapping.Map(b.SharedMemory, 0, ShmSize);
        using var viewServer = MemoryMapping.Map(server.SharedMemory, 0, ShmSize);
        Assert.NotEqual(viewA.Address, viewB.Address);

        viewA.Span[0] = 0x5a;
        viewA.Span[(int)ShmSize - 1] = 0xa5;
        "hello from A"u8.CopyTo(viewA.Span[4096..]);
        Assert.Equal(0x5a, viewB.Span[0]);
        Assert.Equal(0xa5, viewB.Span[(int)ShmSize - 1]);
        Assert.True(viewB.Span.Slice(4096, 12).SequenceEqual("hello from A"u8));

        viewB.Span[8] = 0x77;
        Assert.Equal(0x77, viewA.Span[8]);
        Assert.Equal(0x77, viewServer.Span[8]);
    }

    [Fact]
    public void A_departure_is_announced_and_the_departed_peers_eventfds_are_forgotten()
    {
        using var server = new IvshmemServer(_socketPath, ShmSize, vectors: 2);
        using var a = IvshmemClient.Connect(_socketPath, 2, Timeout);
        var b = IvshmemClient.Connect(_socketPath, 2, Timeout);
        Assert.True(a.WaitUntil(c => c.PeerVectors(b.Id).Count == 2, Timeout));

        b.Dispose();
        Assert.True(a.WaitUntil(c => c.PeerIds.Count == 0, Timeout), "A hears that B left");
        Assert.Empty(a.PeerVectors(1));
        Assert.True(server.WaitForPeerCount(1, Timeout));
        Assert.Equal([0], server.PeerIds);
        Assert.True(a.IsConnected);
    }

    [Fact]
    public void Freed_ids_are_reused_lowest_first()
    {
        using var server = new IvshmemServer(_socketPath, ShmSize, vectors: 1);
        using var a = IvshmemClient.Connect(_socketPath, 1, Timeout);
        var b = IvshmemClient.Connect(_socketPath, 1, Timeout);
        using var c = IvshmemClient.Connect(_socketPath, 1, Timeout);
        Assert.Equal([0, 1, 2], new[] { a.Id, b.Id, c.Id });

        b.Dispose();
        Assert.True(server.WaitForPeers(ids => ids.SequenceEqual([0, 2]), Timeout));

        using var d = IvshmemClient.Connect(_socketPath, 1, Timeout);
        Assert.Equal(1, d.Id);
        Assert.Equal([0, 2], d.PeerIds);
        Assert.True(c.WaitUntil(x => x.PeerIds.SequenceEqual([0, 1]) && x.PeerVectors(1).Count == 1, Timeout));

        using var e = IvshmemClient.Connect(_socketPath, 1, Timeout);
        Assert.Equal(3, e.Id);
    }

    [Fact]
    public void A_client_beyond_the_maximum_is_refused_until_a_peer_leaves()
    {
        using var server = new IvshmemServer(_socketPath, ShmSize, vectors: 1, maxPeers: 2);
        using var a = IvshmemClient.Connect(_socketPath, 1, Timeout);
        var b = IvshmemClient.Connect(_socketPath, 1, Timeout);
        Assert.True(a.WaitUntil(c => c.PeerVectors(b.Id).Count == 1, Timeout));

        var refused = Assert.Throws<IOException>(() => IvshmemClient.Connect(_socketPath, 1, Timeout));
        Assert.Contains("closed the connection", refused.Message, StringComparison.Ordinal);
        Assert.Equal([0, 1], server.PeerIds);
        Assert.Equal(0, a.Pump(TimeSpan.FromMilliseconds(100))); // the refused client was never announced

        b.Dispose();
        Assert.True(server.WaitForPeerCount(1, Timeout));
        using var c = IvshmemClient.Connect(_socketPath, 1, Timeout);
        Assert.Equal(1, c.Id);
    }

    [Fact]
    public void Dispose_closes_every_descriptor_and_removes_the_socket()
    {
        RunServerWithClients(); // warm-up: whatever the runtime opens once is open before counting
        int before = OpenDescriptorCount();

        var (a, b) = RunServerWithClients();
        Assert.False(File.Exists(_socketPath));
        Assert.True(a.WaitUntil(c => !c.IsConnected, Timeout), "A sees the server go away");
        Assert.True(b.WaitUntil(c => !c.IsConnected, Timeout), "B sees the server go away");
        a.Dispose();
        b.Dispose();

        Assert.Equal(before, OpenDescriptorCount());
    }

    [Fact]
    public void Bad_arguments_are_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new IvshmemServer(_socketPath, 3 << 20));
        Assert.Throws<ArgumentOutOfRangeException>(() => new IvshmemServer(_socketPath, ShmSize, vectors: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new IvshmemServer(_socketPath, ShmSize, maxPeers: 0));
        Assert.Throws<ArgumentException>(() => new IvshmemServer("/tmp/" + new string('x', 120), ShmSize));
        Assert.False(File.Exists(_socketPath));

        using var server = new IvshmemServer(_socketPath, ShmSize);
        var inUse = Assert.Throws<NativeCallException>(() => new IvshmemServer(_socketPath, ShmSize));
        Assert.Equal("bind", inUse.Call);
    }

    /// <summary>Runs a server with two connected clients (vectors 2, one shared-memory mapping
    /// each), disposes the server and returns the clients, still open.</summary>
    private (IvshmemClient A, IvshmemClient B) RunServerWithClients()
    {
        var server = new IvshmemServer(_socketPath, ShmSize, vectors: 2);
        var a = IvshmemClient.Connect(_socketPath, 2, Timeout);
        var b = IvshmemClient.Connect(_socketPath, 2, Timeout);
        Assert.True(a.WaitUntil(c => c.PeerVectors(b.Id).Count == 2, Timeout));
        a.Notify(b.Id, 1);
        Assert.Equal(1UL, b.OwnVectors[1].Consume());
        using (MemoryMapping.Map(a.SharedMemory, 0, ShmSize))
        {
        }

        server.Dispose();
        server.Dispose(); // idempotent
        return (a, b);
    }

    /// <summary>Open descriptors, after the finalizers ran: a descriptor another test left to the
    /// garbage collector must not close (or stay open) in the middle of a count.</summary>
    private static int OpenDescriptorCount()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return Directory.GetFileSystemEntries("/proc/self/fd").Length;
    }

    private static List<(long Value, FileDescriptor? Fd)> ReadMessages(FileDescriptor socket, int count)
    {
        var messages = new List<(long, FileDescriptor?)>();
        for (int i = 0; i < count; i++)
        {
            Assert.True(UnixSocket.WaitReadable(socket, (int)Timeout.TotalMilliseconds), $"message {i + 1} of {count} arrives");
            Assert.True(UnixSocket.Receive(socket, out long value, out var fd), $"message {i + 1} of {count}: end of stream");
            messages.Add((value, fd));
        }

        return messages;
    }
}
