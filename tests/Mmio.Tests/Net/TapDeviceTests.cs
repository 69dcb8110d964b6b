using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using PciVirtio.Mmio.EventLoop;
using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Net;
using PciVirtio.Mmio.Net.Interop;
using PciVirtio.VhostCore.Memory;
using Tmds.Linux;

namespace PciVirtio.Mmio.Tests.Net;

/// <summary>
/// TapDevice against the real kernel: interfaces the tests create (unique names), checked
/// through sysfs, ethtool and TUNGETIFF; traffic only into network namespaces the tests create
/// and always delete, where the kernel answers ARP and ICMP sent through our queue fds.
/// </summary>
public sealed partial class TapDeviceTests
{
    private const int Vnet = 12;
    private const int BufferSize = 65535 + Vnet;

    // ---------------------------------------------------------------- options (no kernel)

    [Theory]
    [InlineData("", "TapOptions.Name")]
    [InlineData("pv0123456789abcd", "TapOptions.Name")] // 16 bytes
    [InlineData("pv/0", "TapOptions.Name")]
    [InlineData("pv 0", "TapOptions.Name")]
    [InlineData("pv:0", "TapOptions.Name")]
    [InlineData("pv\u00e90", "TapOptions.Name")]
    [InlineData("pv\t0", "TapOptions.Name")]
    [InlineData("..", "TapOptions.Name")]
    public void Invalid_names_are_refused_before_any_system_call(string name, string option)
    {
        var e = Assert.Throws<ArgumentException>(() => TapDevice.Create(new TapOptions { Name = name }));
        Assert.Contains(option, e.Message, StringComparison.Ordinal);
        Assert.Equal("options", e.ParamName);
    }

