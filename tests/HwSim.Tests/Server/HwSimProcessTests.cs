using System.Diagnostics;
using System.Text.Json;
using PciVirtio.HwSim.Client;
using PciVirtio.HwSim.Device;
using PciVirtio.HwSim.Ivshmem;
using PciVirtio.Mmio.Memory;

namespace PciVirtio.HwSim.Tests.Server;

/// <summary>hw-sim as its own process, two peer processes as the two hosts.</summary>
public sealed class HwSimProcessTests : IDisposable
{
    private static readonly string HwSimDll = Path.Combine(AppContext.BaseDirectory, "pcivirtio-hwsim.dll");
    private readonly string _dir = Directory.CreateTempSubdirectory("hwsim-proc-").FullName;
    private readonly List<Process> _processes = [];

    public void Dispose()
    {
        foreach (Process p in _processes)
        {
            try
            {
                if (!p.HasExited)
                {
                    p.Kill();
                    p.WaitForExit(5000);
                }
            }
            catch (InvalidOperationException)
            {
            }

            p.Dispose();
        }

        Directory.Delete(_dir, recursive: true);
    }

    private Process Start(params string[] args) => StartIn(null, args);

    /// <summary>Starts hw-sim, in a new network namespace (unshare --net) when <paramref name="wrapper"/> is "netns".</summary>
    private Process StartIn(string? wrapper, params string[] args)
    {
        var info = new ProcessStartInfo(wrapper is null ? "dotnet" : "unshare") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (wrapper is not null)
        {
            info.ArgumentList.Add("--net");
            info.ArgumentList.Add("dotnet");
        }

        info.ArgumentList.Add(HwSimDll);
        foreach (string a in args)
        {
            info.ArgumentList.Add(a);
        }

        Process p = Process.Start(info) ?? throw new InvalidOperationException("dotnet did not start");
        _processes.Add(p);
        return p;
    }

    private (int Code, string Out, string Err) Run(TimeSpan timeout, params string[] args) => RunIn(null, timeout, args);

    private (int Code, string Out, string Err) RunIn(string? wrapper, TimeSpan timeout, params string[] args)
    {
        Process p = StartIn(wrapper, args);
        Task<string> stdout = p.StandardOutput.ReadToEndAsync();
        Task<string> stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(timeout), $"'{string.Join(' ', args)}' did not finish in {timeout}");
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    private async Task<string> Serve(params string[] extra)
    {
        string socket = Path.Combine(_dir, "ntb.sock");
        Process server = Start(["serve", "--socket", socket, "--duration", "120", .. extra]);
        string? line = await server.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.StartsWith("hw-sim: serving on", line);
        Assert.True(File.Exists(socket), "the server did not create its socket");
        return socket;
    }

    [Theory]
    [InlineData(null)]
    [InlineData("netns")]
    public async Task Two_peer_processes_exchange_data_through_the_windows_with_doorbells(string? wrapper)
    {
        string socket = await Serve("--windows", "1", "--window-size", "65536");
        Process receiver = StartIn(wrapper, "peer", "--socket", socket, "--port", "1", "--bytes", "2000000", "--chunk", "7000", "--seed", "42", "--timeout", "60");
        Task<string> receiverOut = receiver.StandardOutput.ReadToEndAsync();
        Task<string> receiverErr = receiver.StandardError.ReadToEndAsync();
        var sender = RunIn(wrapper, TimeSpan.FromSeconds(90), "peer", "--socket", socket, "--port", "0", "--bytes", "2000000", "--chunk", "7000", "--seed", "42", "--timeout", "60");
        Assert.True(receiver.WaitForExit(TimeSpan.FromSeconds(30)));
        receiver.WaitForExit();
        Assert.True(sender.Code == 0, sender.Err);
        Assert.True(receiver.ExitCode == 0, await receiverErr.WaitAsync(TimeSpan.FromSeconds(10)));
        string[] sent = sender.Out.Trim().Split(", ");
        string[] received = (await receiverOut.WaitAsync(TimeSpan.FromSeconds(10))).Trim().Split(", ");
        Assert.Equal("peer 0: ok 2000000 bytes in 286 chunks", sent[0]);
        Assert.Equal("peer 1: ok 2000000 bytes in 286 chunks", received[0]);
        Assert.StartsWith("checksum ", sent[1]);
        Assert.Equal(sent[1], received[1]);
        string ownNetns = new FileInfo("/proc/self/ns/net").LinkTarget!;
        if (wrapper == "netns")
        {
            // Two hosts: each end in its own network namespace, neither in ours.
            Assert.NotEqual(sent[2], received[2]);
            Assert.NotEqual($"netns {ownNetns}", sent[2]);
            Assert.NotEqual($"netns {ownNetns}", received[2]);
        }
        else
        {
            Assert.Equal($"netns {ownNetns}", sent[2]);
        }

        var stats = Run(TimeSpan.FromSeconds(30), "stats", "--socket", socket, "--json");
        Assert.True(stats.Code == 0, stats.Err);
        using JsonDocument doc = JsonDocument.Parse(stats.Out);
        JsonElement port0 = doc.RootElement.GetProperty("port0");
        JsonElement port1 = doc.RootElement.GetProperty("port1");
        Assert.True(doc.RootElement.GetProperty("link_up").GetBoolean());
        Assert.Equal(2_000_000, port0.GetProperty("RemoteWrittenBytes").GetInt64());
        Assert.Equal(286, port0.GetProperty("DoorbellsSent").GetInt64());
        Assert.Equal(286, port1.GetProperty("InterruptsRaised").GetInt64());
        Assert.Equal(0, port0.GetProperty("RemoteReads").GetInt64());
    }

