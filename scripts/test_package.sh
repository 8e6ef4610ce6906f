#!/usr/bin/env bash
# The install layout and the Debian package, judged by real tools:
# - scripts/deb.sh builds target/lifeboat_VERSION-1_amd64.deb;
# - lintian reports no error (E:) on it;
# - the packaged lifeboat(8) renders with `man -l` without a warning and names
#   every command the packaged binary's help lists (the page is made from that
#   help: this keeps them in sync);
# - the package installs into a clean Debian bookworm (debootstrap
#   --variant=minbase, with systemd for systemctl; made once and cached as a
#   tarball in qemu/cache, or $LIFEBOAT_QEMU_CACHE), where `lifeboat --version`,
#   `lifeboat initrd build --out X` (its /init byte for byte the installed
#   /usr/lib/lifeboat/lifeboat-rescue; without that file the host build refuses
#   and names it and --binary) and `systemctl cat` of every unit in
#   contrib/systemd work (in a chroot, with no manager running, its offline
#   twin `systemd-analyze cat-config`), and `systemd-analyze verify` passes them;
# - `dpkg --purge` leaves the chroot's file list as it was before the install;
# - piuparts, Debian's own install / remove / purge test, passes in the same
#   clean bookworm (its base tarball made from the cached one).
# Needs root (chroot, the proc mount); everything is written below a mktemp
# directory in /tmp and target/, and the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() {
    echo "test_package: FAIL: $*" >&2
    exit 1
}
for t in dpkg-deb lintian debootstrap piuparts man cpio zstd gzip chroot python3; do
    command -v "$t" >/dev/null || fail "$t is missing (scripts/setup.sh installs it)"
done
[ "$(id -u)" = 0 ] || fail "needs root (chroot into the test system)"

deb=$(./scripts/deb.sh | tail -n 1)
[ -f "$deb" ] || fail "scripts/deb.sh made no package"
echo "test_package: built $deb"

work=$(mktemp -d /tmp/lifeboat-pkgtest.XXXXXX)
root="$work/root"
cleanup() {
    if mountpoint -q "$root/proc" 2>/dev/null; then umount "$root/proc"; fi
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

echo "== lintian"
# Exit 0 with --fail-on error: it ran through and found no error (warnings and
# notes are printed, not failed).
rc=0
lintian --fail-on error --tag-display-limit 0 "$deb" >"$work/lintian" 2>&1 || rc=$?
cat "$work/lintian"
if grep -q '^E:' "$work/lintian"; then fail "lintian reports errors"; fi
[ "$rc" = 0 ] || fail "lintian exited $rc"

echo "== the man page against the packaged binary's help"
dpkg-deb -x "$deb" "$work/x"
page="$work/x/usr/share/man/man8/lifeboat.8.gz"
[ -s "$page" ] || fail "no lifeboat.8.gz in the package"
LC_ALL=C MANWIDTH=200 man --warnings -l "$page" >"$work/man.txt" 2>"$work/man.err" || fail "man -l failed: $(cat "$work/man.err")"
[ ! -s "$work/man.err" ] || fail "man -l warns: $(cat "$work/man.err")"
# Every command, walked from the top-level help's "Commands:" sections.
commands() {
    "$work/x/usr/bin/lifeboat" "$@" --help |
        awk '/^Commands:/ { on = 1; next } /^[^ ]/ { on = 0 } on && /^  [^ ]/ { print $1 }' |
        grep -vx help || true
}
walk() {
    local c
    for c in $(commands "$@"); do
        echo "$* $c" | sed 's/^ //'
        walk "$@" "$c"
    done
}
walk >"$work/commands"
[ "$(wc -l <"$work/commands")" -ge 20 ] || fail "only $(wc -l <"$work/commands") commands found in the help"
while read -r c; do
    grep -qF "lifeboat $c" "$work/man.txt" || fail "lifeboat(8) does not describe 'lifeboat $c'"
done <"$work/commands"
echo "lifeboat(8) renders and names all $(wc -l <"$work/commands") commands"
# The global options and exit statuses are said once, not in every command's
# section.
n=$(grep -c '^Global Options\|^ *Exit Status:' "$work/man.txt" || true)
[ "$n" = 0 ] || fail "lifeboat(8) repeats a help's Global Options or Exit Status block ($n times)"
grep -q '^EXIT STATUS' "$work/man.txt" && grep -q '^ *64 ' "$work/man.txt" || fail "lifeboat(8) has no EXIT STATUS listing 64"

echo "== install.sh with a relative DESTDIR, from another directory"
# It is the caller's directory the destination is relative to, not the
# repository's; the destination is printed absolute.
mkdir -p "$work/cwd"
repo=$PWD
said=$(cd "$work/cwd" && LIFEBOAT_NO_BUILD=1 "$repo/scripts/install.sh" "dest rel")
[ -x "$work/cwd/dest rel/usr/bin/lifeboat" ] || fail "install.sh did not install below the caller's 'dest rel': $said"
[ ! -e "dest rel" ] || fail "install.sh installed into the repository's 'dest rel'"
case "$said" in
*"into $work/cwd/dest rel") ;;
*) fail "install.sh does not name the absolute destination: $said" ;;
esac

