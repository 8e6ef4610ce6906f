#!/usr/bin/env python3
"""lifeboat against the tools a user would pick instead, whole process against
whole process, on the same 250,000-entry tree (../shared/bench/mktree):

  python3 bench/peers.py [--work DIR] [--scratch-ext4 IMAGE] [--rounds 3] [--only verify,repair,commit]

- verify: `lifeboat verify --full` vs `xxhsum -H2 -c` of a manifest of the same
  /usr files (one process, and one per core on split manifests); `--store` vs
  the same over the store's blobs; `moss state verify` on a moss root of the same
  tree (one package made with mkstone, installed by moss); `ostree fsck` of a
  bare repository of the same tree; the per-file floor (bench/blob_floor.c: open,
  fstat, read, close of every file, nothing else).
- rebuild a /usr: `lifeboat repair` of a wiped and of a half-wiped /usr, and the
  blit (`state activate` of a transaction whose tree was removed) vs `cp -al` of
  the same tree and `ostree checkout -H` of the same commit.
- commit: `lifeboat state commit` vs `moss install` of the tree as one package
  and `ostree commit`.

Every contender is one whole process; rounds alternate the contenders, after an
unmeasured warm-up round; the page cache is warmed (a read of the inputs) and
dirty data synced right before each timed run, because this machine's host
evicts pages idle for about a minute and a large deletion slows what follows.
Medians and every run are printed.
"""
import argparse, os, shutil, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.path.join(REPO, "..", "shared")
MKTREE = os.path.join(SHARED, "bench", "mktree")
LB = os.environ.get("LIFEBOAT_BIN", os.path.join(REPO, "target/release/lifeboat"))


def run(*cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({r.returncode}): {r.stderr[-2000:]}")
    return r.stdout


def out(s=""):
    print(s, flush=True)


def warm(*paths):
    """Reads every file below `paths` (hot cache for the next run)."""
    for p in paths:
        subprocess.run(["sh", "-c", f"find {p} -type f -print0 | xargs -0 -r cat > /dev/null"], check=False)


def timed(cmd, before=None, warm_paths=(), env=None):
    if before:
        before()
    warm(*warm_paths)
    os.sync()
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t
    if r.returncode not in (0,):
        sys.exit(f"{cmd} failed: {r.stderr.decode()[-2000:]}")
    return dt


def rounds(contenders, n):
    """contenders: name -> (cmd, before, warm_paths). Alternating rounds, warm-up first."""
    times = {k: [] for k in contenders}
    for r in range(n + 1):
        for k, (cmd, before, wp) in contenders.items():
            dt = timed(cmd, before, wp)
            if r > 0:
                times[k].append(dt)
    return times


def fmt(ts):
    return f"median **{statistics.median(ts):.2f} s** (runs {', '.join(f'{t:.2f}' for t in ts)})"


def tree(work):
    t = os.path.join(work, "v0")
    if not os.path.isdir(t):
        run(sys.executable, MKTREE, "--out", t, "--entries", "250000")
    return t


def lifeboat_root(work, t):
    root = os.path.join(work, "peers-root")
    if not os.path.exists(os.path.join(root, ".moss/lifeboat/state.idx")):
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)  # state commit makes no root that is not there
        run(LB, "--root", root, "state", "commit", "--from", t, "--summary", "v0")
    return root


def moss_tools(work):
    outd = os.path.join(work, "tools")
    os.makedirs(outd, exist_ok=True)
    for name in ("moss", "mkstone"):
        p = os.path.join(outd, name)
        if not os.path.exists(p):
            run("zstd", "-d", "-q", "-f", os.path.join(SHARED, "moss/bin", f"{name}.zst"), "-o", p)
            os.chmod(p, 0o755)
    return os.path.join(outd, "moss"), os.path.join(outd, "mkstone")


def moss_stone(work, t, mkstone):
    repo = os.path.join(work, "moss-repo")
    stone = os.path.join(repo, "tree-1.0-1-1-x86_64.stone")
    if not os.path.exists(stone):
        os.makedirs(repo, exist_ok=True)
        stage = os.path.join(work, "moss-stage")
        shutil.rmtree(stage, ignore_errors=True)
        os.makedirs(stage)
        run("cp", "-al", t, os.path.join(stage, "usr"))
        # moss writes each tree's os-release itself, through the hard link when a
        # package ships one (a corrupt asset moss's own verify then reports).
        os.unlink(os.path.join(stage, "usr/lib/os-release"))
        run(mkstone, stone, stage, "--name", "tree", "--version", "1.0", "--release", "1", "--summary", "bench tree",
            "--homepage", "https://example.invalid/", "--license", "MPL-2.0")
    return repo


