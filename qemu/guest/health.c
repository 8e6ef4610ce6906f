/* A health check for the boot-assessment scenario (w): the guest has no shell,
 * so the check is a program. Built twice: -DRESULT=0 passes, -DRESULT=1 fails.
 * It says on the console which transaction it judged. */
#include <stdio.h>

#ifndef RESULT
#error "build with -DRESULT=0 or -DRESULT=1"
#endif

int main(int argc, char **argv) {
    (void)argc;
    char tx[32] = "?";
    FILE *f = fopen("/usr/.stateID", "r");
    if (f) {
        if (fscanf(f, "%31s", tx) != 1) tx[0] = '?', tx[1] = 0;
        fclose(f);
    }
    printf("LBTEST: health check %s on transaction %s: %s\n", argv[0], tx, RESULT ? "fails" : "passes");
    fflush(stdout);
    return RESULT;
}
