#!/bin/sh
# The guest program of the link guests (tests/Integration.Tests/LinkGuestPairTests.cs): one end of
# the host-to-host link per guest, over the guest's ivshmem-doorbell device. vfio-guest.sh runs it
# as /bin/vfio-guest once the device is bound to vfio-pci (VFIO_BDF in its environment), with the
# serial console as stdin; every line it and pcivirtio print reaches the host as
# "PCIVIRTIO-PROG: <line>". It
#   1. starts /bin/pcivirtio link --hw vfio:$VFIO_BDF --tap ntb0 --address ADDR --stats 1 [ARGS]
#      in the background (stdin /dev/null; ADDR from pcivirtio.link.addr= on the kernel command
#      line, ARGS from pcivirtio.link.args=, commas for spaces) and prints
#        LINK-GUEST: started pid=N hw=vfio:BDF addr=ADDR uptime=S
#      pcivirtio's own lines follow: "link on ... as TAP ntb0 ...", its log lines ("link ntb0: up
#      with 1 queue pair(s)") and one "link Up: out ... in ..." line a second; when it exits, for
#      whatever reason,
#        LINK-GUEST: exited rc=N uptime=S
#   2. takes commands from the console, one per line, each answered with one line:
#        ping HOST COUNT [SIZE]  LINK-GUEST: ping host= size= sent= received= loss=P% avg_ms= seconds= rc=
#        listen PORT             a one-off busybox nc server into /tmp/received:
#                                LINK-GUEST: listening port=N (or "error" when it does not listen)
#        send HOST PORT KIB      KIB KiB of random data to HOST:PORT with busybox nc:
#                                LINK-GUEST: sent bytes=N md5=M seconds=S rc=N
#        received                waits (at most 60 s) for the nc server to see the end of the data:
#                                LINK-GUEST: received bytes=N md5=M rc=N
#        stop                    SIGTERM to pcivirtio and a wait for it (at most 20 s):
#                                LINK-GUEST: stopped rc=N, then the script exits 0 (rc=0) or 1.
#      Without a command for pcivirtio.link.wait= seconds (default 300) it stops as on "stop".
# Failures print "LINK-GUEST: error <reason>".
M="LINK-GUEST:"
uptime_s() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%.2f", b - a }'; }
setting() {  # $1 key, $2 default: pcivirtio.link.KEY=VALUE from the kernel command line
    v=$(tr ' ' '\n' < /proc/cmdline | sed -n "s/^pcivirtio\.link\.$1=//p" | tail -n 1)
    echo "${v:-$2}"
}

addr=$(setting addr 10.88.0.1/24)
extra=$(setting args "" | tr ',' ' ')
wait_s=$(setting wait 300)
[ -n "$VFIO_BDF" ] || { echo "$M error no VFIO_BDF in the environment"; exit 1; }

# The console echoes what the host types; keep it out of the program's lines.
stty -echo 2>/dev/null

# pcivirtio runs under a watcher that says when it exits (and with what status), so the host
# learns at once when it failed to start.
rm -f /tmp/link.pid /tmp/link.rc
(
    # shellcheck disable=SC2086 # ARGS are words
    /bin/pcivirtio link --hw "vfio:$VFIO_BDF" --tap ntb0 --address "$addr" --stats 1 $extra < /dev/null 2>&1 &
    echo $! > /tmp/link.pid
    wait $!
    rc=$?
    echo "$rc" > /tmp/link.rc
    echo "$M exited rc=$rc uptime=$(uptime_s)"
) &
watch_pid=$!
n=0
while [ ! -s /tmp/link.pid ] && [ "$n" -lt 50 ]; do
    n=$((n + 1))
    usleep 100000
done
link_pid=$(cat /tmp/link.pid 2>/dev/null)
[ -n "$link_pid" ] || { echo "$M error pcivirtio did not start"; exit 1; }
echo "$M started pid=$link_pid hw=vfio:$VFIO_BDF addr=$addr uptime=$(uptime_s)"

port_listening() {  # $1 port: a TCP socket in LISTEN (0A) on it, IPv4 or IPv6 (busybox nc listens on ::)
    hexport=$(printf '%04X' "$1")
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v p=":$hexport" '$2 ~ p "$" && $4 == "0A" { found = 1 } END { exit !found }'
}

