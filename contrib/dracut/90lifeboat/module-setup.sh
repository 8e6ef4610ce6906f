#!/bin/bash
# dracut module: puts the static lifeboat binary and its unit into a systemd-based
# initrd. Install as /usr/lib/dracut/modules.d/90lifeboat/ together with
# lifeboat-initrd.service, then `dracut --add lifeboat`. The binary is taken from
# $LIFEBOAT_BIN, else the rescue build the package installs
# (/usr/lib/lifeboat/lifeboat-rescue: no SQLite, which the initrd never needs),
# else /usr/bin/lifeboat; it is static, so nothing else is needed.

lifeboat_bin() {
    local b
    for b in ${LIFEBOAT_BIN:+"$LIFEBOAT_BIN"} /usr/lib/lifeboat/lifeboat-rescue /usr/bin/lifeboat; do
        [[ -x $b ]] && echo "$b" && return 0
        # A binary named explicitly is the only one to take.
        [[ -n ${LIFEBOAT_BIN:-} ]] && return 1
    done
    return 1
}

check() {
    [[ -n $(lifeboat_bin) ]] || return 1
    return 255
}

depends() {
    echo systemd
}

install() {
    inst_simple "$(lifeboat_bin)" /usr/bin/lifeboat
    inst_simple "$moddir/lifeboat-initrd.service" "$systemdsystemunitdir/lifeboat-initrd.service"
    $SYSTEMCTL -q --root "$initdir" add-wants initrd-root-fs.target lifeboat-initrd.service
}
