#!/usr/bin/env python3
"""Benchmark: importing a moss root's states into lifeboat's index (issue 13).

  python3 bench/moss_import.py [--work DIR] [--rounds 5]

Input: the ten 250,000-entry trees of ../shared/bench/mktree (v0 and variants 1..9
with --change 1.5), committed with lifeboat into WORK/root (reused when there).
From that root's index this script writes moss-format databases — `.moss/db/state`
(state, state_selections) and `.moss/db/layout` with moss's schemas and
user_version 1, a package being a directory two levels below /usr whose version
changes when any of its files does — beside a hard-linked copy of the store, with
the ten states' `.stateID` where moss keeps its trees. Then, whole process against
whole process, alternating:

  - a full import (`lifeboat --root MOSSROOT state import` with no index yet);
  - a re-import when nothing changed (the same command again);
  - `sqlite3` reading the same rows (the floor of any SQLite-based reader).
"""
import argparse, hashlib, os, shutil, sqlite3, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MKTREE = os.path.join(REPO, "..", "shared", "bench", "mktree")
LB = os.environ.get("LIFEBOAT_BIN", os.path.join(REPO, "target/release/lifeboat"))


def run(*cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {r.stderr}")
    return r.stdout


def trees(work):
    out = []
    for k in range(10):
        d = os.path.join(work, f"v{k}")
        if not os.path.isdir(d):
            args = [sys.executable, MKTREE, "--out", d, "--entries", "250000"]
            if k:
                args += ["--variant", str(k), "--change", "1.5"]
            run(*args)
        out.append(d)
    return out


def lifeboat_root(work):
    root = os.path.join(work, "root")
    if os.path.exists(os.path.join(root, ".moss/lifeboat/state.idx")):
        ids = run(LB, "--root", root, "state", "list").split()
        if "10" in ids:
            return root
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)  # state commit makes no root that is not there
    for k, v in enumerate(trees(work)):
        run(LB, "--root", root, "state", "commit", "--from", v, "--summary", f"v{k}")
    return root


def make_moss_root(work, root):
    moss = os.path.join(work, "mossroot")
    shutil.rmtree(moss, ignore_errors=True)
    os.makedirs(os.path.join(moss, ".moss/db"))
    os.makedirs(os.path.join(moss, ".moss/root"))
    run("cp", "-al", os.path.join(root, ".moss/assets"), os.path.join(moss, ".moss/assets"))
    sdb = sqlite3.connect(os.path.join(moss, ".moss/db/state"))
    sdb.executescript("""
        PRAGMA user_version = 1;
        CREATE TABLE state (id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL,
          created BIGINT NOT NULL DEFAULT (unixepoch()), summary TEXT NULL, description TEXT NULL);
        CREATE TABLE state_selections (state_id INTEGER NOT NULL, package_id TEXT NOT NULL, explicit BOOLEAN NOT NULL,
          reason TEXT NULL, PRIMARY KEY(state_id, package_id), FOREIGN KEY(state_id) REFERENCES state(id) ON DELETE CASCADE);
    """)
    ldb = sqlite3.connect(os.path.join(moss, ".moss/db/layout"))
    ldb.executescript("""
        PRAGMA user_version = 1;
        CREATE TABLE layout (id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, package_id TEXT NOT NULL,
          uid INTEGER NOT NULL, gid INTEGER NOT NULL, mode INTEGER NOT NULL, tag INTEGER NOT NULL,
          entry_type TEXT NOT NULL, entry_value1 TEXT NULL, entry_value2 TEXT NULL);
    """)
    seen = set()
    rows_total = 0
    for sid in range(1, 11):
        lines = run(LB, "--root", root, "state", "show", str(sid), "--files").splitlines()
        pkgs = {}
        for l in lines:
            parts = l.split("\t")
            if len(parts) != 6:
                continue
            kind, mode, owner, size, value, path = parts
            pkgs.setdefault("/".join(path.split("/")[:2]), []).append((kind, int(mode, 8), owner, value, path))
        sdb.execute("INSERT INTO state (id, type, created, summary) VALUES (?, 'transaction', ?, ?)",
                    (sid, 1796000000 + sid, f"v{sid - 1}"))
        for name, rows in pkgs.items():
            # A package version is its content: any changed file makes a new one.
            pid = hashlib.sha256(repr((name, rows)).encode()).hexdigest()
            sdb.execute("INSERT INTO state_selections VALUES (?, ?, 1, NULL)", (sid, pid))
            if pid in seen:
                continue
            seen.add(pid)
            ins = []
            for kind, mode, owner, value, path in rows:
                uid, gid = (int(x) for x in owner.split(":"))
                if kind == "f":
                    ins.append((pid, uid, gid, 0o100000 | mode, "regular", str(int(value, 16)), path))
                elif kind == "l":
                    ins.append((pid, uid, gid, 0o120000 | mode, "symlink", value, path))
                else:
                    ins.append((pid, uid, gid, 0o040000 | mode, "directory", path, None))
            ldb.executemany("INSERT INTO layout (package_id, uid, gid, mode, tag, entry_type, entry_value1, entry_value2) "
                            "VALUES (?, ?, ?, ?, 0, ?, ?, ?)", ins)
            rows_total += len(ins)
        # Where moss keeps the state's tree: only its id matters to an import.
        d = os.path.join(moss, "usr") if sid == 10 else os.path.join(moss, f".moss/root/{sid}/usr")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, ".stateID"), "w") as f:
            f.write(str(sid))
    sdb.commit()
    ldb.commit()
    sdb.close()
    ldb.close()
    return moss, rows_total, len(seen)


def timed(cmd, before=None):
    if before:
        before()
    run("sync")
    t = time.perf_counter()
    run(*cmd)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=os.environ.get("LIFEBOAT_BENCH_DIR", "/var/tmp/lifeboat-bench"))
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    root = lifeboat_root(a.work)
    moss, rows, packages = make_moss_root(a.work, root)
    dbsize = os.path.getsize(os.path.join(moss, ".moss/db/layout"))
    lbdir = os.path.join(moss, ".moss/lifeboat")

    def fresh():
        shutil.rmtree(lbdir, ignore_errors=True)

    cmd = [LB, "--root", moss, "state", "import"]
    q = "SELECT id, package_id, uid, gid, mode, entry_type, entry_value1, entry_value2 FROM layout"
    full, again, floor = [], [], []
    timed(cmd, fresh)  # warm-up: page cache
    for _ in range(a.rounds):
        full.append(timed(cmd, fresh))
        again.append(timed(cmd))
        floor.append(timed(["sqlite3", os.path.join(moss, ".moss/db/layout"), q]))
    idx = os.path.getsize(os.path.join(lbdir, "state.idx"))
    med = statistics.median
    print(f"- moss-format databases of 10 states x 250,000 entries: {rows:,} layout rows in {packages:,} package "
          f"versions; layout database {dbsize:,} bytes; lifeboat's index of the import {idx:,} bytes")
    print(f"- full import (`state import`, no index yet), whole process: median **{med(full) * 1000:.0f} ms** "
          f"(runs: {', '.join(f'{x * 1000:.0f}' for x in full)})")
    print(f"- re-import when nothing changed: median **{med(again) * 1000:.1f} ms** "
          f"(runs: {', '.join(f'{x * 1000:.1f}' for x in again)})")
    print(f"- `sqlite3` CLI reading every layout row (no conversion, no index): median {med(floor) * 1000:.0f} ms")
    print(f"- machine: {os.cpu_count()} cores; rounds alternate the contenders; `sync` before each run")


if __name__ == "__main__":
    main()
