/* A control for the valgrind runs: a handle that is never freed. valgrind must report it as
 * definitely lost (so the runs of the other tests are not vacuous, with either linkage). */
#include <stdio.h>

#include <xstate.h>

int main(void) {
    xstate_error e;
    xstate_layout *leaked = NULL;
    xstate_cpuid_regs sub[3] = {{0x7, 0x340, 0x340, 0}, {0, 0, 0, 0}, {0x100, 0x240, 0, 0}};
    if (xstate_layout_from_cpuid(sub, 3, &leaked, &e) != 0) {
        fprintf(stderr, "%s\n", e.message);
        return 1;
    }
    leaked = NULL;
    return 0;
}
