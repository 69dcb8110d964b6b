using PciVirtio.VhostCore.Memory;

namespace PciVirtio.VhostCore.Tests.MemoryModel;

/// <summary>
/// The vhost memory map built from untrusted region descriptions (SET_MEM_TABLE,
/// ADD_MEM_REG, REM_MEM_REG): shape checks, overlap checks, lookups and their edges.
/// Host addresses here are never dereferenced (only translated), so they are synthetic.
/// </summary>
public class MemoryTableTests
{
    private const ulong Page = 0x1000;
    private const ulong GuestBase = 0x1_0000_0000;
    private const ulong UserBase = 0x7f00_0000_0000;
    private static readonly nint HostBase = unchecked((nint)0x5000_0000_0000);

    private static MemoryRegion R(ulong guest, ulong size, ulong? user = null, nint? host = null) =>
        new(guest, size, user ?? (UserBase + guest), host ?? (HostBase + (nint)guest));

    [Fact]
    public void Max_509_regions_are_accepted_and_every_region_and_gap_is_looked_up_correctly()
    {
        const int n = MemoryTable.DefaultMaxRegions;
        const ulong stride = 0x10000; // regions of 1..3 pages, so every region is followed by a gap
        var regions = new MemoryRegion[n];
        for (int k = 0; k < n; k++)
        {
            ulong size = Page * (1 + ((ulong)k % 3));
            regions[k] = new MemoryRegion(GuestBase + ((ulong)k * stride), size, UserBase + ((ulong)k * stride * 2), HostBase + (nint)((ulong)(n - k) * stride * 4));
        }

        // Hand them over in a scrambled order: the table must sort them itself.
        var shuffled = (MemoryRegion[])regions.Clone();
        new Random(509).Shuffle(shuffled);
        Assert.NotEqual(regions, shuffled);

        Assert.True(MemoryTable.TryCreate(shuffled, MemoryTable.DefaultMaxRegions, out var table, out var error), error);
        Assert.Equal(n, table.Count);
        Assert.Equal(regions, table.Regions.ToArray());

        for (int k = 0; k < n; k++)
        {
            var r = regions[k];
            foreach (ulong off in new[] { 0UL, r.Size / 2, r.Size - 1 })
            {
                ulong piece = table.TranslatePiece(r.GuestPhysAddr + off, 1UL << 40, out nint host);
                Assert.Equal(r.Size - off, piece);
                Assert.Equal(r.HostAddr + (nint)off, host);
                Assert.Equal(1UL, table.TranslatePiece(r.GuestPhysAddr + off, 1, out _));
            }

            // First and last byte of the gap after the region.
            Assert.Equal(0UL, table.TranslatePiece(r.GuestPhysAddr + r.Size, 1, out nint gapHost));
            Assert.Equal(0, gapHost);
            Assert.Equal(0UL, table.TranslatePiece(r.GuestPhysAddr + stride - 1, 1, out _));
        }

        Assert.Equal(0UL, table.TranslatePiece(GuestBase - 1, 1, out _));
        Assert.Equal(0UL, table.TranslatePiece(0, 1, out _));
        Assert.Equal(0UL, table.TranslatePiece(ulong.MaxValue, 1, out _));
    }

    [Fact]
    public void Region_510_is_rejected_with_the_default_limit()
    {
        var regions = new MemoryRegion[MemoryTable.DefaultMaxRegions + 1];
        for (int k = 0; k < regions.Length; k++)
        {
            regions[k] = R(GuestBase + ((ulong)k * Page), Page);
        }

        Assert.False(MemoryTable.TryCreate(regions, MemoryTable.DefaultMaxRegions, out var table, out var error));
        Assert.Null(table);
        Assert.Contains("510", error, StringComparison.Ordinal);
        Assert.Contains("509", error, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => MemoryTable.Create(regions));

        // The same regions are fine under a larger limit, and the limit is not hard-wired.
        Assert.True(MemoryTable.TryCreate(regions, 510, out table, out error), error);
        Assert.Equal(510, table.Count);
        Assert.False(MemoryTable.TryCreate(regions.AsSpan(0, 9), 8, out _, out error));
        Assert.Contains("limit of 8", error, StringComparison.Ordinal);
    }

