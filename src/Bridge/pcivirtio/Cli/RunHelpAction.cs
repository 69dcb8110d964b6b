using System.CommandLine;
using System.CommandLine.Invocation;

namespace PciVirtio.Host.Cli;

/// <summary>
/// The help action, with the help of <c>run</c> corrected: <c>run</c> takes the tokens it does
/// not know as configuration settings (<c>--PciVirtio:Key=value</c>), and the library's help
/// calls them "additional arguments passed to the application that is being run", which
/// would send a reader looking for a child program. System.CommandLine keeps the help's
/// sections internal, so the two places are rewritten in the text the library wrote; every
/// other command's help passes through untouched.
/// </summary>
internal sealed class RunHelpAction(SynchronousCommandLineAction inner, Command run) : SynchronousCommandLineAction
{
    private const string LibraryUsage = "[[--] <additional arguments>...]]";
    private const string LibrarySection = "Additional Arguments:";

    public override bool ClearsParseErrors => inner.ClearsParseErrors;

    public override bool Terminating => inner.Terminating;

    public override int Invoke(ParseResult parseResult)
    {
        if (parseResult.CommandResult.Command != run)
        {
            return inner.Invoke(parseResult);
        }

        var configuration = parseResult.InvocationConfiguration;
        var output = configuration.Output;
        using var text = new StringWriter();
        configuration.Output = text;
        int code;
        try
        {
            code = inner.Invoke(parseResult);
        }
        finally
        {
            configuration.Output = output;
        }

        output.Write(Rewrite(text.ToString()));
        return code;
    }

    /// <summary>The usage line's trailing arguments and the section that describes them,
    /// replaced by what they are; text without them is returned as it came.</summary>
    internal static string Rewrite(string help)
    {
        help = help.Replace(LibraryUsage, "[--Section:Key=value ...]", StringComparison.Ordinal);
        int start = help.IndexOf(LibrarySection, StringComparison.Ordinal);
        if (start < 0)
        {
            return help;
        }

        // The section runs to the first blank line after its heading, or to the end.
        int end = help.IndexOf(Environment.NewLine + Environment.NewLine, start, StringComparison.Ordinal);
        end = end < 0 ? help.Length : end + Environment.NewLine.Length;
        string settings = string.Join(Environment.NewLine,
            "Settings:",
            "  --Section:Key=value  Any configuration setting, after the files (docs/operations.md), e.g.",
            "                       --PciVirtio:ControlSocket=/run/pcivirtio/control.sock; the environment",
            "                       variable Section__Key does the same",
            "");
        return string.Concat(help.AsSpan(0, start), settings, help.AsSpan(end));
    }
}
