// pcivirtio-hwsim: the emulated NTB as a process of its own.
return PciVirtio.HwSim.HwSimCommandLine.Run(args);
