#!/usr/bin/env bash
# Tests write nothing outside their scratch space. `snapshot DIR` records what the
# tests must leave alone — the names at the top of /, that /.moss does not exist
# (moss makes it when run without -D), and every path under /usr and /etc with its
# type, mode, owner, size, mtime and link target — into DIR; `compare DIR`, after
# the tests, fails with the differences when anything there appeared, went or
# changed.
#
# Not looked at, because they change without the tests' doing: /tmp, /var, /proc,
# /sys, /dev, /run, /work and /root (caches, cargo, the other builds on this
# machine); Python's __pycache__ directories (the interpreter writes them beside
# the standard library on first import), and directories' own sizes and mtimes
# (they move when such a cache is written; what was added or removed in them
# shows as the entry itself); the files a container runtime manages
# (/etc/hosts, /etc/hostname, /etc/resolv.conf). A change dpkg made while the
# tests ran (someone ran apt) is excused for the paths dpkg's lists name and for
# /etc/ld.so.cache, and only when dpkg's status file changed too.
set -euo pipefail

usage() {
    echo "usage: $0 snapshot|compare DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
mode=$1
dir=$2

listing() {
    # One line per path: type, mode, owner, size, mtime, path, link target.
    # Directories get no size and mtime (see above).
    find /usr /etc -xdev \
        \( -name __pycache__ -o -path /etc/hosts -o -path /etc/hostname -o -path /etc/resolv.conf \) -prune \
        -o -type d -printf 'd %m %u:%g - - %p\n' \
        -o -type l -printf 'l %m %u:%g - %T@ %p -> %l\n' \
        -o -printf '%y %m %u:%g %s %T@ %p\n' |
        LC_ALL=C sort
}

top() {
    # The names at the top of /, with their types.
    find / -mindepth 1 -maxdepth 1 -printf '%y %p\n' | LC_ALL=C sort
}

dpkg_stamp() {
    stat -c %Y /var/lib/dpkg/status 2>/dev/null || echo none
}

case "$mode" in
snapshot)
    mkdir -p "$dir"
    if [ -e /.moss ]; then
        echo "outside_check: /.moss exists before the tests; remove it (moss made it when run without -D)" >&2
        exit 1
    fi
    top >"$dir/top"
    listing >"$dir/usr-etc"
    dpkg_stamp >"$dir/dpkg"
    ;;
compare)
    [ -f "$dir/top" ] && [ -f "$dir/usr-etc" ] || {
        echo "outside_check: no snapshot in $dir (run '$0 snapshot $dir' before the tests)" >&2
        exit 2
    }
    fail=0
    if [ -e /.moss ]; then
        echo "outside_check: /.moss appeared during the tests (a moss call without -D):" >&2
        ls -la /.moss >&2 || true
        fail=1
    fi
    if ! diff -u "$dir/top" <(top) >"$dir/top.diff"; then
        echo "outside_check: the names at the top of / changed during the tests:" >&2
        grep '^[-+][^-+]' "$dir/top.diff" >&2 || true
        fail=1
    fi
    listing >"$dir/usr-etc.after"
    if ! diff "$dir/usr-etc" "$dir/usr-etc.after" >"$dir/usr-etc.diff"; then
        # Lines only before ("<") or only after (">").
        grep '^[<>]' "$dir/usr-etc.diff" >"$dir/changed" || true
        if [ "$(cat "$dir/dpkg")" != "$(dpkg_stamp)" ]; then
            # dpkg ran meanwhile: its own paths are not the tests' doing. The path
            # follows the marker and five fields; a link's target after " -> ".
            cat /var/lib/dpkg/info/*.list 2>/dev/null >"$dir/excused" || true
            echo /etc/ld.so.cache >>"$dir/excused"
            awk 'NR == FNR { ok[$0] = 1; next }
                 { p = $0; for (i = 0; i < 6; i++) sub(/^[^ ]* /, "", p); sub(/ -> .*$/, "", p); if (!(p in ok)) print }' \
                "$dir/excused" "$dir/changed" >"$dir/changed.left"
            mv "$dir/changed.left" "$dir/changed"
        fi
        if [ -s "$dir/changed" ]; then
            echo "outside_check: /usr or /etc changed during the tests (< before, > after):" >&2
            head -n 50 "$dir/changed" >&2
            n=$(wc -l <"$dir/changed")
            [ "$n" -le 50 ] || echo "... and $((n - 50)) more lines in $dir/changed" >&2
            fail=1
        fi
    fi
    if [ "$fail" -eq 0 ]; then
        echo "outside_check: nothing changed outside the scratch directories"
    fi
    exit "$fail"
    ;;
*)
    usage
    ;;
esac
