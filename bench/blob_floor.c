/* The floor under `verify --store`: open, fstat, read and close every blob of a
 * store once, in hash order, on N threads, and nothing else (no hashing, no tree,
 * no index). bench/host.py builds and runs it beside lifeboat so the figure in
 * BENCHMARKS.md can be checked: whatever lifeboat does per blob, it cannot be
 * faster than this loop of the same syscalls.
 *
 *   blob_floor STORE_DIR LIST_FILE THREADS
 *
 * LIST_FILE holds one blob path per line, relative to STORE_DIR (`aa/bb/cc/hash`),
 * sorted. Each thread takes a contiguous share, keeps the current first-level
 * directory open (as lifeboat does) and has its own descriptor table. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "floor_list.h"

static const char *store;

/* Open, fstat, read (up to the buffer) and close one file below dir; 0 on success. */
static int touch(int dir, const char *rel, char *buf, size_t cap)
{
    int fd = openat(dir, rel, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOATIME | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    size_t want = cap;
    if (fstat(fd, &st) == 0 && (size_t)st.st_size < want)
        want = (size_t)st.st_size + 1;
    int r = read(fd, buf, want) < 0 ? -1 : 0;
    close(fd);
    return r;
}

static void *walk(void *arg)
{
    struct share *s = arg;
    static __thread char buf[1 << 18];
    unshare(CLONE_FILES);
    int sfd = open(store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int top = -1;
    char key[3] = {0, 0, 0};
    for (long i = s->from; i < s->to; i++) {
        const char *p = paths[i];
        if (strlen(p) < 4 || p[2] != '/') {
            /* Not a store path: a tree's file, opened by its whole relative path
             * (what any per-file tool pays). */
            if (touch(sfd, p, buf, sizeof buf) < 0)
                s->failed++;
            continue;
        }
        if (top < 0 || memcmp(key, p, 2) != 0) {
            if (top >= 0)
                close(top);
            key[0] = p[0];
            key[1] = p[1];
            top = openat(sfd, key, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        }
        if (touch(top, p + 3, buf, sizeof buf) < 0)
            s->failed++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s STORE_DIR LIST_FILE THREADS\n", argv[0]);
        return 2;
    }
    store = argv[1];
    int threads = atoi(argv[3]);
    if (threads < 1 || threads > 64)
        threads = 1;
    if (read_list(argv[2]) < 0)
        return 2;
    long failed;
    double s = run_shares(threads, walk, &failed);
    printf("%ld blobs, %d threads: %.3f s, %.2f us per blob per thread, %ld failed\n", count, threads, s,
           s * 1e6 * threads / (double)count, failed);
    return failed ? 1 : 0;
}
