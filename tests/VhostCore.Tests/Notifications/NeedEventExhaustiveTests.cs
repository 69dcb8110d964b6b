using PciVirtio.VhostCore.Ring;

namespace PciVirtio.VhostCore.Tests.Notifications;

/// <summary>
/// SplitRingLayout.NeedEvent (vring_need_event) checked exhaustively against independent
/// formulations over small ranges that include the 16-bit wrap: the C# stand-in for the
/// model checking rust-vmm does on its notification code.
/// </summary>
public class NeedEventExhaustiveTests
{
    /// <summary>Reference by enumeration: the index moved from old to new, publishing the
    /// entries old, old+1, ..., new-1; an event is due when one of them is the event index.</summary>
    private static bool ReferenceByEnumeration(ushort eventIdx, ushort newIdx, ushort oldIdx)
    {
        int moved = (newIdx - oldIdx) & 0xFFFF;
        for (int k = 0; k < moved; k++)
        {
            if (((oldIdx + k) & 0xFFFF) == eventIdx)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Reference by distance: the event index lies less than (new - old) steps after old.</summary>
    private static bool ReferenceByDistance(ushort eventIdx, ushort newIdx, ushort oldIdx) =>
        ((eventIdx - oldIdx) & 0xFFFF) < ((newIdx - oldIdx) & 0xFFFF);

    [Theory]
    [InlineData(0xFFC0)] // around the 16-bit wrap
    [InlineData(0x7FC0)] // around the sign boundary of a 16-bit difference
    [InlineData(0x0000)]
    public void Matches_enumeration_for_every_event_old_and_new_within_64_around(int windowStart)
    {
        int checkedCount = 0;
        for (int o = 0; o <= 0x80; o++)
        {
            ushort oldIdx = (ushort)(windowStart + o);
            for (int moved = 0; moved <= 64; moved++)
            {
                ushort newIdx = (ushort)(oldIdx + moved);

                // Every event index from well before old to well after new, across the wrap.
                for (int e = -160; e <= 224; e++)
                {
                    ushort eventIdx = (ushort)(oldIdx + e);
                    bool expected = ReferenceByEnumeration(eventIdx, newIdx, oldIdx);
                    bool actual = SplitRingLayout.NeedEvent(eventIdx, newIdx, oldIdx);
                    if (expected != actual)
                    {
                        Assert.Fail($"NeedEvent(event 0x{eventIdx:x4}, new 0x{newIdx:x4}, old 0x{oldIdx:x4}) = {actual}, expected {expected}");
                    }

                    checkedCount++;
                }
            }
        }

        Assert.Equal(0x81 * 65 * 385, checkedCount);
    }

    [Theory]
    [InlineData(0x0000)]
    [InlineData(0xFFFF)]
    [InlineData(0xFFF0)]
    [InlineData(0x7FFF)]
    [InlineData(0x8000)]
    [InlineData(0x1234)]
    public void Matches_distance_reference_for_all_event_indices_and_large_moves(int old)
    {
        ushort oldIdx = (ushort)old;
        int[] moves = [.. Enumerable.Range(0, 65), .. Enumerable.Range(0x7FF0, 0x20), .. Enumerable.Range(0xFFC0, 0x40)];
        foreach (int moved in moves)
        {
            ushort newIdx = (ushort)(oldIdx + moved);
            int due = 0;
            for (int e = 0; e <= 0xFFFF; e++)
            {
                ushort eventIdx = (ushort)e;
                bool expected = ReferenceByDistance(eventIdx, newIdx, oldIdx);
                bool actual = SplitRingLayout.NeedEvent(eventIdx, newIdx, oldIdx);
                if (expected != actual)
                {
                    Assert.Fail($"NeedEvent(event 0x{eventIdx:x4}, new 0x{newIdx:x4}, old 0x{oldIdx:x4}) = {actual}, expected {expected}");
                }

                if (actual)
                {
                    due++;
                }
            }

            // Exactly the indices that were passed are events: as many as the move.
            Assert.Equal(moved, due);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(32)]
    [InlineData(255)]
    public void An_index_walking_in_steps_fires_exactly_once_when_it_passes_the_event_index(int step)
    {
        foreach (int start in new[] { 0xFFE0, 0x7FE0, 0x0000 })
        {
            for (int ev = -8; ev < 80; ev++)
            {
                ushort eventIdx = (ushort)(start + ev);
                ushort idx = (ushort)start;
                int fired = 0;
                int firedAtStep = -1;

                // Stay within one lap of the 16-bit counter.
                int steps = (0xFFFF - step) / step;
                for (int s = 0; s < steps; s++)
                {
                    ushort next = (ushort)(idx + step);
                    if (SplitRingLayout.NeedEvent(eventIdx, next, idx))
                    {
                        fired++;
                        firedAtStep = s;
                    }

                    idx = next;
                }

                int distance = (eventIdx - start) & 0xFFFF;
                bool passed = distance < steps * step;
                Assert.Equal(passed ? 1 : 0, fired);
                if (passed)
                {
                    Assert.Equal(distance / step, firedAtStep);
                }
            }
        }
    }

    [Fact]
    public void Spec_examples_hold()
    {
        // Event exactly at the old index: the first new entry triggers it.
        Assert.True(SplitRingLayout.NeedEvent(5, 6, 5));

        // Event already behind old: nothing more to do.
        Assert.False(SplitRingLayout.NeedEvent(4, 6, 5));

        // Event ahead of new: not yet.
        Assert.False(SplitRingLayout.NeedEvent(6, 6, 5));

        // Nothing moved: never.
        Assert.False(SplitRingLayout.NeedEvent(5, 5, 5));

        // Across the wrap.
        Assert.True(SplitRingLayout.NeedEvent(0xFFFF, 0x0001, 0xFFFE));
        Assert.True(SplitRingLayout.NeedEvent(0x0000, 0x0001, 0xFFFE));
        Assert.False(SplitRingLayout.NeedEvent(0x0001, 0x0001, 0xFFFE));
        Assert.False(SplitRingLayout.NeedEvent(0xFFFD, 0x0001, 0xFFFE));
    }
}
