#!/usr/bin/env python3
"""lifeboat on this machine's own /usr (a real Debian tree: hard-link groups,
a file capability, setuid binaries), against the tools a user would pick
instead, whole process against whole process:

  python3 bench/real_usr.py [--work DIR] [--scratch-ext4 IMAGE] [--rounds 3] [--only commit,rollback,verify]

- commit: `lifeboat state commit --from /usr` into a fresh root, against
  `ostree commit --tree=dir=/usr` into a fresh bare repository (attributes kept,
  as lifeboat keeps them) and `cp -a /usr` (a copy that keeps attributes).
- rollback: `lifeboat state activate 1` of the /usr transaction whose archived
  tree was removed (the blit from the store, then the swap), against `cp -al` of
  the same tree (from a hard-linked reference copy) and `ostree checkout -H`.
- verify: `lifeboat verify --full` against `xxhsum -H2 -c` of a manifest of the
  same files, one process per core on split manifests.

Rounds alternate the contenders after an unmeasured warm-up round; the page
cache is warmed (a read of the inputs) and dirty data synced before each timed
run (bench/peers.py, whose helpers this uses). Medians and every run are printed.
"""
import argparse, os, shutil, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers
from peers import LB, fmt, out, rounds, run

SRC = "/usr"


def files_of(tree):
    return sorted(os.path.relpath(os.path.join(dp, f), tree) for dp, _, fs in os.walk(tree) for f in fs
                  if not os.path.islink(os.path.join(dp, f)))


def small_tree(work):
    t = os.path.join(work, "small")
    if not os.path.isdir(t):
        os.makedirs(os.path.join(t, "share"))
        with open(os.path.join(t, "share", "other"), "w") as f:
            f.write("another transaction\n")
    return t


def lifeboat_root(work):
    """A root whose transaction 1 is this /usr and 2 a small tree (active)."""
    root = os.path.join(work, "usr-root")
    if not os.path.exists(os.path.join(root, ".moss/lifeboat/state.idx")):
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)  # state commit makes no root that is not there
        run(LB, "--root", root, "state", "commit", "--from", SRC, "--summary", "this /usr")
        run(LB, "--root", root, "state", "commit", "--from", small_tree(work), "--summary", "small")
    return root


def bench_commit(work, n):
    out("## commit this /usr")
    lroot = os.path.join(work, "commit-root")
    orepo = os.path.join(work, "commit-ostree")
    cdest = os.path.join(work, "cp-a-dest")

    def fresh_ostree():
        shutil.rmtree(orepo, ignore_errors=True)
        run("ostree", "init", "--mode=bare", f"--repo={orepo}")

    c = {
        "lifeboat state commit --from /usr": ([LB, "--root", lroot, "state", "commit", "--from", SRC],
                                              lambda: (shutil.rmtree(lroot, ignore_errors=True), os.makedirs(lroot)),
                                              [SRC]),
        "ostree commit --tree=dir=/usr (bare, attributes kept)":
            (["ostree", "commit", f"--repo={orepo}", "--branch=b", f"--tree=dir={SRC}"], fresh_ostree, [SRC]),
        "cp -a /usr": (["cp", "-a", SRC, cdest], lambda: shutil.rmtree(cdest, ignore_errors=True), [SRC]),
    }
    times = rounds(c, n)
    for k, ts in times.items():
        out(f"- {k}: {fmt(ts)}")
    for p in (lroot, orepo, cdest):
        shutil.rmtree(p, ignore_errors=True)
    return times


