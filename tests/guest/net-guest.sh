#!/bin/sh
# Test script for the guests whose NIC is a virtio-net device (installed as /test.sh; /init has
# mounted /proc, /sys, /dev and loaded the virtio_pci and virtio_net modules). It
#   1. brings the interface up (default eth0) with an address and prints
#        PCIVIRTIO-NET: ready iface=eth0 mac=M addr=A/P host=H carrier=0|1 mtu=N features=0xF uptime=S
#      (features: the virtio feature bits the driver negotiated, from the device's sysfs
#      "features"; "unknown" when absent),
#   2. pings the host address ping= times (0: no ping) and prints
#        PCIVIRTIO-NET: ping host=H sent=N received=N loss=P% avg_ms=X seconds=S rc=N
#   3. runs iperf3 when iperf= says so, as a client (iperf3 -c HOST -t SECS) or a one-off server
#      (iperf3 -s -1; it prints "PCIVIRTIO-NET: iperf3 listening port=5201" once it listens), and
#      prints
#        PCIVIRTIO-NET: iperf3 mode=client|server sent_bps=N received_bps=N sent_bytes=N
#                       received_bytes=N retransmits=N seconds=S rc=N
#      (one line; "error=..." instead of the figures when iperf3 failed),
#   4. waits for commands on the console (one per line, from GuestVm.SendLineAsync) and answers
#      each with one of the lines above or "PCIVIRTIO-NET: done ..."; it returns on "poweroff"
#      or after wait= seconds without a command, after which /init powers the guest off:
#        ping HOST COUNT                   step 2 against HOST
#        iperf3-client HOST SECS [ARGS..]  step 3 as a client (ARGS: more iperf3 options, e.g. -R)
#        iperf3-server [ARGS..]            step 3 as a one-off server
#        run COMMAND [ARGS..]              runs a command; each output line comes as
#                                          "PCIVIRTIO-NET: out <line>", then "PCIVIRTIO-NET: done rc=N"
#        poweroff                          "PCIVIRTIO-NET: done poweroff", then the guest powers off
# Settings come from the kernel command line (pcivirtio.net.KEY=VALUE) or /etc/net-guest.conf
# (KEY=VALUE lines); the command line wins:
#   iface=eth0  addr=10.0.0.2/24  host=10.0.0.1  mtu=(driver default)  carrier_wait=10 (seconds)
#   ping=0 (count)  iperf=none|client|server  iperf_secs=5  iperf_args= (commas for spaces)
#   wait=600 (seconds to wait for each command)
# Failures print "PCIVIRTIO-NET: error <reason>" and exit non-zero (the guest powers off too).
M="PCIVIRTIO-NET:"
fail() { echo "$M error $*"; exit 1; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

setting() {  # $1 key, $2 default
    v=$(tr ' ' '\n' < /proc/cmdline | sed -n "s/^pcivirtio\.net\.$1=//p" | tail -n 1)
    if [ -z "$v" ] && [ -f /etc/net-guest.conf ]; then
        v=$(sed -n "s/^$1=//p" /etc/net-guest.conf | tail -n 1)
    fi
    echo "${v:-$2}"
}

iface=$(setting iface eth0)
addr=$(setting addr 10.0.0.2/24)
host=$(setting host 10.0.0.1)
mtu=$(setting mtu "")
carrier_wait=$(setting carrier_wait 10)
ping_count=$(setting ping 0)
iperf_mode=$(setting iperf none)
iperf_secs=$(setting iperf_secs 5)
iperf_args=$(setting iperf_args "" | tr ',' ' ')
wait_s=$(setting wait 600)

# The serial console echoes what the host types; keep it out of the marker lines.
stty -echo 2>/dev/null

# 1. The interface (virtio_net probes when it is loaded; allow it a moment).
n=0
while [ ! -e "/sys/class/net/$iface" ]; do
    n=$((n + 1))
    [ "$n" -le 50 ] || fail "no interface $iface (interfaces: $(ls /sys/class/net | tr '\n' ' '))"
    usleep 100000
done
ip link set lo up
[ -z "$mtu" ] || ip link set "$iface" mtu "$mtu" || fail "cannot set mtu $mtu on $iface"
ip addr add "$addr" dev "$iface" || fail "cannot add $addr to $iface"
ip link set "$iface" up || fail "cannot bring $iface up"
n=0
while [ "$(cat "/sys/class/net/$iface/carrier" 2>/dev/null)" != 1 ] && [ "$n" -lt $((carrier_wait * 10)) ]; do
    n=$((n + 1))
    usleep 100000
done

features=unknown
if [ -f "/sys/class/net/$iface/device/features" ]; then
    # One character per feature bit, bit 0 first; printed as hex.
    features=$(awk '{
        hex = ""
        for (k = 15; k >= 0; k--) {
            v = 0
            for (j = 3; j >= 0; j--) v = v * 2 + (substr($0, 4 * k + j + 1, 1) == "1")
            hex = hex substr("0123456789abcdef", v + 1, 1)
        }
        sub(/^0+/, "", hex)
        print "0x" (hex == "" ? "0" : hex)
    }' "/sys/class/net/$iface/device/features")
fi
echo "$M ready iface=$iface mac=$(cat "/sys/class/net/$iface/address") addr=$addr host=$host" \
    "carrier=$(cat "/sys/class/net/$iface/carrier" 2>/dev/null || echo 0) mtu=$(cat "/sys/class/net/$iface/mtu")" \
    "features=$features uptime=$(uptime_s)"

# 2. ping TARGET COUNT: one result line.
do_ping() {
    target=$1 count=$2
    start=$(uptime_s)
    out=$(ping -c "$count" -W 2 -w $((count + 10)) "$target" 2>&1)
    rc=$?
    stats=$(echo "$out" | sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) packets received.* \([0-9.]*\)% packet loss.*/sent=\1 received=\2 loss=\3%/p')
    avg=$(echo "$out" | sed -n 's|^round-trip min/avg/max = [0-9.]*/\([0-9.]*\)/.*|\1|p')
    seconds=$(awk -v a="$start" -v b="$(uptime_s)" 'BEGIN { printf "%.2f", b - a }')
    echo "$M ping host=$target ${stats:-sent=0 received=0 loss=100%} avg_ms=${avg:-none} seconds=$seconds rc=$rc"
}

# 3. iperf3 MODE ARGS...: runs iperf3 -J and prints the summary as one line.
#    MODE client: ARGS = HOST SECS [more]; MODE server: ARGS = [more].
json_summary() {  # the totals of an iperf3 -J report (end.sum_sent / end.sum_received)
    awk '
        /"sum_sent"[ \t]*:/ { part = "sent" }
        /"sum_received"[ \t]*:/ { part = "received" }
        /"error"[ \t]*:/ { e = $0; sub(/^[^:]*:[ \t]*"/, "", e); sub(/",?[ \t]*$/, "", e); gsub(/ /, "_", e); err = e }
        part != "" && /"bytes"[ \t]*:/ { v = $0; sub(/^[^:]*:/, "", v); gsub(/[ \t,]/, "", v); bytes[part] = v }
        part == "sent" && /"retransmits"[ \t]*:/ { v = $0; sub(/^[^:]*:/, "", v); gsub(/[ \t,]/, "", v); retr = v }
        part != "" && /"bits_per_second"[ \t]*:/ { v = $0; sub(/^[^:]*:/, "", v); gsub(/[ \t,]/, "", v); bps[part] = v }
        /^[ \t]*}/ { part = "" }
        END {
            if (err != "") { print "error=" err; exit }
            if (bps["sent"] == "" && bps["received"] == "") { print "error=no_summary_in_report"; exit }
            printf "sent_bps=%.0f received_bps=%.0f sent_bytes=%.0f received_bytes=%.0f retransmits=%s\n",
                bps["sent"], bps["received"], bytes["sent"], bytes["received"], (retr == "" ? "none" : retr)
        }' "$1"
}
port_listening() {  # $1 port: a TCP socket in LISTEN (0A) on it, IPv4 or IPv6
    hexport=$(printf '%04X' "$1")
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v p=":$hexport" '$2 ~ p "$" && $4 == "0A" { found = 1 } END { exit !found }'
}
do_iperf() {
    mode=$1
    shift
    start=$(uptime_s)
    report=/tmp/iperf3.json
    rm -f "$report"
    if [ "$mode" = client ]; then
        target=$1 secs=$2
        shift 2
        timeout $((secs + 30)) iperf3 -J --connect-timeout 10000 -c "$target" -t "$secs" "$@" > "$report" 2>&1
        rc=$?
    else
        timeout "$wait_s" iperf3 -J -s -1 "$@" > "$report" 2>&1 &
        pid=$!
        n=0
        while ! port_listening 5201 && kill -0 "$pid" 2>/dev/null && [ "$n" -lt 100 ]; do
            n=$((n + 1))
            usleep 100000
        done
        echo "$M iperf3 listening port=5201"
        wait "$pid"
        rc=$?
    fi
    seconds=$(awk -v a="$start" -v b="$(uptime_s)" 'BEGIN { printf "%.2f", b - a }')
    echo "$M iperf3 mode=$mode $(json_summary "$report") seconds=$seconds rc=$rc"
}

