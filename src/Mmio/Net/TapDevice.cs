using PciVirtio.Mmio.Interop;
using PciVirtio.Mmio.Net.Interop;
using Tmds.Linux;

namespace PciVirtio.Mmio.Net;

/// <summary>
/// A Linux TAP interface: an Ethernet device whose "wire" is a set of fds on /dev/net/tun,
/// one per queue (<see cref="TapQueue"/>). The backend of a vhost-user virtio-net device (a
/// guest's frames go to the host kernel and back) and the host end of a PCIe link.
/// <para>
/// Queue-level settings go through the queue fds (TUN* ioctls and the MAC address), so they
/// keep working after the interface is moved to another network namespace. Interface-level
/// settings (<see cref="Mtu"/>, <see cref="SetUp"/>) go through an AF_INET socket, which
/// finds the interface by name in the calling thread's namespace; once the interface lives
/// elsewhere, set those there (ip -n NS link set ...). Errors are
/// <see cref="NativeCallException"/>s naming the request and the interface, e.g.
/// "ioctl(TUNSETIFF) on pv0 failed: EBUSY (Device or resource busy)".
/// </para>
/// </summary>
public sealed unsafe class TapDevice : IDisposable
{
    /// <summary>The clone device every queue is opened from.</summary>
    public const string ClonePath = "/dev/net/tun";

    private readonly TapQueue[] _queues;
    private bool _disposed;

    private TapDevice(string name, int interfaceIndex, int vnetHeaderSize, TapQueue[] queues)
    {
        Name = name;
        InterfaceIndex = interfaceIndex;
        VnetHeaderSize = vnetHeaderSize;
        _queues = queues;
    }

    /// <summary>The interface name the kernel gave (read back from TUNSETIFF).</summary>
    public string Name { get; }

    /// <summary>The interface index, as seen when the device was created.</summary>
    public int InterfaceIndex { get; }

    public IReadOnlyList<TapQueue> Queues => _queues;

    /// <summary>The vnet header in front of every frame: 0, 10 or 12 bytes.</summary>
    public int VnetHeaderSize { get; }

    /// <summary>The offloads last set with <see cref="SetOffloads"/> (none until then: the
    /// kernel then hands us only complete, checksummed frames of at most the MTU).</summary>
    public TunOffloads Offloads { get; private set; }

    /// <summary>
    /// Opens a TAP: /dev/net/tun once per queue (O_RDWR | O_CLOEXEC, O_NONBLOCK when asked),
    /// each attached with TUNSETIFF (IFF_TAP | IFF_NO_PI, IFF_VNET_HDR with a header,
    /// IFF_MULTI_QUEUE with more than one queue), then TUNSETVNETHDRSZ. The first queue creates
    /// the interface (or attaches to an existing TAP of that name); the others join it by the
    /// name the kernel returned. On any failure every fd opened so far is closed.
    /// </summary>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    /// <exception cref="NativeCallException">The kernel refused: EPERM without CAP_NET_ADMIN,
    /// EBUSY for a name a single-queue TAP already has open, EINVAL for a name used by another
    /// kind of device or by a TAP whose multi-queue mode differs.</exception>
    public static TapDevice Create(TapOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        Validate(options);
        var flags = TunFlags.Tap | TunFlags.NoPacketInfo
            | (options.VnetHeaderSize > 0 ? TunFlags.VnetHeader : TunFlags.None)
            | (options.Queues > 1 ? TunFlags.MultiQueue : TunFlags.None);
        int openFlags = LibC.O_RDWR | LibC.O_CLOEXEC | (options.NonBlocking ? LibC.O_NONBLOCK : 0);

        var handles = new List<FileDescriptor>(options.Queues);
        try
        {
            string? name = options.Name;
            for (int i = 0; i < options.Queues; i++)
            {
                FileDescriptor handle = OpenClone(openFlags);
                handles.Add(handle);
                IfReq request = IfReq.For(name);
                request.Flags = (ushort)flags;
                string subject = options.Queues == 1 ? name ?? "a new tap" : $"{name ?? "a new tap"} queue {i}";
                Ioctl(handle, TunIoctl.SetIff, &request, TunIoctl.SetIffCall, subject);

                // Queue 0 learns the name (the kernel's choice for null or a "%d" template);
                // the others must join that interface, not make their own.
                name = request.ReadName();
            }

            if (options.VnetHeaderSize > 0)
            {
                int size = options.VnetHeaderSize;
                Ioctl(handles[0], TunIoctl.SetVnetHeaderSize, &size, TunIoctl.SetVnetHeaderSizeCall, name!);
            }

            int index = InterfaceRequest(name!, TunIoctl.GetInterfaceIndex, TunIoctl.GetInterfaceIndexCall).Value;
            var queues = new TapQueue[handles.Count];
            for (int i = 0; i < queues.Length; i++)
            {
                queues[i] = new TapQueue(i, handles[i], name!, options.VnetHeaderSize);
            }

            return new TapDevice(name!, index, options.VnetHeaderSize, queues);
        }
        catch
        {
            foreach (FileDescriptor handle in handles)
            {
                handle.Dispose();
            }

            throw;
        }
    }

