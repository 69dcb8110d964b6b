using PciVirtio.Host.Tests.Support;

namespace PciVirtio.Host.Tests;

/// <summary><c>--help</c> works on every level of the command line and lists what is there.</summary>
public sealed class CliHelpTests
{
    public static TheoryData<string, string[]> Levels => new()
    {
        { "", ["run", "serve", "link", "sim", "stats", "demo", "--help", "--version"] },
        { "run", ["--config", "--check"] },
        {
            "serve",
            ["--socket", "--name", "--client", "--queues", "--tap", "--mtu", "--no-mrg", "--poll", "--sink", "--source", "--frame-size", "--duration", "--stats", "--verbose"]
        },
        {
            "link",
            ["--hw", "--name", "--tap", "--mtu", "--address", "--queues", "--queue-size", "--buffer-size", "--duration", "--stats", "--poll", "--linger", "--verbose"]
        },
        { "sim", ["serve", "fault", "stats"] },
        { "sim serve", ["--socket", "--windows", "--window-size", "--ivshmem-socket", "--ivshmem-vectors", "--ivshmem-max-peers", "--duration"] },
        { "sim fault", ["--socket", "link-down", "link-up", "drop-doorbells", "delay-doorbells", "read-delay", "shrink-window"] },
        { "sim fault drop-doorbells", ["--socket", "<N>"] },
        { "sim stats", ["--socket", "--json"] },
        { "stats", ["--control", "--json", "--interval", "--count"] },
        { "demo", ["--seconds", "--packets", "--rings", "--frames", "--size", "--queue-size", "--burst", "--no-event-idx", "--timeout"] },
    };

    [Theory]
    [MemberData(nameof(Levels))]
    public void Help_exits_0_and_lists_every_option(string command, string[] expected)
    {
        string[] args = [.. command.Split(' ', StringSplitOptions.RemoveEmptyEntries), "--help"];
        var r = CommandLine.Run(args);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("Usage:", r.Output, StringComparison.Ordinal);
        foreach (string name in expected)
        {
            Assert.True(r.Output.Contains(name, StringComparison.Ordinal), $"help of '{command}' does not list {name}:\n{r}");
        }

        Assert.Equal("", r.Error);
    }

    [Fact]
    public void Help_of_the_daemon_says_how_settings_are_given()
    {
        var r = CommandLine.Run("run", "--help");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("--PciVirtio:Key=value", r.Output, StringComparison.Ordinal);
        Assert.Contains("PciVirtio__Key", r.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void Help_of_the_daemon_calls_what_follows_its_options_settings_not_arguments_of_a_program()
    {
        var r = CommandLine.Run("run", "--help");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.DoesNotContain("Additional Arguments", r.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("application that is being run", r.Output, StringComparison.Ordinal);
        Assert.Contains(" run [options] [--Section:Key=value ...]", r.Output, StringComparison.Ordinal);
        Assert.Contains("Settings:", r.Output, StringComparison.Ordinal);
        Assert.Contains("--check", r.Output, StringComparison.Ordinal);
        Assert.Equal("", r.Error);
    }

    [Fact]
    public void Help_of_other_commands_is_the_library_s_own()
    {
        var r = CommandLine.Run("serve", "--help");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.DoesNotContain("Settings:", r.Output, StringComparison.Ordinal);
        Assert.Contains(" serve [options]", r.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void Short_and_question_mark_help_work_too()
    {
        foreach (string flag in new[] { "-h", "-?" })
        {
            var r = CommandLine.Run("serve", flag);
            Assert.True(r.ExitCode == 0, r.ToString());
            Assert.Contains("--socket", r.Output, StringComparison.Ordinal);
        }
    }
}
