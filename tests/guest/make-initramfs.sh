#!/usr/bin/env bash
# Builds an uncompressed newc cpio initramfs for the test guests:
#   /init         tests/guest/init.sh (mounts, loads the modules, runs /test.sh, powers off)
#   /test.sh      the script given with --script (run by /init; its output is the serial console)
#   /bin/busybox  busybox-static, with a symlink for every applet
#   /lib/modules  the kernel modules prepare.sh kept, /etc/modules.load their load order
#   extra files   --file SRC[:DEST] copies a file; --binary SRC[:DEST] copies an executable and
#                 every library `ldd` lists for it (at the same paths, so a dynamically linked
#                 program, e.g. a NativeAOT build, runs in the guest). DEST defaults to
#                 /bin/<name> for --binary and /<name> for --file.
# Usage: make-initramfs.sh --output FILE --script FILE [--file SRC[:DEST]]... [--binary SRC[:DEST]]...
# Needs the cache prepare.sh fills (${PCIVIRTIO_GUEST_CACHE:-/var/tmp/pcivirtio-guest}/guest.env).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
CACHE="${PCIVIRTIO_GUEST_CACHE:-/var/tmp/pcivirtio-guest}"
die() { echo "make-initramfs.sh: error: $*" >&2; exit 1; }

output="" script=""
files=() binaries=()
while [ $# -gt 0 ]; do
    case "$1" in
        -o|--output) output=$2; shift 2 ;;
        -s|--script) script=$2; shift 2 ;;
        -f|--file) files+=("$2"); shift 2 ;;
        -b|--binary) binaries+=("$2"); shift 2 ;;
        *) die "unknown argument $1 (usage: --output FILE --script FILE [--file SRC[:DEST]]... [--binary SRC[:DEST]]...)" ;;
    esac
done
[ -n "$output" ] || die "--output is required"
[ -n "$script" ] && [ -f "$script" ] || die "--script FILE is required and must exist (got '$script')"
[ -f "$CACHE/guest.env" ] || die "$CACHE/guest.env missing: run tests/guest/prepare.sh first"
# shellcheck disable=SC1091
. "$CACHE/guest.env"
[ -x /bin/busybox ] || die "/bin/busybox missing (install busybox-static)"
command -v cpio >/dev/null || die "cpio missing (apt-get install cpio)"

stage=$(mktemp -d "${TMPDIR:-/tmp}/pcivirtio-initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc,lib/modules}

install_file() {  # $1 source, $2 destination in the image (absolute), $3 mode
    local src=$1 dest=$2 mode=$3
    [ -f "$src" ] || die "no such file: $src"
    case "$dest" in /*) ;; *) die "destination $dest must be absolute" ;; esac
    mkdir -p "$stage$(dirname "$dest")"
    cp -L "$src" "$stage$dest"
    chmod "$mode" "$stage$dest"
}

install_file "$here/init.sh" /init 0755
install_file "$script" /test.sh 0755
install_file /bin/busybox /bin/busybox 0755
# One symlink per applet, made by one process (a fork per link costs seconds on a busy host);
# perl-base is essential in Debian.
(cd "$stage" && /bin/busybox --list-full | grep -v '^bin/busybox$' \
    | perl -ne 'chomp; next if -e $_ || -l $_; symlink("/bin/busybox", $_) or die "symlink $_: $!\n"') \
    || die "could not link the busybox applets"

if [ -f "$MODULES_LOAD" ]; then
    (cd "$MODULES_ROOT" && cp -a --parents lib/modules "$stage/")
    cp "$MODULES_LOAD" "$stage/etc/modules.load"
fi

for spec in ${files[@]+"${files[@]}"}; do
    src=${spec%%:*}
    dest=${spec#*:}
    [ "$dest" != "$spec" ] || dest=/$(basename "$src")
    install_file "$src" "$dest" 0644
    [ -x "$src" ] && chmod 0755 "$stage$dest"
done

for spec in ${binaries[@]+"${binaries[@]}"}; do
    src=${spec%%:*}
    dest=${spec#*:}
    [ "$dest" != "$spec" ] || dest=/bin/$(basename "$src")
    install_file "$src" "$dest" 0755
    # Libraries: "name => /path (addr)" and the loader "/lib64/ld-linux-x86-64.so.2 (addr)".
    if libs=$(ldd "$src" 2>/dev/null); then
        while read -r lib; do
            [ -n "$lib" ] && [ ! -e "$stage$lib" ] && install_file "$lib" "$lib" 0755
        done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$libs")
    fi
done

mkdir -p "$(dirname "$output")"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$output.tmp"
mv "$output.tmp" "$output"
echo "make-initramfs.sh: $output ($(du -h "$output" | cut -f1))"
