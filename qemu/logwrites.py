"""Power cuts of a real guest, from QEMU's `blklogwrites` log.

QEMU's blklogwrites driver passes every request of the guest's disk through and
appends it to a log in dm-log-writes' format: sector 0 a super (magic, version,
entry count, sector size), then per request one header sector (sector, sector
count, flags, 0) and, for a write, its data. The log is in the order the writes
completed, flushes included (a FUA write reaches it as a write then a flush).

`crash_images` turns a log and the disk as it was before the boot into the
byte images of one partition a power cut could leave (DESIGN.md, "Crash model"):
the state after every flush; cuts inside each epoch (a prefix of its writes);
seeded subsets of each epoch's writes (writes between two flushes reach the
disk in any order); and a prefix whose last write is torn after its first
4 KiB (the unit today's disks write whole; the root is made with 4 KiB blocks,
as ext4 is on them: a 1 KiB-block ext4 torn inside its superblock fails e2fsck). A zeroing write counts as a write of zeros; a discard
changes nothing a reader may rely on and is skipped.
"""
import mmap, random, struct

MAGIC = 0x6a736677736872
FLUSH, FUA, DISCARD, MARK = 1, 2, 4, 8


class LogError(Exception):
    pass


def read_log(path):
    """The log's entries: (byte offset, byte length, flags, data offset in log or None)."""
    f = open(path, "rb")
    data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if len(data) < 32:
        raise LogError(f"{path}: shorter than a super block")
    magic, version, count, ss = struct.unpack_from("<QQQI", data, 0)
    if magic != MAGIC or version != 1 or ss not in (512, 4096):
        raise LogError(f"{path}: not a dm-log-writes log (magic {magic:#x}, version {version}, sector {ss})")
    out, at = [], ss
    for i in range(count):
        if at + 32 > len(data):
            raise LogError(f"{path}: entry {i} of {count} lies past the end of the log")
        sector, nsec, flags, _ = struct.unpack_from("<QQQQ", data, at)
        at += ss
        if flags & (FLUSH | DISCARD) or nsec == 0:
            out.append((sector * ss, nsec * ss, flags, None))
            continue
        if at + nsec * ss > len(data):
            raise LogError(f"{path}: entry {i}'s data lies past the end of the log")
        out.append((sector * ss, nsec * ss, flags, at))
        at += nsec * ss
    return data, out


def epochs(entries, start, length):
    """The writes that touch [start, start+length), split at flushes:
    a list of epochs, each a list of (offset in the partition, data offset, length)."""
    out, cur = [], []
    for off, n, flags, dat in entries:
        if dat is not None and not flags & DISCARD:
            lo, hi = max(off, start), min(off + n, start + length)
            if lo < hi:
                cur.append((lo - start, dat + (lo - off), hi - lo))
        if flags & FLUSH and cur:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def apply(img, log, writes):
    for at, dat, n in writes:
        img[at:at + n] = log[dat:dat + n]


def crash_images(base, log, eps, cuts=3, subsets=6, seed=0x5eed, limit=None, torn=4096):
    """Yields (description, image bytes) for the crash images of a run: `base`
    (the partition before it, bytes) and `eps` from `epochs`."""
    rng = random.Random(seed)
    plan = []
    for k, ep in enumerate(eps):
        plan.append((k, "flush", None))
        if len(ep) > 1:
            for c in sorted({max(1, len(ep) * (j + 1) // (cuts + 1)) for j in range(cuts)}):
                plan.append((k, f"cut after {c} of {len(ep)} writes", ("prefix", c)))
            for s in range(subsets):
                plan.append((k, f"subset {s} of {len(ep)} writes", ("subset", s)))
        # A write cut after its first atomic unit (`torn`: 4096, what today's
        # disks write whole, and the block size the root is made with).
        multi = [j for j, w in enumerate(ep) if w[2] > torn]
        if multi:
            j = multi[len(multi) // 2]
            plan.append((k, f"write {j + 1} of {len(ep)} torn after its first {torn} bytes", ("torn", j)))
    if limit and len(plan) > limit:
        keep = sorted(rng.sample(range(len(plan)), limit))
        plan = [plan[i] for i in keep]
    cur = bytearray(base)
    done = 0
    for k, what, how in plan:
        while done < k:
            apply(cur, log, eps[done])
            done += 1
        img = bytearray(cur)
        ep = eps[k]
        if how is None:
            apply(img, log, ep)
        elif how[0] == "prefix":
            apply(img, log, ep[:how[1]])
        elif how[0] == "torn":
            at, dat, _ = ep[how[1]]
            apply(img, log, ep[:how[1]] + [(at, dat, torn)])
        else:
            r = random.Random(seed * 1000 + k * 10 + how[1])
            apply(img, log, [w for w in ep if r.random() < 0.5])
        yield f"epoch {k + 1}/{len(eps)}: {what}", img
