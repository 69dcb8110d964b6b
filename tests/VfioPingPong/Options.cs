using System.Globalization;

namespace PciVirtio.Tests.VfioPingPong;

/// <summary>The program's arguments: <c>[--messages N] [--max-size BYTES] [--timeout-ms MS]
/// [--handshake-timeout-ms MS]</c>.</summary>
internal sealed class Options
{
    public int Messages { get; private set; } = 300;

    /// <summary>Largest message (and reply) in bytes; sizes vary from 1 to this.</summary>
    public int MaxSize { get; private set; } = 4096;

    /// <summary>How long one wait for an interrupt may take (a timeout is a failure).</summary>
    public int MessageTimeoutMs { get; private set; } = 15_000;

    /// <summary>How long to wait for the other guest to publish "ready" (it may boot later).</summary>
    public int HandshakeTimeoutMs { get; private set; } = 120_000;

    public static Options Parse(string[] args)
    {
        var options = new Options();
        for (int i = 0; i < args.Length; i++)
        {
            string name = args[i];
            if (i + 1 >= args.Length)
            {
                throw new ArgumentException($"{name} needs a value");
            }

            string text = args[++i];
            if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int value) || value <= 0)
            {
                throw new ArgumentException($"{name} takes a positive integer, not '{text}'");
            }

            switch (name)
            {
                case "--messages":
                    options.Messages = value;
                    break;
                case "--max-size":
                    options.MaxSize = value <= Layout.MaxPayload
                        ? value
                        : throw new ArgumentException($"--max-size is at most {Layout.MaxPayload} (one inbox)");
                    break;
                case "--timeout-ms":
                    options.MessageTimeoutMs = value;
                    break;
                case "--handshake-timeout-ms":
                    options.HandshakeTimeoutMs = value;
                    break;
                default:
                    throw new ArgumentException($"unknown argument {name} (--messages, --max-size, --timeout-ms, --handshake-timeout-ms)");
            }
        }

        return options;
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"messages={Messages} max-size={MaxSize} timeout-ms={MessageTimeoutMs} handshake-timeout-ms={HandshakeTimeoutMs}");
}