def moss_root(work, moss, repo, name):
    root = os.path.join(work, name)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    # With -D: without it moss takes / as its root and makes /.moss on this machine.
    run(moss, "-D", root, "index", repo)
    run(moss, "-D", root, "repo", "add", "local", f"file://{repo}/stone.index", "-c", "bench", "-y")
    return root


def bench_verify(work, t, root, n):
    out("## verify every file (and the store)")
    usr = os.path.join(root, "usr")
    store = os.path.join(root, ".moss/assets/v2")
    files = sorted(os.path.relpath(os.path.join(dp, f), usr) for dp, _, fs in os.walk(usr) for f in fs
                   if not os.path.islink(os.path.join(dp, f)))
    blobs = sorted(os.path.relpath(os.path.join(dp, f), store) for dp, _, fs in os.walk(store) for f in fs)
    man = os.path.join(work, "usr.xxh")
    smans = []
    # Manifests in xxhsum's own format, made by xxhsum itself.
    with open(man, "w") as f:
        for i in range(0, len(files), 5000):
            f.write(run("xxhsum", "-H2", *files[i:i + 5000], cwd=usr))
    lines = open(man).read().splitlines(keepends=True)
    for k in range(2):
        p = os.path.join(work, f"usr.{k}.xxh")
        with open(p, "w") as f:
            f.writelines(lines[k::2])
        smans.append(p)
    bman = os.path.join(work, "store.xxh")
    with open(bman, "w") as f:
        for i in range(0, len(blobs), 5000):
            f.write(run("xxhsum", "-H2", *blobs[i:i + 5000], cwd=store))
    total = sum(os.path.getsize(os.path.join(usr, p)) for p in files)
    out(f"- the tree: {len(files):,} files, {total / 1e9:.2f} GB; the store: {len(blobs):,} blobs")
    c = {
        "lifeboat verify --full": ([LB, "--root", root, "verify", "--full"], None, [usr]),
        "xxhsum -c, 1 process": (["sh", "-c", f"cd {usr} && xxhsum -q -c {man}"], None, [usr]),
        "xxhsum -c, 2 processes": (["sh", "-c", f"cd {usr} && (xxhsum -q -c {smans[0]} & xxhsum -q -c {smans[1]}; wait)"],
                                   None, [usr]),
        "lifeboat verify --store": ([LB, "--root", root, "verify", "--store"], None, [store]),
        "xxhsum -c of the store, 1 process": (["sh", "-c", f"cd {store} && xxhsum -q -c {bman}"], None, [store]),
    }
    floor = os.path.join(work, "blob_floor")
    run("cc", "-O2", "-pthread", "-o", floor, os.path.join(HERE, "blob_floor.c"))
    flist = os.path.join(work, "files.list")
    with open(flist, "w") as f:
        f.write("\n".join(files) + "\n")
    c["floor: open+fstat+read+close of every file, 2 threads"] = ([floor, usr, flist, "2"], None, [usr])
    times = rounds(c, n)
    for k, ts in times.items():
        out(f"- {k}: {fmt(ts)}")
    return times


def bench_peers_verify(work, t, moss, mkstone, n):
    out("")
    out("### moss and ostree on the same tree")
    repo = moss_stone(work, t, mkstone)
    mroot = moss_root(work, moss, repo, "moss-verify-root")
    run(moss, "-D", mroot, "install", "-y", "tree")
    orepo = os.path.join(work, "ostree-repo")
    if not os.path.exists(os.path.join(orepo, "config")):
        shutil.rmtree(orepo, ignore_errors=True)
        run("ostree", "init", "--mode=bare", f"--repo={orepo}")
        run("ostree", "commit", f"--repo={orepo}", "--branch=bench", f"--tree=dir={t}", "--no-xattrs")
    c = {
        "moss state verify": ([moss, "-D", mroot, "state", "verify"], None, [os.path.join(mroot, "usr")]),
        "ostree fsck": (["ostree", "fsck", f"--repo={orepo}"], None, [os.path.join(orepo, "objects")]),
    }
    times = rounds(c, n)
    for k, ts in times.items():
        out(f"- {k}: {fmt(ts)}")
    return times, orepo, repo


