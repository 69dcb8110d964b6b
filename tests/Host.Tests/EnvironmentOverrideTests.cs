using PciVirtio.Host.Daemon;
using PciVirtio.Host.Tests.Support;

namespace PciVirtio.Host.Tests;

/// <summary>Environment variables (<c>PciVirtio__Key</c>, no prefix) override the file; the
/// command line overrides both.</summary>
[Collection(EnvironmentCollection.Name)]
public sealed class EnvironmentOverrideTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Config() => _dir.Write("config.json", $$"""
        { "PciVirtio": { "ControlSocket": "{{_dir.File("file.sock")}}", "Backends": [ { "Name": "vm0", "Socket": "{{_dir.File("a.sock")}}", "Queues": 1 } ] } }
        """);

    [Fact]
    public void An_environment_variable_wins_over_the_file()
    {
        string config = Config();
        using (new EnvironmentVariables()
            .Set("PciVirtio__ControlSocket", _dir.File("env.sock"))
            .Set("PciVirtio__Backends__0__Queues", "3"))
        {
            var r = CommandLine.Run("run", "--config", config, "--check");
            Assert.True(r.ExitCode == 0, r.ToString());
            Assert.Contains($"control socket {_dir.File("env.sock")}", r.Output, StringComparison.Ordinal);
            Assert.Contains("3 queue pair(s)", r.Output, StringComparison.Ordinal);

            var (settings, errors, _) = DaemonHost.LoadSettings(config, []);
            Assert.Empty(errors);
            Assert.Equal(_dir.File("env.sock"), settings!.ControlSocket);
            Assert.Equal(3, settings.Backends[0].Queues);
        }

        // Restored: the file's value again.
        Assert.Null(Environment.GetEnvironmentVariable("PciVirtio__ControlSocket"));
        var after = CommandLine.Run("run", "--config", config, "--check");
        Assert.Contains($"control socket {_dir.File("file.sock")}", after.Output, StringComparison.Ordinal);
        Assert.Contains("1 queue pair(s)", after.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void The_command_line_wins_over_the_environment()
    {
        string config = Config();
        using var env = new EnvironmentVariables().Set("PciVirtio__ControlSocket", _dir.File("env.sock"));
        var r = CommandLine.Run("run", "--config", config, "--check", $"--PciVirtio:ControlSocket={_dir.File("cli.sock")}");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains($"control socket {_dir.File("cli.sock")}", r.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void A_bad_value_from_the_environment_is_named_with_its_key()
    {
        string config = Config();
        using var env = new EnvironmentVariables().Set("PciVirtio__Backends__0__Queues", "99");
        var r = CommandLine.Run("run", "--config", config, "--check");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("PciVirtio:Backends:0:Queues: 99 is not in 1..64", r.All, StringComparison.Ordinal);
    }

    [Fact]
    public void A_misspelt_environment_variable_is_named()
    {
        string config = Config();
        using var env = new EnvironmentVariables().Set("PciVirtio__Backends__0__Queus", "2");
        var r = CommandLine.Run("run", "--config", config, "--check");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("PciVirtio:Backends:0:Queus", r.All, StringComparison.Ordinal);
    }
}
