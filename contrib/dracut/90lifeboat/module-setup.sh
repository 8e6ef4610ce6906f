#!/bin/bash
# dracut module: puts the static lifeboat binary and its unit into a systemd-based
# initrd. Install as /usr/lib/dracut/modules.d/90lifeboat/ together with
# lifeboat-initrd.service, then `dracut --add lifeboat`. The binary is taken from
# $LIFEBOAT_BIN, else /usr/bin/lifeboat; it is static, so nothing else is needed.

lifeboat_bin() {
    local b="${LIFEBOAT_BIN:-/usr/bin/lifeboat}"
    [[ -x $b ]] && echo "$b"
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
