namespace PciVirtio.Integration.Tests;

/// <summary>Class fixture: the <c>pcivirtio</c> program published with NativeAOT, for the link
/// guests (<see cref="LinkGuestPairTests"/>).</summary>
public sealed class PcivirtioAotProgram() : NativeAotProgram(["src", "Bridge", "pcivirtio", "pcivirtio.csproj"], "pcivirtio", "pcivirtio-link-aot-");
