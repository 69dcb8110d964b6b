#!/bin/sh
# Test script for the VFIO guests (installed as /test.sh; /init has mounted /proc, /sys, /dev
# and loaded the vfio modules). It
#   1. finds the ivshmem-doorbell device (vendor 0x1af4, device 0x1110),
#   2. reads its IVPosition register (BAR0 + 8: the peer id the ivshmem server gave it),
#   3. binds it to vfio-pci (driver_override + drivers_probe) and prints
#        PCIVIRTIO-VFIO: ready group=/dev/vfio/N bdf=0000:00:03.0 ivposition=K
#   4. runs the guest program /bin/vfio-guest, when the initramfs has one, with the arguments
#      in /etc/vfio-guest.args (one per line) and VFIO_GROUP, VFIO_BDF, IVSHMEM_ID in its
#      environment. Its stdin is the serial console (lines the host sends with
#      GuestVm.SendLineAsync); each line it writes to stdout or stderr reaches the host as
#        PCIVIRTIO-PROG: <line>
#      and its exit status as "PCIVIRTIO-VFIO: program exit rc=N",
#   5. waits for one line from the host ("poweroff", or up to pcivirtio.wait= seconds, default
#      600) and returns, after which /init powers the guest off.
# Failures print "PCIVIRTIO-VFIO: error <reason>" and exit non-zero (the guest powers off too).
fail() { echo "PCIVIRTIO-VFIO: error $*"; exit 1; }

bdf=""
for dev in /sys/bus/pci/devices/*; do
    if [ "$(cat "$dev/vendor")" = 0x1af4 ] && [ "$(cat "$dev/device")" = 0x1110 ]; then
        bdf=${dev##*/}
        break
    fi
done
[ -n "$bdf" ] || fail "no ivshmem device (1af4:1110) under /sys/bus/pci/devices"
dev=/sys/bus/pci/devices/$bdf

# IVPosition, before vfio-pci owns the device: BAR0 is the first line of "resource".
bar0=$(head -n 1 "$dev/resource" | cut -d' ' -f1)
ivposition=$(devmem $((bar0 + 8)) 32 2>/dev/null) && ivposition=$((ivposition)) || ivposition=unknown

[ -e "$dev/iommu_group" ] || fail "$bdf has no IOMMU group (intel_iommu=on and -device intel-iommu?)"
group=$(basename "$(readlink "$dev/iommu_group")")
echo vfio-pci > "$dev/driver_override" || fail "cannot write $dev/driver_override"
echo "$bdf" > /sys/bus/pci/drivers_probe || fail "drivers_probe $bdf failed"
[ "$(basename "$(readlink "$dev/driver")")" = vfio-pci ] || fail "$bdf is not bound to vfio-pci"
[ -c "/dev/vfio/$group" ] || fail "/dev/vfio/$group missing"
echo "PCIVIRTIO-VFIO: ready group=/dev/vfio/$group bdf=$bdf ivposition=$ivposition uptime=$(cut -d' ' -f1 /proc/uptime)"

rc=0
if [ -x /bin/vfio-guest ]; then
    set --
    if [ -f /etc/vfio-guest.args ]; then
        while IFS= read -r arg || [ -n "$arg" ]; do set -- "$@" "$arg"; done < /etc/vfio-guest.args
    fi
    set -o pipefail
    VFIO_GROUP=/dev/vfio/$group VFIO_BDF=$bdf IVSHMEM_ID=$ivposition /bin/vfio-guest "$@" 2>&1 \
        | while IFS= read -r line || [ -n "$line" ]; do echo "PCIVIRTIO-PROG: $line"; done
    rc=$?
    set +o pipefail
    echo "PCIVIRTIO-VFIO: program exit rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
fi

wait_s=$(sed -n 's/.*pcivirtio\.wait=\([0-9]*\).*/\1/p' /proc/cmdline)
if read -r -t "${wait_s:-600}" command; then
    echo "PCIVIRTIO-VFIO: host said '$command'"
else
    echo "PCIVIRTIO-VFIO: no word from the host in ${wait_s:-600} s"
fi
exit $rc
