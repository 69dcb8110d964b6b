namespace PciVirtio.Tests.VfioPingPong;

/// <summary>
/// The messages both sides can compute on their own from the sequence number, so each can check
/// every byte it receives: a request of <see cref="RequestLength"/> pseudo-random bytes, and a
/// reply of another length whose bytes are a transformation of the request's.
/// </summary>
internal static class Messages
{
    /// <summary>Request sizes: 1, then the maximum, then pseudo-random in 1..max.</summary>
    public static int RequestLength(ulong sequence, int maxSize) => Length(sequence, 0x5EED_0001, maxSize);

    public static int ReplyLength(ulong sequence, int maxSize) => Length(sequence, 0x5EED_0002, maxSize);

    /// <summary>Fills <paramref name="destination"/> with request <paramref name="sequence"/>.</summary>
    public static void FillRequest(ulong sequence, Span<byte> destination)
    {
        ulong state = sequence * 0x9E3779B97F4A7C15UL;
        for (int i = 0; i < destination.Length; i += 8)
        {
            ulong word = SplitMix(ref state);
            for (int k = 0; k < 8 && i + k < destination.Length; k++)
            {
                destination[i + k] = (byte)(word >> (8 * k));
            }
        }
    }

    /// <summary>The reply to <paramref name="request"/>: every request byte (repeated to the
    /// reply's length) inverted and mixed with its position and the sequence number.</summary>
    public static void FillReply(ulong sequence, ReadOnlySpan<byte> request, Span<byte> destination)
    {
        for (int i = 0; i < destination.Length; i++)
        {
            destination[i] = (byte)(~request[i % request.Length] ^ (byte)((i * 7) + (int)sequence));
        }
    }

    /// <summary>FNV-1a of <paramref name="data"/>: the responder sends it back with the reply,
    /// so the initiator learns the request arrived whole even when the reply is shorter.</summary>
    public static uint Checksum(ReadOnlySpan<byte> data)
    {
        uint hash = 2166136261;
        foreach (byte b in data)
        {
            hash = (hash ^ b) * 16777619;
        }

        return hash;
    }

    /// <summary>The index of the first byte where <paramref name="actual"/> and
    /// <paramref name="expected"/> differ, or -1.</summary>
    public static int FirstDifference(ReadOnlySpan<byte> actual, ReadOnlySpan<byte> expected)
    {
        int common = actual.CommonPrefixLength(expected);
        return common == actual.Length && actual.Length == expected.Length ? -1 : common;
    }

    private static int Length(ulong sequence, ulong salt, int maxSize) => sequence switch
    {
        1 => 1,
        2 => maxSize,
        _ => 1 + (int)(Mix(sequence ^ (salt << 32)) % (ulong)maxSize),
    };

    private static ulong SplitMix(ref ulong state)
    {
        state += 0x9E3779B97F4A7C15UL;
        return Mix(state);
    }

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
