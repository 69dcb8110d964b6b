using System.Buffers.Binary;
using PciVirtio.Bridge.Hardware;
using PciVirtio.Bridge.Link;
using PciVirtio.HwSim.Device;
using PciVirtio.Mmio.EventLoop;
using PciVirtio.VhostCore.Net;

namespace PciVirtio.Bridge.Tests.Link;

/// <summary>Both ends of a link over one in-process hw-sim device, each on its own event
/// loop, with a packet endpoint that records what arrives.</summary>
public sealed class LinkPair : IDisposable
{
    /// <param name="linger">Both ends' linger; the default when null.</param>
    /// <param name="clock">Both ends' clock for the linger; the system's when null.</param>
    public LinkPair(LinkParameters? offerA = null, LinkParameters? offerB = null, ulong windowSize = 16 << 20, bool pollA = false, bool pollB = false,
        TimeSpan? linger = null, TimeProvider? clock = null)
    {
        Device = HwSimDevice.Create(windows: 1, windowSize: windowSize);
        var options = new LinkOptions
        {
            PeerTimeout = TimeSpan.FromMilliseconds(600),
            Linger = linger ?? LinkOptions.DefaultLinger,
            TimeProvider = clock ?? TimeProvider.System,
        };
        A = new End(new SimNtbHardware(Device.OpenPort(0)), options with { Name = "a", Offer = offerA ?? new LinkParameters(), Poll = pollA });
        B = new End(new SimNtbHardware(Device.OpenPort(1)), options with { Name = "b", Offer = offerB ?? new LinkParameters(), Poll = pollB });
    }

    public HwSimDevice Device { get; }

    public End A { get; }

    public End B { get; }

    public void Start()
    {
        A.Start();
        B.Start();
    }

    public bool WaitUntilUp(TimeSpan timeout) =>
        SpinWait.SpinUntil(() => A.OnLoop(() => A.Link.State) == LinkState.Up && B.OnLoop(() => B.Link.State) == LinkState.Up, timeout);

    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
        Device.Dispose();
    }

    /// <summary>One end: hardware, loop, link, packet endpoint and what arrived.</summary>
    public sealed class End : IDisposable
    {
        private readonly object _gate = new();

        public End(SimNtbHardware hardware, LinkOptions options)
        {
            Hardware = hardware;
            Loop = new EpollEventLoop($"link-{options.Name}");
            Endpoint = new PacketEndpoint { FrameArrived = OnFrame };
            Link = new NtbLink(hardware, Endpoint, Loop, options);
        }

        public SimNtbHardware Hardware { get; }

        public EpollEventLoop Loop { get; }

        public PacketEndpoint Endpoint { get; }

        public NtbLink Link { get; }

        /// <summary>Refuse arriving frames while set (back-pressure).</summary>
        public volatile bool Refuse;

        public List<byte[]> Received { get; } = [];

        public int ReceivedCount
        {
            get
            {
                lock (_gate)
                {
                    return Received.Count;
                }
            }
        }

        public void Start()
        {
            Loop.Start();
            OnLoop(() =>
            {
                Link.Start();
                return 0;
            });
        }

        public T OnLoop<T>(Func<T> action) => Loop.Invoke(action);

        /// <summary>Sends frames on the loop thread, waiting out NoBuffers; returns how many went.</summary>
        public int SendAll(IReadOnlyList<byte[]> frames, int pair = 0, TimeSpan? timeout = null)
        {
            int sent = 0;
            var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(20));
            while (sent < frames.Count && DateTime.UtcNow < deadline)
            {
                int start = sent;
                sent += OnLoop(() =>
                {
                    int n = 0;
                    while (start + n < frames.Count)
                    {
                        var r = Endpoint.Send(pair, frames[start + n]);
                        if (r == ReceiveResult.NoBuffers)
                        {
                            break;
                        }

                        n++;
                    }

                    Endpoint.Flush(pair);
                    return n;
                });
                if (sent < frames.Count)
                {
                    Thread.Sleep(1);
                }
            }

            return sent;
        }

        public void Dispose()
        {
            if (Loop.IsRunning)
            {
                OnLoop(() =>
                {
                    Link.Dispose();
                    return 0;
                });
            }

            Loop.Stop();
            Loop.Dispose();
            Hardware.Dispose();
        }

        private bool OnFrame(int pair, ReadOnlySpan<byte> frame)
        {
            if (Refuse)
            {
                return false;
            }

            lock (_gate)
            {
                Received.Add(frame.ToArray());
            }

            return true;
        }
    }

    /// <summary>A frame: zero vnet header, then a packet carrying <paramref name="seq"/> and a pattern.</summary>
    public static byte[] Frame(int seq, int packetLength)
    {
        var f = new byte[VirtioNetHeader.Size + packetLength];
        var p = f.AsSpan(VirtioNetHeader.Size);
        p[..6].Fill(0xff);
        p[6..12].Fill(0x02);
        p[12] = 0x88;
        p[13] = 0xb5;
        BinaryPrimitives.WriteInt32LittleEndian(p[14..], seq);
        for (int i = 18; i < p.Length; i++)
        {
            p[i] = (byte)((i * 31) + seq);
        }

        return f;
    }

    public static int SeqOf(byte[] frame) => BinaryPrimitives.ReadInt32LittleEndian(frame.AsSpan(VirtioNetHeader.Size + 14));
}
