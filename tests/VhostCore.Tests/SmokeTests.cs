using PciVirtio.Mmio.Memory;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;

namespace PciVirtio.VhostCore.Tests;

public abstract class SmokeTests<TAccess, TMemory> : RingMemoryTests<TAccess, TMemory>
    where TAccess : struct, IMemoryAccessor
    where TMemory : IRingMemory<TAccess>, new()
{
    [Theory]
    [InlineData(0UL, VirtioFeatures.Version1, 0)]
    [InlineData(0UL, VirtioFeatures.Version1 | VirtioFeatures.RingEventIdx, 0)]
    [InlineData(0x10000UL, VirtioFeatures.Version1 | VirtioFeatures.RingIndirectDesc, 8)]
    [InlineData(0x10000UL, VirtioFeatures.Version1, 0)]
    public void Payload_crosses_driver_to_device_and_back(ulong regionSize, VirtioFeatures features, int indirect)
    {
        using var h = NewHarness(queueSize: 64, features: features, regionSize: regionSize, indirectEntries: indirect);
        var payload = new byte[3000];
        new Random(1).NextBytes(payload);
        Assert.True(h.Memory.TryWrite(HarnessLayout.Buffer(0, 4096), payload));

        Assert.True(h.Driver.TryAdd(
            [new GuestBuffer(HarnessLayout.Buffer(0, 4096), 1000), new GuestBuffer(HarnessLayout.Buffer(0, 4096) + 1000, 2000)],
            [new GuestBuffer(HarnessLayout.Buffer(1, 4096), 4096)], token: 77));
        h.Driver.Publish();
        Assert.True(h.Driver.NeedsKick());

        var chains = new DescriptorChain[4];
        var segs = new IoSegment[64];
        Assert.Equal(1, h.Device.PopAvail(chains, segs));
        var c = chains[0];
        Assert.Equal(3000u, c.ReadableBytes);
        Assert.Equal(4096u, c.WritableBytes);
        var got = new byte[3000];
        Assert.Equal(3000, h.Memory.Gather(c.Readable(segs), 0, got));
        Assert.Equal(payload, got);
        Assert.Equal(3000, h.Memory.Scatter(c.Writable(segs), 0, got));
        h.Device.PushUsed(c.Head, 3000);
        h.Device.FlushUsed();
        Assert.True(h.Device.NeedsInterrupt());

        var used = new UsedBuffer[4];
        Assert.Equal(1, h.Driver.Reap(used));
        Assert.Equal(new UsedBuffer(77, 3000), used[0]);
        var back = new byte[3000];
        Assert.True(h.Memory.TryRead(HarnessLayout.Buffer(1, 4096), back));
        Assert.Equal(payload, back);
        Assert.Equal(64, h.Driver.FreeDescriptors);
    }
}

/// <summary>SmokeTests over ordinary RAM (<see cref="RamAccessor"/>).</summary>
public sealed class SmokeTests_Ram : SmokeTests<RamAccessor, RamRingMemory>;

/// <summary>SmokeTests over a PCI BAR stand-in through <see cref="IoMemoryAccessor"/> (accesses counted).</summary>
public sealed class SmokeTests_Io : SmokeTests<IoMemoryAccessor, IoRingMemory>;
