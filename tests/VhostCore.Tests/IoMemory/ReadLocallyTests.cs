using System.Buffers.Binary;
using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;

namespace PciVirtio.VhostCore.Tests.IoMemory;

/// <summary>
/// The placement a PCIe link needs, where a read of the other side's memory is a slow
/// non-posted round trip and a write is posted: descriptor table, avail ring and indirect
/// tables (and the payload the driver sends) live in the device's memory; the used ring (and
/// the buffers the device fills) in the driver's. Then the device only reads its own memory
/// and the driver only reads its own: every access across the link is a write.
/// </summary>
/// <remarks>
/// Two BAR stand-ins in one memory table, and a separate <see cref="IoMemoryAccessor"/> per
/// side whose <see cref="AccessCounters"/> count only that side's accesses to the other
/// side's memory.
/// </remarks>
public sealed class ReadLocallyTests
{
    private const ulong DeviceBase = 0x1_0000_0000;    // the device's local memory
    private const ulong DriverBase = 0x2_0000_0000;    // the driver's local memory
    private const ulong MemorySize = 1 << 20;
    private const int QueueSize = 64;
    private const ulong IndirectOffset = 0x10000;
    private const ulong PayloadOffset = 0x20000;      // in each memory: slot i at + i * SlotSize
    private const uint SlotSize = 2048;
    private const int Packets = 400;

    /// <summary>Both BARs, the shared table, and one accessor per side counting its remote accesses.</summary>
    private sealed class Link : IDisposable
    {
        public Link()
        {
            DeviceBar = PciBarMemory.CreateStandIn("device-local", MemorySize);
            DriverBar = PciBarMemory.CreateStandIn("driver-local", MemorySize);
            Table = MemoryTable.Create(DeviceBar.Region(DeviceBase), DriverBar.Region(DriverBase));
            DeviceRemote = new AccessCounters(DriverBar.Mapping.Address, DriverBar.Size);
            DriverRemote = new AccessCounters(DeviceBar.Mapping.Address, DeviceBar.Size);
            DeviceMemory = new GuestMemory<IoMemoryAccessor>(Table, new IoMemoryAccessor(DeviceRemote));
            DriverMemory = new GuestMemory<IoMemoryAccessor>(Table, new IoMemoryAccessor(DriverRemote));
        }

        public PciBarMemory DeviceBar { get; }

        public PciBarMemory DriverBar { get; }

        public MemoryTable Table { get; }

        /// <summary>The device's accesses to the driver's memory.</summary>
        public AccessCounters DeviceRemote { get; }

        /// <summary>The driver's accesses to the device's memory.</summary>
        public AccessCounters DriverRemote { get; }

        public GuestMemory<IoMemoryAccessor> DeviceMemory { get; }

        public GuestMemory<IoMemoryAccessor> DriverMemory { get; }

        public void Dispose()
        {
            DeviceBar.Dispose();
            DriverBar.Dispose();
        }
    }

    /// <summary>desc and avail in the device's memory, used in the driver's.</summary>
    private static QueueState SplitPlacement(VirtioFeatures features) => new()
    {
        Size = QueueSize,
        DescTable = DeviceBase,
        AvailRing = DeviceBase + SplitRingLayout.DescTableBytes(QueueSize),
        UsedRing = DriverBase,
        Features = features,
    };

    [Theory]
    [InlineData(VirtioFeatures.Version1)]
    [InlineData(VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx)]
    [InlineData(VirtioFeatures.Version1 | VirtioFeatures.RingIndirectDesc)]
    [InlineData(VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx | VirtioFeatures.RingIndirectDesc)]
    public void Device_and_driver_each_read_only_their_own_memory(VirtioFeatures features)
    {
        using var link = new Link();
        var traffic = Run(link, SplitPlacement(features), new IndirectArea(DeviceBase + IndirectOffset, 4));

        Assert.Equal(Packets, traffic.Verified);
        if ((features & VirtioFeatures.RingIndirectDesc) != 0)
        {
            Assert.True(traffic.IndirectChains > Packets / 4, $"{traffic.IndirectChains} indirect chains");
        }

        // Not one read crossed the link, in either direction.
        Assert.True(link.DeviceRemote.Reads == 0, $"the device read the driver's memory: {link.DeviceRemote}");
        Assert.True(link.DriverRemote.Reads == 0, $"the driver read the device's memory: {link.DriverRemote}");

        // The counters did watch the link: every used element, index and reply byte the device
        // sent, every descriptor, avail entry and payload byte the driver sent, are writes.
        Assert.True(link.DeviceRemote.Writes >= 2L * Packets, link.DeviceRemote.ToString());
        Assert.True(link.DeviceRemote.WrittenBytes >= (8L * Packets) + traffic.ReplyBytes, link.DeviceRemote.ToString());
        Assert.True(link.DriverRemote.Writes >= 3L * Packets, link.DriverRemote.ToString());
        Assert.True(link.DriverRemote.WrittenBytes >= (18L * Packets) + traffic.RequestBytes, link.DriverRemote.ToString());
    }

    [Fact]
    public void A_used_ring_in_the_devices_memory_makes_the_driver_read_across_the_link()
    {
        // The control: the same traffic with the used ring on the device's side. The driver
        // must then read used.idx and the used elements remotely, and the counters see it.
        using var link = new Link();
        var state = SplitPlacement(VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx) with { UsedRing = DeviceBase + 0x8000 };
        var traffic = Run(link, state, indirect: null);

        Assert.Equal(Packets, traffic.Verified);
        Assert.Equal(0, link.DeviceRemote.Reads);
        Assert.True(link.DriverRemote.Reads >= 2L * Packets, link.DriverRemote.ToString());
    }