    /// <summary>TUNSETOFFLOAD: which unfinished frames the kernel may hand us (see
    /// <see cref="TunOffloads"/> for the combinations it accepts). Only meaningful with a vnet
    /// header, which is where the kernel describes them.</summary>
    public void SetOffloads(TunOffloads offloads)
    {
        ThrowIfDisposed();
        Ioctl(_queues[0].Handle, TunIoctl.SetOffload, (void*)(nuint)(uint)offloads, TunIoctl.SetOffloadCall, Name);
        Offloads = offloads;
    }

    /// <summary>TUNSETCARRIER: carrier on or off, as the link behind the TAP comes up or goes
    /// down (the kernel reports it as operstate and stops routing through a carrier-less
    /// interface). A new TAP has carrier as soon as a queue is attached.</summary>
    public void SetCarrier(bool on)
    {
        ThrowIfDisposed();
        int value = on ? 1 : 0;
        Ioctl(_queues[0].Handle, TunIoctl.SetCarrier, &value, TunIoctl.SetCarrierCall, Name);
    }

    /// <summary>The interface MTU (SIOCGIFMTU / SIOCSIFMTU). A TAP takes 68 to 65521, so that
    /// a frame with its Ethernet header stays within 65535 bytes; the kernel refuses others
    /// with EINVAL. Looked up by name in the calling thread's network namespace.</summary>
    public int Mtu
    {
        get
        {
            ThrowIfDisposed();
            return InterfaceRequest(Name, TunIoctl.GetMtu, TunIoctl.GetMtuCall).Value;
        }

        set
        {
            ThrowIfDisposed();

            // Unchanged: no SIOCSIFMTU, which needs CAP_NET_ADMIN (see SetUp).
            if (InterfaceRequest(Name, TunIoctl.GetMtu, TunIoctl.GetMtuCall).Value == value)
            {
                return;
            }

            IfReq request = IfReq.For(Name);
            request.Value = value;
            InterfaceRequest(ref request, TunIoctl.SetMtu, TunIoctl.SetMtuCall);
        }
    }

    /// <summary>Whether the interface is administratively up (IFF_UP; SIOCGIFFLAGS).</summary>
    public bool IsUp
    {
        get
        {
            ThrowIfDisposed();
            var flags = (InterfaceFlags)InterfaceRequest(Name, TunIoctl.GetInterfaceFlags, TunIoctl.GetInterfaceFlagsCall).Flags;
            return flags.HasFlag(InterfaceFlags.Up);
        }
    }

    /// <summary>
    /// The MAC address of the interface (6 bytes; SIOCGIFHWADDR / SIOCSIFHWADDR on the queue
    /// fd). The kernel picks a random locally administered one at creation. Setting it needs a
    /// unicast, non-zero address.
    /// </summary>
    public byte[] MacAddress
    {
        get
        {
            ThrowIfDisposed();
            IfReq request = IfReq.For(Name);
            Ioctl(_queues[0].Handle, TunIoctl.GetHardwareAddress, &request, TunIoctl.GetHardwareAddressCall, Name);
            return new ReadOnlySpan<byte>(request.HardwareAddress, IfReq.HardwareAddressLength).ToArray();
        }

        set
        {
            ArgumentNullException.ThrowIfNull(value);
            if (value.Length != IfReq.HardwareAddressLength)
            {
                throw new ArgumentException($"a MAC address is {IfReq.HardwareAddressLength} bytes, not {value.Length}", nameof(value));
            }

            if ((value[0] & 1) != 0 || !value.AsSpan().ContainsAnyExcept((byte)0))
            {
                throw new ArgumentException($"{Convert.ToHexString(value)} is not a unicast address (multicast bit set, or all zero)", nameof(value));
            }

            ThrowIfDisposed();
            IfReq request = IfReq.For(Name);
            request.HardwareFamily = TunIoctl.ArpHardwareEther;
            value.CopyTo(new Span<byte>(request.HardwareAddress, IfReq.HardwareAddressLength));
            Ioctl(_queues[0].Handle, TunIoctl.SetHardwareAddress, &request, TunIoctl.SetHardwareAddressCall, Name);
        }
    }

    /// <summary>Brings the interface administratively up or down (IFF_UP through
    /// SIOCGIFFLAGS / SIOCSIFFLAGS). The kernel refuses writes to a TAP that is down (EIO).</summary>
    public void SetUp(bool up)
    {
        ThrowIfDisposed();
        IfReq request = InterfaceRequest(Name, TunIoctl.GetInterfaceFlags, TunIoctl.GetInterfaceFlagsCall);
        var flags = (InterfaceFlags)request.Flags;
        var wanted = up ? flags | InterfaceFlags.Up : flags & ~InterfaceFlags.Up;
        if (wanted == flags)
        {
            // Already so: asking again would need CAP_NET_ADMIN, which a service attaching to
            // a TAP its administrator created (owned by the service's user) does not have.
            return;
        }

        request.Flags = (ushort)wanted;
        InterfaceRequest(ref request, TunIoctl.SetInterfaceFlags, TunIoctl.SetInterfaceFlagsCall);
    }

