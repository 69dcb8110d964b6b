using PciVirtio.HwSim.Device;
using PciVirtio.HwSim.Ivshmem;
using PciVirtio.HwSim.Server;
using PciVirtio.Mmio.Interop;

namespace PciVirtio.HwSim.Client;

/// <summary>Connects to an hw-sim server (<see cref="HwSimServer"/>) and receives the device's
/// descriptors: a host process opens its port, the fault and stats commands take control.</summary>
public static class HwSimClient
{
    /// <summary>Opens port <paramref name="port"/> of the device served at <paramref name="socketPath"/>;
    /// the returned port owns the received descriptors.</summary>
    public static SimNtbPort OpenPort(string socketPath, int port, TimeSpan timeout)
    {
        if (port is not (0 or 1))
        {
            throw new ArgumentOutOfRangeException(nameof(port), port, "an NTB has ports 0 and 1");
        }

        HwSimDevice device = Request(socketPath, port, timeout);
        try
        {
            return device.OpenPort(port, ownsDevice: true);
        }
        catch
        {
            device.Dispose();
            throw;
        }
    }

    /// <summary>The whole device, for fault injection and counters.</summary>
    public static HwSimDevice Control(string socketPath, TimeSpan timeout) => Request(socketPath, HwSimServer.Control, timeout);

    private static HwSimDevice Request(string socketPath, long request, TimeSpan timeout)
    {
        int timeoutMs = (int)Math.Clamp(timeout.TotalMilliseconds, 1, int.MaxValue);
        using FileDescriptor socket = UnixSocket.Connect(socketPath);
        if (UnixSocket.TrySend(socket, request, null) != UnixSocket.SendResult.Sent)
        {
            throw new IOException($"{socketPath}: the server went away");
        }

        var fds = new List<FileDescriptor>();
        try
        {
            long magic = Next(socket, timeoutMs, socketPath, out _);
            if (magic != HwSimServer.Magic)
            {
                throw new InvalidDataException($"{socketPath}: not an hw-sim server (reply 0x{magic:x})");
            }

            long count = Next(socket, timeoutMs, socketPath, out _);
            if (count != HwSimDevice.DescriptorCount)
            {
                throw new InvalidDataException($"{socketPath}: {count} descriptors announced, {HwSimDevice.DescriptorCount} expected");
            }

            for (int i = 0; i < count; i++)
            {
                long index = Next(socket, timeoutMs, socketPath, out FileDescriptor? fd);
                if (fd is null || index != i)
                {
                    fd?.Dispose();
                    throw new InvalidDataException($"{socketPath}: descriptor {i} missing");
                }

                fds.Add(fd);
            }

            return HwSimDevice.Attach(fds);
        }
        catch
        {
            foreach (FileDescriptor fd in fds)
            {
                fd.Dispose();
            }

            throw;
        }
    }

    private static long Next(FileDescriptor socket, int timeoutMs, string path, out FileDescriptor? fd)
    {
        if (!UnixSocket.WaitReadable(socket, timeoutMs))
        {
            throw new TimeoutException($"{path}: no reply within {timeoutMs} ms");
        }

        if (!UnixSocket.Receive(socket, out long value, out fd))
        {
            throw new IOException($"{path}: the server closed the connection");
        }

        return value;
    }
}
