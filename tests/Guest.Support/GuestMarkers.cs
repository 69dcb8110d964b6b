namespace PciVirtio.Tests.Guest;

/// <summary>
/// The lines tests/guest/init.sh prints on the console for the host, and a parser for their
/// "key=value" words.
/// </summary>
public static class GuestMarkers
{
    /// <summary>"PCIVIRTIO-GUEST: init uptime=S kernel=V": /init started (the kernel booted).</summary>
    public const string Init = "PCIVIRTIO-GUEST: init ";

    /// <summary>"PCIVIRTIO-GUEST: modules uptime=S": the modules are loaded.</summary>
    public const string Modules = "PCIVIRTIO-GUEST: modules ";

    /// <summary>"PCIVIRTIO-GUEST: exit rc=N uptime=S": /test.sh returned; the guest powers off.</summary>
    public const string Exit = "PCIVIRTIO-GUEST: exit ";

    /// <summary>The "key=value" words of a marker line (the text from the marker on).</summary>
    public static IReadOnlyDictionary<string, string> Fields(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var fields = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string word in text.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = word.IndexOf('=', StringComparison.Ordinal);
            if (eq > 0)
            {
                fields[word[..eq]] = word[(eq + 1)..];
            }
        }

        return fields;
    }
}
