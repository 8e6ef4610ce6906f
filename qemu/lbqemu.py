"""The QEMU harness: compose a bootable disk image with lifeboat itself and boot it
with real OVMF, systemd-boot and a Debian kernel, driving the serial console.

Composition (all unprivileged on regular files, no loop devices):
  lifeboat disk create -> state commit of test /usr trees into a root directory
  -> boot install + boot sync onto the image's ESP -> initrd build -> the ext4 root
  written into the image with `mke2fs -d DIR -E offset=BYTES`.

Boot: qemu-system-x86_64 -machine q35,accel=tcg, OVMF as pflash with a per-test copy
of the VARS file (kept between the boots of one test), the disk on NVMe, the serial
console on stdio, and isa-debug-exit so the guest can end the VM with a verdict.

Usable for your own images: Vm(disk, vars).boot() and expect()/send() on the console.
"""
import os, re, select, shutil, subprocess, sys, time, json

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CACHE = os.environ.get("LIFEBOAT_QEMU_CACHE", os.path.join(HERE, "cache"))
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
# Firmware by name: (CODE, VARS template). "snakeoil" is Debian's Secure Boot
# build with PK, KEK and db enrolled as the snakeoil key (Secure Boot
# enforcing); its db key and certificate are /usr/share/ovmf/PkKek-1-snakeoil.*.
FIRMWARE = {
    "plain": (OVMF_CODE, OVMF_VARS),
    "snakeoil": ("/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd", "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd"),
}
SNAKEOIL_KEY = "/usr/share/ovmf/PkKek-1-snakeoil.key"  # encrypted, password "snakeoil"
SNAKEOIL_CERT = "/usr/share/ovmf/PkKek-1-snakeoil.pem"
SDBOOT = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
STUB = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
LIFEBOAT = os.environ.get("LIFEBOAT_BIN", os.path.join(REPO, "target/x86_64-unknown-linux-musl/release/lifeboat"))
# What PID 1 runs: the same crate without SQLite (scripts/build.sh builds both).
RESCUE = os.environ.get("LIFEBOAT_RESCUE_BIN",
                        os.path.join(REPO, "target/rescue/x86_64-unknown-linux-musl/release/lifeboat"))
GUEST_EXIT_OK = 0x10 * 2 + 1  # isa-debug-exit: (value << 1) | 1
VERBOSE = os.environ.get("LIFEBOAT_QEMU_VERBOSE") == "1"


class Failure(Exception):
    pass


def sh(*cmd, **kw):
    """Runs a command; raises with its output when it fails."""
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        raise Failure(f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout}")
    return r.stdout


def lb(*args):
    return sh(LIFEBOAT, *map(str, args))


def kver():
    return open(os.path.join(CACHE, "kver")).read().strip()


def guest_init(work):
    out = os.path.join(work, "guest-init")
    if not os.path.exists(out):
        sh("gcc", "-O2", "-o", out, os.path.join(HERE, "guest/init.c"))
    return out


def generic_kver():
    """Debian's generic kernel (every storage and filesystem driver a module)."""
    with open(os.path.join(CACHE, "generic-kver")) as f:
        return f.read().strip()


def kernel_files(kernel):
    """(version, vmlinuz, module directory) of "cloud", "generic" or "generic2"
    (a second generic kernel, of another ABI)."""
    if kernel in ("generic", "generic2"):
        with open(os.path.join(CACHE, f"{kernel}-kver")) as f:
            k = f.read().strip()
        return k, os.path.join(CACHE, f"{kernel}/boot/vmlinuz-{k}"), os.path.join(CACHE, f"{kernel}/lib/modules/{k}")
    return kver(), os.path.join(CACHE, "vmlinuz"), os.path.join(CACHE, "modules")


