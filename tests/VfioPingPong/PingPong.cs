using System.Diagnostics;
using System.Globalization;
using PciVirtio.Mmio.Memory;
using PciVirtio.Mmio.Signals;
using PciVirtio.Mmio.Vfio;

namespace PciVirtio.Tests.VfioPingPong;

/// <summary>
/// One guest's side of the exchange, on the ivshmem-doorbell device bound to vfio-pci.
/// <para>
/// Setup (<see cref="Open"/>): <see cref="VfioPciDevice.Open(string, VfioOpenOptions?)"/>
/// (group from sysfs), memory decoding and bus mastering on, BAR0 (registers) and BAR2 (shared
/// memory) mmapped, this peer's id read from IVPosition (BAR0 + 8) and checked against
/// IVSHMEM_ID, MSI-X (index 2) checked for at least 2 eventfd-capable vectors and vectors 0 and
/// 1 wired to eventfds, and doorbells to the other peer's vectors 0 and 1 (BAR0 + 12).
/// </para>
/// <para>
/// Exchange (<see cref="Run"/>): each side publishes "ready" in its header — only after its
/// MSI-X vectors are wired, so no doorbell rings before the peer can take it — and polls, with
/// a bounded timeout, for the other's. Then for each sequence number 1..N the initiator (peer 0)
/// writes a request into the responder's inbox (payload, barrier, length and checksum, barrier,
/// sequence) and rings the responder's vector 0; the responder waits for its vector-0 eventfd,
/// checks the sequence and every byte, writes the reply into the initiator's inbox and rings the
/// initiator's vector 0; the initiator checks every byte of the reply. Vector 1 carries the final
/// "done" (initiator → responder) and its acknowledgement (responder → initiator). Before
/// "done", the masking step (<see cref="MaskStep"/>): the responder routes its vector 0 to a
/// parked eventfd, the initiator rings it three times (one at a time, each counted by the
/// responder before the next), the responder finds all three on the
/// parked eventfd and none on the vector's own, routes it back, and takes one more. Every BAR2
/// access goes through <see cref="IoMemoryAccessor"/> with an <see cref="AccessCounters"/> on
/// the BAR2 window; every wait is bounded, and a timeout is a failure.
/// </para>
/// </summary>
internal sealed class PingPong : IDisposable
{
    private const int ProgressEvery = 50;

    /// <summary>Doorbells the initiator rings while the responder's vector 0 is parked.</summary>
    public const int ParkedRings = 3;

    /// <summary>How long a published sequence number may lag behind its interrupt.</summary>
    private const int SequenceLagLimitMs = 2_000;

    private readonly Options _options;
    private readonly Action<string> _log;
    private readonly VfioPciDevice _vfio;
    private readonly List<IDisposable> _owned = [];
    private readonly byte[] _message = new byte[Layout.MaxPayload];
    private readonly byte[] _expected = new byte[Layout.MaxPayload];
    private readonly byte[] _reply = new byte[Layout.MaxPayload];
    private MemoryMapping _bar0 = null!;
    private MemoryMapping _bar2 = null!;
    private AccessCounters _counters = null!;
    private IoMemoryAccessor _shared;
    private EventFd[] _vectors = [];
    private SignalWaiter[] _waiters = [];
    private MmioDoorbell[] _doorbells = [];
    private bool _disposed;
    private readonly long[] _interrupts = new long[2];
    private long _bytesSent;
    private long _bytesReceived;
    private long _lateSequencePolls;
    private long _parkedInterrupts;

    private PingPong(VfioPciDevice vfio, Options options, Action<string> log)
    {
        _vfio = vfio;
        _options = options;
        _log = log;
    }

    public int Id { get; private set; }

    public int PeerId => 1 - Id;

    public bool IsInitiator => Id == 0;

    public string Role => IsInitiator ? "initiator" : "responder";

    public static PingPong Open(string bdf, string? groupVariable, string? idVariable, Options options, Action<string> log)
    {
        var vfio = VfioPciDevice.Open(bdf);
        var run = new PingPong(vfio, options, log);
        try
        {
            run.Setup(groupVariable, idVariable);
            return run;
        }
        catch
        {
            run.Dispose();
            throw;
        }
    }