echo "== a clean bookworm"
# The mirror apt uses here (deb822 or one-line sources), else Debian's.
mirror() {
    local m
    m=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | sed -n 1p)
    [ -n "$m" ] || m=$(awk '$1 == "deb" && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
    echo "${m:-http://deb.debian.org/debian}"
}
cache_dir=${LIFEBOAT_QEMU_CACHE:-qemu/cache}
tarball="$cache_dir/bookworm-minbase-systemd.tar.zst"
if [ ! -s "$tarball" ]; then
    mkdir -p "$cache_dir" "$work/boot"
    echo "debootstrap bookworm from $(mirror) (once; cached as $tarball)"
    debootstrap --variant=minbase --include=systemd bookworm "$work/boot" "$(mirror)" >"$work/debootstrap.log" 2>&1 ||
        { tail -n 20 "$work/debootstrap.log" >&2; fail "debootstrap failed"; }
    tar -C "$work/boot" --numeric-owner -cf - . | zstd -q -T0 -o "$tarball.part"
    mv "$tarball.part" "$tarball"
    rm -rf --one-file-system "$work/boot"
fi
mkdir "$root"
zstd -dc "$tarball" | tar -C "$root" --numeric-owner -xf -
mount -t proc proc "$root/proc"
in_root() { chroot "$root" "$@"; }
# Every path with its type, mode and owner; what only dpkg's and apt's own
# bookkeeping, the logs and /run (a tmpfs on a booted system; systemd-analyze
# writes there) change is left out (the package's own dpkg files are
# looked for by name below).
listing() {
    (cd "$root" && find . -xdev \( -path ./proc -o -path ./tmp -o -path ./run -o -path ./var/log -o -path ./var/cache \
        -o -path ./var/lib/dpkg/status-old -o -path ./var/lib/dpkg/status -o -path './var/lib/dpkg/lock*' \
        -o -path ./var/lib/dpkg/triggers/Lock \) -prune -o -printf '%p %y %m %u:%g\n' | LC_ALL=C sort)
}
listing >"$work/before"

echo "== install"
cp "$deb" "$root/tmp/"
in_root dpkg -i "/tmp/${deb##*/}" || fail "dpkg -i failed"
in_root dpkg -s lifeboat | grep -q '^Status: install ok installed' || fail "dpkg does not list lifeboat installed"

if in_root lifeboat --version >"$work/version" 2>&1; then
    echo "lifeboat --version: $(cat "$work/version")"
elif grep -q -- '--version' <(in_root lifeboat --help); then
    fail "lifeboat --version failed: $(cat "$work/version")"
else
    # --version is not in this build yet (branch cli adds it): --help instead.
    in_root lifeboat --help >/dev/null || fail "lifeboat --help failed"
    echo "lifeboat --version: not in this build ($(cat "$work/version")); lifeboat --help ran instead"
fi

in_root lifeboat initrd build --out /tmp/test.initrd --no-modules || fail "lifeboat initrd build failed"
mkdir "$work/unpacked"
zstd -dc "$root/tmp/test.initrd" | (cd "$work/unpacked" && cpio -i --quiet init) || fail "the initrd has no /init"
cmp -s "$work/unpacked/init" "$root/usr/lib/lifeboat/lifeboat-rescue" ||
    fail "the initrd's /init is not /usr/lib/lifeboat/lifeboat-rescue"
cmp -s "$work/unpacked/init" "$root/usr/bin/lifeboat" && fail "the initrd embeds the host build"
echo "initrd build: /init is the installed rescue build"
# Without the rescue build, the host build refuses and says where to put it.
mv "$root/usr/lib/lifeboat/lifeboat-rescue" "$root/tmp/rescue.moved"
if in_root lifeboat initrd build --out /tmp/test2.initrd --no-modules 2>"$work/noresc"; then
    mv "$root/tmp/rescue.moved" "$root/usr/lib/lifeboat/lifeboat-rescue"
    fail "initrd build without the rescue build succeeded"