def generic_set_tree(work, kernel="generic", compress=False):
    """The generic module set of a kernel (the modules an initrd built from its
    whole module directory holds) in a module directory of its own, depmod run:
    what a test /usr carries as lib/modules/<kver>. With `compress`, the modules
    are .ko.xz and .ko.zst alternately. Returns (directory, number of modules)."""
    kv, _, mods = kernel_files(kernel)
    tag = f"{kernel}-{'compressed' if compress else 'plain'}"
    base = os.path.join(work, f"modules-{tag}")
    out = os.path.join(base, "lib/modules", kv)
    shutil.rmtree(base, ignore_errors=True)
    plain = os.path.join(work, f"{tag}.cpio")
    lb("initrd", "build", "--out", plain, "--modules", mods, "--compress", "none", "--binary", RESCUE)
    with open(plain, "rb") as f:
        listing = subprocess.run(["cpio", "-t", "--quiet"], stdin=f, stdout=subprocess.PIPE, text=True,
                                 check=True).stdout.split()
    os.unlink(plain)
    prefix = f"lib/modules/{kv}/"
    kos = [p[len(prefix):] for p in listing if p.startswith(prefix) and p.endswith(".ko")]
    for i, rel in enumerate(kos):
        dest = os.path.join(out, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy(os.path.join(mods, rel), dest)
        if compress and i % 2:
            sh("xz", "-f", "--check=crc32", dest)
        elif compress:
            sh("zstd", "-q", "-f", "--rm", dest)
    for f in ["modules.order", "modules.builtin", "modules.builtin.modinfo"]:
        if os.path.exists(os.path.join(mods, f)):
            shutil.copy(os.path.join(mods, f), os.path.join(out, f))
    sh("depmod", "-b", base, kv)
    return out, len(kos)


def make_tree(work, name, marker, extra_cmdline="", kernel="cloud", modules=None):
    """A test /usr: the dynamic guest init with glibc, a kernel (with `modules`
    as its lib/modules/<kver>, when given), systemd-boot, lifeboat and its
    rescue build (lib/lifeboat/lifeboat-rescue, what boot sync builds each
    kernel's rescue initrd around)."""
    t = os.path.join(work, name)
    shutil.rmtree(t, ignore_errors=True)
    k, vmlinuz, _ = kernel_files(kernel)
    for d in ["bin", "sbin", "lib/x86_64-linux-gnu", "lib64", f"lib/kernel/{k}", "lib/kernel/cmdline.d",
              "lib/systemd/boot/efi", "lib/lbtest", "lib/lifeboat"]:
        os.makedirs(os.path.join(t, d), exist_ok=True)
    shutil.copy(guest_init(work), os.path.join(t, "sbin/init"))
    shutil.copy("/lib/x86_64-linux-gnu/libc.so.6", os.path.join(t, "lib/x86_64-linux-gnu/libc.so.6"))
    shutil.copy("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", os.path.join(t, "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"))
    os.symlink("../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", os.path.join(t, "lib64/ld-linux-x86-64.so.2"))
    shutil.copy(vmlinuz, os.path.join(t, f"lib/kernel/{k}/vmlinuz"))
    shutil.copy(SDBOOT, os.path.join(t, "lib/systemd/boot/efi/systemd-bootx64.efi"))
    shutil.copy(STUB, os.path.join(t, "lib/systemd/boot/efi/linuxx64.efi.stub"))
    shutil.copy(LIFEBOAT, os.path.join(t, "bin/lifeboat"))
    shutil.copy(RESCUE, os.path.join(t, "lib/lifeboat/lifeboat-rescue"))
    if modules:
        shutil.copytree(modules, os.path.join(t, f"lib/modules/{k}"), symlinks=True)
    with open(os.path.join(t, "lib/kernel/cmdline.d/10-console.cmdline"), "w") as f:
        f.write("console=ttyS0,115200 panic=-1 loglevel=4 " + extra_cmdline + "\n")
    with open(os.path.join(t, "lib/os-release"), "w") as f:
        f.write('NAME="Lifeboat Test OS"\nID=lbtest\nPRETTY_NAME="Lifeboat Test OS"\n')
    with open(os.path.join(t, "lib/lbtest/marker"), "w") as f:
        f.write(marker + "\n")
    return t


class Image:
    """A composed disk: a root directory with transactions, and the disk image."""

    def __init__(self, work, size="1G", esp="200M", root=None):
        self.work = work
        os.makedirs(work, exist_ok=True)
        self.root = os.path.join(work, "root")
        self.disk = os.path.join(work, "disk.img")
        self.initrd = os.path.join(work, "lifeboat.initrd")
        shutil.rmtree(self.root, ignore_errors=True)
        for f in (self.disk,):
            if os.path.exists(f):
                os.unlink(f)
        for d in ["etc", "proc", "sys", "dev", "run", "tmp", "var", "sysroot"]:
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        for link, target in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")]:
            os.symlink(target, os.path.join(self.root, link))
        with open(os.path.join(self.root, "etc/machine-id"), "w") as f:
            f.write("4c424f4154544553544d414348494e45\n")
        lb("disk", "create", self.disk, "--size", size, "--esp-size", esp, *(["--root-size", root] if root else []))
        self.parts = json.loads(lb("--json", "disk", "ls", self.disk))["partitions"]

    def add_swap(self):
        """A Linux swap partition in the rest of the disk (after a `root=` sized
        root), made by the real sgdisk and mkswap; returns its partition dict."""
        sh("sgdisk", "-n", "0:0:0", "-t", "0:8200", "-c", "0:swap", self.disk)
        self.parts = json.loads(lb("--json", "disk", "ls", self.disk))["partitions"]
        p = max(self.parts, key=lambda p: p["number"])
        tmp = os.path.join(self.work, "swap.part")
        with open(tmp, "wb") as f:
            f.truncate(p["size"])
        sh("mkswap", "-q", "-L", "lbswap", tmp)
        sh("dd", f"if={tmp}", f"of={self.disk}", "bs=1M", f"seek={p['start']}", "oflag=seek_bytes", "conv=notrunc",
           "status=none")
        os.unlink(tmp)
        return p

    def commit(self, tree, summary):
        return lb("--root", self.root, "state", "commit", "--from", tree, "--summary", summary)

    def build_initrd(self, kernel="cloud", modules=None, extra_modules=(), extra=()):
        """The rescue initrd: for the cloud kernel (its drivers built in) only
        efivarfs; for the generic one the generic module set, or `modules` (a
        module directory) instead of the kernel's own."""
        if kernel == "generic":
            mods = modules or kernel_files("generic")[2]
            return lb("initrd", "build", "--out", self.initrd, "--modules", mods, "--binary", RESCUE, *extra)
        more = [a for m in extra_modules for a in ("--module", m)]
        return lb("initrd", "build", "--out", self.initrd, "--modules", os.path.join(CACHE, "modules"),
                  "--module", "efivarfs", *more, "--binary", RESCUE)

    def secure_boot_keys(self):
        """The snakeoil db key (decrypted, mode 0600) and certificate as the
        root's etc/lifeboat/secureboot/db.{key,crt}, and secure-boot = yes in
        its lifeboat.conf."""
        d = os.path.join(self.root, "etc/lifeboat/secureboot")
        os.makedirs(d, exist_ok=True)
        key = os.path.join(d, "db.key")
        sh("openssl", "pkey", "-in", SNAKEOIL_KEY, "-passin", "pass:snakeoil", "-out", key)
        os.chmod(key, 0o600)
        shutil.copy(SNAKEOIL_CERT, os.path.join(d, "db.crt"))
        with open(os.path.join(self.root, "etc/lifeboat/lifeboat.conf"), "a") as f:
            f.write("secure-boot = yes\n")

    def boot_setup(self, timeout=0, tries=None):
        lb("--root", self.root, "--esp", self.disk, "boot", "install")
        args = ["--root", self.root, "--esp", self.disk, "boot", "sync", "--initrd", self.initrd, "--timeout", str(timeout)]
        if tries is not None:
            args += ["--tries", str(tries)]
        return lb(*args)

    def lbtest(self, text):
        with open(os.path.join(self.root, "etc/lbtest.conf"), "w") as f:
            f.write(text)

    def _luks_root(self, keyfile, fill):
        """The root partition as a LUKS2 container made by the real cryptsetup
        (opened by `keyfile`): `fill(plain)` makes the plaintext in the file
        `plain` (sized to the data area), which is then encrypted after the
        header. Returns (the container's UUID, what `fill` returned)."""
        p = next(p for p in self.parts if p["kind"] == "root-x86-64")
        hdr, plain = (os.path.join(self.work, n) for n in ("luks-hdr.img", "plain.img"))
        with open(hdr, "wb") as h:
            h.truncate(p["size"])
        uuid, key, offset = luks_format(hdr, keyfile)
        with open(plain, "wb") as h:
            h.truncate(p["size"] - offset)
        filled = fill(plain)
        with open(hdr, "rb") as src, open(self.disk, "r+b") as dst:
            dst.seek(p["start"])
            dst.write(src.read(offset))
        xts_encrypt_into(plain, self.disk, p["start"] + offset, key)
        for f in (hdr, plain):
            os.unlink(f)
        return uuid, filled

    def write_root_luks(self, passphrase, fs_uuid="6c1f0b7e-3d2a-4c55-9e11-7a0d5b9c2e44"):
        """The root as ext4 (mke2fs -d) inside a LUKS2 container opened by
        `passphrase`. Returns the container's UUID."""
        pw = os.path.join(self.work, "passphrase")
        with open(pw, "w") as f:
            f.write(passphrase)
        fill = lambda plain: sh("mke2fs", "-q", "-F", "-t", "ext4", "-U", fs_uuid, "-d", self.root, plain)
        return self._luks_root(pw, fill)[0]

    def write_root_lvm_on_luks(self, keyfile, fs_uuid, vg="vg0", swap_mib=64):
        """Debian's "encrypted LVM" layout in the root partition: a LUKS2
        container (opened by `keyfile`) holding one LVM PV with a volume group
        `vg` of a `root` LV (ext4, mke2fs -d) and a `swap` LV, made by the real
        lvm2 on a loop device (activation off: the host has no device-mapper;
        an lvm.conf that sees only that loop device).
        Returns (the container's UUID, the root LV's offset in the PV)."""

        def fill(plain):
            conf = os.path.join(self.work, "lvm")
            os.makedirs(conf, exist_ok=True)
            loop = sh("losetup", "--find", "--show", plain).strip()
            try:
                with open(os.path.join(conf, "lvm.conf"), "w") as f:
                    f.write(f"""devices {{ filter = [ "a|^{loop}$|", "r|.*|" ] global_filter = [ "a|^{loop}$|", "r|.*|" ]
      use_devicesfile = 0 hints = "none" obtain_device_list_from_udev = 0 external_device_info_source = "none" }}
    activation {{ udev_sync = 0 udev_rules = 0 monitoring = 0 }}
    backup {{ backup = 0 archive = 0 backup_dir = "{conf}/backup" archive_dir = "{conf}/archive" }}
    global {{ activation = 0 locking_dir = "{conf}/lock" }}
    """)
                env = dict(os.environ, LVM_SYSTEM_DIR=conf)
                run = lambda *a: sh("lvm", *a, env=env)
                # Reports: stdout alone (lvm warns on stderr about the activation it skips).
                report = lambda *a: subprocess.run(["lvm", *a], env=env, stdout=subprocess.PIPE,
                                                   stderr=subprocess.DEVNULL, text=True, check=True).stdout
                run("pvcreate", "-q", loop)
                run("vgcreate", "-q", vg, loop)
                run("lvcreate", "-q", "-Zn", "-L", f"{swap_mib}M", "-n", "swap", vg)
                run("lvcreate", "-q", "-Zn", "-l", "100%FREE", "-n", "root", vg)
                rep = json.loads(report("lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o",
                                     "lv_name,lv_size,seg_pe_ranges", vg))["report"][0]["lv"]
                pe = json.loads(report("pvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o",
                                    "pe_start,vg_extent_size", loop))["report"][0]["pv"][0]
                root = next(l for l in rep if l["lv_name"] == "root")
                first_pe = int(root["seg_pe_ranges"].split(":")[1].split("-")[0])
                root_off = int(pe["pe_start"]) + first_pe * int(pe["vg_extent_size"])
                run("vgchange", "-q", "-an", vg)
            finally:
                subprocess.run(["losetup", "-d", loop])
            size_k = int(root["lv_size"]) // 1024
            sh("mke2fs", "-q", "-F", "-t", "ext4", "-U", fs_uuid, "-E", f"offset={root_off}", "-d", self.root,
               plain, f"{size_k}k")
            return root_off

        return self._luks_root(keyfile, fill)

    def write_root(self, fs="ext4", label="lbroot", ext4_opts="", ext4_block=None):
        """Writes the root directory into the image's root partition: ext4 with
        `mke2fs -d`, btrfs with `mkfs.btrfs --rootdir` (both without mounting),
        xfs through a loop device of the partition."""
        p = next(p for p in self.parts if p["kind"] == "root-x86-64")
        if fs == "ext4":
            opts = f"offset={p['start']}" + (f",{ext4_opts}" if ext4_opts else "")
            block = ["-b", str(ext4_block)] if ext4_block else []
            sh("mke2fs", "-q", "-F", "-t", "ext4", *block, "-E", opts, "-d", self.root,
               self.disk, f"{p['size'] // 1024}k")
            return
        loop = sh("losetup", "--find", "--show", "--offset", str(p["start"]), "--sizelimit", str(p["size"]),
                  self.disk).strip()
        try:
            if fs == "btrfs":
                sh("mkfs.btrfs", "-q", "-f", "-L", label, "--rootdir", self.root, loop)
            elif fs == "xfs":
                sh("mkfs.xfs", "-q", "-f", "-L", label, loop)
                mnt = os.path.join(self.work, "mnt-root")
                os.makedirs(mnt, exist_ok=True)
                sh("mount", loop, mnt)
                try:
                    sh("cp", "-a", f"{self.root}/.", mnt)
                finally:
                    sh("umount", mnt)
            else:
                raise Failure(f"unknown root filesystem {fs}")
        finally:
            subprocess.run(["losetup", "-d", loop])


def luks_format(path, passphrase_file, *extra):
    """The real cryptsetup's LUKS2 header on a plain file (no dm-crypt needed):
    argon2id with 4 passes and 2 lanes as luksFormat chooses by default, its
    memory fixed at 128 MiB so the cost does not depend on how busy the host was
    when cryptsetup benchmarked it. Returns (luks uuid, volume key, data offset)."""
    sh("cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode", "--key-file", passphrase_file,
       "--sector-size", "512", "--pbkdf", "argon2id", "--pbkdf-memory", "131072", "--pbkdf-force-iterations", "4",
       "--pbkdf-parallel", "2", *extra, path)
    dump = sh("cryptsetup", "luksDump", "--dump-volume-key", "--batch-mode", "--key-file", passphrase_file, path)
    uuid = re.search(r"^UUID:\s*(\S+)", dump, re.M).group(1)
    hexkey = re.search(r"MK dump:\s*((?:[0-9a-f]{2}\s+)+)", dump).group(1)
    key = bytes.fromhex("".join(hexkey.split()))
    info = sh("cryptsetup", "luksDump", path)
    offset = int(re.search(r"^\s*offset:\s*(\d+) \[bytes\]", info, re.M).group(1))
    return uuid, key, offset


def xts_encrypt_into(plain, disk, at, key):
    """Encrypts the file `plain` sector by sector (AES-XTS, 512-byte sectors, the
    plain64 IV: the sector number, little-endian) into `disk` at byte `at`, with
    Python's `cryptography` — an implementation independent of lifeboat's."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    aes = algorithms.AES(key)
    with open(plain, "rb") as src, open(disk, "r+b") as dst:
        dst.seek(at)
        sector = 0
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            out = bytearray()
            for i in range(0, len(chunk), 512):
                enc = Cipher(aes, modes.XTS(sector.to_bytes(16, "little"))).encryptor()
                out += enc.update(chunk[i:i + 512]) + enc.finalize()
                sector += 1
            dst.write(out)


# Every VM started, so a failed scenario's guest never outlives it.
RUNNING = []


def kill_all():
    """Stops every VM still running (after a scenario, passed or failed)."""
    while RUNNING:
        RUNNING.pop().kill()


class Vm:
    """One QEMU run on the serial console."""

    # How the test disk is attached: the storage paths a generic kernel must find.
    BUSES = {
        "nvme": ["-device", "nvme,drive=d0,serial=lifeboat0"],
        "virtio-blk": ["-device", "virtio-blk-pci,drive=d0"],
        "virtio-scsi": ["-device", "virtio-scsi-pci,id=scsi0", "-device", "scsi-hd,drive=d0,bus=scsi0.0"],
        "ahci": ["-device", "ide-hd,drive=d0,bus=ide.0"],
        "usb": ["-device", "qemu-xhci,id=xhci", "-device", "usb-storage,drive=d0,bus=xhci.0"],
    }

    def __init__(self, disk, vars_file, log, extra=(), bus="nvme", write_log=None, firmware="plain"):
        self.disk, self.vars, self.log_path = disk, vars_file, log
        # Which OVMF (FIRMWARE): the VARS copy is made from its own template.
        self.code, vars_template = FIRMWARE[firmware]
        for f in (self.code, vars_template):
            if not os.path.exists(f):
                raise Failure(f"firmware {firmware}: {f} is missing (apt-get install ovmf)")
        # With write_log, the disk goes through QEMU's blklogwrites driver and
        # every write and flush of the guest is appended to that file.
        self.write_log = write_log
        self.bus = bus
        if not os.path.exists(vars_file):
            shutil.copy(vars_template, vars_file)
        self.extra = list(extra)
        self.buf = ""
        self.proc = None
        self.started = None

    def boot(self):
        cmd = ["qemu-system-x86_64", "-machine", "q35,accel=tcg", "-m", "1024", "-smp", "1",
               "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
               "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={self.code}",
               "-drive", f"if=pflash,format=raw,unit=1,file={self.vars}",
               # cache=unsafe: a guest flush is not an fdatasync of the image on
               # the host, so a host busy writing back other data (a build, the
               # images of earlier scenarios) cannot hold the guest's I/O past
               # its NVMe timeout. The host does not crash in a test, so what the
               # guest wrote is in the image for the next boot either way.
               ] + self._drive() + self.BUSES[self.bus] + [
               "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"] + self.extra
        self.logf = open(self.log_path, "a")
        self.logf.write(f"\n===== boot {time.strftime('%H:%M:%S')} =====\n")
        self.started = time.time()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        RUNNING.append(self)
        os.set_blocking(self.proc.stdout.fileno(), False)
        return self

    def _drive(self):
        if not self.write_log:
            return ["-drive", f"file={self.disk},if=none,id=d0,format=raw,cache=unsafe"]
        open(self.write_log, "wb").close()
        return ["-blockdev", f"driver=file,filename={self.disk},node-name=base,cache.no-flush=on",
                "-blockdev", f"driver=file,filename={self.write_log},node-name=wlog,cache.no-flush=on",
                "-blockdev", "driver=blklogwrites,node-name=d0,file=base,log=wlog,log-sector-size=512,log-append=off"]

    def _pump(self, wait):
        r, _, _ = select.select([self.proc.stdout], [], [], wait)
        if not r:
            return False
        try:
            data = os.read(self.proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return False
        if not data:
            return None
        text = data.decode("utf-8", "replace")
        self.buf += text
        self.logf.write(text)
        self.logf.flush()
        if VERBOSE:
            sys.stdout.write(text)
            sys.stdout.flush()
        return True

    def expect(self, pattern, timeout=60):
        """Waits for a regex on the console; returns the match."""
        rx = re.compile(pattern)
        deadline = time.time() + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            left = deadline - time.time()
            if left <= 0:
                raise Failure(f"timed out after {timeout}s waiting for {pattern!r}; see {self.log_path}")
            got = self._pump(min(left, 0.5))
            if got is None:
                if rx.search(self.buf):
                    continue
                raise Failure(f"VM exited (status {self.proc.wait()}) while waiting for {pattern!r}; see {self.log_path}")

    def send(self, text, slow=False):
        self.logf.write(f"<<sent {text!r}>>")
        for ch in (text if slow else [text]):
            self.proc.stdin.write(ch.encode())
            self.proc.stdin.flush()
            if slow:
                time.sleep(0.15)

    def wait_exit(self, timeout=120):
        deadline = time.time() + timeout
        while self.proc.poll() is None:
            if time.time() > deadline:
                self.proc.kill()
                raise Failure(f"VM did not stop within {timeout}s; see {self.log_path}")
            self._pump(0.5)
        while self._pump(0):
            pass
        self.logf.close()
        return self.proc.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