def bench_rollback(work, root, n):
    out("")
    out("## roll back to this /usr, its archived tree removed")
    store = os.path.join(root, ".moss/assets/v2")
    orepo = os.path.join(work, "ostree-repo")
    if not os.path.exists(os.path.join(orepo, "config")):
        run("ostree", "init", "--mode=bare", f"--repo={orepo}")
        run("ostree", "commit", f"--repo={orepo}", "--branch=usr", f"--tree=dir={SRC}")
    ref = os.path.join(work, "ref-usr")
    if not os.path.isdir(ref):
        # The /usr tree as lifeboat made it, hard-linked: cp -al copies the same links.
        src = os.path.join(root, "usr") if open(os.path.join(root, "usr/.stateID")).read().strip() == "1" \
            else os.path.join(root, ".moss/root/1/usr")
        run("cp", "-al", src, ref)
    dest = os.path.join(work, "cpal-dest")
    odest = os.path.join(work, "ostree-dest")

    def removed():
        if open(os.path.join(root, "usr/.stateID")).read().strip() != "2":
            run(LB, "--root", root, "state", "activate", "2")
        shutil.rmtree(os.path.join(root, ".moss/root/1"), ignore_errors=True)

    c = {
        "lifeboat state activate 1 (tree removed: the blit, then the swap)":
            ([LB, "--root", root, "state", "activate", "1"], removed, [store]),
        "cp -al of the same tree": (["cp", "-al", ref, dest], lambda: shutil.rmtree(dest, ignore_errors=True), [store]),
        "ostree checkout -H of the same tree": (["ostree", "checkout", f"--repo={orepo}", "-H", "usr", odest],
                                                lambda: shutil.rmtree(odest, ignore_errors=True),
                                                [os.path.join(orepo, "objects")]),
    }
    times = rounds(c, n)
    for k, ts in times.items():
        out(f"- {k}: {fmt(ts)}")
    # The last round's copies are whole trees of their own once the sources go.
    for p in (dest, odest):
        shutil.rmtree(p, ignore_errors=True)
    return times


def bench_verify(work, root, n):
    out("")
    out("## verify every file of this /usr")
    if open(os.path.join(root, "usr/.stateID")).read().strip() != "1":
        run(LB, "--root", root, "state", "activate", "1")
    usr = os.path.join(root, "usr")
    files = [f for f in files_of(usr) if f != ".stateID"]
    lines = []
    for i in range(0, len(files), 5000):
        lines += run("xxhsum", "-H2", *files[i:i + 5000], cwd=usr).splitlines(keepends=True)
    mans = []
    for k in range(2):
        p = os.path.join(work, f"usr.{k}.xxh")
        with open(p, "w") as f:
            f.writelines(lines[k::2])
        mans.append(p)
    total = sum(os.path.getsize(os.path.join(usr, p)) for p in files)
    out(f"- the tree: {len(files):,} files, {total / 1e9:.2f} GB")
    c = {
        "lifeboat verify --full": ([LB, "--root", root, "verify", "--full"], None, [usr]),
        "xxhsum -c, 2 processes": (["sh", "-c", f"cd {usr} && (xxhsum -q -c {mans[0]} & xxhsum -q -c {mans[1]}; wait)"],
                                   None, [usr]),
    }
    times = rounds(c, n)
    for k, ts in times.items():
        out(f"- {k}: {fmt(ts)}")
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=os.environ.get("LIFEBOAT_BENCH_DIR", "/var/tmp/lifeboat-realusr"))
    ap.add_argument("--scratch-ext4", metavar="IMAGE", default=None,
                    help="run in a journalled ext4 made in this image file (26G, sparse), mounted at WORK")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="commit,rollback,verify")
    a = ap.parse_args()
    if a.scratch_ext4:
        # A run cut short leaves whole trees behind: the scratch image is not
        # large enough for two runs' worth.
        for d in ("commit-root", "commit-ostree", "cp-a-dest", "cpal-dest", "ostree-dest"):
            shutil.rmtree(os.path.join(a.work, d), ignore_errors=True)
        peers.scratch_ext4(a.scratch_ext4, "26G", a.work)
    os.makedirs(a.work, exist_ok=True)
    only = a.only.split(",")
    fs = subprocess.run(["findmnt", "-no", "SOURCE,FSTYPE,OPTIONS", "--target", a.work], stdout=subprocess.PIPE,
                        text=True).stdout.strip()
    n_files = len(files_of(SRC))
    out(f"machine: {os.cpu_count()} cores, {os.uname().release}; lifeboat {LB}; {a.work} on {fs}; "
        f"/usr: {n_files:,} files")
    if "commit" in only:
        bench_commit(a.work, a.rounds)
    root = lifeboat_root(a.work)
    if "rollback" in only:
        bench_rollback(a.work, root, a.rounds)
    if "verify" in only:
        bench_verify(a.work, root, a.rounds)


if __name__ == "__main__":
    main()
