namespace PciVirtio.Integration.Tests;

/// <summary>Class fixture: tests/VfioPingPong published with NativeAOT, for the VFIO guests
/// (<see cref="VfioPingPongTests"/>).</summary>
public sealed class VfioPingPongProgram() : NativeAotProgram(["tests", "VfioPingPong", "VfioPingPong.csproj"], "vfio-pingpong", "pcivirtio-pingpong-aot-");