def wipe(usr, half=False):
    names = sorted(os.listdir(usr))
    if half:
        names = names[::2]
    for e in names:
        if e == ".stateID":
            continue
        p = os.path.join(usr, e)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)


def half_names(usr):
    """The top-level names `wipe(usr, half=True)` removes."""
    return [e for e in sorted(os.listdir(usr))[::2] if e != ".stateID"]


def checked_or_not(root, checked):
    """`checked`: the system was checked since its last change (a repair ran,
    so its blobs' stamps are saved; `verify` writes nothing under the root);
    else no stamps are known, as at the first check after an update."""
    if checked:
        # Stamps are taken of inodes last changed over 2 s before the check.
        time.sleep(2.5)
        run(LB, "--root", root, "repair")
    else:
        try:
            os.unlink(os.path.join(root, ".moss/lifeboat/known-blobs"))
        except FileNotFoundError:
            pass


def scatter(root, usr, n=1000, checked=True):
    """Removes n regular files spread evenly over the active transaction's tree.
    `checked`: on a system checked since its last change (a verify ran, so its
    blobs' stamps are saved); else as the first check after an update, which
    finds no stamps it can use."""
    checked_or_not(root, checked)
    tx = open(os.path.join(usr, ".stateID")).read().strip()
    lines = run(LB, "--root", root, "state", "show", tx, "--files").splitlines()
    files = [l.split("\t")[5] for l in lines if l.startswith("f\t") and l.split("\t")[3] != "0"]
    for p in files[:: max(1, len(files) // n)][:n]:
        os.unlink(os.path.join(usr, p))


def removed_tree(root):
    """Transaction 1 active, transaction 2's tree removed: activating 2 blits it."""
    if open(os.path.join(root, "usr/.stateID")).read().strip() != "1":
        run(LB, "--root", root, "state", "activate", "1")
    shutil.rmtree(os.path.join(root, ".moss/root/2"), ignore_errors=True)


def bench_rebuild(work, t, root, orepo, n):
    out("")
    out("## rebuild a /usr from the store")
    # A second transaction, so that activating one whose tree was removed is a blit.
    if "2" not in run(LB, "--root", root, "state", "list").split():
        t1 = os.path.join(work, "v1")
        if not os.path.isdir(t1):
            run(sys.executable, MKTREE, "--out", t1, "--entries", "250000", "--variant", "1", "--change", "1.5")
        run(LB, "--root", root, "state", "commit", "--from", t1, "--summary", "v1")
        run(LB, "--root", root, "state", "activate", "1")
    usr = os.path.join(root, "usr")
    ref = os.path.join(work, "ref-usr")
    if not os.path.isdir(ref):
        run("cp", "-al", usr, ref)
    dest = os.path.join(work, "cpal-dest")
    odest = os.path.join(work, "ostree-dest")
    store = os.path.join(root, ".moss/assets/v2")

    def clear(p):
        return lambda: shutil.rmtree(p, ignore_errors=True)

    def half_dest():
        shutil.rmtree(hdest, ignore_errors=True)
        os.mkdir(hdest)

    hdest = os.path.join(work, "cpal-half-dest")
    sfloor = os.path.join(work, "stat_floor")
    run("cc", "-O2", "-pthread", "-o", sfloor, os.path.join(HERE, "stat_floor.c"))
    c = {
        "lifeboat repair of a wiped /usr": ([LB, "--root", root, "repair"], lambda: wipe(usr), [store]),
        "cp -al of the same tree": (["cp", "-al", ref, dest], clear(dest), [store]),
        "ostree checkout -H of the same tree": (["ostree", "checkout", f"--repo={orepo}", "-H", "bench", odest],
                                                clear(odest), [os.path.join(orepo, "objects")]),
        "lifeboat repair of a half-wiped /usr (checked before)":
            ([LB, "--root", root, "repair"], lambda: (checked_or_not(root, True), wipe(usr, True)), [store]),
        "lifeboat repair of a half-wiped /usr (first check since an update)":
            ([LB, "--root", root, "repair"], lambda: (checked_or_not(root, False), wipe(usr, True)), [store]),
        "cp -al of the half the wipe removed": (["cp", "-al", *[os.path.join(ref, e) for e in half_names(ref)], hdest],
                                                half_dest, [store]),
        "lifeboat repair of 1,000 scattered missing files (checked before)": ([LB, "--root", root, "repair"],
                                                                              lambda: scatter(root, usr), [store]),
        "lifeboat repair of 1,000 scattered missing files (first check since an update)":
            ([LB, "--root", root, "repair"], lambda: scatter(root, usr, checked=False), [store]),
        "floor of a quick check: list every directory and lstat every entry of the tree, 2 threads":
            ([sfloor, usr, "2"], None, [store]),
        "lifeboat state activate of a removed tree (the blit, then the swap)":
            ([LB, "--root", root, "state", "activate", "2"], lambda: removed_tree(root), [store]),
    }
    times = rounds(c, n)
    for k, ts in times.items():
        out(f"- {k}: {fmt(ts)}")
    return times


def bench_commit(work, t, moss, mkstone, n):
    out("")
    out("## commit the tree")
    repo = moss_stone(work, t, mkstone)
    lroot = os.path.join(work, "commit-root")
    mroot = os.path.join(work, "commit-moss")
    orepo = os.path.join(work, "commit-ostree")

    def fresh_lb():
        shutil.rmtree(lroot, ignore_errors=True)
        os.makedirs(lroot)

    def fresh_moss():
        moss_root(work, moss, repo, "commit-moss")

    def fresh_ostree():
        shutil.rmtree(orepo, ignore_errors=True)
        run("ostree", "init", "--mode=bare", f"--repo={orepo}")

    c = {
        "lifeboat state commit": ([LB, "--root", lroot, "state", "commit", "--from", t], fresh_lb, [t]),
        "moss install (the tree as one package)": ([moss, "-D", mroot, "install", "-y", "tree"], fresh_moss,
                                                   [t, repo]),
        "ostree commit": (["ostree", "commit", f"--repo={orepo}", "--branch=b", f"--tree=dir={t}", "--no-xattrs"],
                          fresh_ostree, [t]),
    }
    times = rounds(c, n)
    for k, ts in times.items():
        out(f"- {k}: {fmt(ts)}")
    return times


def scratch_ext4(image, size, mnt):
    """A journalled ext4 (mkfs defaults, as a root filesystem is made) in a loop
    image with direct I/O, mounted at `mnt`; reused when already mounted. The
    host's own `/` here is ext4 without a journal: there the inode allocator
    skips inodes freed in the last seconds (`recently_deleted`), which makes
    every run after a large deletion pay for it, and no root is made that way."""
    if os.path.ismount(mnt):
        return mnt
    os.makedirs(mnt, exist_ok=True)
    if not os.path.exists(image):
        run("truncate", "-s", size, image)
        run("mkfs.ext4", "-q", "-F", "-N", "4000000", image)
    loop = run("losetup", "--direct-io=on", "-f", "--show", image).strip()
    run("mount", loop, mnt)
    return mnt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=os.environ.get("LIFEBOAT_BENCH_DIR", "/var/tmp/lifeboat-bench"))
    ap.add_argument("--scratch-ext4", metavar="IMAGE", default=None,
                    help="run in a journalled ext4 made in this image file (26G, sparse), mounted at WORK")

    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="verify,repair,commit", help="verify,peerverify,repair,commit; ownverify: verify without moss and ostree")
    a = ap.parse_args()
    if a.scratch_ext4:
        scratch_ext4(a.scratch_ext4, "26G", a.work)
    os.makedirs(a.work, exist_ok=True)
    only = a.only.split(",")
    t = tree(a.work)
    root = lifeboat_root(a.work, t)
    moss, mkstone = moss_tools(a.work)
    fs = subprocess.run(["findmnt", "-no", "SOURCE,FSTYPE,OPTIONS", "--target", a.work], stdout=subprocess.PIPE, text=True).stdout.strip()
    out(f"machine: {os.cpu_count()} cores, {os.uname().release}; lifeboat {LB}; {a.work} on {fs}")
    orepo = None
    if "verify" in only or "ownverify" in only:
        bench_verify(a.work, t, root, a.rounds)
    if "verify" in only or "peerverify" in only:
        _, orepo, _ = bench_peers_verify(a.work, t, moss, mkstone, a.rounds)
    if "repair" in only:
        if orepo is None:
            orepo = os.path.join(a.work, "ostree-repo")
            if not os.path.exists(os.path.join(orepo, "config")):
                run("ostree", "init", "--mode=bare", f"--repo={orepo}")
                run("ostree", "commit", f"--repo={orepo}", "--branch=bench", f"--tree=dir={t}", "--no-xattrs")
        bench_rebuild(a.work, t, root, orepo, a.rounds)
    if "commit" in only:
        bench_commit(a.work, t, moss, mkstone, a.rounds)


if __name__ == "__main__":
    main()
