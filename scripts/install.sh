#!/usr/bin/env bash
# Installs lifeboat where a distribution puts it, below DESTDIR (the first
# argument, else $DESTDIR, else /):
#   /usr/bin/lifeboat                          the host tool (reads moss's SQLite)
#   /usr/lib/lifeboat/lifeboat-rescue          the rescue build (no SQLite): what
#       `lifeboat initrd build` embeds by default, and the path below /usr where
#       each transaction carries it for the per-kernel rescue initrds
#   /usr/lib/systemd/system/                   every unit in contrib/systemd
#   /usr/lib/dracut/modules.d/90lifeboat/      the dracut module
#   /usr/share/man/man8/lifeboat.8.gz          lifeboat(8), made from the help text
#   /etc/lifeboat/lifeboat.conf.example        every setting, commented out
# The prefix is /usr, fixed: the units, the dracut module and the per-kernel
# rescue initrds name these paths.
# The binaries are built first with scripts/build.sh (nothing is rebuilt when
# they are current); LIFEBOAT_NO_BUILD=1 installs the ones already in target/.
# A running system is never changed beyond these files: no unit is enabled, no
# initrd is built (README: "Installing").
set -euo pipefail
# DESTDIR is the caller's: a relative one is taken from the caller's working
# directory, before this script moves to the repository.
dest=${1:-${DESTDIR:-}}
case "$dest" in
"" | /*) ;;
*) dest="$PWD/$dest" ;;
esac
dest=${dest%/}
cd "$(dirname "$0")/.."
prefix=/usr
host=target/x86_64-unknown-linux-musl/release/lifeboat
rescue=target/rescue/x86_64-unknown-linux-musl/release/lifeboat
[ "${LIFEBOAT_NO_BUILD:-}" = 1 ] || ./scripts/build.sh
for b in "$host" "$rescue"; do
    [ -x "$b" ] || { echo "install: $b is not built (run scripts/build.sh)" >&2; exit 1; }
done
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || { echo "install: no version in Cargo.toml's [package]" >&2; exit 1; }
# The man page's date: the commit's, so two installs of one commit are the same.
# Outside git (an exported tree), Cargo.toml's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || stat -c %Y Cargo.toml)}

install -D -m 0755 "$host" "$dest$prefix/bin/lifeboat"
install -D -m 0755 "$rescue" "$dest$prefix/lib/lifeboat/lifeboat-rescue"
units=0
for u in contrib/systemd/*; do
    case "$u" in
    *.service | *.path | *.timer | *.socket | *.target | *.mount)
        install -D -m 0644 "$u" "$dest$prefix/lib/systemd/system/${u##*/}"
        units=$((units + 1))
        ;;
    esac
done
[ "$units" -gt 0 ] || { echo "install: no unit file in contrib/systemd" >&2; exit 1; }
install -D -m 0755 contrib/dracut/90lifeboat/module-setup.sh "$dest$prefix/lib/dracut/modules.d/90lifeboat/module-setup.sh"
install -D -m 0644 contrib/dracut/90lifeboat/lifeboat-initrd.service \
    "$dest$prefix/lib/dracut/modules.d/90lifeboat/lifeboat-initrd.service"
man=$(mktemp)
trap 'rm -f "$man"' EXIT
python3 scripts/manpage.py "$host" --version "$version" >"$man"
install -d -m 0755 "$dest$prefix/share/man/man8"
gzip -9n -c "$man" >"$dest$prefix/share/man/man8/lifeboat.8.gz"
chmod 0644 "$dest$prefix/share/man/man8/lifeboat.8.gz"
install -D -m 0644 contrib/etc/lifeboat.conf.example "$dest/etc/lifeboat/lifeboat.conf.example"
echo "install: lifeboat $version into ${dest:-/}"