do_ping() {  # HOST COUNT [SIZE]
    target=$1 count=${2:-5} size=${3:-56}
    start=$(uptime_s)
    out=$(ping -c "$count" -s "$size" -W 5 -w $((count * 2 + 10)) "$target" 2>&1)
    rc=$?
    stats=$(echo "$out" | sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) packets received.* \([0-9.]*\)% packet loss.*/sent=\1 received=\2 loss=\3%/p')
    avg=$(echo "$out" | sed -n 's|^round-trip min/avg/max = [0-9.]*/\([0-9.]*\)/.*|\1|p')
    echo "$M ping host=$target size=$size ${stats:-sent=0 received=0 loss=100%} avg_ms=${avg:-none} seconds=$(since "$start") rc=$rc"
}

nc_pid=""
do_listen() {  # PORT
    port=$1
    rm -f /tmp/received /tmp/hold
    mkfifo /tmp/hold
    # stdin is a FIFO opened read-write: it never ends, so nc never half-closes towards the
    # sender (busybox nc exits when its socket ends, i.e. when the sender has sent everything).
    nc -l -p "$port" 0<>/tmp/hold > /tmp/received 2>/dev/null &
    nc_pid=$!
    n=0
    while ! port_listening "$port" && kill -0 "$nc_pid" 2>/dev/null && [ "$n" -lt 100 ]; do
        n=$((n + 1))
        usleep 100000
    done
    if port_listening "$port"; then
        echo "$M listening port=$port"
    else
        echo "$M error nc does not listen on port $port"
    fi
}

do_send() {  # HOST PORT KIB
    target=$1 port=$2 kib=$3
    dd if=/dev/urandom of=/tmp/send bs=1024 count="$kib" 2>/dev/null
    bytes=$(wc -c < /tmp/send)
    md5=$(md5sum /tmp/send | cut -d' ' -f1)
    start=$(uptime_s)
    # busybox nc sends its stdin, half-closes at its end and exits when the server closes.
    timeout 90 nc -w 10 "$target" "$port" < /tmp/send > /dev/null 2>&1
    rc=$?
    echo "$M sent bytes=$bytes md5=$md5 seconds=$(since "$start") rc=$rc"
}

do_received() {
    if [ -z "$nc_pid" ]; then
        echo "$M error no nc server (listen first)"
        return
    fi
    n=0
    while kill -0 "$nc_pid" 2>/dev/null && [ "$n" -lt 600 ]; do
        n=$((n + 1))
        usleep 100000
    done
    if kill -0 "$nc_pid" 2>/dev/null; then
        kill "$nc_pid"
        wait "$nc_pid"
        rc=timeout
    else
        wait "$nc_pid"
        rc=$?
    fi
    nc_pid=""
    echo "$M received bytes=$(wc -c < /tmp/received) md5=$(md5sum /tmp/received | cut -d' ' -f1) rc=$rc"
}

do_stop() {
    kill -TERM "$link_pid" 2>/dev/null
    n=0
    while kill -0 "$link_pid" 2>/dev/null && [ "$n" -lt 200 ]; do
        n=$((n + 1))
        usleep 100000
    done
    if kill -0 "$link_pid" 2>/dev/null; then
        kill -KILL "$link_pid"
        wait "$watch_pid"
        echo "$M stopped rc=killed"
        exit 1
    fi
    wait "$watch_pid"
    rc=$(cat /tmp/link.rc 2>/dev/null)
    echo "$M stopped rc=${rc:-unknown}"
    [ "$rc" = 0 ] && exit 0
    exit 1
}

while true; do
    if ! read -r -t "$wait_s" command; then
        echo "$M no command from the host in $wait_s s"
        do_stop
    fi
    # shellcheck disable=SC2086 # the command's words
    set -- $command
    [ $# -gt 0 ] || continue
    verb=$1
    shift
    case "$verb" in
        ping) do_ping "$@" ;;
        listen) do_listen "${1:-5001}" ;;
        send) do_send "$1" "${2:-5001}" "${3:-1024}" ;;
        received) do_received ;;
        stop) do_stop ;;
        *) echo "$M error unknown command '$verb' (ping, listen, send, received, stop)" ;;
    esac
done
