#!/usr/bin/env bash
# Prepares what the QEMU guest tests need, idempotently:
#   - the Debian packages qemu-system-x86, qemu-utils, busybox-static, cpio, xz-utils
#     (installed with apt-get only when missing; that needs root);
#   - the Debian guest kernel: the package `apt-cache depends linux-image-amd64` names, fetched
#     with `apt-get download` and unpacked with `dpkg -x` (never installed), from which the cache
#     keeps vmlinuz, an uncompressed vmlinux (PVH boot, ~2 s instead of ~5.5 s under TCG) and the
#     modules the test guests need plus everything they depend on: vfio-pci (the VFIO guests),
#     virtio_pci + virtio_net (the guests whose NIC is a vhost-user virtio-net device) and tun
#     (/dev/net/tun, for the link guests' TAP). In Debian's kernel virtio, virtio_ring,
#     virtio_pci_modern_dev, virtio_pci_legacy_dev, virtio_pci, failover, net_failover, virtio_net
#     and tun are all modules (=m; tun depends on nothing). A cache prepared earlier with fewer
#     modules is prepared again (the kernel package is fetched once more).
# Cache: ${PCIVIRTIO_GUEST_CACHE:-/var/tmp/pcivirtio-guest}. The result is described by
# $CACHE/guest.env (shell variables, also read by tests/Guest.Support):
#   KERNEL_PACKAGE, KERNEL_VERSION, VMLINUZ, VMLINUX (empty when not extracted),
#   MODULES_ROOT (holds lib/modules/$KERNEL_VERSION with a modules.dep for busybox modprobe),
#   MODULES_LOAD (the kept modules' paths relative to MODULES_ROOT, in load order).
# Options (environment):
#   PCIVIRTIO_GUEST_MODULES   modules to keep (default: the vfio-pci, virtio-net and TAP sets below);
#                             dependencies are added.
#   PCIVIRTIO_GUEST_KERNEL_PKG  a kernel package name instead of the one linux-image-amd64 depends on.
# Prints what it did; exits non-zero with the reason when it cannot prepare the guest.
set -euo pipefail

CACHE="${PCIVIRTIO_GUEST_CACHE:-/var/tmp/pcivirtio-guest}"
VFIO_MODULES="irqbypass vfio vfio_iommu_type1 vfio-pci-core vfio-pci"
# virtio_pci brings virtio, virtio_ring and the modern/legacy transport libraries; virtio_net brings
# net_failover and failover (all through their depends=).
VIRTIO_NET_MODULES="virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"
# tun gives /dev/net/tun (the link guests run 'pcivirtio link', which makes a TAP).
TAP_MODULES="tun"
MODULES="${PCIVIRTIO_GUEST_MODULES:-$VFIO_MODULES $VIRTIO_NET_MODULES $TAP_MODULES}"
APT_PACKAGES=(qemu-system-x86 qemu-utils busybox-static cpio xz-utils)

log() { echo "prepare.sh [${SECONDS}s]: $*"; }
die() { echo "prepare.sh: error: $*" >&2; exit 1; }

mkdir -p "$CACHE"
# One preparation at a time (parallel test runs share the cache).
exec 9>"$CACHE/.lock"
flock -w 900 9 || die "timed out waiting for $CACHE/.lock"

apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ] && [ "$(id -u)" = 0 ]; then
        log "apt-get update"
        apt-get update -qq || die "apt-get update failed"
        apt_updated=1
    fi
}

# 1. Host packages.
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing Debian packages ${missing[*]}; run as root (apt-get install -y ${missing[*]})"
    apt_update
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
fi
for cmd in qemu-system-x86_64 cpio xz; do
    command -v "$cmd" >/dev/null || die "$cmd not found after installing ${APT_PACKAGES[*]}"
done
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null || die "/bin/busybox (busybox-static) not usable"

