using PciVirtio.Host.Cli;

// The pcivirtio program: run (the daemon), serve, link, sim, stats and demo (the default).
return PciVirtioCli.Invoke(args, Console.Out, Console.Error);
