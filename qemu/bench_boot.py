#!/usr/bin/env python3
"""Boot benchmark on Debian's generic kernel (every storage and filesystem driver a
module): lifeboat's initrd (generic set, and --host-only) against dracut's
(generic; --hostonly; --hostonly told the guest's disk and filesystem drivers)
for the same kernel, the same disk and root, boots alternating between the
contenders, median of N boots each.

  python3 qemu/bench_boot.py [--boots 3]

Measures each initrd's size and build time (whole process), and per boot: QEMU
start -> the real init (wall clock), kernel start -> the real init (the guest
init's /proc/uptime), and the initrd phase: the kernel handing over to the
initrd's /init ("Run /init as init process" in the kernel log) -> the real init.
The disk is virtio-blk, which is also what this build host's root sits on, so the
host-only initrds (built from this machine's devices) can boot the guest.
"""
import argparse, os, shutil, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lbqemu as q
from lbqemu import lb


def boot_once(img, work, tag, n):
    vars_ = os.path.join(work, f"vars-{tag}-{n}.fd")
    t0 = time.time()
    vm = q.Vm(img.disk, vars_, os.path.join(work, f"console-{tag}.log"), bus="virtio-blk").boot()
    m = vm.expect(r"LBTEST: booted tx=\d+ marker=\S+ boot=\d+ uptime=([\d.]+)", 300)
    wall = time.time() - t0
    init = float(m.group(1))
    s = vm.expect(r"LBTEST: initrd started at ([\d.]+)", 30)
    code = vm.wait_exit(120)
    if code != q.GUEST_EXIT_OK:
        raise q.Failure(f"{tag}: guest status {code}")
    return wall, init, init - float(s.group(1))


def timed(*cmd, env=None):
    t = time.time()
    q.sh(*cmd, env=env)
    return time.time() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--boots", type=int, default=3)
    a = ap.parse_args()
    subprocess.run([os.path.join(q.HERE, "fetch.sh")], check=True)
    work = os.path.join(q.HERE, "out", "bench-boot")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    kver, _, mods = q.kernel_files("generic")
    img = q.Image(work)
    img.commit(q.make_tree(work, "t1", "v1", kernel="generic"), "bench")
    img.lbtest("")
    initrds, builds = {}, {}
    builds["lifeboat generic"] = timed(q.LIFEBOAT, "initrd", "build", "--out", img.initrd, "--modules", mods,
                                       "--binary", q.RESCUE)
    initrds["lifeboat generic"] = img.initrd
    hostonly = os.path.join(work, "lifeboat-hostonly.initrd")
    builds["lifeboat --host-only"] = timed(q.LIFEBOAT, "initrd", "build", "--out", hostonly, "--modules", mods,
                                           "--host-only", "--binary", q.RESCUE)
    initrds["lifeboat --host-only"] = hostonly
    # dracut --hostonly records the modules this build host's own kernel loads;
    # its virtio disk driver and ext4 are built in here, so that initrd cannot
    # find the guest's disk (measured for size and build time only). The third
    # dracut is host-only told what the guest needs — what lifeboat --host-only
    # works out from the host's devices itself — and without the host's root in
    # its command line.
    guest = ["--add-drivers", "virtio_pci virtio_blk", "--filesystems", "ext4", "--no-hostonly-cmdline"]
    for tag, flags, name in (("dracut generic", ["--no-hostonly"], "generic"),
                             ("dracut --hostonly", ["--hostonly"], "hostonly"),
                             ("dracut --hostonly + guest drivers",
                              ["--hostonly", *guest], "hostonly-guest")):
        out = os.path.join(work, f"{name}.dracut.img")
        builds[tag] = timed("dracut", *flags, "--kver", kver, "--kmoddir", mods, "--force", out)
        initrds[tag] = out
    img.boot_setup()
    root_uuid = next(p["partuuid"] for p in img.parts if p["kind"] == "root-x86-64")
    entries = lb("disk", "ls", f"{img.disk}:esp:loader/entries")
    ours = [l.split()[-1] for l in entries.splitlines() if l.strip().endswith(".conf")][0]
    text = lb("disk", "cat", f"{img.disk}:esp:{ours}")
    linux = next(l.split()[1] for l in text.splitlines() if l.startswith("linux "))
    opts = f"root=PARTUUID={root_uuid} rw console=ttyS0,115200 panic=-1 loglevel=4 init=/sbin/init"
    names = {}
    for i, (tag, path) in enumerate(initrds.items()):
        name = f"bench{i}"
        names[tag] = f"{name}.conf"
        lb("disk", "put", path, f"{img.disk}:esp:{name}.img")
        entry = f"title {tag}\nlinux {linux}\ninitrd /{name}.img\noptions {opts}\n"
        with open(os.path.join(work, f"{name}.conf"), "w") as f:
            f.write(entry)
        lb("disk", "put", os.path.join(work, f"{name}.conf"), f"{img.disk}:esp:loader/entries/{name}.conf")
    img.write_root()
    booted = [t for t in initrds if t != "dracut --hostonly"]
    results = {t: [] for t in booted}
    for n in range(a.boots + 1):
        for tag in booted:
            lb("--root", img.root, "--esp", img.disk, "boot", "set-default", names[tag])
            r = boot_once(img, work, tag, n)
            if n > 0:
                results[tag].append(r)
    print(f"kernel {kver} (Debian generic), virtio-blk disk, QEMU TCG; medians of {a.boots} boots per "
          f"contender, alternating, after one unmeasured round")
    print("| initrd | size | build (whole process) | QEMU start -> real init | kernel start -> real init | "
          "initrd phase (/init -> real init) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    med = lambda tag, i: statistics.median(r[i] for r in results[tag])
    for tag in initrds:
        if tag in results:
            print(f"| {tag} | {os.path.getsize(initrds[tag]):,} B | {builds[tag]:.1f} s | {med(tag, 0):.2f} s | "
                  f"{med(tag, 1):.2f} s | {med(tag, 2):.3f} s |")
        else:
            print(f"| {tag} | {os.path.getsize(initrds[tag]):,} B | {builds[tag]:.1f} s | (does not find the guest's "
                  f"disk: built from this host) | | |")
    lg, dg = med("lifeboat generic", 2), med("dracut generic", 2)
    print(f"\ninitrd phase: dracut generic / lifeboat generic = {dg / lg:.1f}x; raw: {results}")


if __name__ == "__main__":
    main()
