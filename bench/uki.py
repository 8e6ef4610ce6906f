#!/usr/bin/env python3
"""Secure Boot figures (issue 28), with the static release binary and the
QEMU harness's test trees (Debian's cloud kernel, the cloud rescue initrd):

- ESP bytes per retained transaction: three transactions that share one kernel,
  synced as Type #1 entries and as signed UKIs (`boot sync --secure-boot`);
- time to build and sign one UKI: `boot sync --secure-boot --dry-run` with one
  transaction (reads the kernel from the store, builds, signs, plans; writes
  nothing) against `objcopy` (the classic --add-section recipe) + `sbsign` on the
  same stub, kernel, initrd, os-release and command line.

  python3 bench/uki.py [--work DIR] [--runs 5]

Prints a Markdown report. Nothing here is a test: the figures go to BENCHMARKS.md.
"""
import argparse, os, shutil, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "qemu"))
import lbqemu as q  # noqa: E402


def timed(cmd, runs):
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), min(ts)


def esp_bytes(img, dirs):
    total = 0
    for d in dirs:
        r = subprocess.run([q.LIFEBOAT, "disk", "ls", "-r", f"{img}:esp:{d}"], stdout=subprocess.PIPE, text=True)
        for line in r.stdout.splitlines():
            parts = line.split()
            if parts and parts[0].isdigit():
                total += int(parts[0])
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/lifeboat-bench-uki")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    img = q.Image(a.work, size="1G", esp="300M")
    for i in (1, 2, 3):
        img.commit(q.make_tree(a.work, f"t{i}", f"v{i}"), f"tx {i}")
    img.build_initrd()
    img.secure_boot_keys()
    token = "4c424f4154544553544d414348494e45"
    base = ["--root", img.root, "--esp", img.disk, "boot", "sync", "--initrd", img.initrd]
    conf = os.path.join(img.root, "etc/lifeboat/lifeboat.conf")
    with open(conf, "w") as f:
        f.write("secure-boot = no\n")
    q.lb(*base)
    t1 = esp_bytes(img.disk, [token, "loader/entries"])
    q.lb(*base, "--secure-boot")
    t2 = esp_bytes(img.disk, ["EFI/Linux"])
    print("| what (3 transactions, one kernel) | ESP bytes | per transaction |")
    print("| --- | ---: | ---: |")
    print(f"| Type #1 entries (kernel and rescue initrd shared, 3 entry files) | {t1:,} | {t1 // 3:,} |")
    print(f"| signed UKIs | {t2:,} | {t2 // 3:,} |")

    # One transaction: build + sign one image.
    one = q.Image(os.path.join(a.work, "one"), size="1G", esp="300M")
    one.commit(q.make_tree(one.work, "t1", "v1"), "tx 1")
    one.initrd = img.initrd
    one.secure_boot_keys()
    lb_cmd = [q.LIFEBOAT, "--root", one.root, "--esp", one.disk, "boot", "sync", "--initrd", one.initrd,
              "--dry-run"]
    lb_med, lb_min = timed(lb_cmd, a.runs)
    w = os.path.join(a.work, "peer")
    os.makedirs(w, exist_ok=True)
    with open(os.path.join(w, "cmdline"), "w") as f:
        f.write("console=ttyS0,115200 panic=-1 loglevel=4 lifeboat.tx=1")
    shutil.copy(os.path.join(one.work, "t1/lib/os-release"), os.path.join(w, "osrel"))
    kv, vmlinuz, _ = q.kernel_files("cloud")
    key = os.path.join(one.root, "etc/lifeboat/secureboot/db.key")
    script = os.path.join(w, "peer.sh")
    with open(script, "w") as f:
        f.write(f"""set -e
cd {w}
objcopy --add-section .osrel=osrel --change-section-vma .osrel=0x20000 \\
  --add-section .cmdline=cmdline --change-section-vma .cmdline=0x30000 \\
  --add-section .linux={vmlinuz} --change-section-vma .linux=0x2000000 \\
  --add-section .initrd={img.initrd} --change-section-vma .initrd=0x3000000 \\
  {q.STUB} uki.efi
sbsign --key {key} --cert {q.SNAKEOIL_CERT} --output uki.signed.efi uki.efi
""")
    peer_med, peer_min = timed(["sh", script], a.runs)
    print()
    print(f"| build and sign one UKI (cloud kernel {os.path.getsize(vmlinuz):,} B, initrd "
          f"{os.path.getsize(img.initrd):,} B), {a.runs} runs | median | best |")
    print("| --- | ---: | ---: |")
    print(f"| lifeboat `boot sync --secure-boot --dry-run` (store read, build, sign, plan) | {lb_med:.3f} s | "
          f"{lb_min:.3f} s |")
    print(f"| objcopy + sbsign | {peer_med:.3f} s | {peer_min:.3f} s |")


if __name__ == "__main__":
    main()