    /// <summary>The whole exchange; returns the summary that follows "PINGPONG OK".</summary>
    public string Run()
    {
        Handshake();
        var clock = Stopwatch.StartNew();
        if (IsInitiator)
        {
            Initiate();
        }
        else
        {
            Respond();
        }

        clock.Stop();
        CheckNoStrayInterrupts();
        long messages = _options.Messages;
        double roundTripUs = clock.Elapsed.TotalMicroseconds / messages;
        return string.Create(CultureInfo.InvariantCulture,
            $"role={Role} id={Id} peer={PeerId} messages={messages} bytes={_bytesSent + _bytesReceived} " +
            $"bytes-sent={_bytesSent} bytes-received={_bytesReceived} " +
            $"interrupts={_interrupts[0] + _interrupts[1]} vector0-interrupts={_interrupts[0]} vector1-interrupts={_interrupts[1]} parked-interrupts={_parkedInterrupts} " +
            $"doorbells={_doorbells[0].Notifications + _doorbells[1].Notifications} " +
            $"bar2-reads={_counters.Reads} bar2-writes={_counters.Writes} bar2-read-bytes={_counters.ReadBytes} " +
            $"bar2-written-bytes={_counters.WrittenBytes} barriers={_counters.Barriers} late-sequence-polls={_lateSequencePolls} " +
            $"elapsed-ms={clock.Elapsed.TotalMilliseconds:0} per-message-us={roundTripUs:0}");
    }

    /// <summary>Closes doorbells, waiters, the MSI-X vectors (unbound from the device before
    /// their eventfds close), mappings and the device, in reverse order of creation. Throws
    /// the first failure after closing everything.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        Exception? first = null;
        for (int i = _owned.Count - 1; i >= 0; i--)
        {
            try
            {
                _owned[i].Dispose();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                first ??= e;
            }
        }

