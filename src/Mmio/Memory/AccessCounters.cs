namespace PciVirtio.Mmio.Memory;

/// <summary>
/// Counts the accesses an <see cref="IoMemoryAccessor"/> makes, optionally only those that
/// fall inside one window (e.g. the remote side of a PCIe link, where every read is a
/// non-posted round trip). Tests and benchmarks assert on these numbers; the data path
/// pays for counting only when a counter is attached.
/// </summary>
public sealed class AccessCounters
{
    private readonly nint _start;
    private readonly nint _end;
    private long _reads;
    private long _writes;
    private long _readBytes;
    private long _writtenBytes;
    private long _barriers;

    /// <summary>Counts every access.</summary>
    public AccessCounters()
    {
        _start = 0;
        _end = nint.MaxValue;
    }

    /// <summary>Counts only accesses whose address lies in [<paramref name="start"/>,
    /// <paramref name="start"/> + <paramref name="length"/>).</summary>
    public AccessCounters(nint start, ulong length)
    {
        _start = start;
        _end = start + (nint)length;
    }

    /// <summary>Read transactions (each aligned load of 1, 2, 4 or 8 bytes is one).</summary>
    public long Reads => Volatile.Read(ref _reads);

    /// <summary>Write transactions.</summary>
    public long Writes => Volatile.Read(ref _writes);

    public long ReadBytes => Volatile.Read(ref _readBytes);

    public long WrittenBytes => Volatile.Read(ref _writtenBytes);

    public long Barriers => Volatile.Read(ref _barriers);

    public void Reset()
    {
        Interlocked.Exchange(ref _reads, 0);
        Interlocked.Exchange(ref _writes, 0);
        Interlocked.Exchange(ref _readBytes, 0);
        Interlocked.Exchange(ref _writtenBytes, 0);
        Interlocked.Exchange(ref _barriers, 0);
    }

    internal void Read(nint address, int bytes)
    {
        if (address >= _start && address < _end)
        {
            Interlocked.Increment(ref _reads);
            Interlocked.Add(ref _readBytes, bytes);
        }
    }

    internal void Write(nint address, int bytes)
    {
        if (address >= _start && address < _end)
        {
            Interlocked.Increment(ref _writes);
            Interlocked.Add(ref _writtenBytes, bytes);
        }
    }

    /// <summary>A burst of <paramref name="transactions"/> stores, <paramref name="bytes"/> in
    /// all, starting at <paramref name="address"/> (one range: counted or not as a whole).</summary>
    internal void Write(nint address, int bytes, int transactions)
    {
        if (address >= _start && address < _end)
        {
            Interlocked.Add(ref _writes, transactions);
            Interlocked.Add(ref _writtenBytes, bytes);
        }
    }

    internal void Barrier() => Interlocked.Increment(ref _barriers);

    public override string ToString() => $"reads {Reads} ({ReadBytes} B), writes {Writes} ({WrittenBytes} B), barriers {Barriers}";
}
