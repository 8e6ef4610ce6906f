/* The test userspace of the QEMU scenarios: a dynamically linked init (so that
 * deleting glibc breaks it, as it would break a real system's init). It reports
 * which transaction booted on which kernel, performs the actions /etc/lbtest.conf lists for this
 * boot ("bootN = command args..." run via /usr/bin/lifeboat; "always = ..." on every boot, as a
 * unit of the real system would run, e.g. `boot assess --reboot`; in file order), and ends the VM with
 * isa-debug-exit so the harness gets a clean verdict (exit status 33). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/io.h>
#include <sys/reboot.h>
#include <sys/wait.h>
#include <sys/mount.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <errno.h>
#include <sys/swap.h>
#include <sys/sysmacros.h>

static void slurp(const char *path, char *buf, size_t n) {
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t r = fread(buf, 1, n - 1, f);
    buf[r] = 0;
    while (r > 0 && (buf[r - 1] == '\n' || buf[r - 1] == ' ')) buf[--r] = 0;
    fclose(f);
}

static int run(char *line) {
    char *argv[32];
    int argc = 0;
    argv[argc++] = "/usr/bin/lifeboat";
    for (char *t = strtok(line, " \t\n"); t && argc < 31; t = strtok(NULL, " \t\n")) argv[argc++] = t;
    argv[argc] = NULL;
    printf("LBTEST: run:");
    for (int i = 0; i < argc; i++) printf(" %s", argv[i]);
    printf("\n");
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        execv(argv[0], argv);
        perror("exec lifeboat");
        _exit(127);
    }
    int st = 0;
    waitpid(p, &st, 0);
    printf("LBTEST: exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128);
    fflush(stdout);
    return st;
}

static int put(const char *path, const char *text) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -1;
    ssize_t w = write(fd, text, strlen(text));
    int e = errno;
    close(fd);
    errno = e;
    return w < 0 ? -1 : 0;
}

/* "hibernateN = DEV": swap on DEV, a marker kept only in memory, hibernate there
 * (the machine powers off), and after the resume report the marker: the same
 * one only if the memory image was restored. */
static void hibernate(char *arg) {
    char dev[128], marker[64];
    sscanf(arg, " %127s", dev);
    mkdir("/sys", 0755);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    struct stat st;
    if (swapon(dev, 0) != 0 || stat(dev, &st) != 0) {
        printf("LBTEST: hibernate: swapon %s: %s\n", dev, strerror(errno));
        return;
    }
    slurp("/proc/sys/kernel/random/uuid", marker, sizeof marker);
    char num[32];
    snprintf(num, sizeof num, "%u:%u", major(st.st_rdev), minor(st.st_rdev));
    put("/sys/power/resume", num);
    put("/sys/power/disk", "shutdown");
    printf("LBTEST: hibernating to %s (%s) memory-marker=%s\n", dev, num, marker);
    fflush(stdout);
    sync();
    if (put("/sys/power/state", "disk") != 0) {
        printf("LBTEST: hibernate failed: %s\n", strerror(errno));
        return;
    }
    printf("LBTEST: resumed memory-marker=%s\n", marker);
    fflush(stdout);
}

/* What the firmware says of Secure Boot (the SecureBoot variable in efivarfs: 4
 * bytes of attributes, then 1 when enforcing; -1 when unreadable) and which
 * lockdown mode the kernel chose (securityfs), printed for the harness. */
static void report_secure_boot(void) {
    mkdir("/sys", 0755);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    mount("efivarfs", "/sys/firmware/efi/efivars", "efivarfs", 0, NULL);
    mount("securityfs", "/sys/kernel/security", "securityfs", 0, NULL);
    int sb = -1;
    unsigned char b[5];
    int fd = open("/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c", O_RDONLY);
    if (fd >= 0) {
        if (read(fd, b, sizeof b) == (ssize_t)sizeof b) sb = b[4];
        close(fd);
    }
    char lockdown[128];
    slurp("/sys/kernel/security/lockdown", lockdown, sizeof lockdown);
    for (char *p = lockdown; *p; p++) if (*p == ' ') *p = ',';
    printf("LBTEST: SecureBoot=%d lockdown=%s\n", sb, lockdown[0] ? lockdown : "unknown");
    fflush(stdout);
}

static void finish(int code) {
    fflush(stdout);
    sync();
    if (ioperm(0xf4, 4, 1) == 0) outb(code, 0xf4);
    reboot(RB_POWER_OFF);
    for (;;) pause();
}

int main(void) {
    char tx[64], marker[128], boots[32], up[64];
    mkdir("/proc", 0755);
    mount("proc", "/proc", "proc", 0, NULL);
    slurp("/proc/uptime", up, sizeof up);
    char *sp = strchr(up, ' ');
    if (sp) *sp = 0;
    slurp("/usr/.stateID", tx, sizeof tx);
    slurp("/usr/lib/lbtest/marker", marker, sizeof marker);
    slurp("/var/lbtest-boots", boots, sizeof boots);
    int n = atoi(boots) + 1;
    FILE *bf = fopen("/var/lbtest-boots", "w");
    if (bf) { fprintf(bf, "%d\n", n); fclose(bf); }
    /* Which kernel runs: the entry's own, with its own initrd's modules. */
    char release[128];
    slurp("/proc/sys/kernel/osrelease", release, sizeof release);
    printf("LBTEST: kernel=%s\n", release);
    printf("LBTEST: booted tx=%s marker=%s boot=%d uptime=%s\n", tx, marker, n, up);
    fflush(stdout);
    report_secure_boot();
    /* When the kernel handed over to the initrd's /init: the kernel log keeps
     * every record, whatever the console's loglevel. */
    int km = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
    if (km >= 0) {
        char rec[1024];
        ssize_t r;
        while ((r = read(km, rec, sizeof rec - 1)) > 0 || (r < 0 && errno == EPIPE)) {
            if (r <= 0) continue;
            rec[r] = 0;
            char *msg = strchr(rec, ';');
            if (msg && strncmp(msg + 1, "Run /init as init process", 25) == 0) {
                unsigned long long usec = 0;
                char *f = strchr(rec, ',');
                if (f) f = strchr(f + 1, ',');
                if (f) usec = strtoull(f + 1, NULL, 10);
                printf("LBTEST: initrd started at %llu.%06llu\n", usec / 1000000, usec % 1000000);
                fflush(stdout);
                break;
            }
        }
        close(km);
    }
    FILE *c = fopen("/etc/lbtest.conf", "r");
    char line[512], key[32];
    snprintf(key, sizeof key, "boot%d =", n);
    if (c) {
        while (fgets(line, sizeof line, c)) {
            if (strncmp(line, key, strlen(key)) == 0) run(line + strlen(key));
            if (strncmp(line, "always =", 8) == 0) run(line + 8);
            char hkey[40];
            snprintf(hkey, sizeof hkey, "hibernate%d =", n);
            if (strncmp(line, hkey, strlen(hkey)) == 0) hibernate(line + strlen(hkey));
        }
        fclose(c);
    }
    printf("LBTEST: done\n");
    finish(0x10);
    return 0;
}
