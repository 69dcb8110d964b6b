namespace PciVirtio.Host.Tests.Support;

/// <summary>
/// Tests that set environment variables, or read the configuration (which takes every
/// environment variable): they run one after another and apart from every other
/// collection, so a variable one sets is never seen by another.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class EnvironmentCollection
{
    public const string Name = "environment";
}

/// <summary>Sets environment variables for the life of the object and restores what was
/// there before (including "not set").</summary>
public sealed class EnvironmentVariables : IDisposable
{
    private readonly Dictionary<string, string?> _saved = [];

    public EnvironmentVariables Set(string name, string? value)
    {
        _saved.TryAdd(name, Environment.GetEnvironmentVariable(name));
        Environment.SetEnvironmentVariable(name, value);
        return this;
    }

    public void Dispose()
    {
        foreach (var (name, value) in _saved)
        {
            Environment.SetEnvironmentVariable(name, value);
        }
    }
}
