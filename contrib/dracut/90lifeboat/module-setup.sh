#!/bin/bash
# dracut module: puts the static lifeboat binary and its unit into a systemd-based
# initrd. Install as /usr/lib/dracut/modules.d/90lifeboat/ together with
# lifeboat-initrd.service, then `dracut --add lifeboat`.

check() {
    require_binaries lifeboat || return 1
    return 255
}

depends() {
    echo systemd
}

install() {
    inst_binary lifeboat /usr/bin/lifeboat
    inst_simple "$moddir/lifeboat-initrd.service" "$systemdsystemunitdir/lifeboat-initrd.service"
    $SYSTEMCTL -q --root "$initdir" add-wants initrd-root-fs.target lifeboat-initrd.service
}
