using System.Runtime.CompilerServices;

namespace PciVirtio.VhostCore.Memory;

/// <summary>
/// The vhost memory map: non-overlapping guest-physical regions with the local mapping
/// behind each. Immutable: a change (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG) builds a new
/// table, so a data path holding the old one never sees a half-updated map.
/// </summary>
/// <remarks>
/// Lookup of a guest-physical address is a binary search over the regions sorted by
/// address (logarithmic in the region count; 509 regions take at most 9 steps), with a
/// direct path for the common single-region guest. Frontend virtual addresses (only used
/// when a ring is configured) are looked up linearly.
/// </remarks>
public sealed class MemoryTable
{
    /// <summary>The number of slots QEMU and DPDK use with CONFIGURE_MEM_SLOTS.</summary>
    public const int DefaultMaxRegions = 509;

    private readonly MemoryRegion[] _regions;

    private MemoryTable(MemoryRegion[] sortedRegions) => _regions = sortedRegions;

    public static MemoryTable Empty { get; } = new([]);

    /// <summary>Regions sorted by guest-physical address.</summary>
    public ReadOnlySpan<MemoryRegion> Regions => _regions;

    public int Count => _regions.Length;

    /// <summary>
    /// Builds a table from untrusted region descriptions. Fails (with a reason naming the
    /// offending region) on an empty region, address arithmetic that overflows, a null
    /// mapping, overlapping guest-physical ranges, or more than <paramref name="maxRegions"/>.
    /// </summary>
    public static bool TryCreate(ReadOnlySpan<MemoryRegion> regions, int maxRegions,
        [NotNullWhen(true)] out MemoryTable? table, [NotNullWhen(false)] out string? error)
    {
        table = null;
        if (regions.Length > maxRegions)
        {
            error = $"{regions.Length} memory regions exceed the limit of {maxRegions}";
            return false;
        }

        var sorted = regions.ToArray();
        for (int i = 0; i < sorted.Length; i++)
        {
            if (!IsWellFormed(sorted[i], out error))
            {
                error = $"region {i} ({sorted[i]}): {error}";
                return false;
            }
        }

        Array.Sort(sorted, static (a, b) => a.GuestPhysAddr.CompareTo(b.GuestPhysAddr));
        for (int i = 1; i < sorted.Length; i++)
        {
            if (sorted[i].GuestPhysAddr <= sorted[i - 1].GuestLast)
            {
                error = $"region {sorted[i]} overlaps region {sorted[i - 1]}";
                return false;
            }
        }

        table = new MemoryTable(sorted);
        error = null;
        return true;
    }

    /// <summary>Builds a table from trusted input (tests, demos); throws on bad input.</summary>
    public static MemoryTable Create(params ReadOnlySpan<MemoryRegion> regions) =>
        TryCreate(regions, DefaultMaxRegions, out var table, out var error)
            ? table
            : throw new ArgumentException(error, nameof(regions));

    /// <summary>A new table with <paramref name="region"/> added (ADD_MEM_REG).</summary>
    public bool TryAdd(MemoryRegion region, int maxRegions,
        [NotNullWhen(true)] out MemoryTable? table, [NotNullWhen(false)] out string? error)
    {
        var all = new MemoryRegion[_regions.Length + 1];
        _regions.CopyTo(all, 0);
        all[^1] = region;
        return TryCreate(all, maxRegions, out table, out error);
    }

    /// <summary>A new table without the region that exactly matches guest address, size
    /// and user address (REM_MEM_REG); the removed region is returned so its mapping can
    /// be released once no ring uses it.</summary>
    public bool TryRemove(ulong guestPhysAddr, ulong size, ulong userAddr,
        [NotNullWhen(true)] out MemoryTable? table, out MemoryRegion removed)
    {
        for (int i = 0; i < _regions.Length; i++)
        {
            var r = _regions[i];
            if (r.GuestPhysAddr == guestPhysAddr && r.Size == size && r.UserAddr == userAddr)
            {
                removed = r;
                var rest = new MemoryRegion[_regions.Length - 1];
                Array.Copy(_regions, 0, rest, 0, i);
                Array.Copy(_regions, i + 1, rest, i, rest.Length - i);
                table = new MemoryTable(rest);
                return true;
            }
        }

        table = null;
        removed = default;
        return false;
    }

    /// <summary>
    /// Translates the first contiguous piece of [<paramref name="guestAddr"/>,
    /// <paramref name="guestAddr"/> + <paramref name="length"/>): returns how many bytes
    /// (at most <paramref name="length"/>) are mapped contiguously at <paramref name="host"/>,
    /// or 0 when <paramref name="guestAddr"/> lies in no region.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong TranslatePiece(ulong guestAddr, ulong length, out nint host) =>
        Piece(Find(guestAddr), guestAddr, length, out host);

