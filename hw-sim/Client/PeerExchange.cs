using PciVirtio.HwSim.Ivshmem;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Signals;

namespace PciVirtio.HwSim.Client;

/// <summary>
/// A minimal data exchange over the emulated NTB, used by the <c>peer</c> command and the
/// tests: port 1 (receiver) translates window 0 onto its local memory and announces it in
/// the peer's scratchpad 0; port 0 (sender) writes a deterministic byte stream through its
/// outbound window in chunks, puts each chunk's length in the peer's scratchpad 1 and rings
/// doorbell bit 0; the receiver checks every byte and acknowledges with doorbell bit 1.
/// </summary>
public static class PeerExchange
{
    /// <summary>Scratchpad value the receiver writes when its window is ready ("RDY!").</summary>
    public const uint Ready = 0x21594452;

    public readonly record struct Result(long Bytes, long Chunks, ulong Checksum);

    /// <summary>Runs port <see cref="SimNtbPort.Port"/>'s side of the exchange.</summary>
    public static Result Run(SimNtbPort port, long bytes, int chunk, int seed, TimeSpan timeout)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        ArgumentOutOfRangeException.ThrowIfLessThan(chunk, 1);
        long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        var stream = new Random(seed);
        byte[] expected = new byte[chunk];
        ulong checksum = 14695981039346656037UL;
        long chunks = 0;
        if (port.Port == 1)
        {
            ulong window = ((ulong)chunk + 4095) & ~4095UL;
            ulong granted = port.SetTranslation(0, 0, window);
            if (granted < (ulong)chunk)
            {
                throw new InvalidOperationException($"window 0 granted {granted} B, {chunk} B needed");
            }

            port.PeerScratchpadWrite(0, Ready);
            for (long done = 0; done < bytes; chunks++)
            {
                Wait(port.DoorbellEvent(0), deadline, "a chunk");
                port.DoorbellClear(1);
                int length = (int)port.ScratchpadRead(1);
                if (length <= 0 || length > chunk || length > bytes - done)
                {
                    throw new InvalidDataException($"chunk {chunks}: bad length {length}");
                }

                Span<byte> got = port.LocalMemory.Span[..length];
                stream.NextBytes(expected.AsSpan(0, length));
                int bad = got.SequenceEqual(expected.AsSpan(0, length)) ? -1 : FirstMismatch(got, expected.AsSpan(0, length));
                if (bad >= 0)
                {
                    throw new InvalidDataException($"byte {done + bad}: got 0x{got[bad]:x2}, expected 0x{expected[bad]:x2}");
                }

                checksum = Fnv(checksum, got);
                done += length;
                port.PeerDoorbellSet(1UL << 1);
            }
        }
        else
        {
            while (port.ScratchpadRead(0) != Ready)
            {
                if (Environment.TickCount64 > deadline)
                {
                    throw new TimeoutException("the receiver never announced its window");
                }

                Thread.Sleep(1);
            }

            using MemoryMapping window = port.MapPeerWindow(0);
            SimWindowAccessor accessor = port.PeerWindowAccessor;
            for (long done = 0; done < bytes; chunks++)
            {
                int length = (int)Math.Min(chunk, bytes - done);
                stream.NextBytes(expected.AsSpan(0, length));
                accessor.CopyTo(window.Address, expected.AsSpan(0, length));
                port.PeerScratchpadWrite(1, (uint)length);
                port.PeerDoorbellSet(1UL << 0);
                Wait(port.DoorbellEvent(1), deadline, "an acknowledgement");
                port.DoorbellClear(1UL << 1);
                checksum = Fnv(checksum, expected.AsSpan(0, length));
                done += length;
            }
        }

        return new Result(bytes, chunks, checksum);
    }

    private static int FirstMismatch(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        for (int i = 0; i < a.Length; i++)
        {
            if (a[i] != b[i])
            {
                return i;
            }
        }

        return -1;
    }

    private static void Wait(EventFd interrupt, long deadline, string what)
    {
        while (interrupt.Consume() == 0)
        {
            int left = (int)Math.Max(0, deadline - Environment.TickCount64);
            if (left == 0 || !UnixSocket.WaitReadable(interrupt.Handle, left))
            {
                throw new TimeoutException($"no interrupt for {what} in time");
            }
        }
    }

    private static ulong Fnv(ulong hash, ReadOnlySpan<byte> data)
    {
        foreach (byte b in data)
        {
            hash = (hash ^ b) * 1099511628211UL;
        }

        return hash;
    }
}
