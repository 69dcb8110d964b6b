using System.Diagnostics;

namespace PciVirtio.Host;

/// <summary>Gives an interface an address through iproute2 (<c>ip addr add</c>): the one tool
/// every host that runs TAPs has, and the one operators check the result with.</summary>
public static class InterfaceAddress
{
    /// <summary>Adds <paramref name="cidr"/> to <paramref name="device"/>; null on success,
    /// else what failed.</summary>
    public static string? Assign(string device, string cidr)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { "addr", "add", cidr, "dev", device })
        {
            psi.ArgumentList.Add(a);
        }

        Process? ip;
        try
        {
            ip = Process.Start(psi);
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return $"could not run ip (iproute2) to assign {cidr}: {e.Message}";
        }

        if (ip is null)
        {
            return $"could not run ip (iproute2) to assign {cidr}";
        }

        using (ip)
        {
            string error = ip.StandardError.ReadToEnd();
            ip.WaitForExit();
            return ip.ExitCode == 0 ? null : $"ip addr add {cidr} dev {device} failed: {error.Trim()}";
        }
    }
}