fi
mv "$root/tmp/rescue.moved" "$root/usr/lib/lifeboat/lifeboat-rescue"
grep -q '/usr/lib/lifeboat/lifeboat-rescue' "$work/noresc" && grep -q -- '--binary' "$work/noresc" ||
    fail "the error does not name the rescue build's path and --binary: $(cat "$work/noresc")"
echo "initrd build without a rescue build: $(cat "$work/noresc")"

# `systemctl cat` asks the running manager, which a chroot has not ("Running in
# chroot, ignoring command"): tried first, and where it cannot run,
# `systemd-analyze cat-config` shows the unit and its drop-ins as systemd finds
# them, offline. `systemd-analyze verify` then loads each unit as the manager
# would (its ExecStart must be there) and must say nothing; --man=no, because
# the pages Documentation= names (systemd-bless-boot.service(8) is
# systemd-boot's) and man itself are not in a minimal system.
n=0
units=()
for u in contrib/systemd/*.service contrib/systemd/*.path contrib/systemd/*.timer contrib/systemd/*.socket; do
    [ -e "$u" ] || continue
    name=${u##*/}
    units+=("$name")
    if in_root systemctl cat "$name" >"$work/unit" 2>&1; then
        how="systemctl cat"
    elif grep -q 'chroot\|not been booted with systemd\|Failed to connect to bus' "$work/unit"; then
        how="systemd-analyze cat-config (systemctl: $(head -n 1 "$work/unit"))"
        in_root systemd-analyze cat-config "systemd/system/$name" >"$work/unit" 2>&1 ||
            fail "systemd-analyze cat-config $name: $(cat "$work/unit")"
    else
        fail "systemctl cat $name: $(cat "$work/unit")"
    fi
    head -n 1 "$work/unit" | grep -qx "# \(/usr\)\?/lib/systemd/system/$name" ||
        fail "$how $name shows another file: $(head -n 1 "$work/unit")"
    cmp -s <(tail -n +2 "$work/unit") "$u" || fail "$how $name is not contrib/systemd/$name"
    echo "$how $name: the packaged unit"
    n=$((n + 1))
done
[ "$n" -gt 0 ] || fail "no unit in contrib/systemd"
in_root systemd-analyze verify --man=no "${units[@]}" >"$work/verify" 2>&1 || fail "systemd-analyze verify: $(cat "$work/verify")"
[ ! -s "$work/verify" ] || fail "systemd-analyze verify: $(cat "$work/verify")"
[ -e contrib/systemd/lifeboat-bless.service ] ||
    echo "note: contrib/systemd/lifeboat-bless.service is not in this tree (branch bless adds it)"
echo "units: $n shown and verified"
in_root test -x /usr/lib/dracut/modules.d/90lifeboat/module-setup.sh || fail "no dracut module"
in_root test -f /etc/lifeboat/lifeboat.conf.example || fail "no lifeboat.conf.example"
in_root man -w lifeboat >/dev/null 2>&1 || test -f "$root/usr/share/man/man8/lifeboat.8.gz" || fail "no man page"

echo "== purge"
rm -f "$root/tmp/test.initrd" "$root/tmp/${deb##*/}"
in_root dpkg --purge lifeboat || fail "dpkg --purge failed"
umount "$root/proc"
listing >"$work/after"
diff -u "$work/before" "$work/after" || fail "the purge left the file list changed (above)"
left=$(cd "$root" && find . -xdev -path ./proc -prune -o -name '*lifeboat*' -print)
[ -z "$left" ] || fail "left behind: $left"
in_root dpkg -s lifeboat >/dev/null 2>&1 && fail "dpkg still knows lifeboat"

echo "== piuparts"
rm -rf --one-file-system "$root"
zstd -dc "$tarball" | gzip -1 >"$work/base.tgz"
mkdir "$work/piuparts"
piuparts -d bookworm -m "$(mirror)" -b "$work/base.tgz" --tmpdir "$work/piuparts" --no-upgrade-test "$deb" \
    >"$work/piuparts.log" 2>&1 || { tail -n 40 "$work/piuparts.log" >&2; fail "piuparts failed"; }
grep 'PASS: All tests' "$work/piuparts.log" || fail "piuparts did not say PASS"
echo "test_package: ok"