    [Fact]
    public async Task The_fault_command_takes_the_link_down_and_up()
    {
        string socket = await Serve();
        var down = Run(TimeSpan.FromSeconds(30), "fault", "--socket", socket, "link-down");
        Assert.True(down.Code == 0, down.Err);
        var stats = Run(TimeSpan.FromSeconds(30), "stats", "--socket", socket);
        Assert.Contains("link down", stats.Out);
        Assert.Contains("link changes 1", stats.Out);

        Assert.Equal(0, Run(TimeSpan.FromSeconds(30), "fault", "--socket", socket, "link-up").Code);
        Assert.Equal(0, Run(TimeSpan.FromSeconds(30), "fault", "--socket", socket, "drop-doorbells", "3").Code);
        stats = Run(TimeSpan.FromSeconds(30), "stats", "--socket", socket);
        Assert.Contains("link up", stats.Out);
        Assert.Contains("link changes 2", stats.Out);

        var bad = Run(TimeSpan.FromSeconds(30), "fault", "--socket", socket, "melt");
        Assert.NotEqual(0, bad.Code);
    }

    [Fact]
    public async Task Faults_from_the_command_reach_ports_opened_by_other_processes()
    {
        string socket = await Serve("--windows", "1", "--window-size", "65536");
        using SimNtbPort a = HwSimClient.OpenPort(socket, 0, TimeSpan.FromSeconds(10));
        using SimNtbPort b = HwSimClient.OpenPort(socket, 1, TimeSpan.FromSeconds(10));
        b.SetTranslation(0, 0, 4096);
        using MemoryMapping window = a.MapPeerWindow(0);
        SimWindowAccessor acc = a.PeerWindowAccessor;
        acc.StoreU32(window.Address, 7);

        string Fault(params string[] args)
        {
            var r = Run(TimeSpan.FromSeconds(30), ["fault", "--socket", socket, .. args]);
            Assert.True(r.Code == 0, r.Err);
            return r.Out;
        }

        Fault("link-down");
        Assert.True(UnixSocket.WaitReadable(a.LinkEvent.Handle, 5000));
        Assert.True(UnixSocket.WaitReadable(b.LinkEvent.Handle, 5000));
        Assert.False(a.LinkIsUp);
        Assert.Equal(uint.MaxValue, acc.LoadU32(window.Address));
        acc.StoreU32(window.Address, 8);
        Assert.Equal(7u, new IoMemoryAccessor(null).LoadU32(b.LocalMemory.Address));
        Fault("link-up");
        Assert.True(a.LinkIsUp);
        Assert.Equal(7u, acc.LoadU32(window.Address));

        Fault("read-delay", "1500");
        Assert.Equal(1500UL, a.Registers.Read64(NtbRegisters.FaultReadDelayNs));
        Fault("shrink-window", "8192");
        Assert.Equal(8192UL, b.SetTranslation(0, 0, 65536));
        Fault("drop-doorbells", "1");
        a.PeerDoorbellSet(1);
        Assert.Equal(0UL, b.DoorbellRead());
        Fault("delay-doorbells", "100");
        a.PeerDoorbellSet(1);
        Assert.True(UnixSocket.WaitReadable(b.DoorbellEvent(0).Handle, 10_000));
        Assert.Equal(1UL, b.DoorbellRead());

        PortCounters counters = a.Counters;
        Assert.Equal(1, counters.DoorbellsDropped);
        Assert.Equal(1, counters.DoorbellsSent);
        Assert.Equal(1, counters.FailedReads);
        Assert.Equal(1, counters.DroppedWrites);
        Assert.Equal(2, counters.LinkChanges);
    }
}
