#!/usr/bin/env python3
"""Unlock time of lifeboat-luks against cryptsetup, whole process against whole
process, on the same LUKS2 headers:

  cargo build --release --example unlock -p lifeboat-luks
  python3 bench/luks_unlock.py [--rounds 5] [--pbkdf2-iterations 1000000] [--work DIR]

With --work, the volumes are kept there and reused by the next run.

Two volumes are made by cryptsetup in a scratch directory (4 MiB files; the
keyslots area of the default one is 16 MiB, so 20 MiB): one with cryptsetup's
default Argon2id costs (its own benchmark picks them for this machine), one with
PBKDF2-SHA256 at a fixed iteration count. After an unmeasured warm-up round, each
round runs
`target/release/examples/unlock IMG` and `cryptsetup open --test-passphrase
--key-file=- IMG`, alternating which goes first, with the passphrase on standard
input; both must succeed. Prints the median wall and CPU time of each and the
ratios.
Nothing here is a test: the figures go to BENCHMARKS.md.
"""
import argparse, os, resource, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OURS = os.environ.get("LUKS_UNLOCK_BIN", os.path.join(REPO, "target/release/examples/unlock"))
PASS = b"benchmark passphrase"


def cryptsetup():
    for p in ("/usr/sbin/cryptsetup", "/sbin/cryptsetup", "/usr/bin/cryptsetup"):
        if os.path.exists(p):
            return p
    raise SystemExit("cryptsetup is not installed (scripts/setup.sh installs cryptsetup-bin)")


def run(*cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stderr}")
    return r.stdout


def timed(cmd):
    """Wall time and CPU time (user + system) of one run, in seconds. The CPU time is
    the steadier figure on a machine shared with other work."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, input=PASS, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return dt, cpu


def make(work, name, size_mib, args):
    """A volume made by cryptsetup; one already in --work is reused, so builds can be
    compared on the same headers (cryptsetup's benchmark picks new costs each time)."""
    img = os.path.join(work, name)
    if os.path.exists(img):
        return img
    key = os.path.join(work, "pass")
    with open(key, "wb") as f:
        f.write(PASS)
    with open(img, "wb") as f:
        f.truncate(size_mib << 20)
    run(cryptsetup(), "luksFormat", "--batch-mode", "--type", "luks2", "--key-file", key, *args, img)
    return img


def kdf_line(img):
    dump = run(cryptsetup(), "luksDump", img)
    keep = ("PBKDF:", "Time cost:", "Memory:", "Threads:", "Iterations:", "Hash:")
    seen = []
    for line in dump.split("Keyslots:", 1)[1].split("Digests:", 1)[0].splitlines():
        line = line.strip()
        if line.startswith(keep) and line not in seen:
            seen.append(" ".join(line.split()))
    return ", ".join(seen)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pbkdf2-iterations", type=int, default=1000000)
    ap.add_argument("--work")
    a = ap.parse_args()
    if not os.path.exists(OURS):
        raise SystemExit(f"{OURS} missing: cargo build --release --example unlock -p lifeboat-luks")
    work = a.work or tempfile.mkdtemp(prefix="luks-bench-")
    os.makedirs(work, exist_ok=True)
    try:
        volumes = [
            ("argon2id, cryptsetup's default cost", make(work, "argon2id.img", 20, [])),
            (
                f"pbkdf2-sha256, {a.pbkdf2_iterations} iterations",
                make(work, "pbkdf2.img", 4, ["--luks2-keyslots-size", "1M", "--pbkdf", "pbkdf2", "--hash", "sha256",
                                             "--pbkdf-force-iterations", str(a.pbkdf2_iterations)]),
            ),
        ]
        print(f"unlock: {OURS} ({os.path.getsize(OURS)} bytes); {a.rounds} rounds, alternating, medians")
        print("| header | lifeboat-luks wall | cryptsetup wall | ratio | lifeboat-luks CPU | cryptsetup CPU | ratio |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for label, img in volumes:
            cs = [cryptsetup(), "open", "--test-passphrase", "--key-file=-", img]
            us = [OURS, img]
            t_us, t_cs = [], []
            timed(us), timed(cs)  # warm-up round, unmeasured
            for i in range(a.rounds):
                pair = [(us, t_us), (cs, t_cs)]
                for cmd, into in pair if i % 2 == 0 else reversed(pair):
                    into.append(timed(cmd))
            wu, wc = (statistics.median(t[0] for t in ts) for ts in (t_us, t_cs))
            cu, cc = (statistics.median(t[1] for t in ts) for ts in (t_us, t_cs))
            print(f"| {label} ({kdf_line(img)}) | {wu:.3f} s | {wc:.3f} s | {wu / wc:.2f}x "
                  f"| {cu:.3f} s | {cc:.3f} s | {cu / cc:.2f}x |", flush=True)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