    [Fact]
    public void TryAdd_to_a_full_table_is_rejected()
    {
        var regions = new MemoryRegion[MemoryTable.DefaultMaxRegions];
        for (int k = 0; k < regions.Length; k++)
        {
            regions[k] = R(GuestBase + ((ulong)k * Page * 2), Page);
        }

        var full = MemoryTable.Create(regions);
        Assert.False(full.TryAdd(R(0x1000, Page), MemoryTable.DefaultMaxRegions, out var bigger, out var error));
        Assert.Null(bigger);
        Assert.Contains("510", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0x10000UL, 0x1000UL, 0x10000UL, 0x1000UL, false)]   // exact overlap
    [InlineData(0x10000UL, 0x2000UL, 0x11000UL, 0x2000UL, false)]   // partial: second starts inside first
    [InlineData(0x11000UL, 0x2000UL, 0x10000UL, 0x2000UL, false)]   // partial, given in the other order
    [InlineData(0x10000UL, 0x1001UL, 0x11000UL, 0x1000UL, false)]   // a single shared byte
    [InlineData(0x10000UL, 0x10000UL, 0x13000UL, 0x1000UL, false)]  // containment
    [InlineData(0x13000UL, 0x1000UL, 0x10000UL, 0x10000UL, false)]  // containment, other order
    [InlineData(0x10000UL, 0x1000UL, 0x10000UL, 0x3000UL, false)]   // same start, different sizes
    [InlineData(0x10000UL, 0x1000UL, 0x11000UL, 0x1000UL, true)]    // adjacent
    [InlineData(0x11000UL, 0x1000UL, 0x10000UL, 0x1000UL, true)]    // adjacent, other order
    [InlineData(0x10000UL, 0x1000UL, 0x20000UL, 0x1000UL, true)]    // disjoint with a gap
    public void Overlapping_regions_are_rejected_and_adjacent_ones_accepted(ulong g1, ulong s1, ulong g2, ulong s2, bool ok)
    {
        var a = R(g1, s1);
        var b = R(g2, s2, user: UserBase + 0x1000_0000 + g2);
        Assert.Equal(ok, MemoryTable.TryCreate([a, b], MemoryTable.DefaultMaxRegions, out var table, out var error));
        if (ok)
        {
            Assert.NotNull(table);
            Assert.Equal(2, table.Count);
        }
        else
        {
            Assert.Null(table);
            Assert.Contains("overlaps", error, StringComparison.Ordinal);
        }

        // ADD_MEM_REG applies the same rule.
        Assert.Equal(ok, MemoryTable.Create(a).TryAdd(b, MemoryTable.DefaultMaxRegions, out _, out _));
    }

