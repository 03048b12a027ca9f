// The header from C++ (rr, gdb, CRIU's tools are C++): it compiles, links and calls as C.
#include <xstate.h>

#include <cstdio>
#include <cstring>

int main() {
    xstate_error e;
    xstate_layout *l = nullptr;
    xstate_cpuid_regs sub[3] = {{0x7, 0x340, 0x340, 0}, {0, 0, 0, 0}, {0x100, 0x240, 0, 0}};
    if (xstate_layout_from_cpuid(sub, 3, &l, &e) != 0) {
        std::fprintf(stderr, "%s\n", e.message);
        return 1;
    }
    size_t n = 0;
    int rc = xstate_layout_standard_size(l, 0x7, &n, &e);
    xstate_layout_free(l);
    if (rc != 0 || n != 0x340 || std::strncmp(xstate_version(), "0.", 2) != 0)
        return 1;
    std::printf("cxx_header: ok\n");
    return 0;
}