    [Theory]
    [InlineData(0, 12, "TapOptions.Queues")]
    [InlineData(-1, 12, "TapOptions.Queues")]
    [InlineData(TapOptions.MaxQueues + 1, 12, "TapOptions.Queues")]
    [InlineData(1, 11, "TapOptions.VnetHeaderSize")]
    [InlineData(1, 20, "TapOptions.VnetHeaderSize")]
    [InlineData(1, -12, "TapOptions.VnetHeaderSize")]
    public void Invalid_sizes_are_refused_naming_the_option(int queues, int vnetHeaderSize, string option)
    {
        var e = Assert.Throws<ArgumentException>(() => TapDevice.Create(new TapOptions { Queues = queues, VnetHeaderSize = vnetHeaderSize }));
        Assert.Contains(option, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Options_default_to_one_nonblocking_queue_with_a_12_byte_header()
    {
        var options = new TapOptions();
        Assert.Null(options.Name);
        Assert.Equal(1, options.Queues);
        Assert.Equal(12, options.VnetHeaderSize);
        Assert.True(options.NonBlocking);
    }

    [Fact]
    public void Ioctl_numbers_and_ifreq_layout_match_the_kernel_headers()
    {
        // linux/if_tun.h: _IOW('T', n, int) and _IOR('T', n, unsigned int).
        Assert.Equal(unchecked((int)0x400454ca), TunIoctl.SetIff);
        Assert.Equal(unchecked((int)0x800454cf), TunIoctl.GetFeatures);
        Assert.Equal(unchecked((int)0x400454d0), TunIoctl.SetOffload);
        Assert.Equal(unchecked((int)0x800454d2), TunIoctl.GetIff);
        Assert.Equal(unchecked((int)0x800454d7), TunIoctl.GetVnetHeaderSize);
        Assert.Equal(unchecked((int)0x400454d8), TunIoctl.SetVnetHeaderSize);
        Assert.Equal(unchecked((int)0x400454e2), TunIoctl.SetCarrier);
        Assert.Equal(0x1000 | 0x0002 | 0x4000 | 0x0100, (int)(TunFlags.NoPacketInfo | TunFlags.Tap | TunFlags.VnetHeader | TunFlags.MultiQueue));

        // struct ifreq: 16-byte name, then the union at 16; sockaddr data at 18; 40 bytes in all.
        Assert.Equal(40, Marshal.SizeOf<IfReq>());
        Assert.Equal(40, Unsafe.SizeOf<IfReq>());
        Assert.Equal(16, (int)Marshal.OffsetOf<IfReq>(nameof(IfReq.Flags)));
        Assert.Equal(16, (int)Marshal.OffsetOf<IfReq>(nameof(IfReq.Value)));
        Assert.Equal(16, (int)Marshal.OffsetOf<IfReq>(nameof(IfReq.HardwareFamily)));
        Assert.Equal(18, (int)Marshal.OffsetOf<IfReq>(nameof(IfReq.HardwareAddress)));

        Assert.Equal(1024, TapQueue.MaxSegments);
    }

    // ---------------------------------------------------------------- creating and closing

    [TapFact]
    public void A_tap_with_a_chosen_name_is_what_sysfs_shows_and_goes_away_on_dispose()
    {
        string name = UniqueName.Interface();
        var tap = TapDevice.Create(new TapOptions { Name = name });
        TapQueue queue;
        try
        {
            Assert.Equal(name, tap.Name);
            Assert.Equal(SysNet.ReadInt(name, "ifindex"), tap.InterfaceIndex);
            Assert.Equal(Vnet, tap.VnetHeaderSize);
            queue = Assert.Single(tap.Queues);
            Assert.Equal(0, queue.Index);

            // The kernel's record of the TUNSETIFF flags, read two ways.
            const int expected = 0x0002 | 0x1000 | 0x4000; // IFF_TAP | IFF_NO_PI | IFF_VNET_HDR
            Assert.Equal(expected, SysNet.ReadInt(name, "tun_flags"));
            Assert.Equal((TunFlags)expected, tap.ReadTunFlags());
            Assert.Equal(Vnet, tap.ReadVnetHeaderSize());
            Assert.True(tap.ReadSupportedFlags().HasFlag(TunFlags.Tap | TunFlags.MultiQueue | TunFlags.VnetHeader));

            Assert.Equal(LibC.O_NONBLOCK, FileStatusFlags(queue) & LibC.O_NONBLOCK);
            Assert.True(IsCloseOnExec(queue));
            Assert.Equal(0, queue.Read(new byte[BufferSize])); // nothing waiting: EAGAIN is 0
        }
        finally
        {
            tap.Dispose();
        }

        Assert.True(SysNet.WaitGone(name, QueueWait.Limit), $"{name} still exists after Dispose");
        Assert.True(queue.Handle.IsClosed);
        tap.Dispose(); // twice is harmless
        Assert.Throws<ObjectDisposedException>(() => queue.Read(new byte[BufferSize]));
        Assert.Throws<ObjectDisposedException>(() => queue.Write(new byte[60], out _));
        Assert.Throws<ObjectDisposedException>(() => tap.Mtu);
        Assert.Throws<ObjectDisposedException>(() => tap.SetCarrier(true));
    }

    [TapFact]
    public void The_kernel_names_a_tap_when_asked_to()
    {
        using (var tap = TapDevice.Create(new TapOptions()))
        {
            Assert.Matches(TapName(), tap.Name);
            Assert.Equal(SysNet.ReadInt(tap.Name, "ifindex"), tap.InterfaceIndex);
        }

        // A "%d" template is filled in the same way.
        string prefix = $"pv{Random.Shared.Next(0x100000):x5}x";
        using (var tap = TapDevice.Create(new TapOptions { Name = prefix + "%d" }))
        {
            Assert.Matches($"^{prefix}[0-9]+$", tap.Name);
            Assert.True(SysNet.Exists(tap.Name));
        }
    }

    [TapFact]
    public void A_blocking_tap_has_no_O_NONBLOCK()
    {
        using var tap = TapDevice.Create(new TapOptions { Name = UniqueName.Interface(), NonBlocking = false });
        Assert.Equal(0, FileStatusFlags(tap.Queues[0]) & LibC.O_NONBLOCK);
        Assert.True(IsCloseOnExec(tap.Queues[0]));
    }

    [TapFact]
    public void A_multi_queue_tap_has_one_fd_per_queue_on_one_interface()
    {
        string name = UniqueName.Interface();
        using var tap = TapDevice.Create(new TapOptions { Name = name, Queues = 2 });
        Assert.Equal(2, tap.Queues.Count);
        Assert.Equal([0, 1], tap.Queues.Select(q => q.Index));
        Assert.NotEqual(tap.Queues[0].Handle.Value, tap.Queues[1].Handle.Value);
        Assert.Equal(0x0002 | 0x1000 | 0x4000 | 0x0100, SysNet.ReadInt(name, "tun_flags"));
        Assert.True(tap.ReadTunFlags().HasFlag(TunFlags.MultiQueue));
        Assert.True(Directory.Exists(SysNet.Path(name, "queues/tx-1")));
        Assert.False(Directory.Exists(SysNet.Path(name, "queues/tx-2")));

        // A second multi-queue open of the same name attaches more queues to the interface.
        using (var more = TapDevice.Create(new TapOptions { Name = name, Queues = 2 }))
        {
            Assert.Equal(name, more.Name);
            Assert.Equal(tap.InterfaceIndex, more.InterfaceIndex);
            Assert.True(Directory.Exists(SysNet.Path(name, "queues/tx-3")));
        }

        Assert.True(SysNet.Exists(name));
        Assert.True(SpinWait.SpinUntil(() => !Directory.Exists(SysNet.Path(name, "queues/tx-2")), QueueWait.Limit));
    }

    [TapFact]
    public void A_kernel_named_multi_queue_tap_attaches_every_queue_to_the_name_it_got()
    {
        using var tap = TapDevice.Create(new TapOptions { Queues = 3 });
        Assert.Matches(TapName(), tap.Name);
        Assert.Equal(3, tap.Queues.Count);
        Assert.True(Directory.Exists(SysNet.Path(tap.Name, "queues/tx-2")));
        Assert.False(Directory.Exists(SysNet.Path(tap.Name, "queues/tx-3")));
    }

    [TapFact]
    public void Opening_a_single_queue_taps_name_again_fails_naming_TUNSETIFF_and_the_errno()
    {
        string name = UniqueName.Interface();
        using var single = TapDevice.Create(new TapOptions { Name = name });

        // As multi-queue: the modes differ, EINVAL.
        var e = Assert.Throws<NativeCallException>(() => TapDevice.Create(new TapOptions { Name = name, Queues = 2 }));
        Assert.Equal("ioctl(TUNSETIFF)", e.Call);
        Assert.Equal(Errno.EINVAL, e.Errno);
        Assert.Contains("TUNSETIFF", e.Message, StringComparison.Ordinal);
        Assert.Contains("EINVAL", e.Message, StringComparison.Ordinal);
        Assert.Contains(name, e.Message, StringComparison.Ordinal);

        // As single-queue: its one queue is taken, EBUSY.
        e = Assert.Throws<NativeCallException>(() => TapDevice.Create(new TapOptions { Name = name }));
        Assert.Equal(Errno.EBUSY, e.Errno);
        Assert.Contains("EBUSY", e.Message, StringComparison.Ordinal);

        // The failures left the first TAP alone.
        Assert.Equal(single.InterfaceIndex, SysNet.ReadInt(name, "ifindex"));
        Assert.Equal(0, single.Queues[0].Read(new byte[BufferSize]));
    }

    [TapFact]
    public void A_multi_queue_taps_name_cannot_be_opened_single_queue()
    {
        string name = UniqueName.Interface();
        using var multi = TapDevice.Create(new TapOptions { Name = name, Queues = 2 });
        var e = Assert.Throws<NativeCallException>(() => TapDevice.Create(new TapOptions { Name = name }));
        Assert.Equal(Errno.EINVAL, e.Errno);
        Assert.Contains("ioctl(TUNSETIFF)", e.Message, StringComparison.Ordinal);
    }

    [TapFact]
    public void A_name_held_by_another_kind_of_interface_is_refused()
    {
        var e = Assert.Throws<NativeCallException>(() => TapDevice.Create(new TapOptions { Name = "lo" }));
        Assert.Equal("ioctl(TUNSETIFF)", e.Call);
        Assert.Contains(" on lo ", e.Message, StringComparison.Ordinal);
    }

    // ---------------------------------------------------------------- settings

    [TheoryNeedingTap]
    [InlineData(0)]
    [InlineData(10)]
    [InlineData(12)]
    public void The_vnet_header_size_is_the_one_asked_for(int size)
    {
        using var tap = TapDevice.Create(new TapOptions { Name = UniqueName.Interface(), VnetHeaderSize = size });
        Assert.Equal(size, tap.VnetHeaderSize);
        Assert.Equal(size > 0, tap.ReadTunFlags().HasFlag(TunFlags.VnetHeader));
        Assert.Equal(size > 0, (SysNet.ReadInt(tap.Name, "tun_flags") & 0x4000) != 0);
        if (size > 0)
        {
            Assert.Equal(size, tap.ReadVnetHeaderSize());
        }
    }

    [TapFact]
    public void Offloads_change_what_the_kernel_may_hand_us_and_bad_sets_are_refused()
    {
        using var tap = TapDevice.Create(new TapOptions { Name = UniqueName.Interface() });
        bool ethtool = Command.TryRun("ethtool", "--version").Code == 0;
        Assert.Equal(TunOffloads.None, tap.Offloads);
        if (ethtool)
        {
            // No TUNSETOFFLOAD yet: the kernel finishes every frame itself.
            Assert.Equal("off", Feature(tap.Name, "tx-checksum-ip-generic"));
            Assert.Equal("off", Feature(tap.Name, "tx-tcp-segmentation"));
        }

        tap.SetOffloads(TunOffloads.Csum);
        Assert.Equal(TunOffloads.Csum, tap.Offloads);
        if (ethtool)
        {
            Assert.Equal("on", Feature(tap.Name, "tx-checksum-ip-generic"));
            Assert.Equal("off", Feature(tap.Name, "tx-tcp-segmentation"));
        }

        var tso = TunOffloads.Csum | TunOffloads.Tso4 | TunOffloads.Tso6 | TunOffloads.TsoEcn | TunOffloads.Ufo;
        tap.SetOffloads(tso);
        if (ethtool)
        {
            Assert.Equal("on", Feature(tap.Name, "tx-tcp-segmentation"));
            Assert.Equal("on", Feature(tap.Name, "tx-tcp6-segmentation"));
            Assert.Equal("on", Feature(tap.Name, "tx-tcp-ecn-segmentation"));
        }

        if (Environment.OSVersion.Version >= new Version(6, 2))
        {
            tap.SetOffloads(TunOffloads.Csum | TunOffloads.Uso4 | TunOffloads.Uso6);
            if (ethtool)
            {
                Assert.Equal("on", Feature(tap.Name, "tx-udp-segmentation"));
                Assert.Equal("off", Feature(tap.Name, "tx-tcp-segmentation"));
            }
        }

        tap.SetOffloads(tso);

        // Shapes no virtio-net driver negotiates, and bits this kernel does not know.
        foreach (var bad in new[] { TunOffloads.Tso4, TunOffloads.Csum | TunOffloads.Uso4, (TunOffloads)0x8000_0000 })
        {
            var e = Assert.Throws<NativeCallException>(() => tap.SetOffloads(bad));
            Assert.Equal("ioctl(TUNSETOFFLOAD)", e.Call);
            Assert.Equal(Errno.EINVAL, e.Errno);
            Assert.Contains(tap.Name, e.Message, StringComparison.Ordinal);
            Assert.Equal(tso, tap.Offloads); // a refused set changes nothing
        }

        tap.SetOffloads(TunOffloads.None);
        if (ethtool)
        {
            Assert.Equal("off", Feature(tap.Name, "tx-checksum-ip-generic"));
            Assert.Equal("off", Feature(tap.Name, "tx-tcp-segmentation"));
        }
    }

    [TapFact]
    public void The_mtu_is_read_and_set_and_an_impossible_one_is_refused()
    {
        using var tap = TapDevice.Create(new TapOptions { Name = UniqueName.Interface() });
        Assert.Equal(1500, tap.Mtu);
        Assert.Equal(1500, SysNet.ReadInt(tap.Name, "mtu"));

        tap.Mtu = 9000;
        Assert.Equal(9000, tap.Mtu);
        Assert.Equal(9000, SysNet.ReadInt(tap.Name, "mtu"));

        // The largest: a 65521-byte packet plus the Ethernet header is 65535 bytes.
        tap.Mtu = 65521;
        Assert.Equal(65521, tap.Mtu);

        foreach (int impossible in new[] { 67, 65522 })
        {
            var e = Assert.Throws<NativeCallException>(() => tap.Mtu = impossible);
            Assert.Equal("ioctl(SIOCSIFMTU)", e.Call);
            Assert.Equal(Errno.EINVAL, e.Errno);
            Assert.Contains(tap.Name, e.Message, StringComparison.Ordinal);
        }

        Assert.Equal(65521, tap.Mtu);
    }

    [TapFact]
    public void The_interface_goes_up_and_down()
    {
        using var tap = TapDevice.Create(new TapOptions { Name = UniqueName.Interface() });
        Assert.False(tap.IsUp);
        Assert.Equal(0, SysNet.ReadInt(tap.Name, "flags") & 1);

        tap.SetUp(true);
        Assert.True(tap.IsUp);
        Assert.Equal(1, SysNet.ReadInt(tap.Name, "flags") & 1);

        tap.SetUp(true); // idempotent
        tap.SetUp(false);
        Assert.False(tap.IsUp);
        Assert.Equal(0, SysNet.ReadInt(tap.Name, "flags") & 1);
    }

    [TapFact]
    public void The_mac_address_is_read_and_set_and_a_bad_one_is_refused()
    {
        using var tap = TapDevice.Create(new TapOptions { Name = UniqueName.Interface() });
        byte[] initial = tap.MacAddress;
        Assert.Equal(6, initial.Length);
        Assert.Equal(Mac(initial), SysNet.Read(tap.Name, "address"));
        Assert.Equal(0x02, initial[0] & 0x03); // random, locally administered, unicast

        byte[] chosen = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01];
        tap.MacAddress = chosen;
        Assert.Equal(chosen, tap.MacAddress);
        Assert.Equal("02:aa:bb:cc:dd:01", SysNet.Read(tap.Name, "address"));

        Assert.Throws<ArgumentException>(() => tap.MacAddress = [0x02, 0, 0, 0, 1]);
        Assert.Throws<ArgumentException>(() => tap.MacAddress = [0x01, 0, 0x5e, 0, 0, 1]); // multicast
        Assert.Throws<ArgumentException>(() => tap.MacAddress = new byte[6]);
        Assert.Equal(chosen, tap.MacAddress);
    }

    [TapFact]
    public void Carrier_goes_off_and_on()
    {
        using var tap = TapDevice.Create(new TapOptions { Name = UniqueName.Interface() });
        tap.SetUp(true); // sysfs reports carrier only for an interface that is up
        Assert.Equal("1", SysNet.Read(tap.Name, "carrier"));

        tap.SetCarrier(false);
        Assert.Equal("0", SysNet.Read(tap.Name, "carrier"));
        Assert.NotEqual("up", SysNet.Read(tap.Name, "operstate"));

        tap.SetCarrier(true);
        Assert.Equal("1", SysNet.Read(tap.Name, "carrier"));
    }

    // ---------------------------------------------------------------- data path without traffic

    [TapFact]
    public void Writing_to_a_tap_that_is_down_is_rejected_with_EIO_not_thrown()
    {
        using var tap = TapDevice.Create(new TapOptions { Name = UniqueName.Interface() });
        byte[] frame = new byte[Vnet + Frames.ArpLength];
        int length = Frames.ArpRequest(frame, Vnet, NamespacedTap.TapAddress);
        Assert.Equal(TapWriteResult.Rejected, tap.Queues[0].Write(frame.AsSpan(0, length), out int errno));
        Assert.Equal(Errno.EIO, errno);
    }

    [TapFact]
    public void More_segments_than_IOV_MAX_are_rejected_with_EMSGSIZE_without_a_system_call()
    {
        using var tap = TapDevice.Create(new TapOptions { Name = UniqueName.Interface() });
        var segments = new IoSegment[TapQueue.MaxSegments + 1];
        Assert.Equal(TapWriteResult.Rejected, tap.Queues[0].Write(segments, out int errno));
        Assert.Equal(LibC.EMSGSIZE, errno);
        Assert.Throws<ArgumentException>(() => tap.Queues[0].Read(segments));
    }

    [TapFact]
    public void A_read_buffer_must_have_room_past_the_vnet_header()
    {
        using var tap = TapDevice.Create(new TapOptions { Name = UniqueName.Interface() });
        Assert.Throws<ArgumentException>(() => tap.Queues[0].Read(new byte[Vnet]));
        Assert.Throws<ArgumentException>(() => tap.Queues[0].Read(Span<byte>.Empty));
        Assert.Equal(0, tap.Queues[0].Read(new byte[Vnet + 1]));
    }

    // ---------------------------------------------------------------- round trips in a namespace

    [TheoryNeedingNamespaces]
    [InlineData(12)]
    [InlineData(10)]
    [InlineData(0)]
    public void An_arp_request_written_to_the_fd_gets_the_kernels_reply(int vnet)
    {
        using var link = NamespacedTap.Create(new TapOptions { Name = UniqueName.Interface(), VnetHeaderSize = vnet });
        byte[] buffer = new byte[65535 + vnet];
        Assert.Equal(0, link.Queue.Read(buffer)); // non-blocking and nothing asked yet

        byte[] request = new byte[vnet + Frames.ArpLength];
        Frames.ArpRequest(request, vnet, NamespacedTap.TapAddress);
        Assert.Equal(TapWriteResult.Written, link.Queue.Write(request, out int errno));
        Assert.Equal(0, errno);

        int n = QueueWait.ForFrame(link.Queue, vnet, buffer, f => Frames.IsArpReplyToPeer(f, vnet), "ARP reply");
        Assert.Equal(vnet + Frames.ArpLength, n);
        Assert.True(buffer.AsSpan(0, vnet).IndexOfAnyExcept((byte)0) < 0, "an ARP reply needs no checksum or GSO work");

        // The reply comes from the TAP's MAC, which the queue fd still reads in the namespace.
        byte[] mac = link.Tap.MacAddress;
        Assert.Equal(mac, buffer.AsSpan(vnet + 6, 6).ToArray());
        Assert.Equal(mac, buffer.AsSpan(vnet + Frames.EthernetHeader + 8, 6).ToArray());
        Assert.Equal(Mac(mac), link.Namespace.Ip("-br", "link", "show", link.Tap.Name).Split(' ', StringSplitOptions.RemoveEmptyEntries)[2]);
    }

    [NetnsFact]
    public void A_frame_gathered_from_three_segments_is_one_frame_and_a_reply_scatters_into_three()
    {
        using var link = NamespacedTap.Create();
        byte[] request = new byte[Vnet + Frames.ArpLength];
        Frames.ArpRequest(request, Vnet, NamespacedTap.TapAddress);

        // Three separate pinned buffers, as a frame spread over guest pages would be:
        // vnet header | Ethernet header | ARP body.
        var pieces = new PinnedPieces(request, [Vnet, Frames.EthernetHeader, 28], gap: 5);
        Assert.Equal(TapWriteResult.Written, link.Queue.Write(pieces.Segments, out int errno));
        Assert.Equal(0, errno);

        // Scatter the reply the same way, with readv: 12 + 14 bytes, then the rest.
        var into = new PinnedPieces(new byte[Vnet + 14 + 2048], [Vnet, 14, 2048], gap: 3);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        int n;
        while ((n = link.Queue.Read(into.Segments)) == 0)
        {
            Assert.True(clock.Elapsed < QueueWait.Limit, "no ARP reply within the limit");
            QueueWait.WaitReadable(link.Tap.Queues, 100);
        }

        Assert.Equal(Vnet + Frames.ArpLength, n);
        byte[] reply = into.Gather(n);
        Assert.True(Frames.IsArpReplyToPeer(reply, Vnet), Convert.ToHexString(reply));
    }

    [NetnsFact]
    public void An_icmp_echo_request_gets_an_echo_reply()
    {
        using var link = NamespacedTap.Create();
        byte[] mac = link.Tap.MacAddress;
        byte[] request = new byte[Vnet + 14 + 20 + 8 + 56];
        Frames.EchoRequest(request, Vnet, mac, identifier: 0x7e57, sequence: 1, payloadLength: 56);
        Assert.Equal(TapWriteResult.Written, link.Queue.Write(request, out _));

        byte[] buffer = new byte[BufferSize];
        int n = QueueWait.ForFrame(link.Queue, Vnet, buffer, f => Frames.IsEchoReplyTo(f, request, Vnet), "ICMP echo reply");
        Assert.Equal(request.Length, n);
    }

    [NetnsFact]
    public void A_frame_of_IOV_MAX_scattered_segments_is_written_whole()
    {
        using var link = NamespacedTap.Create();
        byte[] request = new byte[Vnet + 14 + 20 + 8 + 1000];
        Frames.EchoRequest(request, Vnet, link.Tap.MacAddress, identifier: 0x1024, sequence: 7, payloadLength: 1000);

        // 1023 one-byte segments and one with the rest, each apart from its neighbours.
        int[] sizes = Enumerable.Repeat(1, TapQueue.MaxSegments - 1).Append(request.Length - (TapQueue.MaxSegments - 1)).ToArray();
        var pieces = new PinnedPieces(request, sizes, gap: 1);
        Assert.Equal(TapQueue.MaxSegments, pieces.Segments.Length);
        Assert.Equal(TapWriteResult.Written, link.Queue.Write(pieces.Segments, out int errno));
        Assert.Equal(0, errno);

        byte[] buffer = new byte[BufferSize];
        QueueWait.ForFrame(link.Queue, Vnet, buffer, f => Frames.IsEchoReplyTo(f, request, Vnet), "reply to the 1024-segment echo request");
    }

    [TheoryNeedingNamespaces]
    [InlineData("hdr_len past the end of the frame")]
    [InlineData("csum_start past the end of the frame")]
    [InlineData("unknown gso_type")]
    [InlineData("TCPV4 GSO on an ARP frame, gso_size 0")]
    [InlineData("shorter than an Ethernet header")]
    public void A_frame_with_a_bad_vnet_header_is_rejected_with_an_errno_and_the_queue_keeps_working(string fault)
    {
        using var link = NamespacedTap.Create();
        byte[] frame = new byte[Vnet + Frames.ArpLength];
        int length = Frames.ArpRequest(frame, Vnet, NamespacedTap.TapAddress);
        switch (fault)
        {
            case "hdr_len past the end of the frame":
                BitConverter.TryWriteBytes(frame.AsSpan(2), (ushort)2000);
                break;
            case "csum_start past the end of the frame":
                frame[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
                BitConverter.TryWriteBytes(frame.AsSpan(6), (ushort)100);
                BitConverter.TryWriteBytes(frame.AsSpan(8), (ushort)6);
                break;
            case "unknown gso_type":
                frame[1] = 0x77;
                BitConverter.TryWriteBytes(frame.AsSpan(4), (ushort)1000);
                break;
            case "TCPV4 GSO on an ARP frame, gso_size 0":
                frame[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
                break;
            case "shorter than an Ethernet header":
                length = Vnet + 10;
                break;
        }

        Assert.Equal(TapWriteResult.Rejected, link.Queue.Write(frame.AsSpan(0, length), out int errno));
        Assert.Equal(Errno.EINVAL, errno);

        // The same through writev.
        var pieces = new PinnedPieces(frame.AsSpan(0, length).ToArray(), [Vnet, length - Vnet], gap: 1);
        Assert.Equal(TapWriteResult.Rejected, link.Queue.Write(pieces.Segments, out errno));
        Assert.Equal(Errno.EINVAL, errno);

        // The queue is none the worse: a good request still gets its answer.
        Frames.ArpRequest(frame, Vnet, NamespacedTap.TapAddress);
        Assert.Equal(TapWriteResult.Written, link.Queue.Write(frame, out _));
        QueueWait.ForFrame(link.Queue, Vnet, new byte[BufferSize], f => Frames.IsArpReplyToPeer(f, Vnet), "ARP reply after the rejected frame");
    }

    [NetnsFact]
    public void A_frame_longer_than_the_buffer_is_cut_to_the_buffer_and_the_rest_dropped()
    {
        using var link = NamespacedTap.Create();
        byte[] request = new byte[Vnet + Frames.ArpLength];
        Frames.ArpRequest(request, Vnet, NamespacedTap.TapAddress);
        Assert.Equal(TapWriteResult.Written, link.Queue.Write(request, out _));
        Assert.Equal(TapWriteResult.Written, link.Queue.Write(request, out _));

        byte[] small = new byte[Vnet + 20];
        var clock = System.Diagnostics.Stopwatch.StartNew();
        int n;
        while ((n = link.Queue.Read(small)) == 0)
        {
            Assert.True(clock.Elapsed < QueueWait.Limit, "no ARP reply within the limit");
            QueueWait.WaitReadable(link.Tap.Queues, 100);
        }

        // The kernel stores what fits and says so: the count is the buffer's length, not the
        // frame's, which is why callers size buffers for the largest frame.
        Assert.Equal(small.Length, n);
        Assert.True(small.AsSpan(Vnet, 6).SequenceEqual(NamespacedTap.PeerMac));
        Assert.Equal(Frames.EtherTypeArp, System.Buffers.Binary.BinaryPrimitives.ReadUInt16BigEndian(small.AsSpan(Vnet + 12)));

        // The rest of the cut frame is gone; the next read is the second reply, whole.
        int second = QueueWait.ForFrame(link.Queue, Vnet, new byte[BufferSize], f => Frames.IsArpReplyToPeer(f, Vnet), "second ARP reply");
        Assert.Equal(Vnet + Frames.ArpLength, second);
    }

    [NetnsFact]
    public void Every_queue_of_a_multi_queue_tap_writes_and_replies_arrive_on_one_of_them()
    {
        using var link = NamespacedTap.Create(new TapOptions { Name = UniqueName.Interface(), Queues = 2 });
        byte[] buffer = new byte[BufferSize];
        byte[] request = new byte[Vnet + Frames.ArpLength];
        Frames.ArpRequest(request, Vnet, NamespacedTap.TapAddress);
        foreach (TapQueue queue in link.Tap.Queues)
        {
            Assert.Equal(TapWriteResult.Written, queue.Write(request, out _));
            QueueWait.ForFrame(link.Tap.Queues, Vnet, buffer, f => Frames.IsArpReplyToPeer(f, Vnet), $"ARP reply to queue {queue.Index}'s request");
        }
    }

    [NetnsFact]
    public void A_queue_registered_with_the_event_loop_wakes_it_when_a_frame_arrives()
    {
        using var link = NamespacedTap.Create();
        using var loop = new EpollEventLoop("t-tap");
        byte[] buffer = new byte[BufferSize];
        var replied = new ManualResetEventSlim();
        int wakeups = 0;
        using (loop.Add(link.Queue.Handle, EpollEvents.In, _ =>
        {
            Interlocked.Increment(ref wakeups);
            int n;
            while ((n = link.Queue.Read(buffer)) > 0)
            {
                if (Frames.IsArpReplyToPeer(buffer.AsSpan(0, n), Vnet))
                {
                    replied.Set();
                }
            }
        }))
        {
            loop.Start();
            byte[] request = new byte[Vnet + Frames.ArpLength];
            Frames.ArpRequest(request, Vnet, NamespacedTap.TapAddress);
            Assert.Equal(TapWriteResult.Written, link.Queue.Write(request, out _));
            Assert.True(replied.Wait(QueueWait.Limit), "the loop never saw the ARP reply");
            Assert.True(loop.Stop((int)QueueWait.Limit.TotalMilliseconds));
        }

        Assert.True(wakeups >= 1);
    }

    [NetnsFact]
    public void Steady_state_reads_and_writes_allocate_nothing()
    {
        using var link = NamespacedTap.Create();
        TapQueue queue = link.Queue;
        byte[] request = new byte[Vnet + Frames.ArpLength];
        Frames.ArpRequest(request, Vnet, NamespacedTap.TapAddress);
        byte[] buffer = new byte[BufferSize];
        var three = new PinnedPieces(request, [Vnet, Frames.EthernetHeader, 28], gap: 2);
        var many = new PinnedPieces(request, [.. Enumerable.Repeat(2, 20), request.Length - 40], gap: 2); // past the stackalloc'ed iovecs
        var scatter = new PinnedPieces(new byte[BufferSize], [Vnet, 100, BufferSize - Vnet - 100], gap: 0);
        var scatterMany = new PinnedPieces(new byte[BufferSize], [.. Enumerable.Repeat(4, 16), BufferSize - 64], gap: 0);
        Assert.True(many.Segments.Length > TapQueue.StackSegments);

        // Every write path (one span, a few stackalloc'ed iovecs, the preallocated iovecs) and
        // every read path (one span, readv into a few segments, readv into many), taken in turn.
        long rejected = 0;
        long[] replies = new long[3];
        int reader = 0;
        void Round()
        {
            rejected += queue.Write(request, out _) == TapWriteResult.Written ? 0 : 1;
            rejected += queue.Write(three.Segments, out _) == TapWriteResult.Written ? 0 : 1;
            rejected += queue.Write(many.Segments, out _) == TapWriteResult.Written ? 0 : 1;
            while (true)
            {
                int n = reader switch
                {
                    0 => queue.Read(buffer),
                    1 => queue.Read(scatter.Segments),
                    _ => queue.Read(scatterMany.Segments),
                };
                if (n == 0)
                {
                    break;
                }

                replies[reader]++;
                reader = (reader + 1) % 3;
            }
        }

        for (int i = 0; i < 500; i++)
        {
            Round();
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 2000; i++)
        {
            Round();
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0L, allocated);
        Assert.Equal(0L, rejected);
        Assert.All(replies, count => Assert.True(count > 0, $"replies per read path: {string.Join(", ", replies)}"));
    }

    // ---------------------------------------------------------------- helpers

    [GeneratedRegex("^tap[0-9]+$")]
    private static partial Regex TapName();

    private static string Mac(ReadOnlySpan<byte> mac) => Convert.ToHexStringLower(mac).Chunk(2).Select(c => new string(c)).Aggregate((a, b) => $"{a}:{b}");

    /// <summary>One feature's state from <c>ethtool -k</c> ("on" / "off", without "[fixed]").</summary>
    private static string Feature(string name, string feature)
    {
        string prefix = feature + ": ";
        string line = Command.Run("ethtool", "-k", name).Split('\n').Select(l => l.Trim()).First(l => l.StartsWith(prefix, StringComparison.Ordinal));
        return line[prefix.Length..].Split(' ')[0];
    }

    private static int FileStatusFlags(TapQueue queue)
    {
        const int F_GETFL = 3;
        return LibC.fcntl(queue.Handle.Value, F_GETFL, 0);
    }

    private static bool IsCloseOnExec(TapQueue queue)
    {
        const int F_GETFD = 1, FD_CLOEXEC = 1;
        return (LibC.fcntl(queue.Handle.Value, F_GETFD, 0) & FD_CLOEXEC) != 0;
    }
}

/// <summary>A theory that needs a TAP interface.</summary>
public sealed class TheoryNeedingTapAttribute : TheoryAttribute
{
    public TheoryNeedingTapAttribute()
    {
        Skip = TapEnvironment.SkipReason;
    }
}

/// <summary>A theory that moves a TAP into a network namespace of its own.</summary>
public sealed class TheoryNeedingNamespacesAttribute : TheoryAttribute
{
    public TheoryNeedingNamespacesAttribute()
    {
        Skip = TapEnvironment.NamespaceSkipReason;
    }
}

/// <summary>
/// A frame cut into pieces, each in its own pinned buffer with <c>gap</c> filler bytes on
/// either side, described as <see cref="IoSegment"/>s: what a frame spread over guest pages
/// looks like to writev.
/// </summary>
internal sealed class PinnedPieces
{
    private readonly byte[] _memory;
    private readonly int[] _offsets;

    public PinnedPieces(byte[] frame, int[] sizes, int gap)
    {
        Assert.Equal(frame.Length, sizes.Sum());
        _memory = GC.AllocateArray<byte>(frame.Length + ((sizes.Length + 1) * gap), pinned: true);
        _memory.AsSpan().Fill(0xee);
        _offsets = new int[sizes.Length];
        Segments = new IoSegment[sizes.Length];
        nint baseAddress = Marshal.UnsafeAddrOfPinnedArrayElement(_memory, 0);
        int at = gap;
        int from = 0;
        for (int i = 0; i < sizes.Length; i++)
        {
            frame.AsSpan(from, sizes[i]).CopyTo(_memory.AsSpan(at));
            _offsets[i] = at;
            Segments[i] = new IoSegment(baseAddress + at, (uint)sizes[i], guest: (ulong)(0x1000_0000 + at));
            at += sizes[i] + gap;
            from += sizes[i];
        }
    }

    public IoSegment[] Segments { get; }

    /// <summary>The first <paramref name="length"/> bytes the segments hold, in order.</summary>
    public byte[] Gather(int length)
    {
        byte[] result = new byte[length];
        int done = 0;
        for (int i = 0; i < Segments.Length && done < length; i++)
        {
            int take = Math.Min((int)Segments[i].Length, length - done);
            _memory.AsSpan(_offsets[i], take).CopyTo(result.AsSpan(done));
            done += take;
        }

        return result;
    }
}
