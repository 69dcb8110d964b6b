using System.Diagnostics.CodeAnalysis;
using PciVirtio.Mmio.Signals;

namespace PciVirtio.Bridge.Hardware;

/// <summary>
/// One end of a host-to-host PCIe link as the link protocol sees it: the concepts every
/// non-transparent bridge offers (Linux <c>include/linux/ntb.h</c>) reduced to what a
/// two-port link with one window each way needs. Link state with a change notification;
/// scratchpads (the peer writes ours, we read them locally); doorbells (we ring the peer's,
/// the peer rings ours, one notification per bit, with pending bits, clear and mask); an
/// inbound window (our memory the peer writes into) and an outbound window (the peer's
/// memory we write into).
/// </summary>
/// <remarks>
/// <para>The cost model is the NTB's: anything addressed to the peer — a scratchpad write, a
/// doorbell, a store into the peer window — is a posted write; a load from the peer window
/// is a non-posted round trip and is counted (<see cref="RemoteAccesses"/>), so the link
/// can prove it never reads across. Everything we read (scratchpads, pending doorbells,
/// the local window) is local.</para>
/// <para>Threading: ringing doorbells, scratchpad and window accesses may come from any
/// thread; link refreshes, doorbell clear and mask are meant for one thread (the event loop)
/// but are safe from several. Nothing here allocates on the data path (ring, window
/// accesses).</para>
/// </remarks>
public interface INtbHardware : IDisposable
{
    /// <summary>What this end is, for messages ("hw-sim /run/ntb.sock port 1", "ivshmem 0000:00:04.0").</summary>
    string Name { get; }

    /// <summary>The link state as last determined: read from the hardware, or by the last
    /// <see cref="RefreshLinkState"/> (and, on hardware without a link register, a
    /// background check). Cheap; no bus access beyond a local register.</summary>
    bool IsLinkUp { get; }

    /// <summary>Signalled on link changes (the link event of <c>ntb_ctx_ops</c>). The event
    /// loop watches it, consumes it, then calls <see cref="RefreshLinkState"/>; a wake-up
    /// with no change is possible and harmless.</summary>
    INotificationSource LinkEvent { get; }

    /// <summary>Re-reads the link state now (<c>ntb_link_is_up</c>), updates
    /// <see cref="IsLinkUp"/> and returns it.</summary>
    bool RefreshLinkState();

    /// <summary>Scratchpads each way (<c>ntb_spad_count</c>).</summary>
    int ScratchpadCount { get; }

    /// <summary>Our scratchpad <paramref name="index"/>, which the peer writes
    /// (<c>ntb_spad_read</c>): a local read.</summary>
    uint ReadScratchpad(int index);

    /// <summary>Writes the peer's scratchpad <paramref name="index"/>
    /// (<c>ntb_peer_spad_write</c>): a posted write; may be lost with the link down.</summary>
    void WritePeerScratchpad(int index, uint value);

    /// <summary>Doorbell bits each way (<c>ntb_db_valid_mask</c> has this many low bits).</summary>
    int DoorbellCount { get; }

    /// <summary>The mask of valid doorbell bits.</summary>
    ulong DoorbellValidMask { get; }

    /// <summary>Rings the peer's doorbell <paramref name="bit"/> (<c>ntb_peer_db_set</c>):
    /// posted; the peer's bit latches and, unless the peer masked it, its
    /// <see cref="DoorbellEvent"/> is signalled. Order: everything the doorbell announces
    /// is written (and fenced) before this call, which fences again itself.</summary>
    void RingPeerDoorbell(int bit);

    /// <summary>The notification for our doorbell <paramref name="bit"/> (an MSI vector's
    /// eventfd): signalled when the peer rings the bit while it is unmasked, or when a
    /// pending bit is unmasked. Consuming it does not clear the bit: see
    /// <see cref="ClearDoorbell"/>.</summary>
    INotificationSource DoorbellEvent(int bit);

    /// <summary>Our pending (latched, not yet cleared) doorbell bits (<c>ntb_db_read</c>): a local read.</summary>
    ulong ReadDoorbell();

    /// <summary>Clears pending bits (<c>ntb_db_clear</c>). Clear before looking at the work
    /// a bit announces, so a ring that arrives meanwhile latches again.</summary>
    void ClearDoorbell(ulong bits);

    /// <summary>The masked doorbell bits (<c>ntb_db_read_mask</c>).</summary>
    ulong DoorbellMask { get; }

    /// <summary>Masks bits (<c>ntb_db_set_mask</c>): their notification is suppressed, the
    /// bits still latch.</summary>
    void MaskDoorbell(ulong bits);

    /// <summary>Unmasks bits (<c>ntb_db_clear_mask</c>); a bit already pending signals its
    /// notification now (level semantics), so nothing rung while masked is missed.</summary>
    void UnmaskDoorbell(ulong bits);

    /// <summary>The inbound window: our memory the peer writes into. Available from the
    /// start and valid until disposal.</summary>
    NtbLocalWindow LocalWindow { get; }

    /// <summary>Bytes of the outbound window: 0 while the link is down or the peer has not
    /// exposed its inbound window yet (<c>ntb_peer_mw_get_addr</c> after the peer's
    /// <c>ntb_mw_set_trans</c>).</summary>
    ulong PeerWindowSize { get; }

    /// <summary>The outbound window, mapped on first use once <see cref="PeerWindowSize"/>
    /// is non-zero and then kept until disposal, whatever the link does later.</summary>
    /// <exception cref="InvalidOperationException">The window is not available yet.</exception>
    NtbPeerWindow PeerWindow { get; }

    /// <summary><see cref="PeerWindow"/> without the exception.</summary>
    bool TryGetPeerWindow([NotNullWhen(true)] out NtbPeerWindow? window);

    /// <summary>Accesses made through the outbound window so far (a running total: take two
    /// snapshots and use <see cref="RemoteAccessCounts.Since"/>).</summary>
    RemoteAccessCounts RemoteAccesses { get; }
}
