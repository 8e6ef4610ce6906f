#!/usr/bin/env python3
"""What the order of adding blobs costs a journalled filesystem (issue 16).

Adds 210,000 blobs of 4,000 bytes in the moss store's layout (`aa/bb/cc/<hash>`,
each written as an unnamed file in a staging directory and linked in, as
`state commit` does) in the order a tree walk meets them (random in hash) or
sorted by path, then syncs, and prints the time and the bytes the block device
wrote meanwhile. Run it on the filesystem under test, nothing else running:

    python3 bench/store_order.py DIR BLOCKDEV random|sorted

e.g. `python3 bench/store_order.py /mnt/lbbench/order loop0 sorted`, alternating
the two orders. One thread: it measures the filesystem's writes, not a speed.
"""
import ctypes, os, random, shutil, sys, time

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, AT_EMPTY_PATH = -100, 0x1000


def written_sectors(dev):
    return int(open(f"/sys/block/{dev}/stat").read().split()[6])


def main():
    base, dev, order = sys.argv[1], sys.argv[2], sys.argv[3]
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(os.path.join(base, "stage"))
    os.sync()
    rng = random.Random(1)
    names = [f"{rng.getrandbits(128):032x}" for _ in range(210000)]
    if order == "sorted":
        names.sort()
    body = b"x" * 4000
    time.sleep(2)
    before, t = written_sectors(dev), time.monotonic()
    for h in names:
        leaf = base
        for level in (h[0:2], h[2:4], h[4:6]):
            leaf = os.path.join(leaf, level)
            try:
                os.mkdir(leaf)
            except FileExistsError:
                pass
        fd = os.open(os.path.join(base, "stage"), os.O_TMPFILE | os.O_WRONLY, 0o644)
        os.write(fd, body)
        if libc.linkat(fd, b"", AT_FDCWD, os.path.join(leaf, h).encode(), AT_EMPTY_PATH) != 0:
            raise OSError(ctypes.get_errno(), f"link {h}")
        os.close(fd)
    made = time.monotonic() - t
    os.sync()
    total = time.monotonic() - t
    mb = (written_sectors(dev) - before) * 512 / 1e6
    print(f"{order}: added in {made:.2f} s, synced at {total:.2f} s, {mb:,.0f} MB written to {dev}")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