    [Fact]
    public void An_overlap_between_regions_far_apart_in_the_input_is_found()
    {
        MemoryRegion[] regions =
        [
            R(0x50000, 0x1000), R(0x10000, 0x1000), R(0x30000, 0x1000), R(0x20000, 0x1000),
            R(0x40000, 0x1000), R(0x10800, 0x100, user: 0x9000_0000),
        ];
        Assert.False(MemoryTable.TryCreate(regions, 16, out _, out var error));
        Assert.Contains("overlaps", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Zero_size_region_is_rejected_and_named()
    {
        MemoryRegion[] regions = [R(0x10000, Page), R(0x20000, 0)];
        Assert.False(MemoryTable.TryCreate(regions, 16, out var table, out var error));
        Assert.Null(table);
        Assert.Contains("size is zero", error, StringComparison.Ordinal);
        Assert.Contains("region 1", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Guest_address_plus_size_overflow_is_rejected()
    {
        // Last byte would be 2^64: one past the end of the address space.
        var r = R(ulong.MaxValue - 0xffe, Page, user: 0x1000, host: HostBase);
        Assert.False(MemoryTable.TryCreate([r], 16, out _, out var error));
        Assert.Contains("guest-physical address + size overflows", error, StringComparison.Ordinal);

        Assert.False(MemoryTable.TryCreate([R(0x1000, ulong.MaxValue, user: 0, host: 1)], 16, out _, out error));
        Assert.Contains("overflows", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Region_ending_exactly_at_2_pow_64_is_accepted_and_its_last_byte_translates()
    {
        var top = R(ulong.MaxValue - 0xfff, Page, user: 0x10_0000, host: HostBase);
        var low = R(0x10000, Page);
        foreach (var table in new[] { MemoryTable.Create(top), MemoryTable.Create(low, top) })
        {
            Assert.Equal(ulong.MaxValue, table.Regions[^1].GuestLast);
            Assert.Equal(1UL, table.TranslatePiece(ulong.MaxValue, 100, out nint host));
            Assert.Equal(HostBase + 0xfff, host);
            Assert.Equal(Page, table.TranslatePiece(ulong.MaxValue - 0xfff, ulong.MaxValue, out host));
            Assert.Equal(HostBase, host);
            Assert.True(table.TryTranslate(ulong.MaxValue - 15, 16, out host));
            Assert.Equal(HostBase + 0xff0, host);
            Assert.False(table.TryTranslate(ulong.MaxValue - 15, 17, out _)); // wraps past 2^64
            Assert.Equal(0UL, table.TranslatePiece(ulong.MaxValue - 0x1000, 1, out _));
        }
    }

    [Fact]
    public void User_address_overflow_is_rejected_but_ending_at_2_pow_64_is_fine()
    {
        Assert.False(MemoryTable.TryCreate([R(0x10000, Page, user: ulong.MaxValue - 10)], 16, out _, out var error));
        Assert.Contains("user address + size overflows", error, StringComparison.Ordinal);

        Assert.True(MemoryTable.TryCreate([R(0x10000, Page, user: ulong.MaxValue - 0xfff)], 16, out var table, out error), error);
        Assert.True(table.TryUserToGuest(ulong.MaxValue, 1, out ulong guest));
        Assert.Equal(0x10fffUL, guest);
    }

    [Fact]
    public void Null_host_mapping_is_rejected()
    {
        Assert.False(MemoryTable.TryCreate([R(0x10000, Page), R(0x20000, Page, host: 0)], 16, out var table, out var error));
        Assert.Null(table);
        Assert.Contains("no local mapping", error, StringComparison.Ordinal);
        Assert.Contains("region 1", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Host_mapping_plus_size_overflow_is_rejected()
    {
        Assert.False(MemoryTable.TryCreate([R(0x10000, Page, host: unchecked((nint)0xffff_ffff_ffff_f800))], 16, out _, out var error));
        Assert.Contains("local mapping + size overflows", error, StringComparison.Ordinal);
    }

    [Fact]
    public void TryTranslate_is_true_inside_a_region_and_false_across_a_region_end_or_a_gap()
    {
        // A and B adjacent, then a gap, then C.
        var a = R(0x10000, Page);
        var b = R(0x11000, Page, host: HostBase + 0x100_0000);
        var c = R(0x13000, Page);
        var table = MemoryTable.Create(c, a, b);

        Assert.True(table.TryTranslate(0x10000, Page, out nint host));
        Assert.Equal(a.HostAddr, host);
        Assert.True(table.TryTranslate(0x10010, 0x20, out host));
        Assert.Equal(a.HostAddr + 0x10, host);
        Assert.True(table.TryTranslate(0x11fff, 1, out host));
        Assert.Equal(b.HostAddr + 0xfff, host);
        Assert.True(table.TryTranslate(0x13800, 0x800, out host));
        Assert.Equal(c.HostAddr + 0x800, host);

        Assert.False(table.TryTranslate(0x10ff0, 0x20, out _));   // A into B: mapped but two regions
        Assert.False(table.TryTranslate(0x11ff0, 0x20, out _));   // B into the gap
        Assert.False(table.TryTranslate(0x12000, 1, out _));      // in the gap
        Assert.False(table.TryTranslate(0x12fff, 2, out _));      // gap into C
        Assert.False(table.TryTranslate(0x13ff0, 0x11, out _));   // C past the end of memory
        Assert.False(table.TryTranslate(0x0fff0, 0x20, out _));   // below A into A
        Assert.False(table.TryTranslate(0x10000, 0, out _));      // empty
        Assert.False(table.TryTranslate(ulong.MaxValue, 2, out _)); // wraps

        // TranslatePiece gives the first piece only.
        Assert.Equal(0x10UL, table.TranslatePiece(0x10ff0, 0x20, out host));
        Assert.Equal(a.HostAddr + 0xff0, host);
    }

    /// <summary>
    /// The hinted lookups (the data path's: a queue keeps the region its last buffer was in)
    /// answer exactly as the plain ones for every address at and around every region edge and
    /// gap, whatever the hint says, wrong, stale or out of range, and leave the hint naming
    /// the region it found.
    /// </summary>
    [Fact]
    public void Hinted_lookups_with_any_hint_answer_as_without_one_and_leave_the_found_region()
    {
        var a = R(0x10000, Page);
        var b = R(0x11000, Page, host: HostBase + 0x100_0000);
        var c = R(0x13000, Page);
        var top = R(ulong.MaxValue - 0xfff, Page, user: 0x10_0000, host: HostBase + 0x200_0000);
        var table = MemoryTable.Create(c, top, a, b);
        var sorted = table.Regions.ToArray();

        var addresses = new List<ulong> { 0, 0x0ffff };
        foreach (var r in sorted)
        {
            foreach (ulong at in new[] { r.GuestPhysAddr - 1, r.GuestPhysAddr, r.GuestPhysAddr + 1, r.GuestPhysAddr + (r.Size / 2), r.GuestLast - 1, r.GuestLast, r.GuestLast + 1 })
            {
                addresses.Add(at);
            }
        }

        ulong[] lengths = [0, 1, 2, 0x10, Page - 1, Page, Page + 1, ulong.MaxValue];
        int[] hints = [int.MinValue, -1, 0, 1, 2, 3, 4, 5, int.MaxValue];
        int checkedCases = 0;
        foreach (ulong at in addresses)
        {
            foreach (ulong length in lengths)
            {
                bool expected = table.TryTranslate(at, length, out nint expectedHost);
                foreach (int start in hints)
                {
                    int hint = start;
                    bool actual = table.TryTranslate(at, length, ref hint, out nint host);
                    Assert.True(expected == actual, $"0x{at:x}+{length} with hint {start}: {actual}, expected {expected}");
                    if (expected)
                    {
                        Assert.Equal(expectedHost, host);
                        Assert.True(at - sorted[hint].GuestPhysAddr < sorted[hint].Size, $"hint {hint} after 0x{at:x}");
                    }

                    hint = start;
                    ulong expectedPiece = table.TranslatePiece(at, length, out expectedHost);
                    ulong piece = table.TranslatePiece(at, length, ref hint, out host);
                    Assert.True(expectedPiece == piece, $"piece of 0x{at:x}+{length} with hint {start}: {piece}, expected {expectedPiece}");
                    Assert.Equal(expectedHost, host);
                    if (expectedPiece != 0)
                    {
                        Assert.True(at - sorted[hint].GuestPhysAddr < sorted[hint].Size, $"hint {hint} after the piece at 0x{at:x}");
                    }

                    checkedCases++;
                }
            }
        }

        Assert.True(checkedCases > 1000);
    }

    [Fact]
    public void A_hint_is_kept_while_buffers_stay_in_its_region_and_moves_when_they_do_not()
    {
        var a = R(0x10000, Page);
        var b = R(0x20000, Page, host: HostBase + 0x100_0000);
        var table = MemoryTable.Create(a, b);

        int hint = -1;
        Assert.True(table.TryTranslate(0x20010, 0x20, ref hint, out nint host));
        Assert.Equal(1, hint);
        Assert.Equal(b.HostAddr + 0x10, host);
        Assert.True(table.TryTranslate(0x20800, 0x800, ref hint, out host));
        Assert.Equal(1, hint);
        Assert.Equal(b.HostAddr + 0x800, host);

        // Right region, but the range runs past its end: refused, and the hint stays.
        Assert.False(table.TryTranslate(0x20ff0, 0x11, ref hint, out _));
        Assert.Equal(1, hint);

        Assert.True(table.TryTranslate(0x10000, 1, ref hint, out host));
        Assert.Equal(0, hint);
        Assert.Equal(a.HostAddr, host);

        // In no region: refused, and the hint stays where it was.
        Assert.False(table.TryTranslate(0x18000, 1, ref hint, out _));
        Assert.Equal(0, hint);
    }

    [Fact]
    public void TryUserToGuest_maps_frontend_virtual_addresses_of_one_region()
    {
        // User addresses deliberately unrelated to the guest ones.
        var a = R(0x10000, 0x4000, user: 0x7fff_0000_0000);
        var b = R(0x80000, 0x4000, user: 0x7fff_0000_4000); // adjacent to A in user space only
        var table = MemoryTable.Create(a, b);

        Assert.True(table.TryUserToGuest(0x7fff_0000_0000, 0x4000, out ulong g));
        Assert.Equal(0x10000UL, g);
        Assert.True(table.TryUserToGuest(0x7fff_0000_1230, 16, out g));
        Assert.Equal(0x11230UL, g);
        Assert.True(table.TryUserToGuest(0x7fff_0000_4000, 1, out g));
        Assert.Equal(0x80000UL, g);
        Assert.True(table.TryUserToGuest(0x7fff_0000_7fff, 1, out g));
        Assert.Equal(0x83fffUL, g);

        Assert.False(table.TryUserToGuest(0x7fff_0000_3ff0, 0x20, out g)); // crosses A's user end
        Assert.Equal(0UL, g);
        Assert.False(table.TryUserToGuest(0x7fff_0000_7ff0, 0x20, out _)); // past B
        Assert.False(table.TryUserToGuest(0x7ffe_ffff_fff0, 0x20, out _)); // before A
        Assert.False(table.TryUserToGuest(0x10000, 16, out _));            // a guest address is not a user one
        Assert.False(table.TryUserToGuest(0x7fff_0000_0000, 0, out _));
        Assert.False(table.TryUserToGuest(ulong.MaxValue - 3, 8, out _));

        // The SET_VRING_ADDR path: the converted address validates as a ring.
        Assert.True(table.TryUserToGuest(0x7fff_0000_0100, 16 * 64, out g));
        Assert.True(table.TryTranslate(g, 16 * 64, out nint host));
        Assert.Equal(a.HostAddr + 0x100, host);
    }

    [Fact]
    public void TryAdd_builds_a_new_table_and_leaves_the_old_one_untouched()
    {
        var a = R(0x10000, Page);
        var c = R(0x30000, Page);
        var old = MemoryTable.Create(c, a);
        var b = R(0x20000, Page);

        Assert.True(old.TryAdd(b, MemoryTable.DefaultMaxRegions, out var added, out var error), error);
        Assert.Equal(3, added.Count);
        Assert.Equal([a, b, c], added.Regions.ToArray());
        Assert.Equal(Page, added.TranslatePiece(0x20000, Page, out nint host));
        Assert.Equal(b.HostAddr, host);

        Assert.Equal(2, old.Count);
        Assert.Equal(0UL, old.TranslatePiece(0x20000, 1, out _));

        Assert.False(added.TryAdd(R(0x20800, Page), MemoryTable.DefaultMaxRegions, out var bad, out error));
        Assert.Null(bad);
        Assert.Contains("overlaps", error, StringComparison.Ordinal);
        Assert.False(added.TryAdd(R(0x40000, 0), MemoryTable.DefaultMaxRegions, out _, out error));
        Assert.Contains("size is zero", error, StringComparison.Ordinal);
        Assert.False(added.TryAdd(R(0x40000, Page), 3, out _, out error));
        Assert.Contains("limit of 3", error, StringComparison.Ordinal);
    }

    [Fact]
    public void TryRemove_needs_an_exact_match_and_returns_the_removed_region()
    {
        var a = R(0x10000, Page);
        var b = R(0x20000, Page * 2);
        var c = R(0x30000, Page);
        var table = MemoryTable.Create(a, b, c);

        Assert.False(table.TryRemove(b.GuestPhysAddr, Page, b.UserAddr, out var none, out var removed));   // wrong size
        Assert.Null(none);
        Assert.Equal(default(MemoryRegion), removed);
        Assert.False(table.TryRemove(b.GuestPhysAddr, b.Size, b.UserAddr + 1, out _, out _));            // wrong user address
        Assert.False(table.TryRemove(b.GuestPhysAddr + Page, Page, b.UserAddr + Page, out _, out _));   // a part of it

        Assert.True(table.TryRemove(b.GuestPhysAddr, b.Size, b.UserAddr, out var smaller, out removed));
        Assert.Equal(b, removed);
        Assert.Equal([a, c], smaller.Regions.ToArray());
        Assert.Equal(0UL, smaller.TranslatePiece(0x20000, 1, out _));
        Assert.Equal(0UL, smaller.TranslatePiece(0x21fff, 1, out _));
        Assert.Equal(1UL, smaller.TranslatePiece(0x30000, 1, out _));
        Assert.Equal(2 * Page, table.TranslatePiece(0x20000, ulong.MaxValue, out _)); // old table unchanged

        Assert.True(smaller.TryRemove(a.GuestPhysAddr, a.Size, a.UserAddr, out var one, out _));
        Assert.True(one.TryRemove(c.GuestPhysAddr, c.Size, c.UserAddr, out var empty, out _));
        Assert.Equal(0, empty.Count);
        Assert.Equal(0UL, empty.TranslatePiece(0x30000, 1, out _));
        Assert.False(empty.TryRemove(c.GuestPhysAddr, c.Size, c.UserAddr, out _, out _));

        // Removed then added back.
        Assert.True(empty.TryAdd(c, 1, out var again, out _));
        Assert.Equal(1UL, again.TranslatePiece(0x30fff, 1, out _));
    }

    [Fact]
    public void Empty_table_maps_nothing()
    {
        var empty = MemoryTable.Empty;
        Assert.Equal(0, empty.Count);
        Assert.Equal(0UL, empty.TranslatePiece(0, 1, out nint host));
        Assert.Equal(0, host);
        Assert.Equal(0UL, empty.TranslatePiece(ulong.MaxValue, 1, out _));
        Assert.False(empty.TryTranslate(0x1000, 16, out _));
        Assert.False(empty.TryUserToGuest(0x1000, 16, out _));
        Assert.True(MemoryTable.TryCreate([], 0, out var alsoEmpty, out _));
        Assert.Equal(0, alsoEmpty.Count);
    }
}
