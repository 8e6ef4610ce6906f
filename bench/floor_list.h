/* What the per-file floors (blob_floor.c, uring_floor.c) share: the list of
 * paths they read, and running one worker per thread over contiguous shares of
 * it, timed from the first thread's start to the last one's end. */
#ifndef FLOOR_LIST_H
#define FLOOR_LIST_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char **paths;
static long count;

struct share {
    long from, to, failed;
};

/* Reads LIST_FILE (one path per line) into `paths`; 0 on success. */
static int read_list(const char *file)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        perror(file);
        return -1;
    }
    long cap = 1 << 16;
    paths = malloc(sizeof(char *) * cap);
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (count == cap)
            paths = realloc(paths, sizeof(char *) * (cap *= 2));
        paths[count++] = strdup(line);
    }
    fclose(f);
    return 0;
}

/* Runs `walk` on `threads` threads (1..64), each over its share of the list;
 * returns the seconds taken and adds up the failures in `*failed`. */
static double run_shares(int threads, void *(*walk)(void *), long *failed)
{
    pthread_t th[64];
    struct share shares[64];
    struct timespec t0, t1;
    if (threads < 1 || threads > 64)
        threads = 1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int t = 0; t < threads; t++) {
        shares[t] = (struct share){count * t / threads, count * (t + 1) / threads, 0};
        pthread_create(&th[t], NULL, walk, &shares[t]);
    }
    *failed = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(th[t], NULL);
        *failed += shares[t].failed;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
}

#endif
