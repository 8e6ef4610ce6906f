#!/usr/bin/env python3
"""Host-side benchmarks of lifeboat (release binary) against the baselines the
issues name, on trees from ../shared/bench/mktree, all in one run on one machine.

  python3 bench/host.py [--work DIR] [--only index,blitj,verify,fat,sync,initrd]

Prints a Markdown report (also written to DIR/report.md). Trees: mktree
--entries 250000, variants 1..9 with --change 1.5. Nothing here is a test: the
figures go to BENCHMARKS.md.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MKTREE = os.path.join(REPO, "..", "shared", "bench", "mktree")
LB = os.environ.get("LIFEBOAT_BIN", os.path.join(REPO, "target/release/lifeboat"))
LB_STATIC = os.path.join(REPO, "target/x86_64-unknown-linux-musl/release/lifeboat")
# What PID 1 runs (scripts/build.sh: --no-default-features, no SQLite).
LB_RESCUE = os.path.join(REPO, "target/rescue/x86_64-unknown-linux-musl/release/lifeboat")
report = []


def out(line=""):
    print(line, flush=True)
    report.append(line)


def run(*cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))}: exit {r.returncode}\n{r.stderr}")
    return r.stdout


def timed(*cmd, n=1, **kw):
    """Median wall time in seconds of n runs; returns (median, last stdout). Dirty
    data of earlier phases is written out first, so no run pays for it."""
    times, o = [], ""
    for _ in range(n):
        os.sync()
        t = time.perf_counter()
        o = run(*cmd, **kw)
        times.append(time.perf_counter() - t)
    return statistics.median(times), o


def trees(work):
    for k in range(10):
        d = os.path.join(work, f"v{k}")
        if not os.path.isdir(d):
            args = [sys.executable, MKTREE, "--out", d, "--entries", "250000"]
            if k:
                args += ["--variant", str(k), "--change", "1.5"]
            run(*args)
    return [os.path.join(work, f"v{k}") for k in range(10)]


def bench_index(work, vs):
    out("## State index, commit, blit, activation (issue 2)")
    root = os.path.join(work, "root")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)  # state commit makes no root that is not there
    rows = []
    for k, v in enumerate(vs):
        t = time.perf_counter()
        j = json.loads(run(LB, "--root", root, "--json", "state", "commit", "--from", v, "--summary", f"v{k}"))
        rows.append((time.perf_counter() - t, j))
    idx = os.path.join(root, ".moss/lifeboat/state.idx")
    size = os.path.getsize(idx)
    entries = sum(j["entries"] for _, j in rows)
    out(f"- 10 transactions of {rows[0][1]['entries']:,} entries (variants change 1.5% of files, add and remove 0.1%):")
    out(f"  index **{size:,} bytes** ({size / 2**20:.2f} MiB) = {size / entries:.2f} bytes per layout entry over all transactions, "
        f"{size / rows[0][1]['entries']:.1f} bytes per path of one transaction")
    load, _ = timed(LB, "--root", root, "--json", "state", "show", "5", n=7)
    out(f"- load the index and materialise one transaction's layout (`state show 5`, whole process, median of 7): **{load * 1000:.0f} ms**")
    first, later = rows[0], rows[1:]
    ph = lambda j, k: j.get(f"{k}_us", 0) / 1e6
    out(f"- first commit {first[0]:.1f} s (scan+hash {ph(first[1], 'scan'):.1f} s, store {ph(first[1], 'store'):.1f} s, "
        f"blit {ph(first[1], 'blit'):.1f} s); later commits median {statistics.median(r[0] for r in later):.1f} s")
    # Blits measured the same way as cp -al: a quiet system (dirty data written
    # out first), hot cache, no fsync. A transaction whose tree is gone is rebuilt
    # from the store on activation.
    ents = rows[-1][1]["entries"]
    blits, cpal = blit_vs_cpal(root, 9, 10, vs[9], os.path.join(work, "cpal"))
    blit, cp = statistics.median(blits), statistics.median(cpal)
    out(f"- blit of {ents:,} entries from the store (rebuilding a transaction's tree): median **{blit:.2f} s** "
        f"({ents / blit:,.0f} entries/s) vs `cp -al` of the same tree on the same filesystem {cp:.2f} s "
        f"(medians of 3, alternating) = **{blit / cp:.2f}x** the time of cp -al")
    swaps = []
    for i in range(6):
        j = json.loads(run(LB, "--root", root, "--json", "state", "activate", str(3 + i % 2)))
        swaps.append(j["swap_us"] / 1000)
    out(f"- activation (exchange + archive rename + syncs): median **{statistics.median(swaps):.2f} ms** over 6 (min {min(swaps):.2f}, max {max(swaps):.2f})")
    run(LB, "--root", root, "state", "activate", "10")
    return root


def bench_sqlite(work, root):
    out("")
    out("### The same content in SQLite with moss's layout schema")
    db = os.path.join(work, "layout.db")
    if os.path.exists(db):
        os.unlink(db)
    import sqlite3
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE layout (package_id TEXT, uid INTEGER, gid INTEGER, mode INTEGER, tag INTEGER, "
                "entry_type TEXT, entry_value1 TEXT, entry_value2 TEXT)")
    con.execute("CREATE TABLE state_packages (state_id INTEGER, package_id TEXT)")
    con.execute("CREATE INDEX layout_package ON layout(package_id)")
    seen = set()
    for sid in range(1, 11):
        lines = run(LB, "--root", root, "state", "show", str(sid), "--files").splitlines()
        pkgs = {}
        for l in lines:
            parts = l.split("\t")
            if len(parts) != 6:
                continue
            kind, mode, owner, size, value, path = parts
            comps = path.split("/")
            pkgs.setdefault("/".join(comps[:2]), []).append((kind, int(mode, 8), owner, value, path))
        for name, rows in pkgs.items():
            # A package version is its content: a changed file makes a new version.
            pid = f"{name}@{hash(tuple(rows)) & 0xffffffffffff:012x}"
            con.execute("INSERT INTO state_packages VALUES (?, ?)", (sid, pid))
            if pid in seen:
                continue
            seen.add(pid)
            ins = []
            for kind, mode, owner, value, path in rows:
                uid, gid = owner.split(":")
                t = {"f": "regular", "d": "directory", "l": "symlink"}[kind]
                v1 = value if kind == "f" else (value if kind == "l" else None)
                ins.append((pid, int(uid), int(gid), mode, 0, t, v1 if kind == "f" else path, path if kind != "d" else None))
            con.executemany("INSERT INTO layout VALUES (?,?,?,?,?,?,?,?)", ins)
    con.commit()
    con.execute("VACUUM")
    con.close()
    dbsize = os.path.getsize(db)
    idx = os.path.getsize(os.path.join(root, ".moss/lifeboat/state.idx"))
    q = "SELECT l.* FROM layout l JOIN state_packages s ON s.package_id = l.package_id WHERE s.state_id = 5;"
    t_sql, o = timed("sqlite3", db, q, n=5)
    rows = o.count("\n")
    t_lb, _ = timed(LB, "--root", root, "--json", "state", "show", "5", n=5)
    out(f"- SQLite database (one row per file per package; a directory two levels below /usr is a package; "
        f"a changed file makes a new version of its whole package): **{dbsize:,} bytes**; lifeboat's index is "
        f"**{idx / dbsize:.3f}x** its size (goal <= 0.25)")
    out(f"- load one transaction ({rows:,} rows): sqlite3 CLI query {t_sql * 1000:.0f} ms vs lifeboat `state show` "
        f"{t_lb * 1000:.0f} ms (both whole processes, median of 5)")


def bench_verify(work, root):
    out("")
    out("## verify and repair (issue 4)")
    static = os.path.exists(LB_STATIC)
    t_quick, o = timed(LB, "--root", root, "verify", n=3)
    out(f"- quick verify of the active tree (250,000 entries, hot cache): median **{t_quick:.2f} s** of 3")
    if static:
        t_qs, _ = timed(LB_STATIC, "--root", root, "verify", n=3)
        out(f"- the same with the static musl binary (what PID 1 runs): median **{t_qs:.2f} s** of 3")
    usr = os.path.join(root, "usr")
    store = os.path.join(root, ".moss/assets/v2")
    files = []
    for base in (usr, store):
        for dp, _, fs in os.walk(base):
            for f in fs:
                p = os.path.join(dp, f)
                if not os.path.islink(p):
                    files.append(p)
    total = sum(os.path.getsize(p) for p in files)
    listing = os.path.join(work, "files.txt")
    with open(listing, "w") as f:
        f.write("\0".join(files))
    # Against xxhsum and the other peers, same files, whole process: bench/peers.py.
    t_full, _ = timed(LB, "--root", root, "verify", "--full", "--store", n=3)
    out(f"- `verify --full --store` ({len(files):,} files, {total / 1e9:.2f} GB): median **{t_full:.2f} s** of 3")
    # The floor: the same syscalls per blob, in C, with nothing else around them.
    floor_c = os.path.join(HERE, "blob_floor.c")
    floor_bin = os.path.join(work, "blob_floor")
    run("cc", "-O2", "-pthread", "-o", floor_bin, floor_c)
    blobs_list = os.path.join(work, "blobs.txt")
    with open(blobs_list, "w") as f:
        f.write("\n".join(sorted(os.path.relpath(p, store) for p in files if p.startswith(store + "/"))) + "\n")
    run(floor_bin, store, blobs_list, "2")
    for th in ("1", "2"):
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            run(floor_bin, store, blobs_list, th)
            ts.append(time.perf_counter() - t)
        out(f"- floor (`bench/blob_floor.c`: open, fstat, read, close of each blob in hash order, no hashing, "
            f"no tree, no index) on {th} thread{'s' if th == '2' else ''}: median **{statistics.median(ts):.2f} s** of 5")
    # Repair 1000 missing files.
    lines = run(LB, "--root", root, "state", "show", "10", "--files").splitlines()
    victims = [l.split("\t")[5] for l in lines if l.startswith("f\t") and l.split("\t")[3] != "0"][::200][:1000]
    for p in victims:
        os.unlink(os.path.join(usr, p))
    os.sync()
    t = time.perf_counter()
    o = run(LB, "--root", root, "repair")
    t = time.perf_counter() - t
    out(f"- repair of {len(victims):,} missing files: **{t:.2f} s** whole process ({o.strip().splitlines()[-1]})")


def fresh_image(path, esp="512M", size="600M"):
    if os.path.exists(path):
        os.unlink(path)
    run(LB, "disk", "create", path, "--size", size, "--esp-size", esp, "--root-size", "0")


def fsync(path):
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def blit_vs_cpal(root, old_id, new_id, cp_src, cp_dst, n=3):
    """Rebuilds transaction old_id's removed tree (the blit) and `cp -al`s cp_src,
    alternating, each after a sync; returns the lists of seconds."""
    blits, cpal = [], []
    for _ in range(n):
        shutil.rmtree(os.path.join(root, f".moss/root/{old_id}"), ignore_errors=True)
        os.sync()
        # The whole process, as cp -al is timed (not lifeboat's inner blit timer).
        os.sync()
        t = time.perf_counter()
        run(LB, "--root", root, "state", "activate", str(old_id))
        blits.append(time.perf_counter() - t)
        run(LB, "--root", root, "state", "activate", str(new_id))
        shutil.rmtree(cp_dst, ignore_errors=True)
        os.sync()
        t = time.perf_counter()
        run("cp", "-al", cp_src, cp_dst)
        cpal.append(time.perf_counter() - t)
        shutil.rmtree(cp_dst, ignore_errors=True)
    return blits, cpal


def bench_blit_journaled(work, vs):
    """The blit against cp -al on a journaled ext4 (a loop-mounted image): ext4
    without a journal, as /work is on some machines, avoids reusing recently
    deleted inodes and scans past them, which punishes any rebuild in the place of
    a tree just removed."""
    out("")
    out("### Blit on a journaled ext4 (8 GiB loop image, `mkfs.ext4 -i 4096`)")
    img, mnt = os.path.join(work, "ext4j.img"), os.path.join(work, "ext4j.mnt")
    os.makedirs(mnt, exist_ok=True)
    subprocess.run(["umount", mnt], stderr=subprocess.DEVNULL)
    if os.path.exists(img):
        os.unlink(img)
    run("truncate", "-s", "8G", img)
    run("mkfs.ext4", "-q", "-F", "-i", "4096", img)
    run("mount", "-o", "loop", img, mnt)
    try:
        root = os.path.join(mnt, "root")
        os.makedirs(root, exist_ok=True)
        run(LB, "--root", root, "state", "commit", "--from", vs[8])
        run(LB, "--root", root, "state", "commit", "--from", vs[9])
        run("cp", "-a", vs[9], os.path.join(mnt, "v9"))
        blits, cpal = blit_vs_cpal(root, 1, 2, os.path.join(mnt, "v9"), os.path.join(mnt, "cpal"))
        blit, cp = statistics.median(blits), statistics.median(cpal)
        out(f"- blit (transaction 1 = v8 rebuilt) median **{blit:.2f} s** vs `cp -al` of v9 {cp:.2f} s "
            f"(runs: {', '.join(f'{b:.2f}' for b in blits)} vs {', '.join(f'{c:.2f}' for c in cpal)}) = "
            f"**{blit / cp:.2f}x** the time of cp -al")
    finally:
        subprocess.run(["umount", mnt])
        os.unlink(img)


def bench_fat(work):
    out("")
    out("## FAT without mounting (issue 3)")
    files = []
    for i, mb in enumerate([14, 14, 24, 24, 24]):
        p = os.path.join(work, f"blob{i}")
        if not os.path.exists(p) or os.path.getsize(p) != mb << 20:
            with open(p, "wb") as f:
                f.write(os.urandom(mb << 20))
        files.append(p)
    total = sum(os.path.getsize(p) for p in files)
    img = os.path.join(work, "fat.img")
    lb_t, mc_t = [], []
    for _ in range(5):
        fresh_image(img)
        os.sync()
        t = time.perf_counter()
        run(LB, "disk", "put", *files, f"{img}:esp:lifeboat/k/")
        lb_t.append(time.perf_counter() - t)
        fresh_image(img)
        os.sync()
        t = time.perf_counter()
        run("mmd", "-i", f"{img}@@1M", "::/lifeboat", "::/lifeboat/k")
        run("mcopy", "-i", f"{img}@@1M", *files, "::/lifeboat/k/")
        fsync(img)
        mc_t.append(time.perf_counter() - t)
    lb, mc = statistics.median(lb_t), statistics.median(mc_t)
    out(f"- write {total / 2**20:.0f} MiB (5 kernel/initrd-sized files) into a fresh 512 MiB FAT32 ESP: lifeboat "
        f"`disk put` (one process, crash-safe replace, fsync) **{total / lb / 2**20:.0f} MiB/s** vs `mcopy` + fsync "
        f"{total / mc / 2**20:.0f} MiB/s: **{mc / lb:.2f}x** mcopy's throughput (median of 5)")
    t, _ = timed(LB, "disk", "ls", f"{img}:esp", n=9)
    out(f"- open the disk, read and check the GPT, open the ESP and list it (`disk ls IMG:esp`, whole process): median **{t * 1000:.1f} ms** of 9")


def bench_sync(work):
    out("")
    out("## Boot sync (issue 5)")
    root = os.path.join(work, "syncroot")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    k = [os.urandom(14 << 20), os.urandom(14 << 20)]
    initrd = os.path.join(work, "rescue.initrd")
    with open(initrd, "wb") as f:
        f.write(os.urandom(1 << 20))
    for i in range(5):
        t = os.path.join(work, f"st{i}")
        shutil.rmtree(t, ignore_errors=True)
        os.makedirs(os.path.join(t, "lib/kernel/6.1.0-bench"))
        with open(os.path.join(t, "lib/kernel/6.1.0-bench/vmlinuz"), "wb") as f:
            f.write(k[i // 3])
        with open(os.path.join(t, "lib/os-release"), "w") as f:
            f.write(f"ID=bench\nVERSION_ID={i}\n")
        run(LB, "--root", root, "state", "commit", "--from", t)
    os.makedirs(os.path.join(root, "etc"), exist_ok=True)
    with open(os.path.join(root, "etc/machine-id"), "w") as f:
        f.write("0123456789abcdef0123456789abcdef\n")
    img = os.path.join(work, "sync.img")
    s_t, m_t = [], []
    kfiles = []
    for i, data in enumerate(k):
        p = os.path.join(work, f"k{i}")
        with open(p, "wb") as f:
            f.write(data)
        kfiles.append(p)
    for _ in range(7):
        fresh_image(img, esp="200M", size="260M")
        os.sync()
        t = time.perf_counter()
        run(LB, "--root", root, "--esp", img, "boot", "sync", "--initrd", initrd)
        s_t.append(time.perf_counter() - t)
        fresh_image(img, esp="200M", size="260M")
        os.sync()
        t = time.perf_counter()
        run("mmd", "-i", f"{img}@@1M", "::/k")
        run("mcopy", "-i", f"{img}@@1M", *kfiles, initrd, "::/k/")
        fsync(img)
        m_t.append(time.perf_counter() - t)
    run(LB, "--root", root, "--esp", img, "boot", "sync", "--initrd", initrd)
    noop, _ = timed(LB, "--root", root, "--esp", img, "boot", "sync", "--initrd", initrd, n=9)
    s, m = statistics.median(s_t), statistics.median(m_t)
    out(f"- sync of 5 transactions sharing 2 kernels (14 MiB each) plus a 1 MiB rescue initrd into an empty FAT32 ESP: "
        f"**{s * 1000:.0f} ms** vs `mcopy` of the same bytes + fsync {m * 1000:.0f} ms = **{s / m:.2f}x** (median of 7)")
    out(f"- a sync with nothing to do: median **{noop * 1000:.1f} ms** of 9 (whole process, index load included)")


def bench_initrd(work):
    out("")
    out("## Rescue initrd and binary (issues 2, 6)")
    for name, b in (("host tool", LB_STATIC), ("rescue binary", LB_RESCUE)):
        size = os.path.getsize(b)
        out(f"- static {name} (x86_64-unknown-linux-musl, stripped): **{size:,} bytes** ({size / 2**20:.2f} MiB)")
    p = os.path.join(work, "x.initrd")
    # The rescue binary embeds itself; no modules (a kernel with its drivers built in).
    t, _ = timed(LB_RESCUE, "initrd", "build", "--no-modules", "--out", p, n=5)
    out(f"- `initrd build --no-modules` by the rescue binary: median **{t * 1000:.0f} ms** of 5, "
        f"**{os.path.getsize(p):,} bytes** (zstd)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=os.environ.get("LIFEBOAT_BENCH_DIR", "/var/tmp/lifeboat-bench"))
    ap.add_argument("--only", default="index,blitj,verify,fat,sync,initrd")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    only = a.only.split(",")
    cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(" \t:")
    out(f"Machine: {os.cpu_count()} cores ({cpu}), {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, "
        f"filesystem of {a.work}: {run('stat', '-f', '-c', '%T', a.work).strip()}; {time.strftime('%Y-%m-%d')}")
    out("")
    if "index" in only or "verify" in only:
        vs = trees(a.work)
        root = bench_index(a.work, vs) if "index" in only else os.path.join(a.work, "root")
        if "index" in only:
            bench_sqlite(a.work, root)
        if "verify" in only:
            bench_verify(a.work, root)
    if "blitj" in only:
        bench_blit_journaled(a.work, trees(a.work))
    if "fat" in only:
        bench_fat(a.work)
    if "sync" in only:
        bench_sync(a.work)
    if "initrd" in only:
        bench_initrd(a.work)
    with open(os.path.join(a.work, "report.md"), "w") as f:
        f.write("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
