using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace PciVirtio.Host.Control;

/// <summary>Asks a running daemon's control socket for its status.</summary>
public static class ControlClient
{
    /// <summary>The raw answer (one line of JSON) to <paramref name="request"/>.</summary>
    /// <exception cref="IOException">No daemon answers on <paramref name="path"/>; the message says why.</exception>
    public static string Ask(string path, string request, TimeSpan timeout)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.ReceiveTimeout = socket.SendTimeout = (int)timeout.TotalMilliseconds;
        try
        {
            socket.Connect(new UnixDomainSocketEndPoint(path));
            socket.Send(Encoding.UTF8.GetBytes(request + "\n"));
            socket.Shutdown(SocketShutdown.Send);
            using var answer = new MemoryStream();
            var buffer = new byte[64 * 1024];
            int n;
            while ((n = socket.Receive(buffer)) > 0)
            {
                answer.Write(buffer, 0, n);
            }

            return Encoding.UTF8.GetString(answer.GetBuffer(), 0, (int)answer.Length).TrimEnd('\n');
        }
        catch (SocketException e)
        {
            string why = e.SocketErrorCode switch
            {
                SocketError.AddressNotAvailable or SocketError.ConnectionRefused => "no daemon listens there (is 'pcivirtio run' running, with this control socket?)",
                SocketError.AccessDenied => "permission denied (the socket is for its owner and group; try sudo)",
                SocketError.TimedOut => "the daemon did not answer in time",
                _ => e.Message,
            };
            throw new IOException($"control socket {path}: {why}", e);
        }
    }

    /// <summary>The daemon's status.</summary>
    /// <exception cref="IOException">No answer, or one that is not a status.</exception>
    public static DaemonStatus Status(string path, TimeSpan timeout)
    {
        string answer = Ask(path, "stats", timeout);
        try
        {
            return JsonSerializer.Deserialize(answer, ControlJsonContext.Default.DaemonStatus)
                ?? throw new IOException($"control socket {path}: an empty answer");
        }
        catch (JsonException e)
        {
            throw new IOException($"control socket {path}: the answer is not a status: {e.Message}", e);
        }
    }
}
