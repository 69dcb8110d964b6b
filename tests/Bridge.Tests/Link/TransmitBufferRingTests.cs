using PciVirtio.Bridge.Link;
using Xunit;

namespace PciVirtio.Bridge.Tests.Link;

public sealed class TransmitBufferRingTests
{
    [Fact]
    public void Frames_take_64_aligned_places_in_order()
    {
        var ring = new TransmitBufferRing(4096, 8);
        Assert.True(ring.TryAllocate(100, out ulong a, out int sa));
        Assert.True(ring.TryAllocate(64, out ulong b, out int sb));
        Assert.True(ring.TryAllocate(1, out ulong c, out _));
        Assert.Equal([0UL, 128UL, 192UL], [a, b, c]);
        Assert.NotEqual(sa, sb);
        Assert.Equal(3, ring.InFlight);
    }

    [Fact]
    public void Frames_of_one_length_keep_their_slots_places_lap_after_lap()
    {
        // Frames of 1 KiB in a 64 KiB area, 16 slots, a few out at a time (and at times none):
        // each lap of 16 frames starts again at 0, so the frame of slot s is at s KiB every
        // lap (a descriptor that names the same place need not be written again), and the
        // places stay within one lap's bytes instead of cycling through the whole area.
        var ring = new TransmitBufferRing(64 << 10, 16);
        var slots = new Queue<int>();
        var random = new Random(3);
        for (int i = 0; i < 1000; i++)
        {
            int keep = random.Next(0, 5);
            while (slots.Count > keep)
            {
                Assert.True(ring.Release(slots.Dequeue()));
            }

            Assert.True(ring.TryAllocate(1000, out ulong at, out int slot));
            Assert.Equal(i % 16, slot);
            Assert.Equal((ulong)slot << 10, at);
            slots.Enqueue(slot);
        }
    }

    [Fact]
    public void A_lap_that_does_not_fit_goes_back_to_zero_at_the_end_of_the_area()
    {
        // 16 slots of 1 KiB frames in a 10 KiB area: a lap is longer than the area, so frames
        // wrap at its end, and no frame overlaps one still out.
        var ring = new TransmitBufferRing(10 << 10, 16);
        var slots = new Queue<(int Slot, ulong At)>();
        for (int i = 0; i < 200; i++)
        {
            if (slots.Count == 4)
            {
                Assert.True(ring.Release(slots.Dequeue().Slot));
            }

            Assert.True(ring.TryAllocate(1024, out ulong at, out int slot));
            Assert.True(at + 1024 <= 10 << 10, $"a frame went to {at}");
            Assert.DoesNotContain(slots, f => f.At == at);
            slots.Enqueue((slot, at));
        }
    }

    [Fact]
    public void A_frame_never_overlaps_one_still_out()
    {
        // Random sizes, random (out of order) returns: every place handed out is free.
        var random = new Random(7);
        const ulong Size = 32 << 10;
        var ring = new TransmitBufferRing(Size, 32);
        var owner = new int[Size / 64];
        Array.Fill(owner, -1);
        var out_ = new List<(int Slot, ulong At, ulong Length)>();
        int allocated = 0;
        for (int i = 0; i < 20000; i++)
        {
            if (out_.Count > 0 && (random.Next(3) == 0 || out_.Count == 32))
            {
                int k = random.Next(Math.Min(out_.Count, 4)); // mostly the oldest
                var f = out_[k];
                out_.RemoveAt(k);
                Assert.True(ring.Release(f.Slot));
                for (ulong p = f.At / 64; p < (f.At + f.Length) / 64; p++)
                {
                    owner[p] = -1;
                }

                continue;
            }

            uint length = (uint)random.Next(1, 6000);
            if (!ring.TryAllocate(length, out ulong at, out int slot))
            {
                continue;
            }

            allocated++;
            ulong need = (length + 63UL) & ~63UL;
            Assert.True(at % 64 == 0 && at + need <= Size, $"frame at {at}+{need} is outside the area");
            for (ulong p = at / 64; p < (at + need) / 64; p++)
            {
                Assert.True(owner[p] == -1, $"frame at {at} overlaps slot {owner[p]}");
                owner[p] = slot;
            }

            out_.Add((slot, at, need));
        }

        Assert.True(allocated > 5000);
    }