    /// <summary>Translates a range that must lie entirely inside one region (ring areas,
    /// indirect tables). False when any byte is unmapped or the range crosses a region end.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryTranslate(ulong guestAddr, ulong length, out nint host)
    {
        if (length == 0 || guestAddr + (length - 1) < guestAddr)
        {
            host = 0;
            return false;
        }

        return TranslatePiece(guestAddr, length, out host) == length;
    }

    /// <summary>
    /// <see cref="TranslatePiece(ulong, ulong, out nint)"/> that looks first in region
    /// <paramref name="hint"/> and leaves there the region it found. A queue's buffers mostly
    /// come from one region, so a hint its owner keeps (any value is safe: it is only a place
    /// to look first, checked like any other) spares the search on the data path.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong TranslatePiece(ulong guestAddr, ulong length, ref int hint, out nint host)
    {
        int i = hint;
        var regions = _regions;
        if ((uint)i >= (uint)regions.Length || guestAddr - regions[i].GuestPhysAddr >= regions[i].Size)
        {
            i = Find(guestAddr);
            if (i >= 0)
            {
                hint = i;
            }
        }

        return Piece(i, guestAddr, length, out host);
    }

    /// <summary><see cref="TryTranslate(ulong, ulong, out nint)"/> with a region hint, as
    /// <see cref="TranslatePiece(ulong, ulong, ref int, out nint)"/> has.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryTranslate(ulong guestAddr, ulong length, ref int hint, out nint host)
    {
        if (length == 0 || guestAddr + (length - 1) < guestAddr)
        {
            host = 0;
            return false;
        }

        return TranslatePiece(guestAddr, length, ref hint, out host) == length;
    }

    /// <summary>The piece of a range that region <paramref name="i"/> (from <see cref="Find"/>,
    /// so holding <paramref name="guestAddr"/>, or -1 for none) maps contiguously.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong Piece(int i, ulong guestAddr, ulong length, out nint host)
    {
        if (i < 0)
        {
            host = 0;
            return 0;
        }

        ref readonly var r = ref _regions[i];
        ulong offset = guestAddr - r.GuestPhysAddr;
        ulong available = r.Size - offset;
        host = r.HostAddr + (nint)offset;
        return length < available ? length : available;
    }

    /// <summary>Converts a frontend virtual address range (SET_VRING_ADDR) that lies in one
    /// region to its guest-physical address.</summary>
    public bool TryUserToGuest(ulong userAddr, ulong length, out ulong guestAddr)
    {
        if (length == 0 || userAddr + (length - 1) < userAddr)
        {
            guestAddr = 0;
            return false;
        }

        foreach (var r in _regions)
        {
            if (userAddr >= r.UserAddr && userAddr <= r.UserLast && userAddr + (length - 1) <= r.UserLast)
            {
                guestAddr = r.GuestPhysAddr + (userAddr - r.UserAddr);
                return true;
            }
        }

        guestAddr = 0;
        return false;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int Find(ulong guestAddr)
    {
        var regions = _regions;
        if (regions.Length == 1)
        {
            return guestAddr - regions[0].GuestPhysAddr < regions[0].Size ? 0 : -1;
        }

        // Last region whose start is <= guestAddr.
        int lo = 0, hi = regions.Length - 1, found = -1;
        while (lo <= hi)
        {
            int mid = (int)((uint)(lo + hi) >> 1);
            if (regions[mid].GuestPhysAddr <= guestAddr)
            {
                found = mid;
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }

        return found >= 0 && guestAddr - regions[found].GuestPhysAddr < regions[found].Size ? found : -1;
    }

    private static bool IsWellFormed(in MemoryRegion r, [NotNullWhen(false)] out string? error)
    {
        if (r.Size == 0)
        {
            error = "size is zero";
        }
        else if (r.GuestPhysAddr + (r.Size - 1) < r.GuestPhysAddr)
        {
            error = "guest-physical address + size overflows";
        }
        else if (r.UserAddr + (r.Size - 1) < r.UserAddr)
        {
            error = "user address + size overflows";
        }
        else if (r.HostAddr == 0)
        {
            error = "region has no local mapping";
        }
        else if ((ulong)r.HostAddr + (r.Size - 1) < (ulong)r.HostAddr)
        {
            error = "local mapping + size overflows";
        }
        else
        {
            error = null;
            return true;
        }

        return false;
    }
}