# 2. Which kernel package.
kernel_package() { apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'; }
KPKG="${PCIVIRTIO_GUEST_KERNEL_PKG:-}"
if [ -z "$KPKG" ]; then
    KPKG=$(kernel_package || true)
    if [ -z "$KPKG" ]; then
        apt_update
        KPKG=$(kernel_package || true)
    fi
fi
if [ -z "$KPKG" ]; then
    # No package lists (and not root to fetch them): a kernel prepared earlier still serves.
    if [ -f "$CACHE/guest.env" ]; then
        log "warning: apt-cache names no linux-image-amd64 dependency; keeping the kernel prepared earlier"
        cat "$CACHE/guest.env"
        exit 0
    fi
    die "apt-cache depends linux-image-amd64 names no kernel package (run as root so apt-get update can fetch the package lists)"
fi

KDIR="$CACHE/kernel/$KPKG"
norm() { echo "${1//-/_}"; }
want_key=$(for m in $MODULES; do norm "$m"; done | sort -u)

# Ready when a kernel prepared earlier kept every module wanted now (perhaps more).
have_all() {
    [ -f "$KDIR/ready" ] || return 1
    local m
    for m in $want_key; do grep -qx "$m" "$KDIR/modules.requested" 2>/dev/null || return 1; done
}
if have_all; then
    log "kernel $KPKG already prepared in $KDIR"
else
    # 3. Fetch and unpack the kernel package.
    mkdir -p "$CACHE/debs"
    deb=$(ls "$CACHE/debs/${KPKG}_"*.deb 2>/dev/null | head -n 1 || true)
    if [ -z "$deb" ]; then
        download() {  # as root, apt warns that _apt cannot write here: harmless
            (cd "$CACHE/debs" && apt-get download -q "$KPKG") 2>&1 | sed '/^W: Download is performed unsandboxed/d'
            return "${PIPESTATUS[0]}"
        }
        log "apt-get download $KPKG"
        if ! download; then
            # Stale package lists name a version the mirror dropped: refresh them once.
            apt_update
            download || die "apt-get download $KPKG failed"
        fi
        deb=$(ls "$CACHE/debs/${KPKG}_"*.deb 2>/dev/null | head -n 1 || true)
        [ -n "$deb" ] || die "apt-get download $KPKG left no .deb in $CACHE/debs"
    fi
    tmp=$(mktemp -d "$CACHE/unpack.XXXXXX")
    trap 'rm -rf "$tmp" "$KDIR.new"' EXIT
    log "dpkg -x $(basename "$deb")"
    dpkg -x "$deb" "$tmp/x" || die "dpkg -x $deb failed"
    KVER=$(ls "$tmp/x/lib/modules" | head -n 1)
    [ -n "$KVER" ] || die "$deb holds no lib/modules/<version>"
    vmlinuz="$tmp/x/boot/vmlinuz-$KVER"
    [ -f "$vmlinuz" ] || die "$deb holds no boot/vmlinuz-$KVER"

    rm -rf "$KDIR.new"
    mkdir -p "$KDIR.new/lib/modules/$KVER"
    cp "$vmlinuz" "$KDIR.new/vmlinuz"
    cp "$tmp/x/boot/config-$KVER" "$KDIR.new/config" 2>/dev/null || true

    # 4. The modules and their dependencies, from each module's .modinfo "depends=" (the package
    #    ships no modules.dep: depmod runs at install). Debian 12 ships uncompressed .ko files;
    #    .ko.xz / .ko.zst are decompressed in case a later kernel compresses them.
    declare -A path_of=()
    while IFS= read -r rel; do
        base=${rel##*/}; base=${base%%.ko*}; base=${base//-/_}
        path_of[$base]=$rel
    done < <(cd "$tmp/x/lib/modules/$KVER" && find kernel -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')

    declare -A done_mod=() deps_of=()
    order=()
    modinfo_depends() {  # $1 = path of an uncompressed .ko
        tr '\0' '\n' < "$1" | sed -n 's/^depends=//p' | head -n 1 | tr ',' ' '
    }
    keep() {  # $1 = normalised module name; copies it (decompressed) after its dependencies
        local name=$1 rel src dst d
        [ -n "${done_mod[$name]:-}" ] && return 0
        rel=${path_of[$name]:-}
        [ -n "$rel" ] || die "module $name is not in $KPKG (built in? grep the package's boot/config-$KVER)"
        src="$tmp/x/lib/modules/$KVER/$rel"
        dst="$KDIR.new/lib/modules/$KVER/${rel%%.ko*}.ko"
        mkdir -p "$(dirname "$dst")"
        case "$src" in
            *.ko.xz) xz -dc "$src" > "$dst" ;;
            *.ko.zst) zstd -qdc "$src" > "$dst" || die "zstd needed for $src" ;;
            *.ko.gz) gzip -dc "$src" > "$dst" ;;
            *) cp "$src" "$dst" ;;
        esac
        done_mod[$name]=1
        deps_of[$name]=""
        for d in $(modinfo_depends "$dst"); do
            d=$(norm "$d")
            keep "$d"
            deps_of[$name]+=" $d"
        done
        order+=("$name")
    }
    for m in $MODULES; do keep "$(norm "$m")"; done

    # modules.dep for busybox modprobe (each line: module: its transitive dependencies), and
    # the load order for insmod.
    closure() {  # prints the transitive dependencies of $1, nearest last
        local d
        for d in ${deps_of[$1]}; do closure "$d"; echo "$d"; done
    }
    : > "$KDIR.new/lib/modules/$KVER/modules.dep"
    : > "$KDIR.new/modules.load"
    for name in "${order[@]}"; do
        rel=${path_of[$name]%%.ko*}.ko
        dep_paths=""
        for d in $(closure "$name" | awk '!seen[$0]++' | tac); do dep_paths+=" ${path_of[$d]%%.ko*}.ko"; done
        echo "$rel:$dep_paths" >> "$KDIR.new/lib/modules/$KVER/modules.dep"
        echo "lib/modules/$KVER/$rel" >> "$KDIR.new/modules.load"
    done
    log "modules (load order): ${order[*]}"

    # 5. An uncompressed vmlinux for PVH boot, as the kernel's scripts/extract-vmlinux finds it:
    #    the first compressed stream in vmlinuz that decompresses to an ELF file.
    vmlinux=""
    for magic in '\xfd7zXZ\x00' '\x28\xb5\x2f\xfd' '\x1f\x8b\x08'; do
        for off in $(LC_ALL=C grep -obUaP "$magic" "$vmlinuz" | cut -d: -f1); do
            case "$magic" in
                '\xfd7zXZ\x00') tail -c +$((off + 1)) "$vmlinuz" | xz -dc --single-stream > "$tmp/vmlinux" 2>/dev/null || true ;;
                '\x28\xb5\x2f\xfd') command -v zstd >/dev/null && { tail -c +$((off + 1)) "$vmlinuz" | zstd -qdc > "$tmp/vmlinux" 2>/dev/null || true; } ;;
                *) tail -c +$((off + 1)) "$vmlinuz" | gzip -dc > "$tmp/vmlinux" 2>/dev/null || true ;;
            esac
            if [ -s "$tmp/vmlinux" ] && [ "$(head -c 4 "$tmp/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ]; then
                vmlinux=1
                break 2
            fi
        done
    done
    if [ -n "$vmlinux" ] && grep -q '^CONFIG_PVH=y' "$KDIR.new/config" 2>/dev/null; then
        mv "$tmp/vmlinux" "$KDIR.new/vmlinux"
        log "extracted vmlinux ($(du -h "$KDIR.new/vmlinux" | cut -f1)) for PVH boot"
    else
        log "no PVH-bootable vmlinux extracted; guests boot vmlinuz"
    fi

    echo "$KVER" > "$KDIR.new/kernel.version"
    printf '%s\n' "${order[@]}" > "$KDIR.new/modules.requested"
    touch "$KDIR.new/ready"
    rm -rf "$KDIR"
    mv "$KDIR.new" "$KDIR"
    rm -f "$deb"
    # Kernels an older linux-image-amd64 named are of no further use.
    for old in "$CACHE/kernel/"*; do
        [ "$old" = "$KDIR" ] || rm -rf "$old"
    done
fi

# 6. Describe the result.
KVER=$(cat "$KDIR/kernel.version")
VMLINUX=""
[ -f "$KDIR/vmlinux" ] && VMLINUX="$KDIR/vmlinux"
cat > "$CACHE/guest.env.new" <<ENV
KERNEL_PACKAGE=$KPKG
KERNEL_VERSION=$KVER
VMLINUZ=$KDIR/vmlinuz
VMLINUX=$VMLINUX
MODULES_ROOT=$KDIR
MODULES_LOAD=$KDIR/modules.load
ENV
mv "$CACHE/guest.env.new" "$CACHE/guest.env"
cat "$CACHE/guest.env"