    [Fact]
    public void Returns_out_of_order_free_space_only_up_to_the_oldest_frame_out()
    {
        var ring = new TransmitBufferRing(1024, 2);
        Assert.True(ring.TryAllocate(512, out _, out int first));
        Assert.True(ring.TryAllocate(512, out _, out int second));
        Assert.True(ring.Release(second));
        Assert.False(ring.Release(second)); // twice
        Assert.False(ring.TryAllocate(64, out _, out _)); // the first frame still holds the start
        Assert.True(ring.Release(first));
        Assert.True(ring.TryAllocate(512, out ulong at, out int again));
        Assert.Equal((0UL, first), (at, again));

        // The second slot, returned out of order a lap ago, is out again and returnable: its
        // done mark went when it came back, not when it was handed out.
        Assert.True(ring.TryAllocate(512, out _, out int secondAgain));
        Assert.Equal(second, secondAgain);
        Assert.True(ring.Release(secondAgain));
        Assert.True(ring.Release(again));
        Assert.Equal(0, ring.InFlight);
    }

    [Fact]
    public void A_slot_that_is_not_out_is_refused()
    {
        var ring = new TransmitBufferRing(1024, 4);
        Assert.True(ring.TryAllocate(64, out _, out int slot));
        Assert.False(ring.Release(slot + 1));
        Assert.False(ring.Release(-1));
        Assert.False(ring.Release(99));
        Assert.True(ring.Release(slot));
        Assert.False(ring.Release(slot)); // twice
    }

    [Fact]
    public void Every_slot_out_or_a_frame_larger_than_the_area_is_refused()
    {
        var ring = new TransmitBufferRing(4096, 2);
        Assert.False(ring.TryAllocate(4097, out _, out _));
        Assert.True(ring.TryAllocate(64, out _, out _));
        Assert.True(ring.TryAllocate(64, out _, out _));
        Assert.False(ring.TryAllocate(64, out _, out _));
        ring.Reset();
        Assert.Equal(0, ring.InFlight);
        Assert.True(ring.TryAllocate(4096, out ulong at, out _));
        Assert.Equal(0UL, at);
    }

    [Fact]
    public void Releasing_the_oldest_frames_frees_their_places_and_slots_in_order()
    {
        var ring = new TransmitBufferRing(1024, 8);
        var slots = new List<int>();
        for (int i = 0; i < 4; i++)
        {
            Assert.True(ring.TryAllocate(200, out _, out int slot));
            slots.Add(slot);
        }

        Assert.Equal([0, 1, 2, 3], slots);
        Assert.False(ring.TryAllocate(200, out _, out _)); // 4 × 256 bytes: the area is full
        ring.ReleaseOldest(3);
        Assert.Equal(1, ring.InFlight);

        // The next frame takes the next slot (a ring in order pairs slot and descriptor) and
        // the space before the one still out.
        Assert.True(ring.TryAllocate(200, out ulong at, out int next));
        Assert.Equal(4, next);
        Assert.Equal(0UL, at);
        ring.ReleaseOldest(2);
        Assert.Equal(0, ring.InFlight);
    }

    [Fact]
    public void Finding_a_place_takes_nothing_until_it_is_taken()
    {
        var ring = new TransmitBufferRing(4096, 8);
        Assert.True(ring.TryAllocate(100, out _, out _));

        // Found twice (a frame that did not go out, then the next one): the same place and
        // slot, nothing handed out.
        ulong found = ring.Find(100);
        Assert.Equal(found, ring.Find(100));
        Assert.Equal(1, ring.InFlight);
        int slot = ring.NextSlot;
        ring.Take(found, 100);
        Assert.Equal(2, ring.InFlight);
        Assert.True(ring.TryAllocate(100, out ulong next, out int nextSlot));
        Assert.Equal(((slot + 1) & 7, found + 128), (nextSlot, next));
        Assert.True(ring.Release(slot));
    }

    [Fact]
    public void A_full_ring_finds_no_room()
    {
        var ring = new TransmitBufferRing(4096, 4);
        for (int i = 0; i < 4; i++)
        {
            Assert.True(ring.TryAllocate(64, out _, out _));
        }

        Assert.Equal(TransmitBufferRing.NoRoom, ring.Find(64)); // every slot out
        ring.ReleaseOldest(4);
        Assert.Equal(TransmitBufferRing.NoRoom, ring.Find(8192)); // more than the area
        Assert.NotEqual(TransmitBufferRing.NoRoom, ring.Find(4096));
    }
}
