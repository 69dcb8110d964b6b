using System.Runtime.CompilerServices;
using PciVirtio.Mmio.Memory;

namespace PciVirtio.Mmio.Signals;

/// <summary>Width of a doorbell register write, in bits.</summary>
public enum DoorbellWidth
{
    Bits16 = 16,
    Bits32 = 32,
    Bits64 = 64,
}

/// <summary>
/// A doorbell register on a BAR mapping: the MMIO stand-in for an ioeventfd. Notifying is one
/// naturally aligned store of the configured value — a single posted write on the bus — made
/// through <see cref="IoMemoryAccessor"/>, so it is counted when an <see cref="AccessCounters"/>
/// is attached, and preceded by a full barrier, so the order payload → barrier → index →
/// barrier → doorbell holds even when the index went to another mapping or to
/// write-combining memory: the device never sees the doorbell before the work it announces.
/// </summary>
/// <remarks>
/// <para>The register is validated once, here (inside the mapping, aligned to its width), so
/// the data path is just the barrier and the store. The mapping is held by a SafeHandle
/// reference for the doorbell's lifetime and its address taken once; disposing the mapping
/// first therefore cannot leave the doorbell writing into unmapped (or re-used) memory — the
/// unmap waits for <see cref="Dispose"/>.</para>
/// <para>Notifying from several threads is fine (each store is one bus transaction), and so
/// is <see cref="Dispose"/> racing a <see cref="Notify"/>: a Notify that has taken the address
/// finishes its store before Dispose lets go of the mapping, and a later one throws
/// <see cref="ObjectDisposedException"/>.</para>
/// </remarks>
public sealed class MmioDoorbell : INotifier, IDisposable
{
    /// <summary>ivshmem's Doorbell register: BAR0 offset 12, written with
    /// <c>(peerId &lt;&lt; 16) | vector</c> (see <see cref="IvshmemValue"/>).</summary>
    public const ulong IvshmemDoorbellOffset = 12;

    private readonly MemoryMapping _mapping;
    private readonly IoMemoryAccessor _access;
    private readonly ulong _maxValue;
    private nint _address;
    private long _notifications;
    private int _writers; // Notify calls between taking the address and their store

    /// <summary>
    /// A doorbell at <paramref name="offset"/> of <paramref name="mapping"/> that
    /// <see cref="Notify"/> writes <paramref name="value"/> to, <paramref name="width"/> bits wide.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The register does not lie wholly inside
    /// the mapping, or the value does not fit the width.</exception>
    /// <exception cref="ArgumentException">The register is not naturally aligned: a device may
    /// reject, split or tear such an access.</exception>
    public MmioDoorbell(MemoryMapping mapping, ulong offset, ulong value, DoorbellWidth width = DoorbellWidth.Bits32,
        AccessCounters? counters = null)
    {
        ArgumentNullException.ThrowIfNull(mapping);
        int bytes = width switch
        {
            DoorbellWidth.Bits16 => 2,
            DoorbellWidth.Bits32 => 4,
            DoorbellWidth.Bits64 => 8,
            _ => throw new ArgumentOutOfRangeException(nameof(width), width, "a doorbell is 16, 32 or 64 bits wide"),
        };

        _maxValue = width == DoorbellWidth.Bits64 ? ulong.MaxValue : (1UL << (int)width) - 1;
        if (value > _maxValue)
        {
            throw new ArgumentOutOfRangeException(nameof(value), $"doorbell value 0x{value:x} does not fit in {(int)width} bits");
        }

        // Written so that neither side can overflow: offset + bytes <= Length.
        if (mapping.Length < (ulong)bytes || offset > mapping.Length - (ulong)bytes)
        {
            throw new ArgumentOutOfRangeException(nameof(offset),
                $"doorbell register 0x{offset:x}+{bytes} lies outside the mapping of 0x{mapping.Length:x} bytes");
        }

        nint address = mapping.Address + (nint)offset;
        if (offset % (ulong)bytes != 0 || address % bytes != 0)
        {
            throw new ArgumentException($"doorbell register at offset 0x{offset:x} is not aligned to its {bytes}-byte width", nameof(offset));
        }

        bool added = false;
        mapping.DangerousAddRef(ref added);
        _mapping = mapping;
        _address = address;
        _access = new IoMemoryAccessor(counters);
        Offset = offset;
        Value = value;
        Width = width;
    }

    /// <summary>Offset of the register inside the mapping.</summary>
    public ulong Offset { get; }

    /// <summary>What <see cref="Notify"/> writes.</summary>
    public ulong Value { get; }

    public DoorbellWidth Width { get; }

    /// <summary>Doorbell writes made (by <see cref="Notify"/> and <see cref="Ring"/>).</summary>
    public long Notifications => Volatile.Read(ref _notifications);

    /// <summary>
    /// An ivshmem doorbell: BAR0 (the register BAR, <paramref name="bar0"/>) offset 12, a
    /// 32-bit write of <c>(peerId &lt;&lt; 16) | vector</c>, which raises
    /// <paramref name="vector"/> on peer <paramref name="peerId"/>.
    /// </summary>
    public static MmioDoorbell Ivshmem(MemoryMapping bar0, ushort peerId, ushort vector, AccessCounters? counters = null) =>
        new(bar0, IvshmemDoorbellOffset, IvshmemValue(peerId, vector), DoorbellWidth.Bits32, counters);

    /// <summary>The value ivshmem's doorbell register takes to interrupt
    /// <paramref name="vector"/> of peer <paramref name="peerId"/>.</summary>
    public static uint IvshmemValue(ushort peerId, ushort vector) => ((uint)peerId << 16) | vector;

    /// <summary>Rings with the configured <see cref="Value"/>: barrier, then one store.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Notify() => Write(Value);

    /// <summary>Rings with another <paramref name="value"/> (e.g. another peer or vector on
    /// the same ivshmem register).</summary>
    public void Ring(ulong value)
    {
        if (value > _maxValue)
        {
            throw new ArgumentOutOfRangeException(nameof(value), $"doorbell value 0x{value:x} does not fit in {(int)Width} bits");
        }

        Write(value);
    }

    /// <summary>Lets go of the mapping (which unmaps now if it was already disposed).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _address, 0) != 0)
        {
            // A Notify that took the address before it went to zero is still storing: the
            // mapping must outlive that store (both sides are full fences, so either it saw
            // zero or we see it counted).
            var spin = default(SpinWait);
            while (Volatile.Read(ref _writers) != 0)
            {
                spin.SpinOnce();
            }

            _mapping.DangerousRelease();
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Write(ulong value)
    {
        Interlocked.Increment(ref _writers);
        nint address = Volatile.Read(ref _address);
        if (address == 0)
        {
            Interlocked.Decrement(ref _writers);
            ObjectDisposedException.ThrowIf(true, this);
        }

        // Everything announced (payload, ring entries, the published index) must reach the
        // device before the doorbell that makes it look.
        _access.FullBarrier();
        switch (Width)
        {
            case DoorbellWidth.Bits16:
                _access.StoreU16(address, (ushort)value);
                break;
            case DoorbellWidth.Bits32:
                _access.StoreU32(address, (uint)value);
                break;
            default:
                _access.StoreU64(address, value);
                break;
        }

        Interlocked.Decrement(ref _writers);
        Interlocked.Increment(ref _notifications);
    }
}
