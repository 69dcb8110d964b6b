#!/bin/busybox sh
# PID 1 of the test guests (installed as /init by make-initramfs.sh): mounts the kernel
# filesystems, loads the kernel modules listed in /etc/modules.load (the vfio-pci and virtio-net
# sets that prepare.sh kept), runs the test's script /test.sh with the serial console as its
# stdin, stdout and stderr, and powers the guest off when it returns (or when pcivirtio.deadline=
# seconds from the kernel command line have passed).
# Lines for the host start with "PCIVIRTIO-GUEST: " (see tests/Guest.Support/GuestMarkers.cs).
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t tmpfs tmpfs /tmp
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
# stdin read-write: a program whose stdin is a terminal may write to it (.NET's Console.ReadLine
# echoes the typed characters to fd 0 when stdout is not a terminal).
exec 0<>/dev/console 1>&0 2>&0

uptime_s() { cut -d' ' -f1 /proc/uptime; }
echo "PCIVIRTIO-GUEST: init uptime=$(uptime_s) kernel=$(uname -r)"

# A guest never outlives pcivirtio.deadline= seconds (from the kernel command line), even when
# the host that started it is gone.
deadline=$(sed -n 's/.*pcivirtio\.deadline=\([0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$deadline" ]; then
    (sleep "$deadline"; echo "PCIVIRTIO-GUEST: deadline of $deadline s reached, powering off"; poweroff -f) &
fi
if [ -f /etc/modules.load ]; then
    while read -r ko; do
        [ -n "$ko" ] || continue
        insmod "/$ko" || echo "PCIVIRTIO-GUEST: insmod $ko failed"
    done < /etc/modules.load
    echo "PCIVIRTIO-GUEST: modules uptime=$(uptime_s)"
fi

rc=127
if [ -f /test.sh ]; then
    sh /test.sh
    rc=$?
fi
echo "PCIVIRTIO-GUEST: exit rc=$rc uptime=$(uptime_s)"
sync
poweroff -f