    /// <summary>Closes every queue fd. The kernel deletes the interface with the last one
    /// (we never make it persistent). Queue calls afterwards throw
    /// <see cref="ObjectDisposedException"/>. An event-loop registration holds a reference
    /// on its fd, so a queue still registered stays open (and the interface with it) until
    /// that registration is disposed: remove registrations first.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        foreach (TapQueue queue in _queues)
        {
            queue.Handle.Dispose();
        }
    }

    public override string ToString() => Name;

    /// <summary>TUNGETIFF: the flags the kernel holds for the interface (tests check what
    /// TUNSETIFF really set).</summary>
    internal TunFlags ReadTunFlags()
    {
        ThrowIfDisposed();
        IfReq request = default;
        Ioctl(_queues[0].Handle, TunIoctl.GetIff, &request, TunIoctl.GetIffCall, Name);
        return (TunFlags)request.Flags;
    }

    /// <summary>TUNGETVNETHDRSZ: the vnet header size the kernel uses.</summary>
    internal int ReadVnetHeaderSize()
    {
        ThrowIfDisposed();
        int size = 0;
        Ioctl(_queues[0].Handle, TunIoctl.GetVnetHeaderSize, &size, TunIoctl.GetVnetHeaderSizeCall, Name);
        return size;
    }

    /// <summary>TUNGETFEATURES: the TUNSETIFF flags this kernel supports.</summary>
    internal TunFlags ReadSupportedFlags()
    {
        ThrowIfDisposed();
        uint features = 0;
        Ioctl(_queues[0].Handle, TunIoctl.GetFeatures, &features, TunIoctl.GetFeaturesCall, Name);
        return (TunFlags)features;
    }

    private static void Validate(TapOptions options)
    {
        if (options.Name is { } name)
        {
            if (name.Length == 0 || name.Length > TapOptions.MaxNameBytes)
            {
                throw new ArgumentException(
                    $"TapOptions.Name \"{name}\" is {name.Length} characters; an interface name has 1 to {TapOptions.MaxNameBytes} (or pass null for the kernel to choose)",
                    nameof(options));
            }

            // The kernel's own rule (dev_valid_name) forbids '/', ':' and white space, and "."
            // and ".."; we also keep to printable ASCII so the name reads the same everywhere.
            foreach (char c in name)
            {
                if (c is < '!' or > '~' or '/' or ':')
                {
                    throw new ArgumentException(
                        $"TapOptions.Name \"{name}\" contains '{c}' (U+{(int)c:X4}); an interface name is printable ASCII without '/', ':' or spaces",
                        nameof(options));
                }
            }

            if (name is "." or "..")
            {
                throw new ArgumentException($"TapOptions.Name \"{name}\" is not a valid interface name", nameof(options));
            }
        }

        if (options.Queues is < 1 or > TapOptions.MaxQueues)
        {
            throw new ArgumentException($"TapOptions.Queues is {options.Queues}; a TAP has 1 to {TapOptions.MaxQueues} queues", nameof(options));
        }

        if (options.VnetHeaderSize is not (0 or 10 or 12))
        {
            throw new ArgumentException(
                $"TapOptions.VnetHeaderSize is {options.VnetHeaderSize}; it is 0 (no header), 10 (virtio_net_hdr) or 12 (with num_buffers)",
                nameof(options));
        }
    }

    private static FileDescriptor OpenClone(int flags)
    {
        fixed (byte* path = "/dev/net/tun\0"u8)
        {
            while (true)
            {
                int fd = LibC.open(path, flags, 0);
                if (fd >= 0)
                {
                    return new FileDescriptor(fd);
                }

                int errno = LibC.errno;
                if (errno != Errno.EINTR)
                {
                    throw new NativeCallException("open", errno, ClonePath);
                }
            }
        }
    }

    /// <summary>ioctl on a queue fd, holding a reference on it so a concurrent Dispose cannot
    /// close (and the process reuse) the fd mid-call.</summary>
    private static void Ioctl(FileDescriptor handle, int request, void* argument, string call, string subject)
    {
        bool added = false;
        int errno = 0;
        try
        {
            handle.DangerousAddRef(ref added);
            if (LibC.ioctl(handle.Value, request, argument) < 0)
            {
                errno = LibC.errno;
            }
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }

        if (errno != 0)
        {
            throw new NativeCallException(call, errno, subject);
        }
    }

    /// <summary>An interface request by name through a throwaway AF_INET datagram socket; the
    /// kernel fills in <paramref name="request"/>.</summary>
    private static IfReq InterfaceRequest(string name, int request, string call)
    {
        IfReq argument = IfReq.For(name);
        InterfaceRequest(ref argument, request, call);
        return argument;
    }

    private static void InterfaceRequest(ref IfReq argument, int request, string call)
    {
        string name = argument.ReadName();
        using FileDescriptor socket = FileDescriptor.FromResult(
            LibC.socket(LibC.AF_INET, LibC.SOCK_DGRAM | LibC.SOCK_CLOEXEC, 0), "socket(AF_INET)", name);
        fixed (IfReq* p = &argument)
        {
            Ioctl(socket, request, p, call, name);
        }
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
}
