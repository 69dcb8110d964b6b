using System.Globalization;

namespace PciVirtio.Mmio.Vfio;

/// <summary>
/// A PCI address (domain:bus:device.function) in the kernel's canonical spelling. VFIO and sysfs
/// match device names as exact strings ("0000:00:03.0"), and the address is also spliced into
/// sysfs paths, so it is parsed and validated once (no "../", no upper case, no missing domain)
/// rather than passed around as a raw string.
/// </summary>
public readonly record struct PciAddress
{
    public PciAddress(uint domain, byte bus, byte device, byte function)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(device, (byte)0x1f);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(function, (byte)7);
        Domain = domain;
        Bus = bus;
        Device = device;
        Function = function;
    }

    public uint Domain { get; }

    public byte Bus { get; }

    public byte Device { get; }

    public byte Function { get; }

    /// <summary>Parses "DDDD:BB:DD.F" (domain of 4 to 8 hex digits) or "BB:DD.F" (domain 0).</summary>
    public static PciAddress Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return TryParse(text, out PciAddress address)
            ? address
            : throw new FormatException($"'{text}' is not a PCI address: expected DDDD:BB:DD.F (e.g. 0000:00:03.0) or BB:DD.F");
    }

    public static bool TryParse(ReadOnlySpan<char> text, out PciAddress address)
    {
        address = default;
        uint domain = 0;
        int firstColon = text.IndexOf(':');
        if (firstColon < 0)
        {
            return false;
        }

        if (text[(firstColon + 1)..].Contains(':'))
        {
            ReadOnlySpan<char> domainText = text[..firstColon];
            if (domainText.Length is < 4 or > 8 || !TryHex(domainText, out domain))
            {
                return false;
            }

            text = text[(firstColon + 1)..];
        }

        // text is now "BB:DD.F"
        if (text.Length != 7 || text[2] != ':' || text[5] != '.')
        {
            return false;
        }

        if (!TryHex(text[..2], out uint bus) || !TryHex(text[3..5], out uint device) || !TryHex(text[6..], out uint function)
            || device > 0x1f || function > 7)
        {
            return false;
        }

        address = new PciAddress(domain, (byte)bus, (byte)device, (byte)function);
        return true;
    }

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{Domain:x4}:{Bus:x2}:{Device:x2}.{Function:x1}");

    private static bool TryHex(ReadOnlySpan<char> text, out uint value)
    {
        value = 0;
        foreach (char c in text)
        {
            if (!char.IsAsciiHexDigit(c))
            {
                return false;
            }
        }

        return uint.TryParse(text, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value);
    }
}