        _vfio.Dispose();
        if (first is not null)
        {
            throw new PingPongException($"cleanup failed: {first.GetType().Name}: {first.Message}", first);
        }
    }

    private T Own<T>(T resource)
        where T : IDisposable
    {
        _owned.Add(resource);
        return resource;
    }

    private void Setup(string? groupVariable, string? idVariable)
    {
        VfioDevice device = _vfio.Device;
        _log($"opened {_vfio}");
        string group = $"/dev/vfio/{_vfio.GroupId}";
        if (groupVariable is not null && groupVariable != group)
        {
            throw PingPongException.Format($"VFIO_GROUP is {groupVariable} but sysfs puts {_vfio.Address} in {group}");
        }

        PciCommand command = device.EnableMemoryAndBusMaster();
        _log($"PCI command {command}");

        VfioRegionInfo bar0Info = device.GetRegionInfo(VfioRegionIndex.Bar0);
        VfioRegionInfo bar2Info = device.GetRegionInfo(VfioRegionIndex.Bar2);
        _log($"region {bar0Info}");
        _log($"region {bar2Info}");
        if (bar2Info.Size < Layout.RequiredSharedMemory)
        {
            throw PingPongException.Format($"BAR2 has 0x{bar2Info.Size:x} bytes; the exchange needs 0x{Layout.RequiredSharedMemory:x}");
        }

        _bar0 = Own(device.MapRegion(VfioRegionIndex.Bar0));
        _bar2 = Own(device.MapRegion(VfioRegionIndex.Bar2));
        _counters = new AccessCounters(_bar2.Address, _bar2.Length);
        _shared = new IoMemoryAccessor(_counters);

        // This peer's id, from the device itself; IVSHMEM_ID is what the guest script read
        // through devmem before vfio-pci took the device ("unknown" when it could not).
        uint position = new IoMemoryAccessor(null).LoadU32(_bar0.Address + (nint)Layout.IvPosition);
        if (position > 1)
        {
            throw PingPongException.Format($"IVPosition is {position}: this exchange is between peers 0 and 1");
        }

        Id = (int)position;
        if (int.TryParse(idVariable, NumberStyles.None, CultureInfo.InvariantCulture, out int fromScript) && fromScript != Id)
        {
            throw PingPongException.Format($"IVSHMEM_ID is {fromScript} but the IVPosition register says {Id}");
        }

        _log($"peer id {Id} (IVPosition register, IVSHMEM_ID={idVariable ?? "unset"}): role {Role}, peer {PeerId}");

        VfioIrqInfo msix = device.GetIrqInfo(VfioIrqIndex.MsiX);
        _log($"irq {msix.Index}: {msix.Count} vectors, flags {msix.Flags}");
        if (msix.Count < 2 || !msix.SupportsEventFd)
        {
            throw PingPongException.Format($"MSI-X has {msix.Count} vectors (flags {msix.Flags}); the exchange needs 2 with eventfd support");
        }

        // Unbound from the device before its eventfds close (VfioInterrupts.Dispose), and
        // disposed after the waiters created below (reverse order of ownership).
        var irqs = Own(VfioInterrupts.Enable(device, VfioIrqIndex.MsiX, 2));
        _vectors = [irqs[0], irqs[1]];
        _waiters = [Own(new SignalWaiter(_vectors[0])), Own(new SignalWaiter(_vectors[1]))];
        _doorbells =
        [
            Own(MmioDoorbell.Ivshmem(_bar0, (ushort)PeerId, 0)),
            Own(MmioDoorbell.Ivshmem(_bar0, (ushort)PeerId, 1)),
        ];
        _log($"MSI-X vectors 0 and 1 wired to eventfds; doorbells to peer {PeerId} = 0x{_doorbells[0].Value:x8}, 0x{_doorbells[1].Value:x8}");
    }

    private void Handshake()
    {
        nint own = Address(Layout.Header(Id));
        nint ownInbox = Address(Layout.Inbox(Id));
        _shared.StoreU64(ownInbox + (nint)Layout.InboxSequence, 0);
        _shared.StoreU32(ownInbox + (nint)Layout.InboxLength, 0);
        _shared.StoreU32(own + (nint)Layout.HeaderMagic, Layout.Magic);
        _shared.StoreU32(own + (nint)Layout.HeaderPeerId, (uint)Id);
        _shared.StoreU64(own + (nint)Layout.HeaderSent, 0);
        _shared.StoreU64(own + (nint)Layout.HeaderReceived, 0);
        _shared.StoreU64(own + (nint)Layout.HeaderBytesReceived, 0);
        _shared.FullBarrier();
        _shared.StoreU32(own + (nint)Layout.HeaderState, Layout.StateReady);
        _log($"published ready in header {Id}; waiting for peer {PeerId}");

        var clock = Stopwatch.StartNew();
        nint other = Address(Layout.Header(PeerId));
        long polls = 0;
        while (true)
        {
            polls++;
            if (_shared.LoadU32(other + (nint)Layout.HeaderMagic) == Layout.Magic
                && _shared.LoadU32(other + (nint)Layout.HeaderPeerId) == (uint)PeerId
                && _shared.LoadU32(other + (nint)Layout.HeaderState) == Layout.StateReady)
            {
                break;
            }

            if (clock.ElapsedMilliseconds > _options.HandshakeTimeoutMs)
            {
                throw PingPongException.Format($"timeout: peer {PeerId} did not publish ready within {_options.HandshakeTimeoutMs} ms ({polls} polls)");
            }

            Thread.Sleep(1);
        }

        _log($"peer {PeerId} is ready (after {clock.ElapsedMilliseconds} ms, {polls} polls)");
    }

    private void Initiate()
    {
        var clock = Stopwatch.StartNew();
        for (ulong seq = 1; seq <= (ulong)_options.Messages; seq++)
        {
            int length = Messages.RequestLength(seq, _options.MaxSize);
            Span<byte> request = _message.AsSpan(0, length);
            Messages.FillRequest(seq, request);
            uint checksum = Messages.Checksum(request);
            Send(seq, request, checksum, _doorbells[0]);
            SetHeader(Layout.HeaderSent, seq);

            WaitForInterrupt(0, $"the reply to message {seq}");
            Span<byte> reply = Receive(seq, Messages.ReplyLength(seq, _options.MaxSize), _reply, out uint replyChecksum);
            Span<byte> expected = _expected.AsSpan(0, reply.Length);
            Messages.FillReply(seq, request, expected);
            CheckBytes("reply", seq, reply, expected);
            if (replyChecksum != checksum)
            {
                throw PingPongException.Format($"reply {seq}: the responder's checksum of request {seq} is 0x{replyChecksum:x8}, the request's is 0x{checksum:x8}");
            }

            SetHeader(Layout.HeaderReceived, seq);
            SetHeader(Layout.HeaderBytesReceived, (ulong)_bytesReceived);
            Progress(seq, length, reply.Length, clock);
        }

        // The masking step: rings while the responder's vector 0 is parked, then once after.
        // One ring at a time, each counted by the responder before the next: QEMU reads a
        // doorbell's eventfd once for any number of writes, so rings in a row may become one.
        WaitForPeerState(Layout.StateParked, "its vector 0 parked");
        for (uint i = 1; i <= ParkedRings; i++)
        {
            _doorbells[0].Notify();
            WaitForPeerField(Layout.HeaderParked, sizeof(ulong), i, $"doorbell {i} counted on its parked eventfd");
        }

        WaitForPeerState(Layout.StateRouted, "its vector 0 routed back");
        _doorbells[0].Notify();
        _log($"rang peer {PeerId} vector 0 {ParkedRings} times while parked and once after");

        // Done: vector 1 to the responder, which acknowledges on our vector 1.
        SetState(Layout.StateDone);
        _doorbells[1].Notify();
        _log($"all {_options.Messages} replies verified; rang peer {PeerId} vector 1 (done)");
        WaitForInterrupt(1, "the responder's acknowledgement of done");
        CheckPeerFinished();
        _log($"peer {PeerId} acknowledged done on vector 1");
    }

    private void Respond()
    {
        var clock = Stopwatch.StartNew();
        for (ulong seq = 1; seq <= (ulong)_options.Messages; seq++)
        {
            WaitForInterrupt(0, $"message {seq}");
            Span<byte> request = Receive(seq, Messages.RequestLength(seq, _options.MaxSize), _message, out uint checksum);
            Span<byte> expected = _expected.AsSpan(0, request.Length);
            Messages.FillRequest(seq, expected);
            CheckBytes("message", seq, request, expected);
            uint actualChecksum = Messages.Checksum(request);
            if (checksum != actualChecksum)
            {
                throw PingPongException.Format($"message {seq}: checksum field 0x{checksum:x8}, payload checksum 0x{actualChecksum:x8}");
            }

            SetHeader(Layout.HeaderReceived, seq);
            SetHeader(Layout.HeaderBytesReceived, (ulong)_bytesReceived);

            Span<byte> reply = _reply.AsSpan(0, Messages.ReplyLength(seq, _options.MaxSize));
            Messages.FillReply(seq, request, reply);
            Send(seq, reply, actualChecksum, _doorbells[0]);
            SetHeader(Layout.HeaderSent, seq);
            Progress(seq, request.Length, reply.Length, clock);
        }

        MaskStep();
        WaitForInterrupt(1, "the initiator's done");
        CheckPeerFinished();
        SetState(Layout.StateDone);
        _doorbells[1].Notify();
        _log($"peer {PeerId} said done on vector 1; acknowledged on its vector 1");
    }

    /// <summary>
    /// Masking a vector on vfio-pci, as the link's ivshmem hardware does it
    /// (IvshmemVfioHardware.MaskDoorbell): vfio-pci cannot mask one MSI-X vector, so the
    /// vector is routed to an eventfd nobody waits on (VFIO_DEVICE_SET_IRQS on that vector
    /// alone, MSI-X staying enabled), and routed back to unmask. Proven here on the real
    /// driver: every doorbell rung while parked lands on the parked eventfd and none on the
    /// vector's own, and the first after routing back on the vector's own again.
    /// </summary>
    private void MaskStep()
    {
        using var parked = new EventFd();
        using var parkedWaiter = new SignalWaiter(parked);
        _vfio.Device.SetIrqEventFds(VfioIrqIndex.MsiX, 0, [parked]);
        SetHeader(Layout.HeaderParked, 0); // ordered before the state by SetState's barrier
        SetState(Layout.StateParked);

        // The initiator rings once per count published here; the writes are posted, so wait
        // (bounded) for each on the parked eventfd, and check the vector's own stays quiet.
        long deadline = Environment.TickCount64 + _options.MessageTimeoutMs;
        while (_parkedInterrupts < ParkedRings)
        {
            long left = deadline - Environment.TickCount64;
            if (left <= 0)
            {
                throw PingPongException.Format($"timeout: {_parkedInterrupts} of {ParkedRings} doorbells rung while vector 0 was parked arrived on the parked eventfd");
            }

            if (parkedWaiter.Wait((int)Math.Min(left, 100)) == SignalWaitResult.Signalled)
            {
                _parkedInterrupts += (long)parked.Consume();
                SetHeader(Layout.HeaderParked, (ulong)_parkedInterrupts);
            }

            if (_waiters[0].Wait(0) == SignalWaitResult.Signalled)
            {
                throw PingPongException.Format($"vector 0's own eventfd fired ({_vectors[0].Consume()}) while the vector was routed to the parked one");
            }
        }

        _vfio.Device.SetIrqEventFds(VfioIrqIndex.MsiX, 0, [_vectors[0]]);
        SetState(Layout.StateRouted);
        WaitForInterrupt(0, "the doorbell rung after vector 0 was routed back");
        if (parkedWaiter.Wait(0) == SignalWaitResult.Signalled)
        {
            _parkedInterrupts += (long)parked.Consume();
        }

        if (_parkedInterrupts != ParkedRings)
        {
            throw PingPongException.Format($"the parked eventfd counted {_parkedInterrupts} interrupts, {ParkedRings} doorbells were rung while parked");
        }

        _log($"vector 0 parked: {_parkedInterrupts} doorbells landed on the parked eventfd, none on its own; routed back: the next one arrived on its own");
    }

    /// <summary>Polls (bounded) until the peer's header state is <paramref name="state"/>.</summary>
    private void WaitForPeerState(uint state, string what) =>
        WaitForPeerField(Layout.HeaderState, sizeof(uint), state, $"{what} (state {state})");

    /// <summary>Polls (bounded) until the <paramref name="width"/>-byte field (4 or 8) at
    /// <paramref name="offset"/> of the peer's header holds <paramref name="value"/>.</summary>
    private void WaitForPeerField(ulong offset, int width, ulong value, string what)
    {
        nint field = Address(Layout.Header(PeerId)) + (nint)offset;
        ulong Read() => width == sizeof(uint) ? _shared.LoadU32(field) : _shared.LoadU64(field);
        long deadline = Environment.TickCount64 + _options.MessageTimeoutMs;
        while (Read() != value)
        {
            if (Environment.TickCount64 > deadline)
            {
                throw PingPongException.Format($"timeout: peer {PeerId} did not report {what} within {_options.MessageTimeoutMs} ms; it reports {Read()}");
            }

            Thread.Sleep(1);
        }
    }

    /// <summary>Writes <paramref name="payload"/> into the peer's inbox and rings it: payload,
    /// barrier, length and checksum, barrier, sequence, then the doorbell (which has its own
    /// barrier before the store).</summary>
    private void Send(ulong seq, ReadOnlySpan<byte> payload, uint checksum, MmioDoorbell doorbell)
    {
        nint inbox = Address(Layout.Inbox(PeerId));
        _shared.CopyTo(inbox + (nint)Layout.PayloadOffset(seq), payload);
        _shared.FullBarrier();
        _shared.StoreU32(inbox + (nint)Layout.InboxLength, (uint)payload.Length);
        _shared.StoreU32(inbox + (nint)Layout.InboxChecksum, checksum);
        _shared.FullBarrier();
        _shared.StoreU64(inbox + (nint)Layout.InboxSequence, seq);
        doorbell.Notify();
        _bytesSent += payload.Length;
    }

    /// <summary>Reads message <paramref name="seq"/> from our inbox once its sequence number is
    /// published (normally already, when the interrupt arrives), checking its length.</summary>
    private Span<byte> Receive(ulong seq, int expectedLength, byte[] buffer, out uint checksum)
    {
        nint inbox = Address(Layout.Inbox(Id));
        var clock = Stopwatch.StartNew();
        while (true)
        {
            ulong published = _shared.LoadU64(inbox + (nint)Layout.InboxSequence);
            if (published == seq)
            {
                break;
            }

            if (published != seq - 1)
            {
                throw PingPongException.Format($"message {seq}: the inbox holds sequence {published}");
            }

            _lateSequencePolls++;
            if (clock.ElapsedMilliseconds > SequenceLagLimitMs)
            {
                throw PingPongException.Format($"message {seq}: interrupt arrived but the sequence stayed {published} for {SequenceLagLimitMs} ms");
            }

            Thread.SpinWait(20);
        }

        _shared.FullBarrier();
        uint length = _shared.LoadU32(inbox + (nint)Layout.InboxLength);
        if (length != (uint)expectedLength)
        {
            throw PingPongException.Format($"message {seq}: length {length}, expected {expectedLength}");
        }

        checksum = _shared.LoadU32(inbox + (nint)Layout.InboxChecksum);
        Span<byte> payload = buffer.AsSpan(0, expectedLength);
        _shared.CopyFrom(inbox + (nint)Layout.PayloadOffset(seq), payload);
        _bytesReceived += expectedLength;
        return payload;
    }

    private static void CheckBytes(string what, ulong seq, ReadOnlySpan<byte> actual, ReadOnlySpan<byte> expected)
    {
        int at = Messages.FirstDifference(actual, expected);
        if (at >= 0)
        {
            throw PingPongException.Format(
                $"{what} {seq} ({actual.Length} bytes): byte {at} is 0x{actual[at]:x2}, expected 0x{expected[at]:x2}");
        }
    }

    /// <summary>Waits (bounded) for MSI-X <paramref name="vector"/>'s eventfd and consumes it.</summary>
    private void WaitForInterrupt(int vector, string what)
    {
        long deadline = Environment.TickCount64 + _options.MessageTimeoutMs;
        while (true)
        {
            long left = deadline - Environment.TickCount64;
            if (left <= 0)
            {
                throw PingPongException.Format($"timeout: no MSI-X vector {vector} interrupt for {what} within {_options.MessageTimeoutMs} ms");
            }

            if (_waiters[vector].Wait((int)left) == SignalWaitResult.Signalled)
            {
                ulong count = _vectors[vector].Consume();
                if (count > 0)
                {
                    _interrupts[vector] += (long)count;
                    return;
                }
            }
        }
    }

    /// <summary>Exactly one vector-0 interrupt per message (and the responder's one after its
    /// masking step) and one vector-1 interrupt, none left pending.</summary>
    private void CheckNoStrayInterrupts()
    {
        for (int v = 0; v < 2; v++)
        {
            if (_waiters[v].Wait(0) == SignalWaitResult.Signalled)
            {
                _interrupts[v] += (long)_vectors[v].Consume();
            }
        }

        // The responder also takes the doorbell rung after its vector 0 was routed back.
        long vector0 = _options.Messages + (IsInitiator ? 0 : 1);
        if (_interrupts[0] != vector0 || _interrupts[1] != 1)
        {
            throw PingPongException.Format(
                $"interrupt count: vector 0 fired {_interrupts[0]} times (expected {vector0}), vector 1 {_interrupts[1]} (expected 1)");
        }
    }

    /// <summary>The other side's header agrees that every message went both ways.</summary>
    private void CheckPeerFinished()
    {
        nint other = Address(Layout.Header(PeerId));
        ulong sent = _shared.LoadU64(other + (nint)Layout.HeaderSent);
        ulong received = _shared.LoadU64(other + (nint)Layout.HeaderReceived);
        ulong bytes = _shared.LoadU64(other + (nint)Layout.HeaderBytesReceived);
        uint state = _shared.LoadU32(other + (nint)Layout.HeaderState);
        ulong n = (ulong)_options.Messages;
        if (sent != n || received != n || bytes != (ulong)_bytesSent || state != Layout.StateDone)
        {
            throw PingPongException.Format(
                $"peer {PeerId}'s header says sent={sent} received={received} bytes-received={bytes} state={state}; expected {n}, {n}, {_bytesSent}, {Layout.StateDone}");
        }
    }

    private void SetHeader(ulong field, ulong value) => _shared.StoreU64(Address(Layout.Header(Id)) + (nint)field, value);

    private void SetState(uint state)
    {
        _shared.FullBarrier();
        _shared.StoreU32(Address(Layout.Header(Id)) + (nint)Layout.HeaderState, state);
    }

    private void Progress(ulong seq, int requestLength, int replyLength, Stopwatch clock)
    {
        if (seq == 1 || seq % ProgressEvery == 0 || seq == (ulong)_options.Messages)
        {
            _log(string.Create(CultureInfo.InvariantCulture,
                $"{Role}: {seq}/{_options.Messages} verified (request {requestLength} B, reply {replyLength} B) " +
                $"after {clock.Elapsed.TotalMilliseconds:0} ms; bar2 reads {_counters.Reads} writes {_counters.Writes}"));
        }
    }

    private nint Address(ulong offset) => _bar2.Address + (nint)offset;
}
