#!/usr/bin/env python3
"""Two lifeboat builds on the same jobs and the same files, whole process
against whole process, alternating: what a change costs or saves.

  python3 bench/before_after.py --old OLD_BIN --new NEW_BIN [--work DIR] [--scratch-ext4 IMAGE] [--rounds 3]
                                [--only commit,activate,"verify --full",verify]

The jobs, on the 250,000-entry tree of ../shared/bench/mktree (made once in
WORK): `state commit` of the tree into a fresh root; `state activate` of a
transaction whose tree was removed (the blit from the store, then the swap);
`verify --full`; a quick `verify` (no stamps saved). Each build works on a root
of its own that it made. Medians and every run are printed, as bench/peers.py
prints them.
"""
import argparse, os, shutil, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers
from peers import MKTREE, fmt, out, rounds, run


def trees(work):
    t0, t1 = os.path.join(work, "v0"), os.path.join(work, "v1")
    if not os.path.isdir(t0):
        run(sys.executable, MKTREE, "--out", t0, "--entries", "250000")
    if not os.path.isdir(t1):
        run(sys.executable, MKTREE, "--out", t1, "--entries", "250000", "--variant", "1", "--change", "1.5")
    return t0, t1


def two_tx_root(lb, work, name, t0, t1):
    root = os.path.join(work, name)
    if not os.path.exists(os.path.join(root, ".moss/lifeboat/state.idx")):
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)  # state commit makes no root that is not there
        run(lb, "--root", root, "state", "commit", "--from", t0)
        run(lb, "--root", root, "state", "commit", "--from", t1)
    return root


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--work", default="/var/tmp/lifeboat-before-after")
    ap.add_argument("--scratch-ext4", metavar="IMAGE", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="commit,activate,verify --full,verify")
    a = ap.parse_args()
    if a.scratch_ext4:
        peers.scratch_ext4(a.scratch_ext4, "26G", a.work)
    os.makedirs(a.work, exist_ok=True)
    t0, t1 = trees(a.work)
    out(f"machine: {os.cpu_count()} cores, {os.uname().release}; old {a.old}; new {a.new}; work {a.work}")
    builds = {"old": a.old, "new": a.new}
    roots = {k: two_tx_root(lb, a.work, f"root-{k}", t0, t1) for k, lb in builds.items()}

    def fresh(p):
        def go():
            shutil.rmtree(p, ignore_errors=True)
            os.makedirs(p)
        return go

    def removed(lb, root):
        def go():
            if open(os.path.join(root, "usr/.stateID")).read().strip() != "2":
                run(lb, "--root", root, "state", "activate", "2")
            shutil.rmtree(os.path.join(root, ".moss/root/1"), ignore_errors=True)
        return go

    def no_stamps(root):
        def go():
            if open(os.path.join(root, "usr/.stateID")).read().strip() != "2":
                run(builds["new"] if "new" in root else builds["old"], "--root", root, "state", "activate", "2")
            try:
                os.unlink(os.path.join(root, ".moss/lifeboat/known-blobs"))
            except FileNotFoundError:
                pass
        return go

    for job in a.only.split(","):
        out("")
        out(f"## {job}")
        c = {}
        for k, lb in builds.items():
            root = roots[k]
            store = os.path.join(root, ".moss/assets/v2")
            if job == "commit":
                dest = os.path.join(a.work, f"commit-{k}")
                c[k] = ([lb, "--root", dest, "state", "commit", "--from", t0], fresh(dest), [t0])
            elif job == "activate":
                c[k] = ([lb, "--root", root, "state", "activate", "1"], removed(lb, root), [store])
            elif job == "verify --full":
                c[k] = ([lb, "--root", root, "verify", "--full"], no_stamps(root), [os.path.join(root, "usr")])
            else:
                c[k] = ([lb, "--root", root, "verify"], no_stamps(root), [store])
        times = rounds(c, a.rounds)
        for k, ts in times.items():
            out(f"- {k}: {fmt(ts)}")
        o, n = sorted(times["old"])[len(times["old"]) // 2], sorted(times["new"])[len(times["new"]) // 2]
        out(f"- new / old: {n / o:.3f}")


if __name__ == "__main__":
    main()
