namespace PciVirtio.VhostCore.Ring;

/// <summary>Device-independent feature bits (virtio 1.x section 6) that the ring engine
/// acts on. Device-specific bits live with their device.</summary>
[Flags]
public enum VirtioFeatures : ulong
{
    None = 0,
    NotifyOnEmpty = 1UL << 24,
    AnyLayout = 1UL << 27,
    RingIndirectDesc = 1UL << 28,
    RingEventIdx = 1UL << 29,
    Version1 = 1UL << 32,
    AccessPlatform = 1UL << 33,
    RingPacked = 1UL << 34,
    InOrder = 1UL << 35,
}
