/* Whether io_uring could take `verify --full` under the per-file floor of
 * `blob_floor.c`: the same files read with no system call per file, each as
 * three linked io_uring operations — open into a registered descriptor slot,
 * read (up to 256 KiB), close the slot — submitted 64 files at a time, on N
 * threads with a ring each. It does less than the floor (no fstat), so if it is
 * not faster than the floor, io_uring cannot make a checker that also looks at
 * each file's metadata faster either. BENCHMARKS.md has the figures.
 *
 *   apt-get install liburing-dev
 *   cc -O2 -pthread -o uring_floor bench/uring_floor.c -luring
 *   uring_floor TREE_DIR LIST_FILE THREADS
 *
 * LIST_FILE holds one path per line relative to TREE_DIR (as blob_floor's). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define BUF (1 << 18)

#include "floor_list.h"

static const char *top;

static void *walk(void *arg)
{
    struct share *s = arg;
    struct io_uring ring;
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    if (io_uring_queue_init_params(4 * BATCH, &ring, &p) < 0 || io_uring_register_files_sparse(&ring, BATCH) < 0) {
        perror("io_uring");
        exit(2);
    }
    int dir = open(top, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    char *bufs = malloc((size_t)BATCH * BUF);
    for (long i = s->from; i < s->to; i += BATCH) {
        long n = s->to - i < BATCH ? s->to - i : BATCH;
        unsigned want = 0;
        for (long k = 0; k < n; k++) {
            struct io_uring_sqe *e = io_uring_get_sqe(&ring);
            io_uring_prep_openat_direct(e, dir, paths[i + k], O_RDONLY | O_NOFOLLOW | O_NOATIME, 0, k);
            e->flags |= IOSQE_IO_LINK;
            e = io_uring_get_sqe(&ring);
            io_uring_prep_read(e, k, bufs + (size_t)k * BUF, BUF, 0);
            /* A short read (any file below 256 KiB) must not cancel the close. */
            e->flags |= IOSQE_FIXED_FILE | IOSQE_IO_HARDLINK;
            e = io_uring_get_sqe(&ring);
            io_uring_prep_close_direct(e, k);
            want += 3;
        }
        io_uring_submit_and_wait(&ring, want);
        for (unsigned seen = 0; seen < want; seen++) {
            struct io_uring_cqe *c;
            if (io_uring_wait_cqe(&ring, &c) < 0) {
                s->failed++;
                break;
            }
            if (c->res < 0)
                s->failed++;
            io_uring_cqe_seen(&ring, c);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s TREE_DIR LIST_FILE THREADS\n", argv[0]);
        return 2;
    }
    top = argv[1];
    if (read_list(argv[2]) < 0)
        return 2;
    long failed;
    double secs = run_shares(atoi(argv[3]), walk, &failed);
    printf("%ld files, %s threads: %.3f s, %ld operations failed\n", count, argv[3], secs, failed);
    return failed ? 1 : 0;
}