[ "$ping_count" -gt 0 ] 2>/dev/null && do_ping "$host" "$ping_count"
case "$iperf_mode" in
    client) do_iperf client "$host" "$iperf_secs" $iperf_args ;;
    server) do_iperf server $iperf_args ;;
    none|"") ;;
    *) echo "$M error unknown iperf=$iperf_mode (none, client or server)" ;;
esac

# 4. Commands from the host.
echo "$M waiting for commands uptime=$(uptime_s)"
while true; do
    if ! read -r -t "$wait_s" command; then
        echo "$M no command from the host in $wait_s s"
        exit 0
    fi
    # shellcheck disable=SC2086 # the command's words
    set -- $command
    [ $# -gt 0 ] || continue
    verb=$1
    shift
    case "$verb" in
        ping) do_ping "${1:-$host}" "${2:-5}" ;;
        iperf3-client)
            target=${1:-$host} secs=${2:-$iperf_secs}
            [ $# -gt 2 ] && shift 2 || set --
            do_iperf client "$target" "$secs" "$@" ;;
        iperf3-server) do_iperf server "$@" ;;
        run)
            set -o pipefail
            "$@" 2>&1 | while IFS= read -r line || [ -n "$line" ]; do echo "$M out $line"; done
            rc=$?
            set +o pipefail
            echo "$M done rc=$rc run" ;;
        poweroff|exit)
            echo "$M done poweroff"
            exit 0 ;;
        *) echo "$M error unknown command '$verb' (ping, iperf3-client, iperf3-server, run, poweroff)" ;;
    esac
done
