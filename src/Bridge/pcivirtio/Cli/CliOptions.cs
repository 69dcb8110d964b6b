using System.CommandLine;
using System.CommandLine.Parsing;

namespace PciVirtio.Host.Cli;

/// <summary>Option builders with range checks, so every command refuses a bad value the
/// same way: the flag, the value, and what it should be.</summary>
internal static class CliOptions
{
    public static Option<int> Int(string name, string description, int min, int max, int? fallback = null)
    {
        var option = new Option<int>(name) { Description = description };
        if (fallback is { } f)
        {
            option.DefaultValueFactory = _ => f;
        }

        option.Validators.Add(r =>
        {
            if (Converted(r.GetValueOrDefault<int>, out int v) && (v < min || v > max))
            {
                r.AddError($"{name}: {v} is not in {min}..{max}");
            }
        });
        return option;
    }

    public static Option<int?> OptionalInt(string name, string description, int min, int max)
    {
        var option = new Option<int?>(name) { Description = description };
        option.Validators.Add(r =>
        {
            if (Converted(r.GetValueOrDefault<int?>, out int? value) && value is { } v && (v < min || v > max))
            {
                r.AddError($"{name}: {v} is not in {min}..{max}");
            }
        });
        return option;
    }

    public static Option<double> Seconds(string name, string description, double fallback, bool zeroAllowed)
    {
        var option = new Option<double>(name) { Description = description, DefaultValueFactory = _ => fallback };
        option.Validators.Add(r =>
        {
            if (Converted(r.GetValueOrDefault<double>, out double v) && (double.IsNaN(v) || v < 0 || (v == 0 && !zeroAllowed) || v > 31_536_000))
            {
                r.AddError($"{name}: {v} is not a {(zeroAllowed ? "non-negative" : "positive")} number of seconds");
            }
        });
        return option;
    }

    public static Option<double?> OptionalSeconds(string name, string description)
    {
        var option = new Option<double?>(name) { Description = description };
        option.Validators.Add(r =>
        {
            if (Converted(r.GetValueOrDefault<double?>, out double? value) && value is { } v && (double.IsNaN(v) || v <= 0 || v > 31_536_000))
            {
                r.AddError($"{name}: {v} is not a positive number of seconds");
            }
        });
        return option;
    }

    /// <summary>The value a validator checks. Validators run before the parser converts the
    /// text, and asking for a value that is not one (<c>--queues many</c>) throws; such a value
    /// is left to the parser, which reports it as a parse error naming the option.</summary>
    public static bool Converted<T>(Func<T> value, out T result)
    {
        try
        {
            result = value();
            return true;
        }
        catch (InvalidOperationException)
        {
            result = default!;
            return false;
        }
    }

    public static Option<bool> Flag(string name, string description) => new(name) { Description = description };

    public static Option<string?> Text(string name, string description) => new(name) { Description = description };

    /// <summary>Checks that involve several options run in the command's action, where
    /// defaults are applied: prints <paramref name="problems"/> the way parse errors are
    /// printed and says whether there were any.</summary>
    public static bool Refuse(ParseResult parse, IEnumerable<string> problems)
    {
        var error = parse.InvocationConfiguration.Error;
        bool any = false;
        foreach (string p in problems)
        {
            error.WriteLine($"pcivirtio: {p}");
            any = true;
        }

        if (any)
        {
            error.WriteLine($"(pcivirtio {parse.CommandResult.Command.Name} --help lists the options)");
        }

        return any;
    }
}
