/* The floor under a quick check of a tree (`verify`, and the check `repair`
 * starts with): list every directory once and `lstat` every entry, on N
 * threads, and nothing else (no index, no comparison, no symlink read).
 * bench/peers.py builds and runs it beside lifeboat: whatever a check that
 * must see each entry's type, mode, owner and size does, it cannot be faster
 * than this loop.
 *
 *   stat_floor TREE THREADS
 *
 * The work units are the directories two levels down (and the entries above
 * them), handed out on demand; each unit is walked depth first with `*at`
 * calls on open directories, as lifeboat walks. Prints the entries seen. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char **units;
static int nunits;
static atomic_int next_unit;
static int tree_fd;
static atomic_long seen;

static int dots(const char *n) {
    return n[0] == '.' && (!n[1] || (n[1] == '.' && !n[2]));
}

/* Lists the open directory `fd` (taken over) and stats each entry below it. */
static void walk(int fd) {
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (dots(e->d_name))
            continue;
        struct stat st;
        if (e->d_type == DT_DIR) {
            int sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0 && fstat(sub, &st) == 0)
                walk(sub);
            else if (sub >= 0)
                close(sub);
        } else {
            fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW);
        }
        seen++;
    }
    closedir(d);
}

static void *worker(void *arg) {
    (void)arg;
    int i;
    while ((i = next_unit++) < nunits) {
        int fd = openat(tree_fd, units[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0)
            walk(fd);
    }
    return NULL;
}

/* Adds the directories below `rel` (depth levels further down) as units and
 * stats everything above them. */
static void plan(const char *rel, int depth) {
    int fd = openat(tree_fd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (dots(e->d_name))
            continue;
        char *p;
        if (asprintf(&p, "%s/%s", rel, e->d_name) < 0)
            exit(1);
        struct stat st;
        fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW);
        seen++;
        if (e->d_type != DT_DIR) {
            free(p);
        } else if (depth > 1) {
            plan(p, depth - 1);
            free(p);
        } else {
            units = realloc(units, sizeof(char *) * (nunits + 1));
            units[nunits++] = p;
        }
    }
    closedir(d);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s TREE THREADS\n", argv[0]);
        return 2;
    }
    tree_fd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (tree_fd < 0) {
        perror(argv[1]);
        return 1;
    }
    int n = atoi(argv[2]);
    if (n < 1 || n > 64)
        n = 1;
    plan(".", 2);
    pthread_t t[64];
    for (int i = 0; i < n; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    printf("%ld\n", (long)seen);
    return 0;
}
