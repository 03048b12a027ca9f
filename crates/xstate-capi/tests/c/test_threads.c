/* libxstate from several threads at once: shared read-only handles (a layout, a policy), a
 * handle of each thread's own (a save area, layouts made and freed), and errors that belong to
 * the call that made them: each thread breaks its own rule and must read its own message.
 *
 * usage: test_threads SHARED_CPUID_DIR|- THREADS ROUNDS
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xstate.h>

#include "check.h"

static const xstate_layout *shared_layout;
static const xstate_policy *shared_policy; /* NULL without the corpus */
static int rounds;

/* A standard image of `layout` for XCR0 `xcr0` in its init state, XSTATE_BV = `bv`. */
static uint8_t *init_image(const xstate_layout *layout, uint64_t xcr0, uint64_t bv, size_t *len) {
    xstate_error e;
    OK(xstate_layout_standard_size(layout, xcr0, len, &e));
    uint8_t *p = calloc(1, *len);
    CHECK(p != NULL);
    p[0] = 0x7f;
    p[1] = 0x03;
    uint32_t mxcsr = 0x1f80;
    memcpy(p + 24, &mxcsr, 4);
    memcpy(p + 512, &bv, 8);
    return p;
}

static void *worker(void *arg) {
    int t = (int)(intptr_t)arg;
    xstate_error e;
    uint64_t xcr0 = xstate_layout_xcr0_supported(shared_layout) & 0x7; /* x87, SSE, AVX if any */
    size_t len;
    uint8_t *img = init_image(shared_layout, xcr0, xcr0, &len);
    xstate_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.xcr0 = xcr0;
    /* Each thread's own bad value: a reserved header byte at its own offset. */
    size_t bad_at = 528 + (size_t)(t % 48);
    for (int r = 0; r < rounds; r++) {
        OK(xstate_validate(img, len, shared_layout, XSTATE_PROFILE_HARDWARE, &ctx, &e));
        img[bad_at] = (uint8_t)(t + 1);
        int rc = xstate_validate(img, len, shared_layout, XSTATE_PROFILE_XEN, &ctx, &e);
        img[bad_at] = 0;
        CHECK(rc == -EIO && e.code == -EIO);
        CHECK(e.offset == (int64_t)bad_at); /* this thread's byte, not another's */
        char want[64];
        snprintf(want, sizeof want, "byte %zu is %#04x", bad_at, t + 1);
        CHECK(strstr(e.message, want) != NULL);

        size_t out_len = 0;
        OK(xstate_convert(img, len, shared_layout, shared_layout, xcr0, XSTATE_FORM_STANDARD, 0, NULL, &out_len,
                          &e));
        CHECK(out_len == len);
        uint8_t *out = malloc(out_len);
        OK(xstate_convert(img, len, shared_layout, shared_layout, xcr0, XSTATE_FORM_STANDARD, 0, out, &out_len,
                          &e));
        CHECK(memcmp(out, img, 416) == 0);
        free(out);

        xstate_layout *own = NULL;
        OK(xstate_layout_from_host(&own, &e));
        xstate_layout_free(own);

        if (shared_policy) {
            xstate_area *area = NULL;
            OK(xstate_area_new(shared_policy, XSTATE_FORM_STANDARD, &area, &e));
            OK(xstate_area_set_xcr0(area, 0x7, &e));
            int brc = xstate_area_set_xcr0(area, t & 1 ? 0x60003 : 0x5, &e); /* beyond the policy; AVX without SSE */
            CHECK(brc == -EINVAL && strstr(e.message, "XCR0") != NULL);
            xstate_area_free(area);
        }
    }
    free(img);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s SHARED_CPUID_DIR|- THREADS ROUNDS\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    int threads = atoi(argv[2]);
    rounds = atoi(argv[3]);
    xstate_error e;
    xstate_layout *layout = NULL;
    xstate_policy *policy = NULL;
    if (strcmp(argv[1], "-") == 0) {
        SKIP("threads: ../shared/cpuid not found: the host's layout only, no policy");
        OK(xstate_layout_from_host(&layout, &e));
    } else {
        char path[4096];
        snprintf(path, sizeof path, "%s/host-intel-amx-kvm.txt", argv[1]);
        OK(xstate_layout_from_dump(path, &layout, &e));
        OK(xstate_policy_new(layout, "avx,avx512", &policy, &e));
    }
    shared_layout = layout;
    shared_policy = policy;
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    for (int t = 0; t < threads; t++)
        CHECK(pthread_create(&tid[t], NULL, worker, (void *)(intptr_t)t) == 0);
    for (int t = 0; t < threads; t++)
        CHECK(pthread_join(tid[t], NULL) == 0);
    free(tid);
    xstate_policy_free(policy);
    xstate_layout_free(layout);
    printf("test_threads: %d threads x %d rounds passed\n", threads, rounds);
    return 0;
}
