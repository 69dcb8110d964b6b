namespace PciVirtio.Host.Tests.Support;

/// <summary>
/// A directory of its own for one test, short enough that socket paths under it fit a
/// unix socket address (108 bytes), removed with everything in it on dispose.
/// </summary>
public sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine("/tmp", $"pvh-{Guid.NewGuid():N}"[..16]);
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    /// <summary>A path in the directory (nothing is created).</summary>
    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>Writes <paramref name="text"/> to <paramref name="name"/> in the directory; its path.</summary>
    public string Write(string name, string text)
    {
        string path = File(name);
        System.IO.File.WriteAllText(path, text);
        return path;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }
}
