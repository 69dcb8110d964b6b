using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using PciVirtio.VhostCore.Memory;
using PciVirtio.VhostCore.Ring;

namespace PciVirtio.VhostCore.VhostUser;

/// <summary>
/// The backend side of one vhost-user connection, independent of the transport: it is fed
/// one message at a time (header, payload, descriptors) and writes the reply. Every message
/// goes through the same steps: header check → descriptor count → size → gating protocol
/// feature → decode and validate → handle → reply (REPLY_ACK when negotiated and asked for).
/// Any invalid or unsupported message ends the session for good (sticky failure, logged with
/// the request and the reason) and releases everything it holds: ring descriptors, the
/// device's running queues and all memory mappings.
/// </summary>
public sealed class VhostUserSession : IDisposable
{
    /// <summary>The protocol features this session implements.</summary>
    public const VhostUserProtocolFeatures SupportedProtocolFeatures =
        VhostUserProtocolFeatures.Mq | VhostUserProtocolFeatures.Rarp | VhostUserProtocolFeatures.ReplyAck |
        VhostUserProtocolFeatures.NetMtu | VhostUserProtocolFeatures.Config | VhostUserProtocolFeatures.ResetDevice |
        VhostUserProtocolFeatures.ConfigureMemSlots | VhostUserProtocolFeatures.Status;

    private readonly IVhostUserDevice _device;
    private readonly IRegionMapper _mapper;
    private readonly ILogger? _logger;
    private readonly Vring[] _vrings;
    private readonly byte[] _replyBody = new byte[VhostUserConstants.MaxPayloadSize];
    private Generation _current;
    private bool _disposed;
    private byte _status;
    private bool _featuresSet;

    public VhostUserSession(string name, IVhostUserDevice device, IRegionMapper mapper, ILogger? logger = null)
    {
        Name = name;
        _device = device;
        _mapper = mapper;
        _logger = logger;
        _vrings = new Vring[device.QueueCount];
        for (int i = 0; i < _vrings.Length; i++)
        {
            _vrings[i] = new Vring();
        }

        _current = new Generation(MemoryTable.Empty, []);
        Acquire(_current);
        OfferedProtocolFeatures = device.ProtocolFeatures & SupportedProtocolFeatures;
    }

    public string Name { get; }

    /// <summary>True once a message was rejected; the session then accepts nothing more.</summary>
    public bool IsFailed => FailureReason is not null;

    /// <summary>Why the session ended, naming the request and the problem.</summary>
    public string? FailureReason { get; private set; }

    public VhostUserRequest FailedRequest { get; private set; }

    public bool IsOwned { get; private set; }

    public ulong AckedFeatures { get; private set; }

    public VhostUserProtocolFeatures OfferedProtocolFeatures { get; }

    public VhostUserProtocolFeatures AckedProtocolFeatures { get; private set; }

    /// <summary>The current memory table.</summary>
    public MemoryTable Memory => _current.Table;

    /// <summary>Mappings alive (current table plus older ones a running queue still uses).</summary>
    public int LiveMappings { get; private set; }

    public bool IsQueueRunning(int index) => _vrings[index].Running;

    private bool ProtocolFeaturesAcked => (AckedFeatures & VhostUserConstants.ProtocolFeaturesBit) != 0;

    /// <summary>
    /// Handles one message. Takes ownership of <paramref name="fds"/> (kept or closed before
    /// return). Writes the reply, if any, to <paramref name="reply"/>. Returns false when the
    /// session has failed (now or before); the transport should then close the connection.
    /// </summary>
    public bool Handle(in VhostUserHeader header, ReadOnlySpan<byte> payload, IReadOnlyList<SafeHandle> fds, IBufferWriter<byte> reply)
    {
        var owned = new SafeHandle?[fds.Count];
        for (int i = 0; i < owned.Length; i++)
        {
            owned[i] = fds[i];
        }

        try
        {
            if (IsFailed || _disposed)
            {
                return false;
            }

            if (_logger is not null)
            {
                VhostUserLog.Received(_logger, Name, header.Request, (uint)header.Flags, header.Size, fds.Count);
            }

            string? error = Process(header, payload, owned, reply);
            if (error is not null)
            {
                Fail(header.Request, error);
                return false;
            }

            return true;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            Fail(header.Request, $"{e.GetType().Name}: {e.Message}");
            return false;
        }
        finally
        {
            foreach (var fd in owned)
            {
                fd?.Dispose();
            }
        }
    }

