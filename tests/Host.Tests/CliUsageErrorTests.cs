using PciVirtio.Host.Cli;
using PciVirtio.Host.Tests.Support;

namespace PciVirtio.Host.Tests;

/// <summary>Command lines the program refuses: exit 2, and the message names what is wrong.</summary>
public sealed class CliUsageErrorTests
{
    private static void AssertRefused(CliResult r, params string[] named)
    {
        Assert.True(r.ExitCode == PciVirtioCli.UsageError, r.ToString());
        foreach (string n in named)
        {
            Assert.True(r.Error.Contains(n, StringComparison.Ordinal), $"the message does not name {n}:\n{r}");
        }

        Assert.Contains("--help lists the options", r.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void An_unknown_command_is_named()
    {
        AssertRefused(CommandLine.Run("frobnicate"), "frobnicate");
    }

    [Fact]
    public void An_unknown_subcommand_is_named()
    {
        AssertRefused(CommandLine.Run("sim", "fault", "--socket", "/tmp/none.sock", "melt"), "melt");
    }

    [Fact]
    public void An_unknown_option_is_named_and_the_hint_names_the_command()
    {
        var r = CommandLine.Run("serve", "--socket", "/tmp/x.sock", "--bogus-flag");
        AssertRefused(r, "--bogus-flag");
        Assert.Contains("pcivirtio serve --help", r.Error, StringComparison.Ordinal);

        var nested = CommandLine.Run("sim", "fault", "drop-doorbells", "--socket", "/tmp/x.sock", "--bogus-flag", "3");
        AssertRefused(nested, "--bogus-flag");
        Assert.Contains("pcivirtio sim fault drop-doorbells --help", nested.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void A_missing_required_option_is_named()
    {
        AssertRefused(CommandLine.Run("serve"), "--socket");
        AssertRefused(CommandLine.Run("link"), "--hw");
    }

    [Fact]
    public void A_value_that_is_not_a_number_is_named()
    {
        AssertRefused(CommandLine.Run("serve", "--socket", "/tmp/x.sock", "--queues", "many"), "many", "--queues");
    }

    [Theory]
    [InlineData("--queues", new[] { "serve", "--socket", "/tmp/x.sock", "--queues", "0" })]
    [InlineData("--queues", new[] { "serve", "--socket", "/tmp/x.sock", "--queues", "65" })]
    [InlineData("--mtu", new[] { "serve", "--socket", "/tmp/x.sock", "--mtu", "10" })]
    [InlineData("--frame-size", new[] { "serve", "--socket", "/tmp/x.sock", "--sink", "--frame-size", "59" })]
    [InlineData("--duration", new[] { "serve", "--socket", "/tmp/x.sock", "--duration", "0" })]
    [InlineData("--stats", new[] { "serve", "--socket", "/tmp/x.sock", "--stats", "-1" })]
    [InlineData("--mtu", new[] { "link", "--hw", "hw-sim:/tmp/x.sock#0", "--mtu", "10" })]
    [InlineData("--queue-size", new[] { "link", "--hw", "hw-sim:/tmp/x.sock#0", "--queue-size", "100" })]
    [InlineData("--buffer-size", new[] { "link", "--hw", "hw-sim:/tmp/x.sock#0", "--buffer-size", "300" })]
    [InlineData("--hw", new[] { "link", "--hw", "foo" })]
    [InlineData("--address", new[] { "link", "--hw", "hw-sim:/tmp/x.sock#0", "--address", "10.77.0.1" })]
    [InlineData("--tap", new[] { "link", "--hw", "hw-sim:/tmp/x.sock#0", "--tap", "a-name-far-too-long" })]
    [InlineData("--tap", new[] { "serve", "--socket", "/tmp/a.sock", "--socket", "/tmp/b.sock", "--tap", "pv0" })]
    [InlineData("--socket", new[] { "serve", "--socket", "/tmp/a.sock", "--socket", "/tmp/a.sock" })]
    [InlineData("--socket", new[] { "serve", "--socket", "/tmp/a.sock", "--socket", "/tmp/b.sock", "--socket", "/tmp/c.sock" })]
    [InlineData("--socket", new[] { "serve", "--socket", "/no/such/dir/a.sock" })]
    [InlineData("--tap", new[] { "serve", "--socket", "/tmp/a.sock", "--sink", "--tap", "pv0" })]
    [InlineData("--sink", new[] { "serve", "--socket", "/tmp/a.sock", "--sink", "--tap", "pv0" })]
    [InlineData("--source", new[] { "serve", "--socket", "/tmp/a.sock", "--sink", "--source" })]
    [InlineData("--name", new[] { "serve", "--socket", "/tmp/a.sock", "--sink", "--name", "a b" })]
    [InlineData("--seconds", new[] { "demo", "--seconds", "0" })]
    [InlineData("--queue-size", new[] { "demo", "--rings", "--queue-size", "100" })]
    [InlineData("--frames", new[] { "demo", "--rings", "--frames", "0" })]
    [InlineData("--windows", new[] { "sim", "serve", "--socket", "/tmp/x.sock", "--windows", "0" })]
    [InlineData("--window-size", new[] { "sim", "serve", "--socket", "/tmp/x.sock", "--window-size", "5000" })]
    [InlineData("N", new[] { "sim", "fault", "--socket", "/tmp/x.sock", "drop-doorbells", "-3" })]
    [InlineData("--interval", new[] { "stats", "--interval", "0" })]
    public void An_out_of_range_value_is_refused_naming_its_flag(string flag, string[] args)
    {
        AssertRefused(CommandLine.Run(args), flag);
    }

    [Fact]
    public void Every_problem_of_a_command_line_is_reported_at_once()
    {
        var r = CommandLine.Run("link", "--hw", "foo", "--queue-size", "100", "--buffer-size", "300");
        AssertRefused(r, "--hw", "--queue-size", "--buffer-size");
    }

    [Theory]
    [InlineData("'stray'", new[] { "run", "stray" })]
    [InlineData("'-x'", new[] { "run", "-x" })]
    [InlineData("'/PciVirtio:ControlSocket=/tmp/c.sock'", new[] { "run", "/PciVirtio:ControlSocket=/tmp/c.sock" })]

    // A mistyped option of run must not be taken for a setting the configuration ignores
    // (the daemon would start instead of checking).
    [InlineData("'--chek'", new[] { "run", "--config", "/nonexistent/pv.json", "--chek" })]
    [InlineData("'--confg'", new[] { "run", "--confg", "/nonexistent/pv.json", "--check" })]
    [InlineData("'--:Queues=2'", new[] { "run", "--:Queues=2", "--check" })]
    [InlineData("'--PciVirtio:ControlSocket' has no value", new[] { "run", "--check", "--PciVirtio:ControlSocket" })]
    public void A_run_argument_that_is_neither_an_option_nor_a_setting_is_refused(string named, string[] args)
    {
        var r = CommandLine.Run(args);
        Assert.True(r.ExitCode == PciVirtioCli.UsageError, r.ToString());
        Assert.Contains(named, r.All, StringComparison.Ordinal);
    }
}
