namespace PciVirtio.VhostCore.VhostUser;

/// <summary>Front-end requests, numbered and named as in the vhost-user specification
/// (QEMU docs/interop/vhost-user.rst, "Front-end message types"), so logs and code read
/// like the specification.</summary>
#pragma warning disable CA1707 // the specification's names, underscores included
public enum VhostUserRequest : uint
{
    VHOST_USER_NONE = 0,
    VHOST_USER_GET_FEATURES = 1,
    VHOST_USER_SET_FEATURES = 2,
    VHOST_USER_SET_OWNER = 3,
    VHOST_USER_RESET_OWNER = 4,
    VHOST_USER_SET_MEM_TABLE = 5,
    VHOST_USER_SET_LOG_BASE = 6,
    VHOST_USER_SET_LOG_FD = 7,
    VHOST_USER_SET_VRING_NUM = 8,
    VHOST_USER_SET_VRING_ADDR = 9,
    VHOST_USER_SET_VRING_BASE = 10,
    VHOST_USER_GET_VRING_BASE = 11,
    VHOST_USER_SET_VRING_KICK = 12,
    VHOST_USER_SET_VRING_CALL = 13,
    VHOST_USER_SET_VRING_ERR = 14,
    VHOST_USER_GET_PROTOCOL_FEATURES = 15,
    VHOST_USER_SET_PROTOCOL_FEATURES = 16,
    VHOST_USER_GET_QUEUE_NUM = 17,
    VHOST_USER_SET_VRING_ENABLE = 18,
    VHOST_USER_SEND_RARP = 19,
    VHOST_USER_NET_SET_MTU = 20,
    VHOST_USER_SET_BACKEND_REQ_FD = 21,
    VHOST_USER_IOTLB_MSG = 22,
    VHOST_USER_SET_VRING_ENDIAN = 23,
    VHOST_USER_GET_CONFIG = 24,
    VHOST_USER_SET_CONFIG = 25,
    VHOST_USER_CREATE_CRYPTO_SESSION = 26,
    VHOST_USER_CLOSE_CRYPTO_SESSION = 27,
    VHOST_USER_POSTCOPY_ADVISE = 28,
    VHOST_USER_POSTCOPY_LISTEN = 29,
    VHOST_USER_POSTCOPY_END = 30,
    VHOST_USER_GET_INFLIGHT_FD = 31,
    VHOST_USER_SET_INFLIGHT_FD = 32,
    VHOST_USER_GPU_SET_SOCKET = 33,
    VHOST_USER_RESET_DEVICE = 34,
    VHOST_USER_VRING_KICK = 35,
    VHOST_USER_GET_MAX_MEM_SLOTS = 36,
    VHOST_USER_ADD_MEM_REG = 37,
    VHOST_USER_REM_MEM_REG = 38,
    VHOST_USER_SET_STATUS = 39,
    VHOST_USER_GET_STATUS = 40,
    VHOST_USER_GET_SHARED_OBJECT = 41,
    VHOST_USER_SET_DEVICE_STATE_FD = 42,
    VHOST_USER_CHECK_DEVICE_STATE = 43,
}
#pragma warning restore CA1707

/// <summary>Protocol feature bits (GET/SET_PROTOCOL_FEATURES), as in the specification.</summary>
[Flags]
public enum VhostUserProtocolFeatures : ulong
{
    None = 0,
    Mq = 1UL << 0,
    LogShmfd = 1UL << 1,
    Rarp = 1UL << 2,
    ReplyAck = 1UL << 3,
    NetMtu = 1UL << 4,
    BackendReq = 1UL << 5,
    CrossEndian = 1UL << 6,
    CryptoSession = 1UL << 7,
    Pagefault = 1UL << 8,
    Config = 1UL << 9,
    BackendSendFd = 1UL << 10,
    HostNotifier = 1UL << 11,
    InflightShmfd = 1UL << 12,
    ResetDevice = 1UL << 13,
    InbandNotifications = 1UL << 14,
    ConfigureMemSlots = 1UL << 15,
    Status = 1UL << 16,
    XenMmap = 1UL << 17,
    SharedObject = 1UL << 18,
    DeviceState = 1UL << 19,
}

/// <summary>Header flags: the version in bits 0-1, then REPLY and NEED_REPLY.</summary>
[Flags]
public enum VhostUserHeaderFlags : uint
{
    None = 0,
    Version1 = 0x1,
    VersionMask = 0x3,
    Reply = 0x4,
    NeedReply = 0x8,
}

/// <summary>Constants of the protocol.</summary>
public static class VhostUserConstants
{
    /// <summary>VHOST_USER_F_PROTOCOL_FEATURES: bit 30 of GET/SET_FEATURES.</summary>
    public const ulong ProtocolFeaturesBit = 1UL << 30;

    /// <summary>VHOST_F_LOG_ALL: bit 26 (dirty-page logging for migration).</summary>
    public const ulong LogAllBit = 1UL << 26;

    public const int HeaderSize = 12;

    /// <summary>The most regions one SET_MEM_TABLE carries (VHOST_MEMORY_BASELINE_NREGIONS).</summary>
    public const int MaxMemTableRegions = 8;

    /// <summary>The most descriptors any message carries.</summary>
    public const int MaxFds = 8;

    /// <summary>The slots we report for GET_MAX_MEM_SLOTS (as QEMU and rust-vmm).</summary>
    public const int MaxMemSlots = 509;

    /// <summary>Largest config space payload (VHOST_USER_MAX_CONFIG_SIZE).</summary>
    public const int MaxConfigSize = 256;

    /// <summary>Largest payload of any supported message: GET/SET_CONFIG with a full config
    /// space (12 + 256 bytes; a full SET_MEM_TABLE is 8 + 8 * 32 = 264).</summary>
    public const int MaxPayloadSize = 12 + MaxConfigSize;

    /// <summary>In SET_VRING_KICK/CALL/ERR: no descriptor accompanies the message.</summary>
    public const ulong VringNoFdFlag = 0x100;

    public const ulong VringIndexMask = 0xff;

    /// <summary>VHOST_VRING_F_LOG in SET_VRING_ADDR's flags.</summary>
    public const uint VringFlagLog = 0x1;

    public const int MaxQueueSize = 32768;
}
