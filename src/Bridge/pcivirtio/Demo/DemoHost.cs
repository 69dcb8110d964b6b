using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;

namespace PciVirtio.Host.Demo;

/// <summary>
/// One end of the demo: the virtio driver of its transmit ring and the device of its
/// receive ring, served by one thread — the shape each host of a PCIe link has. The
/// <see cref="DemoRole.Source"/> sends numbered frames and checks what comes back; the
/// <see cref="DemoRole.Echo"/> sends every frame it receives back.
/// </summary>
internal sealed class DemoHost : IDisposable
{
    private readonly DemoOptions _options;
    private readonly DemoRole _role;
    private readonly GuestMemory<RamAccessor> _memory;
    private readonly IoSegment[] _txBuffers;
    private readonly int[] _freeTx;
    private readonly byte[] _template;
    private readonly SemaphoreSlim _wake = new(0, int.MaxValue);
    private int _freeCount;
    private long _nextSeq;
    private long _frames;
    private long _bytes;

    public DemoHost(string name, DemoRole role, DemoOptions options, GuestMemory<RamAccessor> memory,
        QueueState tx, QueueState rx, ulong txBufferBase, byte[] template)
    {
        Name = name;
        _role = role;
        _options = options;
        _memory = memory;
        _template = template;
        Tx = new SplitQueueDriver<RamAccessor>($"{name}.tx");
        Rx = new SplitQueueDevice<RamAccessor>($"{name}.rx");
        if (!Tx.Start(tx, memory) || !Rx.Start(rx, memory))
        {
            throw new InvalidOperationException($"{name}: {Tx.BrokenReason ?? Rx.BrokenReason}");
        }

        // Transmit buffers live in the peer's memory (the receiver reads locally); each is
        // translated once here, never per frame.
        _txBuffers = new IoSegment[options.QueueSize];
        _freeTx = new int[options.QueueSize];
        for (int i = 0; i < options.QueueSize; i++)
        {
            ulong gpa = txBufferBase + ((ulong)i * (ulong)options.FrameSize);
            if (!memory.Table.TryTranslate(gpa, (ulong)options.FrameSize, out nint host))
            {
                throw new InvalidOperationException($"{name}: transmit buffer {i} at 0x{gpa:x} is not mapped");
            }

            _txBuffers[i] = new IoSegment(host, (uint)options.FrameSize, gpa);
            _freeTx[i] = i;
        }

        _freeCount = options.QueueSize;
    }

    public string Name { get; }

    public SplitQueueDriver<RamAccessor> Tx { get; }

    public SplitQueueDevice<RamAccessor> Rx { get; }

    public DemoHost? Peer { get; set; }

    /// <summary>Frames this host received and accepted.</summary>
    public long Frames => Volatile.Read(ref _frames);

    public long Bytes => Volatile.Read(ref _bytes);

    public long BadFrames { get; private set; }

    public long Wakeups { get; private set; }

    public string? Failure { get; private set; }

    public bool Finished => Frames == _options.Frames && Tx.InFlight == 0 && (_role == DemoRole.Echo || _nextSeq == _options.Frames);

    public void Dispose() => _wake.Dispose();

    /// <summary>Kick or interrupt from the peer: both wake this host's one thread.</summary>
    public void Signal() => _wake.Release();

    public void Run(CancellationToken cancel)
    {
        var chains = new DescriptorChain[_options.Burst];
        var segments = new IoSegment[_options.Burst * 4];
        var used = new UsedBuffer[_options.Burst];
        var frame = new byte[_options.FrameSize];
        var peer = Peer ?? throw new InvalidOperationException("no peer");

        while (!Finished && !cancel.IsCancellationRequested)
        {
            if (Tx.IsBroken || Rx.IsBroken)
            {
                Failure = Tx.BrokenReason ?? Rx.BrokenReason;
                return;
            }

            bool progress = false;

            // Transmit completions give buffers back.
            int reaped = Tx.Reap(used);
            for (int i = 0; i < reaped; i++)
            {
                _freeTx[_freeCount++] = (int)used[i].Token;
            }

            progress |= reaped > 0;

            // Receive: an echo host only takes what it can send straight back.
            int budget = _role == DemoRole.Echo ? Math.Min(chains.Length, _freeCount) : chains.Length;
            int received = budget > 0 ? Rx.PopAvail(chains.AsSpan(0, budget), segments) : 0;
            int added = 0;
            for (int i = 0; i < received; i++)
            {
                var chain = chains[i];
                int len = _memory.Gather(chain.Readable(segments), 0, frame);
                if (_role == DemoRole.Source)
                {
                    Verify(frame.AsSpan(0, len));
                }
                else
                {
                    added += Send(frame.AsSpan(0, len));
                    _frames++;
                }

                _bytes += len;
                Rx.PushUsed(chain.Head, 0);
            }

            if (received > 0)
            {
                Volatile.Write(ref _frames, _frames);
                Rx.FlushUsed();
                if (Rx.NeedsInterrupt())
                {
                    peer.Signal();
                }

                progress = true;
            }

            // The source sends new numbered frames while it has buffers.
            if (_role == DemoRole.Source)
            {
                while (added < chains.Length && _freeCount > 0 && _nextSeq < _options.Frames)
                {
                    Fill(frame, _nextSeq++);
                    added += Send(frame);
                }
            }

            if (added > 0)
            {
                Tx.Publish();
                if (Tx.NeedsKick())
                {
                    peer.Signal();
                }

                progress = true;
            }

            if (!progress)
            {
                // Idle: ask for a kick and an interrupt, re-check (no lost wake-up), sleep.
                bool more = Rx.EnableNotifications() | Tx.EnableInterrupts();
                if (!more)
                {
                    _wake.Wait(100, CancellationToken.None);
                    Wakeups++;
                }

                Rx.DisableNotifications();
                Tx.DisableInterrupts();
            }
        }
    }

    private int Send(ReadOnlySpan<byte> frame)
    {
        int index = _freeTx[--_freeCount];
        var buffer = _txBuffers[index];
        _memory.Access.CopyTo(buffer.Host, frame);
        if (!Tx.TryAdd([new GuestBuffer(buffer.Guest, (uint)frame.Length)], [], (ulong)index))
        {
            _freeTx[_freeCount++] = index;
            Failure = $"{Name}: transmit ring refused a buffer: {Tx.BrokenReason ?? "full"}";
            return 0;
        }

        return 1;
    }

    private void Fill(Span<byte> frame, long seq)
    {
        _template.AsSpan(0, frame.Length).CopyTo(frame);
        BitConverter.TryWriteBytes(frame, seq);
        BitConverter.TryWriteBytes(frame[^8..], seq);
    }

    /// <summary>A frame must come back whole, once, and in order.</summary>
    private void Verify(ReadOnlySpan<byte> frame)
    {
        long expected = _frames;
        bool ok = frame.Length == _options.FrameSize
            && BitConverter.ToInt64(frame) == expected
            && BitConverter.ToInt64(frame[^8..]) == expected
            && frame[8..^8].SequenceEqual(_template.AsSpan(8, frame.Length - 16));
        if (!ok)
        {
            BadFrames++;
        }

        _frames++;
    }
}

internal enum DemoRole
{
    Source,
    Echo,
}
