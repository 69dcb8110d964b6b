using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;
using PciVirtio.VhostCore.Tests.Support;

namespace PciVirtio.VhostCore.Tests.Notifications;

/// <summary>
/// Reads the notification fields of a harness ring straight from guest memory (never from
/// the queues' shadows), and small driver/device steps shared by the notification tests.
/// </summary>
internal static class RingProbe
{
    public static ushort AvailFlags<TAccess>(RingHarness<TAccess> h)
        where TAccess : struct, IMemoryAccessor
        => h.ReadU16(h.State.AvailRing);

    public static ushort AvailIdx<TAccess>(RingHarness<TAccess> h)
        where TAccess : struct, IMemoryAccessor
        => h.ReadU16(h.State.AvailRing + 2);

    /// <summary>used_event: the u16 after the avail ring's entries.</summary>
    public static ushort UsedEvent<TAccess>(RingHarness<TAccess> h)
        where TAccess : struct, IMemoryAccessor
        => h.ReadU16(h.State.AvailRing + 4 + (2 * (ulong)h.State.Size));

    public static ushort UsedFlags<TAccess>(RingHarness<TAccess> h)
        where TAccess : struct, IMemoryAccessor
        => h.ReadU16(h.State.UsedRing);

    public static ushort UsedIdx<TAccess>(RingHarness<TAccess> h)
        where TAccess : struct, IMemoryAccessor
        => h.ReadU16(h.State.UsedRing + 2);

    /// <summary>avail_event: the u16 after the used ring's elements.</summary>
    public static ushort AvailEvent<TAccess>(RingHarness<TAccess> h)
        where TAccess : struct, IMemoryAccessor
        => h.ReadU16(h.State.UsedRing + 4 + (8 * (ulong)h.State.Size));

    public static void SetAvailEvent<TAccess>(RingHarness<TAccess> h, ushort value)
        where TAccess : struct, IMemoryAccessor
        => h.WriteU16(h.State.UsedRing + 4 + (8 * (ulong)h.State.Size), value);

    public static void SetUsedFlags<TAccess>(RingHarness<TAccess> h, ushort value)
        where TAccess : struct, IMemoryAccessor
        => h.WriteU16(h.State.UsedRing, value);

    public static void SetUsedEvent<TAccess>(RingHarness<TAccess> h, ushort value)
        where TAccess : struct, IMemoryAccessor
        => h.WriteU16(h.State.AvailRing + 4 + (2 * (ulong)h.State.Size), value);

    public static void SetAvailFlags<TAccess>(RingHarness<TAccess> h, ushort value)
        where TAccess : struct, IMemoryAccessor
        => h.WriteU16(h.State.AvailRing, value);

    /// <summary>Adds one request made of a single device-writable buffer of 64 bytes.</summary>
    public static void AddSingle<TAccess>(SplitQueueDriver<TAccess> driver, ulong token)
        where TAccess : struct, IMemoryAccessor
    {
        Assert.True(driver.TryAdd([], [new GuestBuffer(HarnessLayout.Buffer((int)(token % 512)), 64)], token),
            $"TryAdd of token {token} failed (free {driver.FreeDescriptors}, error {driver.Error})");
    }

    /// <summary>Driver: add one buffer, publish it, and ask whether a kick is due.</summary>
    public static bool AddPublishKick<TAccess>(SplitQueueDriver<TAccess> driver, ulong token)
        where TAccess : struct, IMemoryAccessor
    {
        AddSingle(driver, token);
        driver.Publish();
        return driver.NeedsKick();
    }

    /// <summary>Device: pops everything available and returns the chains (not yet completed).</summary>
    public static List<DescriptorChain> PopAll<TAccess>(SplitQueueDevice<TAccess> device)
        where TAccess : struct, IMemoryAccessor
    {
        var all = new List<DescriptorChain>();
        var chains = new DescriptorChain[16];
        var segs = new IoSegment[256];
        int n;
        while ((n = device.PopAvail(chains, segs)) > 0)
        {
            all.AddRange(chains.AsSpan(0, n).ToArray());
        }

        Assert.False(device.IsBroken, device.BrokenReason);
        return all;
    }

    /// <summary>Device: pops everything, completes it in order with its writable length,
    /// publishes, and returns how many chains it served.</summary>
    public static int ServeAll<TAccess>(SplitQueueDevice<TAccess> device)
        where TAccess : struct, IMemoryAccessor
    {
        var chains = PopAll(device);
        foreach (var c in chains)
        {
            device.PushUsed(c.Head, c.WritableBytes);
        }

        device.FlushUsed();
        return chains.Count;
    }

    /// <summary>Driver: reaps everything published and returns how many buffers came back.</summary>
    public static int ReapAll<TAccess>(SplitQueueDriver<TAccess> driver)
        where TAccess : struct, IMemoryAccessor
    {
        var used = new UsedBuffer[64];
        int total = 0;
        int n;
        while ((n = driver.Reap(used)) > 0)
        {
            total += n;
        }

        Assert.False(driver.IsBroken, driver.BrokenReason);
        return total;
    }
}