    /// <summary>What a run moved, for the assertions.</summary>
    private readonly record struct Traffic(int Verified, long RequestBytes, long ReplyBytes, int IndirectChains);

    /// <summary>
    /// Runs <see cref="Packets"/> requests from driver to device and replies back. Each request
    /// is one or two readable buffers in the device's memory (the payload the driver sends) and
    /// one writable buffer in the driver's memory (where the device puts its reply, the request
    /// bytes reversed after a 4-byte sequence number). Both sides suppress notifications while
    /// they poll and re-enable them before they would sleep, as a real data path does.
    /// </summary>
    private static Traffic Run(Link link, QueueState state, IndirectArea? indirect)
    {
        var driver = new SplitQueueDriver<IoMemoryAccessor>("link-driver");
        var device = new SplitQueueDevice<IoMemoryAccessor>("link-device");
        Assert.True(driver.Start(state, link.DriverMemory, indirect), driver.BrokenReason);
        Assert.True(device.Start(state, link.DeviceMemory), device.BrokenReason);

        var rnd = new Random(7);
        var chains = new DescriptorChain[16];
        var segments = new IoSegment[64];
        var used = new UsedBuffer[16];
        var sent = new Dictionary<ulong, byte[]>();
        int next = 0, verified = 0, indirectChains = 0, rounds = 0;
        long requestBytes = 0, replyBytes = 0;
        Assert.False(device.EnableNotifications());

        while (verified < Packets)
        {
            Assert.True(++rounds < 10 * Packets, "no progress");

            // Driver: add a few requests, publish, kick if asked.
            int burst = rnd.Next(1, 9);
            for (int b = 0; b < burst && next < Packets && driver.FreeDescriptors >= 3; b++)
            {
                int slot = next % QueueSize;
                var payload = new byte[rnd.Next(1, 1500)];
                rnd.NextBytes(payload);
                ulong request = DeviceBase + PayloadOffset + ((ulong)slot * SlotSize);
                ulong reply = DriverBase + PayloadOffset + ((ulong)slot * SlotSize);
                Assert.True(link.DriverMemory.TryWrite(request, payload));
                GuestBuffer[] readable = payload.Length > 100 && rnd.Next(2) == 0
                    ? [new GuestBuffer(request, 100), new GuestBuffer(request + 100, (uint)payload.Length - 100)]
                    : [new GuestBuffer(request, (uint)payload.Length)];
                int free = driver.FreeDescriptors;
                Assert.True(driver.TryAdd(readable, [new GuestBuffer(reply, SlotSize)], (ulong)next));
                indirectChains += free - driver.FreeDescriptors == 1 ? 1 : 0;   // a direct chain takes 2 or 3
                sent.Add((ulong)next, payload);
                requestBytes += payload.Length;
                next++;
            }

            driver.Publish();
            driver.NeedsKick();

            // Device: poll with notifications off, serve, re-enable before sleeping.
            device.DisableNotifications();
            do
            {
                int n;
                while ((n = device.PopAvail(chains, segments)) > 0)
                {
                    foreach (var chain in chains.AsSpan(0, n))
                    {
                        var request = new byte[chain.ReadableBytes];
                        Assert.Equal(request.Length, link.DeviceMemory.Gather(chain.Readable(segments), 0, request));
                        var answer = new byte[4 + request.Length];
                        BinaryPrimitives.WriteInt32LittleEndian(answer, request.Length);
                        request.AsSpan().CopyTo(answer.AsSpan(4));
                        answer.AsSpan(4).Reverse();
                        Assert.Equal(answer.Length, link.DeviceMemory.Scatter(chain.Writable(segments), 0, answer));
                        device.PushUsed(chain.Head, (uint)answer.Length);
                        replyBytes += answer.Length;
                    }

                    device.FlushUsed();
                    device.NeedsInterrupt();
                }
            }
            while (device.EnableNotifications());

            // Driver: reap with interrupts off, check each reply, re-enable before sleeping.
            driver.DisableInterrupts();
            do
            {
                int r;
                while ((r = driver.Reap(used)) > 0)
                {
                    foreach (var u in used.AsSpan(0, r))
                    {
                        var payload = sent[u.Token];
                        Assert.True(sent.Remove(u.Token));
                        Assert.Equal((uint)payload.Length + 4, u.Length);
                        var answer = new byte[u.Length];
                        Assert.True(link.DriverMemory.TryRead(DriverBase + PayloadOffset + ((u.Token % QueueSize) * SlotSize), answer));
                        Assert.Equal(payload.Length, BinaryPrimitives.ReadInt32LittleEndian(answer));
                        Array.Reverse(payload);
                        Assert.Equal(payload, answer[4..]);
                        verified++;
                    }
                }
            }
            while (driver.EnableInterrupts());

            Assert.False(driver.IsBroken, driver.BrokenReason);
            Assert.False(device.IsBroken, device.BrokenReason);
        }

        Assert.Empty(sent);
        Assert.Equal(QueueSize, driver.FreeDescriptors);
        return new Traffic(verified, requestBytes, replyBytes, indirectChains);
    }
}