    /// <summary>Ends the session from outside (the connection broke): stops the queues and
    /// releases descriptors and mappings.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        for (int i = 0; i < _vrings.Length; i++)
        {
            StopQueue(i);
            _vrings[i].ClearFds();
        }

        Release(_current);
        _current = new Generation(MemoryTable.Empty, []);
        if (_logger is not null)
        {
            VhostUserLog.Closed(_logger, Name);
        }
    }

    private void Fail(VhostUserRequest request, string reason)
    {
        if (IsFailed)
        {
            return;
        }

        FailedRequest = request;
        FailureReason = Enum.IsDefined(request) ? $"{request}: {reason}" : $"request {(uint)request}: {reason}";
        if (_logger is not null)
        {
            VhostUserLog.SessionFailed(_logger, Name, request, reason);
        }

        Dispose();
    }

    private readonly record struct Spec(int MaxFds, int MinSize, int MaxSize, bool HasReply,
        VhostUserProtocolFeatures Gate = VhostUserProtocolFeatures.None, bool NeedsOffered = false, bool NeedsAcked = false);

    private static Spec? SpecFor(VhostUserRequest request) => request switch
    {
        VhostUserRequest.VHOST_USER_GET_FEATURES => new(0, 0, 0, true),
        VhostUserRequest.VHOST_USER_SET_FEATURES => new(0, 8, 8, false),
        VhostUserRequest.VHOST_USER_SET_OWNER => new(0, 0, 0, false),
        VhostUserRequest.VHOST_USER_RESET_OWNER => new(0, 0, 0, false),
        VhostUserRequest.VHOST_USER_SET_MEM_TABLE => new(VhostUserConstants.MaxMemTableRegions,
            VhostUserMemoryTable.WireSize(1), VhostUserMemoryTable.WireSize(VhostUserConstants.MaxMemTableRegions), false),
        VhostUserRequest.VHOST_USER_SET_VRING_NUM => new(0, VringState.Size, VringState.Size, false),
        VhostUserRequest.VHOST_USER_SET_VRING_ADDR => new(0, VringAddress.Size, VringAddress.Size, false),
        VhostUserRequest.VHOST_USER_SET_VRING_BASE => new(0, VringState.Size, VringState.Size, false),
        VhostUserRequest.VHOST_USER_GET_VRING_BASE => new(0, VringState.Size, VringState.Size, true),
        VhostUserRequest.VHOST_USER_SET_VRING_KICK or VhostUserRequest.VHOST_USER_SET_VRING_CALL or VhostUserRequest.VHOST_USER_SET_VRING_ERR
            => new(1, 8, 8, false),
        VhostUserRequest.VHOST_USER_GET_PROTOCOL_FEATURES => new(0, 0, 0, true, NeedsOffered: true),
        VhostUserRequest.VHOST_USER_SET_PROTOCOL_FEATURES => new(0, 8, 8, false, NeedsOffered: true),
        VhostUserRequest.VHOST_USER_GET_QUEUE_NUM => new(0, 0, 0, true, VhostUserProtocolFeatures.Mq),
        VhostUserRequest.VHOST_USER_SET_VRING_ENABLE => new(0, VringState.Size, VringState.Size, false, NeedsOffered: true, NeedsAcked: true),
        VhostUserRequest.VHOST_USER_SEND_RARP => new(0, 8, 8, false, VhostUserProtocolFeatures.Rarp),
        VhostUserRequest.VHOST_USER_NET_SET_MTU => new(0, 8, 8, false, VhostUserProtocolFeatures.NetMtu),
        VhostUserRequest.VHOST_USER_GET_CONFIG => new(0, VhostUserConfig.HeaderSize, VhostUserConfig.HeaderSize + VhostUserConstants.MaxConfigSize, true,
            VhostUserProtocolFeatures.Config),
        VhostUserRequest.VHOST_USER_SET_CONFIG => new(0, VhostUserConfig.HeaderSize, VhostUserConfig.HeaderSize + VhostUserConstants.MaxConfigSize, false,
            VhostUserProtocolFeatures.Config),
        VhostUserRequest.VHOST_USER_RESET_DEVICE => new(0, 0, 0, false, VhostUserProtocolFeatures.ResetDevice),
        VhostUserRequest.VHOST_USER_GET_MAX_MEM_SLOTS => new(0, 0, 0, true, VhostUserProtocolFeatures.ConfigureMemSlots),
        VhostUserRequest.VHOST_USER_ADD_MEM_REG => new(1, VhostUserSingleMemoryRegion.Size, VhostUserSingleMemoryRegion.Size, false,
            VhostUserProtocolFeatures.ConfigureMemSlots),
        VhostUserRequest.VHOST_USER_REM_MEM_REG => new(1, VhostUserSingleMemoryRegion.Size, VhostUserSingleMemoryRegion.Size, false,
            VhostUserProtocolFeatures.ConfigureMemSlots),
        VhostUserRequest.VHOST_USER_SET_STATUS => new(0, 8, 8, false, VhostUserProtocolFeatures.Status),
        VhostUserRequest.VHOST_USER_GET_STATUS => new(0, 0, 0, true, VhostUserProtocolFeatures.Status),
        _ => null,
    };

    private string? Process(in VhostUserHeader header, ReadOnlySpan<byte> payload, SafeHandle?[] fds, IBufferWriter<byte> reply)
    {
        // 1. header
        if (!header.Validate(out string? error))
        {
            return error;
        }

        var spec = SpecFor(header.Request);
        if (spec is not { } s)
        {
            return Enum.IsDefined(header.Request)
                ? "request is not supported by this backend"
                : $"unknown request {(uint)header.Request}";
        }

        // 2. descriptor count
        if (fds.Length > s.MaxFds)
        {
            return $"{fds.Length} file descriptors attached; this request takes at most {s.MaxFds}";
        }

        // 3. size
        if (header.Size < s.MinSize || header.Size > s.MaxSize)
        {
            return s.MinSize == s.MaxSize
                ? $"payload size {header.Size}, expected {s.MinSize}"
                : $"payload size {header.Size}, expected {s.MinSize}..{s.MaxSize}";
        }

        if (payload.Length != header.Size)
        {
            return $"header size {header.Size} but {payload.Length} payload bytes arrived";
        }

        // 4. gating feature
        if (s.Gate != VhostUserProtocolFeatures.None && (AckedProtocolFeatures & s.Gate) == 0)
        {
            return $"requires protocol feature {s.Gate}, which was not negotiated";
        }

        if (s.NeedsOffered && (_device.Features & VhostUserConstants.ProtocolFeaturesBit) == 0)
        {
            return "VHOST_USER_F_PROTOCOL_FEATURES is not offered by this device";
        }

        // QEMU enables and disables rings (virtio_net_set_queue_pairs) as soon as it has read
        // GET_FEATURES, before its SET_FEATURES: only a SET_FEATURES without the bit rules it out.
        if (s.NeedsAcked && _featuresSet && !ProtocolFeaturesAcked)
        {
            return "requires VHOST_USER_F_PROTOCOL_FEATURES to be negotiated (SET_FEATURES)";
        }

        // 5-6. decode, validate, handle
        ulong ack = 0;
        int replyLength = -1;
        error = header.Request switch
        {
            VhostUserRequest.VHOST_USER_GET_FEATURES => ReplyU64(_device.Features, out replyLength),
            VhostUserRequest.VHOST_USER_SET_FEATURES => SetFeatures(VhostUserU64.Read(payload).Value),
            VhostUserRequest.VHOST_USER_SET_OWNER => SetOwner(),
            VhostUserRequest.VHOST_USER_RESET_OWNER or VhostUserRequest.VHOST_USER_RESET_DEVICE => ResetDevice(),
            VhostUserRequest.VHOST_USER_SET_MEM_TABLE => SetMemTable(payload, fds),
            VhostUserRequest.VHOST_USER_SET_VRING_NUM => SetVringNum(VringState.Read(payload)),
            VhostUserRequest.VHOST_USER_SET_VRING_ADDR => SetVringAddr(VringAddress.Read(payload)),
            VhostUserRequest.VHOST_USER_SET_VRING_BASE => SetVringBase(VringState.Read(payload)),
            VhostUserRequest.VHOST_USER_GET_VRING_BASE => GetVringBase(VringState.Read(payload), out replyLength),
            VhostUserRequest.VHOST_USER_SET_VRING_KICK or VhostUserRequest.VHOST_USER_SET_VRING_CALL or VhostUserRequest.VHOST_USER_SET_VRING_ERR
                => SetVringFd(header.Request, VhostUserU64.Read(payload).Value, fds),
            VhostUserRequest.VHOST_USER_GET_PROTOCOL_FEATURES => ReplyU64((ulong)OfferedProtocolFeatures, out replyLength),
            VhostUserRequest.VHOST_USER_SET_PROTOCOL_FEATURES => SetProtocolFeatures(VhostUserU64.Read(payload).Value),
            VhostUserRequest.VHOST_USER_GET_QUEUE_NUM => ReplyU64(_device.QueueNum, out replyLength),
            VhostUserRequest.VHOST_USER_SET_VRING_ENABLE => SetVringEnable(VringState.Read(payload)),
            VhostUserRequest.VHOST_USER_SEND_RARP => SendRarp(payload),
            VhostUserRequest.VHOST_USER_NET_SET_MTU => SetMtu(VhostUserU64.Read(payload).Value, ref ack),
            VhostUserRequest.VHOST_USER_GET_CONFIG => GetConfig(payload, out replyLength),
            VhostUserRequest.VHOST_USER_SET_CONFIG => SetConfig(payload, ref ack),
            VhostUserRequest.VHOST_USER_GET_MAX_MEM_SLOTS => ReplyU64(VhostUserConstants.MaxMemSlots, out replyLength),
            VhostUserRequest.VHOST_USER_ADD_MEM_REG => AddMemReg(payload, fds),
            VhostUserRequest.VHOST_USER_REM_MEM_REG => RemMemReg(payload),
            VhostUserRequest.VHOST_USER_SET_STATUS => SetStatus(VhostUserU64.Read(payload).Value),
            VhostUserRequest.VHOST_USER_GET_STATUS => ReplyU64(_status, out replyLength),
            _ => "request is not supported by this backend",
        };
        if (error is not null)
        {
            return error;
        }

        // 7. reply
        if (s.HasReply)
        {
            WriteReply(reply, header.Request, _replyBody.AsSpan(0, replyLength));
        }
        else if (header.NeedReply && (AckedProtocolFeatures & VhostUserProtocolFeatures.ReplyAck) != 0)
        {
            Span<byte> body = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(body, ack);
            WriteReply(reply, header.Request, body);
        }

        return null;
    }

    private static void WriteReply(IBufferWriter<byte> reply, VhostUserRequest request, ReadOnlySpan<byte> body)
    {
        var span = reply.GetSpan(VhostUserConstants.HeaderSize + body.Length);
        new VhostUserHeader(request, VhostUserHeaderFlags.Version1 | VhostUserHeaderFlags.Reply, (uint)body.Length).Write(span);
        body.CopyTo(span[VhostUserConstants.HeaderSize..]);
        reply.Advance(VhostUserConstants.HeaderSize + body.Length);
    }

    private string? ReplyU64(ulong value, out int length)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(_replyBody, value);
        length = 8;
        return null;
    }

    private string? SetFeatures(ulong features)
    {
        ulong unknown = features & ~_device.Features;
        if (unknown != 0)
        {
            return $"features 0x{features:x} include bits 0x{unknown:x} that were not offered";
        }

        AckedFeatures = features;
        _featuresSet = true;
        _device.OnFeatures(features);
        return null;
    }

    private string? SetProtocolFeatures(ulong features)
    {
        ulong unknown = features & ~(ulong)OfferedProtocolFeatures;
        if (unknown != 0)
        {
            return $"protocol features 0x{features:x} include bits 0x{unknown:x} that were not offered";
        }

        AckedProtocolFeatures = (VhostUserProtocolFeatures)features;
        return null;
    }

    private string? SetOwner()
    {
        IsOwned = true;
        return null;
    }

    private string? ResetDevice()
    {
        for (int i = 0; i < _vrings.Length; i++)
        {
            StopQueue(i);
            _vrings[i].ClearFds();
            _vrings[i] = new Vring();
        }

        AckedFeatures = 0;
        _featuresSet = false;
        _status = 0;
        _device.Reset();
        return null;
    }

    private string? SetStatus(ulong status)
    {
        if (status > byte.MaxValue)
        {
            return $"status 0x{status:x} does not fit the virtio status byte";
        }

        _status = (byte)status;
        _device.OnStatus(_status);
        return null;
    }

    private string? SendRarp(ReadOnlySpan<byte> payload)
    {
        _device.OnRarp(payload[..6]);
        return null;
    }

    private string? SetMtu(ulong mtu, ref ulong ack)
    {
        if (mtu is < 68 or > 65535)
        {
            return $"MTU {mtu} is outside 68..65535";
        }

        if (!_device.OnMtu((uint)mtu))
        {
            ack = 1;
        }

        return null;
    }

    private string? GetConfig(ReadOnlySpan<byte> payload, out int length)
    {
        length = 0;
        if (!VhostUserConfig.TryRead(payload, out var config, out string? error))
        {
            return error;
        }

        var data = new byte[config!.Payload.Length];
        length = _device.TryGetConfig(config.Offset, data)
            ? new VhostUserConfig(config.Offset, config.Flags, data).Write(_replyBody)
            : 0; // the specification's "zero-length payload" error reply
        return null;
    }

    private string? SetConfig(ReadOnlySpan<byte> payload, ref ulong ack)
    {
        if (!VhostUserConfig.TryRead(payload, out var config, out string? error))
        {
            return error;
        }

        if (!_device.TrySetConfig(config!.Offset, config.Payload, config.Flags))
        {
            ack = 1;
        }

        return null;
    }

    // ---- memory ----

    private string? SetMemTable(ReadOnlySpan<byte> payload, SafeHandle?[] fds)
    {
        if (!VhostUserMemoryTable.TryRead(payload, fds.Length, out var message, out string? error))
        {
            return error;
        }

        var handles = new List<RegionHandle>(message!.Regions.Length);
        try
        {
            for (int i = 0; i < message.Regions.Length; i++)
            {
                handles.Add(new RegionHandle(_mapper.Map(fds[i]!, message.Regions[i])));
                LiveMappings++;
            }

            var regions = handles.Select(h => h.Mapping.Region).ToArray();
            if (!MemoryTable.TryCreate(regions, VhostUserConstants.MaxMemSlots, out var table, out error))
            {
                return error;
            }

            Install(new Generation(table, handles.ToArray()));
            handles.Clear();
            if (_logger is not null)
            {
                VhostUserLog.MemoryTable(_logger, Name, table.Count);
            }

            return null;
        }
        finally
        {
            foreach (var h in handles)
            {
                h.Mapping.Dispose();
                LiveMappings--;
            }
        }
    }

    private string? AddMemReg(ReadOnlySpan<byte> payload, SafeHandle?[] fds)
    {
        var message = VhostUserSingleMemoryRegion.Read(payload);
        if (!message.Validate(out string? error))
        {
            return $"region ({message.Region}): {error}";
        }

        if (fds.Length != 1)
        {
            return "missing file descriptor for the region";
        }

        if (_current.Table.Count >= VhostUserConstants.MaxMemSlots)
        {
            return $"a region beyond the {VhostUserConstants.MaxMemSlots} memory slots";
        }

        var handle = new RegionHandle(_mapper.Map(fds[0]!, message.Region));
        LiveMappings++;
        if (!_current.Table.TryAdd(handle.Mapping.Region, VhostUserConstants.MaxMemSlots, out var table, out error))
        {
            handle.Mapping.Dispose();
            LiveMappings--;
            return error;
        }

        Install(new Generation(table, [.. _current.Regions, handle]));
        return null;
    }

    private string? RemMemReg(ReadOnlySpan<byte> payload)
    {
        // Any descriptor that came along is closed unused (the specification allows one).
        var region = VhostUserSingleMemoryRegion.Read(payload).Region;
        if (!_current.Table.TryRemove(region.GuestPhysAddr, region.Size, region.UserAddr, out var table, out var removed))
        {
            return $"no region matches {region}";
        }

        Install(new Generation(table, _current.Regions.Where(h => h.Mapping.Region != removed).ToArray()));
        return null;
    }

    /// <summary>Makes <paramref name="next"/> current and moves running queues onto it; the
    /// old table's mappings are released once no queue uses them.</summary>
    private void Install(Generation next)
    {
        foreach (var h in next.Regions)
        {
            h.Refs++;
        }

        Acquire(next);
        var old = _current;
        _current = next;
        for (int i = 0; i < _vrings.Length; i++)
        {
            var v = _vrings[i];
            if (!v.Running)
            {
                continue;
            }

            if (_device.UpdateMemory(i, new GuestMemory<RamAccessor>(next.Table, default)))
            {
                Acquire(next);
                Release(v.Memory!);
                v.Memory = next;
            }
            else if (_logger is not null)
            {
                VhostUserLog.MemoryUpdateRefused(_logger, Name, i);
            }
        }

        Release(old);
    }

    private static void Acquire(Generation g) => g.Users++;

    private void Release(Generation g)
    {
        if (--g.Users > 0)
        {
            return;
        }

        foreach (var h in g.Regions)
        {
            if (--h.Refs == 0)
            {
                h.Mapping.Dispose();
                LiveMappings--;
            }
        }
    }

    // ---- vrings ----

    private string? CheckIndex(uint index, out Vring vring)
    {
        vring = null!;
        if (index >= (uint)_vrings.Length)
        {
            return $"vring index {index} out of range (queue count {_vrings.Length})";
        }

        vring = _vrings[index];
        return null;
    }

    private string? SetVringNum(VringState s)
    {
        if (CheckIndex(s.Index, out var v) is { } error)
        {
            return error;
        }

        if (!SplitRingLayout.IsValidSize((int)Math.Min(s.Num, int.MaxValue)) || s.Num > VhostUserConstants.MaxQueueSize)
        {
            return $"vring {s.Index}: queue size {s.Num} is not a power of two from 1 to {VhostUserConstants.MaxQueueSize}";
        }

        if (v.Running)
        {
            return $"vring {s.Index}: size change while the ring runs";
        }

        v.Num = (int)s.Num;
        v.Addr = null; // the ring areas depend on the size: SET_VRING_ADDR must follow
        return null;
    }

    private string? SetVringAddr(VringAddress a)
    {
        if (!a.Validate(_vrings.Length, out string? error))
        {
            return error;
        }

        var v = _vrings[a.Index];
        if (v.Running)
        {
            return $"vring {a.Index}: address change while the ring runs";
        }

        if (v.Num == 0)
        {
            return $"vring {a.Index}: SET_VRING_ADDR before SET_VRING_NUM";
        }

        if (TranslateRing(v.Num, a, out _) is { } reason)
        {
            return $"vring {a.Index}: {reason}";
        }

        v.Addr = a;
        return null;
    }

    /// <summary>Frontend virtual addresses → guest-physical, each area wholly inside one region,
    /// then the ring engine's own checks (alignment, translation).</summary>
    private string? TranslateRing(int num, VringAddress a, out QueueState state)
    {
        state = default;
        var table = _current.Table;
        if (!table.TryUserToGuest(a.DescUser, SplitRingLayout.DescTableBytes(num), out ulong desc))
        {
            return $"descriptor table at user address 0x{a.DescUser:x} is not in the memory table";
        }

        if (!table.TryUserToGuest(a.AvailUser, SplitRingLayout.AvailRingBytes(num), out ulong avail))
        {
            return $"avail ring at user address 0x{a.AvailUser:x} is not in the memory table";
        }

        if (!table.TryUserToGuest(a.UsedUser, SplitRingLayout.UsedRingBytes(num), out ulong used))
        {
            return $"used ring at user address 0x{a.UsedUser:x} is not in the memory table";
        }

        state = new QueueState { Size = num, DescTable = desc, AvailRing = avail, UsedRing = used, Features = (VirtioFeatures)AckedFeatures };
        return state.Validate(table, out string reason, out _) == QueueError.None ? null : reason;
    }

    private string? SetVringBase(VringState s)
    {
        if (CheckIndex(s.Index, out var v) is { } error)
        {
            return error;
        }

        if (s.Num > ushort.MaxValue)
        {
            return $"vring {s.Index}: base {s.Num} does not fit a split ring's 16-bit index";
        }

        if (v.Running)
        {
            return $"vring {s.Index}: base change while the ring runs";
        }

        v.Base = (ushort)s.Num;
        return null;
    }

    private string? GetVringBase(VringState s, out int length)
    {
        length = 0;
        if (CheckIndex(s.Index, out var v) is { } error)
        {
            return error;
        }

        StopQueue((int)s.Index);

        // The ring is stopped; it starts again on the next SET_VRING_KICK.
        v.Kick?.Dispose();
        v.Kick = null;
        v.KickSet = false;
        new VringState(s.Index, v.Base).Write(_replyBody);
        length = VringState.Size;
        return null;
    }

    private string? SetVringFd(VhostUserRequest request, ulong value, SafeHandle?[] fds)
    {
        ulong unknown = value & ~(VhostUserConstants.VringIndexMask | VhostUserConstants.VringNoFdFlag);
        if (unknown != 0)
        {
            return $"unknown bits 0x{unknown:x} in 0x{value:x}";
        }

        uint index = (uint)(value & VhostUserConstants.VringIndexMask);
        if (CheckIndex(index, out var v) is { } error)
        {
            return error;
        }

        bool noFd = (value & VhostUserConstants.VringNoFdFlag) != 0;
        if (noFd && fds.Length != 0)
        {
            return $"vring {index}: NOFD flag set but a file descriptor came with the message";
        }

        if (!noFd && fds.Length != 1)
        {
            return $"vring {index}: missing file descriptor (and no NOFD flag)";
        }

        SafeHandle? fd = noFd ? null : fds[0];
        if (!noFd)
        {
            fds[0] = null; // kept
        }

        switch (request)
        {
            case VhostUserRequest.VHOST_USER_SET_VRING_KICK:
                // A new kick (re)starts the ring, from where a running ring was.
                StopQueue((int)index);
                v.Kick?.Dispose();
                v.Kick = fd;
                v.KickSet = true;
                return TryStart((int)index);
            case VhostUserRequest.VHOST_USER_SET_VRING_CALL:
                bool running = v.Running;
                StopQueue((int)index);
                v.Call?.Dispose();
                v.Call = fd;
                return running ? TryStart((int)index) : null;
            default:
                v.Err?.Dispose();
                v.Err = fd;
                return null;
        }
    }

    private string? SetVringEnable(VringState s)
    {
        if (CheckIndex(s.Index, out var v) is { } error)
        {
            return error;
        }

        if (s.Num > 1)
        {
            return $"vring {s.Index}: enable value {s.Num} is not 0 or 1";
        }

        v.Enabled = s.Num == 1;
        if (!v.Enabled)
        {
            StopQueue((int)s.Index);
            return null;
        }

        return TryStart((int)s.Index);
    }

    /// <summary>Starts the ring when everything is there: size, addresses, a kick (or NOFD),
    /// memory, and enabled (implicitly, without VHOST_USER_F_PROTOCOL_FEATURES).</summary>
    private string? TryStart(int index)
    {
        var v = _vrings[index];
        if (v.Running || v.Num == 0 || v.Addr is not { } addr || !v.KickSet || (ProtocolFeaturesAcked && !v.Enabled) || _current.Table.Count == 0)
        {
            return null;
        }

        if (TranslateRing(v.Num, addr, out var state) is { } reason)
        {
            return $"vring {index}: {reason}";
        }

        var memory = new GuestMemory<RamAccessor>(_current.Table, default);
        _current.Table.TryTranslate(state.UsedRing + SplitRingLayout.UsedIdxOffset, 2, out nint usedIdx);
        state = state with { NextAvail = v.Base, NextUsed = memory.Access.LoadAcquireU16(usedIdx) };
        if (!_device.StartQueue(index, state, memory, v.Kick, v.Call))
        {
            return $"vring {index}: the device could not start the queue";
        }

        v.Running = true;
        Acquire(_current);
        v.Memory = _current;
        if (_logger is not null)
        {
            VhostUserLog.QueueStarted(_logger, Name, index, state.Size, state.NextAvail);
        }

        return null;
    }

    private void StopQueue(int index)
    {
        var v = _vrings[index];
        if (!v.Running)
        {
            return;
        }

        var state = _device.StopQueue(index);
        v.Base = state.NextAvail;
        v.Running = false;
        Release(v.Memory!);
        v.Memory = null;
        if (_logger is not null)
        {
            VhostUserLog.QueueStopped(_logger, Name, index, v.Base);
        }
    }

    private sealed class Vring
    {
        public int Num;
        public ushort Base;
        public VringAddress? Addr;
        public SafeHandle? Kick;
        public bool KickSet;
        public SafeHandle? Call;
        public SafeHandle? Err;
        public bool Enabled;
        public bool Running;
        public Generation? Memory;

        public void ClearFds()
        {
            Kick?.Dispose();
            Call?.Dispose();
            Err?.Dispose();
            Kick = Call = Err = null;
            KickSet = false;
        }
    }

    private sealed class RegionHandle(IMappedRegion mapping)
    {
        public IMappedRegion Mapping { get; } = mapping;

        public int Refs { get; set; }
    }

    private sealed class Generation(MemoryTable table, RegionHandle[] regions)
    {
        public MemoryTable Table { get; } = table;

        public RegionHandle[] Regions { get; } = regions;

        public int Users { get; set; }
    }
}
