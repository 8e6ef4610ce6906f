#!/usr/bin/env bash
# Builds the Debian package target/lifeboat_VERSION-1_amd64.deb from what
# scripts/install.sh installs (it builds the binaries first), with dpkg-deb
# --root-owner-group: no debian/ directory and no debhelper, because the two
# binaries are static (Depends: nothing) and every file is one install.sh puts.
# Prints the package's path. DEB_MAINTAINER (default: the last commit's author)
# names the maintainer; SOURCE_DATE_EPOCH (default: the last commit's time, or
# Cargo.toml's outside git) dates the changelog and the man page. scripts/test_package.sh judges the result
# (lintian, a clean bookworm chroot).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)-1
# From a git checkout, or from an exported tree (a release tarball): then the
# date is Cargo.toml's and DEB_MAINTAINER must be given.
in_git=false
git rev-parse --git-dir >/dev/null 2>&1 && in_git=true
if $in_git; then
    export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
    maintainer=${DEB_MAINTAINER:-$(git log -1 --format='%an <%ae>')}
    built_from="the lifeboat repository at commit $(git rev-parse --short HEAD)"
    first=$(git log --max-parents=0 --format=%cd --date=format:%Y | tail -n 1)
else
    export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(stat -c %Y Cargo.toml)}
    maintainer=${DEB_MAINTAINER:?not a git checkout: give the maintainer as DEB_MAINTAINER=\"Name <address>\"}
    built_from="the lifeboat source tree"
    first=$(LC_ALL=C date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
fi
stage=target/deb/lifeboat
rm -rf target/deb
mkdir -p "$stage"
./scripts/install.sh "$stage" >/dev/null

doc="$stage/usr/share/doc/lifeboat"
install -d -m 0755 "$doc" "$stage/usr/share/lintian/overrides" "$stage/DEBIAN"
last=$(LC_ALL=C date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
years=$first; [ "$first" = "$last" ] || years="$first-$last"
cat >"$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: lifeboat
Comment: The two binaries are statically linked (musl) and carry the Rust
 crates Cargo.lock names, each under its own licence (MIT, Apache-2.0 or
 both, for most), and musl (MIT).

Files: *
Copyright: $years the lifeboat developers
License: MPL-2.0
 This Source Code Form is subject to the terms of the Mozilla Public
 License, v. 2.0. If a copy of the MPL was not distributed with this
 file, You can obtain one at https://mozilla.org/MPL/2.0/.
 .
 On Debian systems, the full text of the Mozilla Public License 2.0 can
 be found in the file /usr/share/common-licenses/MPL-2.0.
COPYRIGHT
{
    printf 'lifeboat (%s) unstable; urgency=medium\n\n' "$version"
    printf '  * Built from %s.\n\n' "$built_from"
    printf ' -- %s  %s\n' "$maintainer" "$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.Debian.gz"
# Static on purpose: PID 1 of the rescue initrd runs before any libc is there,
# and the host tool must run when the system's glibc is what is broken.
cat >"$stage/usr/share/lintian/overrides/lifeboat" <<'OVERRIDES'
# Both binaries are static by design (lifeboat runs as PID 1 of an initrd with
# no libc, and repairs systems whose glibc is gone).
lifeboat: statically-linked-binary [usr/bin/lifeboat]
lifeboat: statically-linked-binary [usr/lib/lifeboat/lifeboat-rescue]
OVERRIDES
chmod 0644 "$doc/copyright" "$doc/changelog.Debian.gz" "$stage/usr/share/lintian/overrides/lifeboat"

# Every file under /etc is a conffile: dpkg keeps the admin's edits and purge
# removes it.
(cd "$stage" && find etc -type f -printf '/%p\n' | LC_ALL=C sort) >"$stage/DEBIAN/conffiles"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) \
    >"$stage/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: lifeboat
Version: $version
Architecture: amd64
Maintainer: $maintainer
Installed-Size: $size
Section: admin
Priority: optional
Suggests: systemd-boot, dracut, kbd
Description: transactions, boot entries and rescue for atomic Linux systems
 lifeboat keeps a compact state index of a system's transactions (the /usr
 trees of a moss / AerynOS style system), manages one Boot Loader
 Specification entry per retained transaction on the ESP or XBOOTLDR
 (reading and writing GPT and FAT itself), and runs as PID 1 of a rescue
 initrd that rolls back to the transaction picked in the boot menu, repairs
 /usr from the content store, or opens a rescue shell.
 .
 The package carries the host tool (/usr/bin/lifeboat), the static rescue
 build that "lifeboat initrd build" embeds (/usr/lib/lifeboat/), the
 systemd units, the dracut module and lifeboat(8). Nothing is enabled or
 built at install time.
CONTROL
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums"
deb="target/lifeboat_${version}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
