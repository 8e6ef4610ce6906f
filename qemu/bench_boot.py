#!/usr/bin/env python3
"""Boot benchmark: lifeboat's initrd against a dracut-built initrd (Debian's dracut,
generic, for the same kernel and root), median of N boots each, same run.

  python3 qemu/bench_boot.py [--boots 3]

Measures QEMU start -> the real init (wall clock, serial console) and kernel start
-> the real init (the guest init's /proc/uptime), and both initrd sizes.
"""
import argparse, os, shutil, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lbqemu as q
from lbqemu import lb


def boot_once(img, work, tag, n):
    vars_ = os.path.join(work, f"vars-{tag}-{n}.fd")
    t0 = time.time()
    vm = q.Vm(img.disk, vars_, os.path.join(work, f"console-{tag}.log")).boot()
    m = vm.expect(r"LBTEST: booted tx=\d+ marker=\S+ boot=\d+ uptime=([\d.]+)", 300)
    wall = time.time() - t0
    code = vm.wait_exit(120)
    if code != q.GUEST_EXIT_OK:
        raise q.Failure(f"{tag}: guest status {code}")
    return wall, float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--boots", type=int, default=3)
    a = ap.parse_args()
    subprocess.run([os.path.join(q.HERE, "fetch.sh")], check=True)
    work = os.path.join(q.HERE, "out", "bench-boot")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    img = q.Image(work)
    img.commit(q.make_tree(work, "t1", "v1"), "bench")
    t = time.time()
    img.build_initrd()
    lb_build = time.time() - t
    img.lbtest("")
    img.boot_setup()
    kver = q.kver()
    dracut = os.path.join(work, "dracut.img")
    t = time.time()
    q.sh("dracut", "--no-hostonly", "--kver", kver, "--kmoddir", os.path.join(q.CACHE, "kernel/lib/modules", kver),
         "--force", dracut)
    dracut_build = time.time() - t
    root_uuid = next(p["partuuid"] for p in img.parts if p["kind"] == "root-x86-64")
    # A hand-written entry for the dracut initrd, using the same kernel file.
    entries = lb("disk", "ls", f"{img.disk}:esp:loader/entries")
    ours = [l.split()[-1] for l in entries.splitlines() if l.strip().endswith(".conf")][0]
    text = lb("disk", "cat", f"{img.disk}:esp:{ours}")
    linux = next(l.split()[1] for l in text.splitlines() if l.startswith("linux "))
    entry = (f"title dracut (benchmark)\nlinux {linux}\ninitrd /dracut.img\n"
             f"options root=PARTUUID={root_uuid} rw console=ttyS0,115200 panic=-1 loglevel=4 init=/sbin/init\n")
    open(os.path.join(work, "dracut.conf"), "w").write(entry)
    lb("disk", "put", dracut, f"{img.disk}:esp:dracut.img")
    lb("disk", "put", os.path.join(work, "dracut.conf"), f"{img.disk}:esp:loader/entries/dracut.conf")
    img.write_root()
    results = {}
    for tag, default in (("lifeboat", "1"), ("dracut", "dracut.conf")):
        lb("--root", img.root, "--esp", img.disk, "boot", "set-default", default)
        results[tag] = [boot_once(img, work, tag, n) for n in range(a.boots)]
    sizes = {"lifeboat": os.path.getsize(img.initrd), "dracut": os.path.getsize(dracut)}
    builds = {"lifeboat": lb_build, "dracut": dracut_build}
    print(f"| initrd | size | build | QEMU start -> real init (median of {a.boots}) | kernel start -> real init (median) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for tag in ("lifeboat", "dracut"):
        w = statistics.median(r[0] for r in results[tag])
        k = statistics.median(r[1] for r in results[tag])
        print(f"| {tag} | {sizes[tag]:,} B | {builds[tag]:.1f} s | {w:.2f} s | {k:.2f} s |")
    lw = statistics.median(r[1] for r in results["lifeboat"])
    dw = statistics.median(r[1] for r in results["dracut"])
    print(f"\nlifeboat's initrd is {sizes['dracut'] / sizes['lifeboat']:.0f}x smaller; kernel start -> real init "
          f"{dw / lw:.1f}x faster. Raw: {results}")


if __name__ == "__main__":
    main()
