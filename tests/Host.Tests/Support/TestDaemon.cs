using System.Net.Sockets;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using PciVirtio.Host.Daemon;

namespace PciVirtio.Host.Tests.Support;

/// <summary>Builds the daemon in process from a configuration file in a test's directory.</summary>
public static class TestDaemon
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    /// <summary>A name no other test uses (and short: its event loop thread is
    /// <c>vhost-NAME</c>, which must fit the kernel's 15-character thread names).</summary>
    public static string UniqueName() => "t" + Guid.NewGuid().ToString("N")[..7];

    /// <summary>Loads <paramref name="json"/> (it must be valid) and builds the host, logging
    /// to <paramref name="logs"/>.</summary>
    public static IHost Build(TempDir dir, string json, RecordingLoggerProvider logs)
    {
        string config = dir.Write("daemon.json", json);
        var (settings, errors, configuration) = DaemonHost.LoadSettings(config, []);
        Assert.True(settings is not null, string.Join('\n', errors));
        return DaemonHost.Build(settings, configuration, b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Debug));
    }

    /// <summary>Whether something accepts connections on the unix socket at <paramref name="path"/>.</summary>
    public static bool Answers(string path)
    {
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    /// <summary>Threads of this process whose kernel name is <paramref name="name"/>.</summary>
    public static int ThreadsNamed(string name)
    {
        int count = 0;
        foreach (string task in Directory.GetDirectories("/proc/self/task"))
        {
            try
            {
                if (File.ReadAllText(Path.Combine(task, "comm")).TrimEnd('\n') == name)
                {
                    count++;
                }
            }
            catch (IOException)
            {
                // The thread ended while we looked.
            }
        }

        return count;
    }

    /// <summary>Waits (bounded) until <paramref name="condition"/> holds.</summary>
    public static bool WaitUntil(Func<bool> condition, TimeSpan? within = null)
    {
        var deadline = DateTime.UtcNow + (within ?? TimeSpan.FromSeconds(10));
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                return false;
            }

            Thread.Sleep(10);
        }

        return true;
    }

    /// <summary>A listener some other program holds on <paramref name="path"/>.</summary>
    public static Socket Occupy(string path)
    {
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(4);
        return listener;
    }
}
