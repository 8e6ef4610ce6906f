#!/usr/bin/env python3
"""Unlock time of lifeboat-luks against cryptsetup, whole process against whole
process, on the same LUKS2 headers:

  cargo build --release --example unlock -p lifeboat-luks
  python3 bench/luks_unlock.py [--rounds 5] [--pbkdf2-iterations 1000000] [--work DIR]

Two volumes are made by cryptsetup in a scratch directory (4 MiB files; the
keyslots area of the default one is 16 MiB, so 20 MiB): one with cryptsetup's
default Argon2id costs (its own benchmark picks them for this machine), one with
PBKDF2-SHA256 at a fixed iteration count. Each round runs
`target/release/examples/unlock IMG` and `cryptsetup open --test-passphrase
--key-file=- IMG`, alternating which goes first, with the passphrase on standard
input; both must succeed. Prints the median wall time of each and the ratio.
Nothing here is a test: the figures go to BENCHMARKS.md.
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

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
    t = time.perf_counter()
    r = subprocess.run(cmd, input=PASS, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stderr.decode()}")
    return dt


def make(work, name, size_mib, args):
    img = os.path.join(work, name)
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
        print(f"unlock: {OURS} ({os.path.getsize(OURS)} bytes); {a.rounds} rounds, alternating, median wall time")
        print("| header | lifeboat-luks | cryptsetup | ratio |")
        print("| --- | ---: | ---: | ---: |")
        for label, img in volumes:
            cs = [cryptsetup(), "open", "--test-passphrase", "--key-file=-", img]
            us = [OURS, img]
            t_us, t_cs = [], []
            for i in range(a.rounds):
                pair = [(us, t_us), (cs, t_cs)]
                for cmd, into in pair if i % 2 == 0 else reversed(pair):
                    into.append(timed(cmd))
            mu, mc = statistics.median(t_us), statistics.median(t_cs)
            print(f"| {label} ({kdf_line(img)}) | {mu:.3f} s | {mc:.3f} s | {mu / mc:.2f}x |", flush=True)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
