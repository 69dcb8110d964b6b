using PciVirtio.Host.Demo;

// The pcivirtio program. Today it runs the ring demo (the README's main job); the vhost-user
// backend, the NTB link and the daemon arrive as commands of their own.
const string Usage = """
    usage: pcivirtio [demo] [options]

    commands:
      demo      push frames between two in-process hosts through split virtqueues (default)

    demo options:
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
    return 0;
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

if (!DemoOptions.TryParse(rest, out var options, out string? error))
{
    Console.Error.WriteLine(error);
    Console.Error.WriteLine(Usage);
    return 2;
}

return new RingDemo(options, Console.Out).Run();
