using PciVirtio.Host.Demo;
using PciVirtio.Host.LinkEnd;
using PciVirtio.Host.Serve;

// The pcivirtio program: the link demo (the README's main job), the vhost-user
// backend, the NTB link and the daemon arrive as commands of their own.
const string Usage = """
    usage: pcivirtio [demo|serve|link] [options]

    commands:
      demo      two hosts linked by an emulated NTB (hw-sim), live throughput (default)
      serve     vhost-user virtio-net backends for VMs and DPDK virtio-user
      link      one end of a host-to-host link over an NTB, as a TAP

    serve options:
      --socket PATH      vhost-user socket; one: bridged to a TAP, two: joined to each other
      --client           connect to the frontend's socket (and reconnect) instead of listening
      --queues N         queue pairs, 1..64 (default 1; a multiqueue TAP when N > 1)
      --tap NAME         TAP interface to create or attach to (default: the kernel names one)
      --mtu N            MTU of the TAP and in the device's config space
      --no-mrg           do not offer mergeable receive buffers
      --poll             busy-poll the rings (one core spins) instead of waiting for kicks
      --sink             no TAP: discard what the guest sends (for measurements)
      --source           no TAP: also fill the guest's receive queue with frames
      --frame-size B     frame size of --source (default 64)
      --duration S       stop after S seconds (default: on SIGINT/SIGTERM)
      --stats S          print counters every S seconds (default 1, 0: never)
      --verbose          debug logging

    demo options:
      --seconds N        how long traffic runs (default 5)
      --packets          use the in-process packet API even as root (no TAPs, no namespaces)
      --rings            the ring demo instead: both hosts' rings in one process, no hw-sim;
                         it takes these options:
      --frames N         frames to send (default 5000000)
      --size B           frame size in bytes, 16..65536 (default 1024)
      --queue-size Q     ring size, a power of two (default 256)
      --burst N          frames per batch (default 32)
      --no-event-idx     use flag-based notification suppression instead of EVENT_IDX
      --timeout S        give up after S seconds (default 60)
    """;

var rest = args.AsSpan();
if (rest.Length > 0 && rest[0] is "-h" or "--help" or "help")
{
    Console.WriteLine(Usage);
    Console.WriteLine(LinkCommand.Usage);
    return 0;
}

if (rest.Length > 0 && rest[0] == "link")
{
    return LinkCommand.Run(rest[1..], Console.Out);
}

if (rest.Length > 0 && rest[0] == "serve")
{
    if (!ServeOptions.TryParse(rest[1..], out var serve, out string? serveError))
    {
        Console.Error.WriteLine(serveError);
        Console.Error.WriteLine(Usage);
        return 2;
    }

    return ServeCommand.Run(serve, Console.Out);
}

if (rest.Length > 0 && rest[0] == "demo")
{
    rest = rest[1..];
}
else if (rest.Length > 0 && !rest[0].StartsWith("--", StringComparison.Ordinal))
{
    Console.Error.WriteLine($"unknown command '{rest[0]}'");
    Console.Error.WriteLine(Usage);
    return 2;
}

// The ring demo (both hosts' rings in one process, no hw-sim) stays behind --rings.
if (rest.Length > 0 && rest[0] == "--rings")
{
    if (!DemoOptions.TryParse(rest[1..], out var options, out string? error))
    {
        Console.Error.WriteLine(error);
        Console.Error.WriteLine(Usage);
        return 2;
    }

    return new RingDemo(options, Console.Out).Run();
}

var seconds = TimeSpan.FromSeconds(5);
bool packets = false;
for (int i = 0; i < rest.Length; i++)
{
    if (rest[i] == "--packets")
    {
        packets = true;
    }
    else if (rest[i] == "--seconds" && i + 1 < rest.Length && int.TryParse(rest[i + 1], System.Globalization.CultureInfo.InvariantCulture, out int s) && s is > 0 and <= 3600)
    {
        seconds = TimeSpan.FromSeconds(s);
        i++;
    }
    else
    {
        Console.Error.WriteLine($"unknown demo option '{rest[i]}'");
        Console.Error.WriteLine(Usage);
        return 2;
    }
}

return new LinkDemo(Console.Out, seconds, packets).Run();
