using System.Diagnostics;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using PciVirtio.Bridge.Link;
using PciVirtio.Host.LinkEnd;
using PciVirtio.Host.Serve;
using PciVirtio.VhostCore.Logging;

namespace PciVirtio.Host.Daemon;

/// <summary>
/// Starts every backend and link of the configuration when the daemon starts, and stops
/// them all when it stops. Start is all or nothing: if one cannot start (its TAP is taken,
/// its hardware absent), the ones already up are stopped again and the daemon exits with
/// the reason, rather than run half of what the operator asked for.
/// </summary>
public sealed partial class DevicesService : IHostedService
{
    private readonly DaemonSettings _settings;
    private readonly RunningDevices _devices;
    private readonly ILoggerFactory _loggers;
    private readonly ILogger<DevicesService> _logger;

    public DevicesService(DaemonSettings settings, RunningDevices devices, ILoggerFactory loggers)
    {
        _settings = settings;
        _devices = devices;
        _loggers = loggers;
        _logger = loggers.CreateLogger<DevicesService>();
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        try
        {
            for (int i = 0; i < _settings.Backends.Count; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                StartBackend(_settings.Backends[i], i);
            }

            for (int i = 0; i < _settings.Links.Count; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                StartLink(_settings.Links[i], i);
            }
        }
        catch
        {
            StopAll();
            throw;
        }

        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        StopAll();
        return Task.CompletedTask;
    }

    private void StartBackend(VhostBackendSettings b, int index)
    {
        string name = SettingsValidator.BackendName(b, index);
        var options = new ServeOptions
        {
            Name = name,
            Sockets = [.. b.AllSockets],
            Client = b.Client,
            QueuePairs = b.Queues,
            Tap = b.Tap,
            Mtu = b.Mtu,
            Mergeable = b.Mergeable,
            Poll = b.Poll,
            StatsInterval = null,
        };
        VhostNetServer server;
        try
        {
            server = VhostNetServer.Start(options, _loggers);
        }
        catch (Exception e) when (e is Mmio.Interop.NativeCallException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            throw new DaemonStartException($"backend {name} ({string.Join(", ", options.Sockets)}): {e.Message}{PrivilegeHint(e)}", e);
        }

        _devices.Add(new RunningBackend(name, server, options.Sockets));
        string attachment = server.Tap is { } tap ? $"bridged to TAP {tap.Name}" : "joined port to port";
        string sockets = string.Join(", ", options.Sockets);
        var scoped = _logger.WithScope("Device", name)!;
        Log.BackendStarted(scoped, name, sockets, b.Client ? "client" : "server", b.Queues, attachment);
    }

    private void StartLink(LinkEndSettings l, int index)
    {
        string name = SettingsValidator.LinkName(l, index);
        TapLinkEnd end;
        try
        {
            end = LinkEndStart.Start(l, name, _loggers);
        }
        catch (Exception e) when (LinkEndStart.IsStartFailure(e))
        {
            throw new DaemonStartException($"link {name} ({l.Hardware}): {e.Message}{PrivilegeHint(e)}", e);
        }

        _devices.Add(new RunningLink(name, end));
        if (l.Address is { } address && InterfaceAddress.Assign(end.Tap.Name, address) is { } failed)
        {
            throw new DaemonStartException($"link {name}: {failed}");
        }

        var scoped = _logger.WithScope("Link", name)!;
        Log.LinkStarted(scoped, name, end.Hardware.Name, end.Tap.Name, l.Mtu, l.Address ?? "none");
    }

    /// <summary>What an EPERM or EACCES most likely means here, in the operator's terms.</summary>
    private static string PrivilegeHint(Exception e) => e is Mmio.Interop.NativeCallException n
        ? n.Errno switch
        {
            Mmio.Interop.Errno.EPERM when n.Message.Contains("TUN", StringComparison.Ordinal) || n.Message.Contains("SIOCSIF", StringComparison.Ordinal) =>
                "; creating a TAP, setting it up or changing its MTU needs CAP_NET_ADMIN (or a persistent TAP the daemon's user owns, already up with that MTU): see docs/operations.md, Privileges",
            Mmio.Interop.Errno.EPERM or Mmio.Interop.Errno.EACCES when n.Message.Contains("vfio", StringComparison.OrdinalIgnoreCase) =>
                "; VFIO needs read/write access to /dev/vfio/vfio and the device's group: see docs/operations.md, Privileges",
            _ => "",
        }
        : "";

    private void StopAll()
    {
        var (backends, links) = _devices.Clear();
        // Links first: they take nothing from the VMs, and a link's peer notices a stopped
        // end by its heartbeat anyway.
        foreach (var l in links.Reverse())
        {
            var watch = Stopwatch.StartNew();
            l.End.Dispose();
            var scoped = _logger.WithScope("Link", l.Name)!;
            Log.LinkStopped(scoped, l.Name, watch.ElapsedMilliseconds);
        }

        foreach (var b in backends.Reverse())
        {
            // Disposing ends each connection as GET_VRING_BASE would: the rings are stopped
            // with their indices saved, mappings and fds released, sockets unlinked, the TAP
            // closed (and removed, unless persistent).
            var watch = Stopwatch.StartNew();
            b.Server.Dispose();
            var scoped = _logger.WithScope("Device", b.Name)!;
            Log.BackendStopped(scoped, b.Name, watch.ElapsedMilliseconds);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Information, Message = "backend {Name}: serving {Sockets} ({Mode} mode, {Queues} queue pair(s), {Attachment})")]
        public static partial void BackendStarted(ILogger logger, string name, string sockets, string mode, int queues, string attachment);

        [LoggerMessage(Level = LogLevel.Information, Message = "link {Name}: on {Hardware} as TAP {Tap} (MTU {Mtu}, address {Address})")]
        public static partial void LinkStarted(ILogger logger, string name, string hardware, string tap, int mtu, string address);

        [LoggerMessage(Level = LogLevel.Information, Message = "backend {Name}: stopped in {Milliseconds} ms")]
        public static partial void BackendStopped(ILogger logger, string name, long milliseconds);

        [LoggerMessage(Level = LogLevel.Information, Message = "link {Name}: stopped in {Milliseconds} ms")]
        public static partial void LinkStopped(ILogger logger, string name, long milliseconds);
    }
}

/// <summary>A device of the configuration could not start; the message says which and why.</summary>
public sealed class DaemonStartException : Exception
{
    public DaemonStartException(string message)
        : base(message)
    {
    }

    public DaemonStartException(string message, Exception inner)
        : base(message, inner)
    {
    }

    public DaemonStartException()
    {
    }
}
