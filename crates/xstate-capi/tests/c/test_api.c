/* libxstate from C, as a consumer uses it: compiled against the installed header and library
 * (pkg-config), run by crates/xstate-capi/tests/c_api.rs, shared and static, and under valgrind.
 *
 * usage: test_api SHARED_CPUID_DIR|- SCRATCH_DIR
 *
 * 1. this host: its layout from CPUID against the sizes the CPU reports, images this program
 *    saves itself with XSAVE/XSAVEC, validated, converted both ways and restored on the CPU;
 * 2. corpus dumps (AMD Genoa, the Intel AMX guest): sizes, offsets, a conversion across the two
 *    layouts, and their migration compatibility with reasons;
 * 3. policies and policy-sized save areas, the Busy rule;
 * 4. bad input: truncated, garbage, wrong masks, NULL pointers, with the right error codes.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xstate.h>

#include "check.h"

/* ---- the CPU, as this program sees it ---------------------------------------------------- */

static int has_xsave(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    return (c >> 26 & 1) && (c >> 27 & 1); /* XSAVE and OSXSAVE */
}

static void cpuid_d(unsigned sub, unsigned r[4]) { __cpuid_count(0xd, sub, r[0], r[1], r[2], r[3]); }

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

static void xsave64(void *area, uint64_t rfbm) {
    __asm__ volatile("xsave64 (%0)" : : "r"(area), "a"((uint32_t)rfbm), "d"((uint32_t)(rfbm >> 32)) : "memory");
}

static void xsavec64(void *area, uint64_t rfbm) {
    __asm__ volatile("xsavec64 (%0)" : : "r"(area), "a"((uint32_t)rfbm), "d"((uint32_t)(rfbm >> 32)) : "memory");
}

/* XRSTOR `image` and XSAVE what the CPU then holds into `out`, with this thread's own state
 * saved before and restored after, in one asm block so no compiled code runs in between. An
 * image XRSTOR refuses raises #GP: SIGSEGV, and the test fails. */
static void xrstor_then_xsave(const void *image, void *out, void *scratch, uint64_t rfbm) {
    __asm__ volatile("xsave64 (%0)\n\t"
                     "xrstor64 (%1)\n\t"
                     "xsave64 (%2)\n\t"
                     "xrstor64 (%0)\n\t"
                     :
                     : "r"(scratch), "r"(image), "r"(out), "a"((uint32_t)rfbm), "d"((uint32_t)(rfbm >> 32))
                     : "memory");
}

static uint8_t *area_alloc(size_t len) {
    size_t n = (len + 63) & ~(size_t)63;
    uint8_t *p = aligned_alloc(64, n ? n : 64);
    CHECK(p != NULL);
    memset(p, 0, n ? n : 64);
    return p;
}

static uint64_t u64_at(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static uint32_t u32_at(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* The bytes XSAVE defines in a standard image of `len`: legacy 0..415 and the extended region
 * (bytes 416..511 and the header after XSTATE_BV are not written by XSAVE). */
static void same_state(const uint8_t *a, const uint8_t *b, size_t len, const char *what) {
    for (size_t i = 0; i < len; i++) {
        if ((i >= 416 && i < 576))
            continue;
        if (a[i] != b[i]) {
            fprintf(stderr, "%s: byte %zu differs: %#x vs %#x\n", what, i, a[i], b[i]);
            exit(1);
        }
    }
    checks_passed++;
}

static void write_file(const char *dir, const char *name, const uint8_t *p, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(p, 1, n, f) == n);
    CHECK(fclose(f) == 0);
}

/* ---- 1. this host ---------------------------------------------------------------------- */

static void test_host(const char *scratch) {
    xstate_error e;
    if (!has_xsave()) {
        SKIP("host: this CPU (or OS) has no XSAVE/OSXSAVE");
        return;
    }
    xstate_layout *host = NULL;
    OK(xstate_layout_from_host(&host, &e));
    uint64_t xcr0 = xgetbv0();
    unsigned d0[4], d1[4];
    cpuid_d(0, d0);
    cpuid_d(1, d1);

    /* The sizes the CPU reports are the ground truth for the library's geometry. */
    size_t std_size = 0, max_size = 0;
    CHECK(xstate_layout_xcr0_supported(host) == ((uint64_t)d0[3] << 32 | d0[0]));
    OK(xstate_layout_standard_size(host, xcr0, &std_size, &e));
    CHECK(std_size == d0[1]); /* 0xD.0 EBX: standard size for the current XCR0 */
    OK(xstate_layout_standard_size(host, xstate_layout_xcr0_supported(host), &max_size, &e));
    CHECK(max_size == d0[2]); /* 0xD.0 ECX */
    CHECK(xstate_layout_xsave_features(host) == d1[0]);
    int compaction = d1[0] >> 1 & 1;
    if (compaction && xstate_layout_xss_supported(host) == 0) {
        size_t csize = 0;
        OK(xstate_layout_compacted_size(host, xcr0, &csize, &e));
        CHECK(csize == d1[1]); /* 0xD.1 EBX: compacted size of XCR0 | XSS, XSS = 0 */
    } else if (compaction) {
        SKIP("host: 0xD.1 EBX includes IA32_XSS, which user space cannot read");
    }
    for (unsigned i = 2; i < 63; i++) {
        if (!(xstate_layout_xcr0_supported(host) >> i & 1))
            continue;
        unsigned r[4];
        xstate_component_info info;
        cpuid_d(i, r);
        OK(xstate_layout_component(host, i, &info, &e));
        CHECK(info.size == r[0] && info.offset == r[1]);
        CHECK(info.supervisor == 0 && info.align64 == (r[2] >> 1 & 1) && info.xfd == (r[2] >> 2 & 1));
    }

    /* An image this program saves with XSAVE: every consumer takes it. */
    uint8_t *a = area_alloc(std_size), *scratch_area = area_alloc(std_size);
    xsave64(a, xcr0);
    xstate_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.xcr0 = xcr0;
    ctx.mxcsr_mask = u32_at(a + 28);
    OK(xstate_validate(a, std_size, host, XSTATE_PROFILE_HARDWARE, &ctx, &e));
    OK(xstate_validate(a, std_size, host, XSTATE_PROFILE_LINUX, &ctx, &e));
    /* KVM_SET_XSAVE reads a struct kvm_xsave: at least 4096 bytes, the image at its start. */
    size_t kvm_len = std_size > 4096 ? std_size : 4096;
    uint8_t *kvm = area_alloc(kvm_len);
    memcpy(kvm, a, std_size);
    OK(xstate_validate(kvm, kvm_len, host, XSTATE_PROFILE_KVM, &ctx, &e));
    if (std_size < 4096)
        FAILS_WITH(-EFAULT, e, xstate_validate(a, std_size, host, XSTATE_PROFILE_KVM, &ctx, &e));
    free(kvm);
    /* Xen: a guest gets at most what Xen offers an HVM guest here (never AMX). */
    xstate_xen_host xen;
    OK(xstate_xen_host_for(host, XSTATE_XEN_GUEST_HVM_HAP, &xen, &e));
    CHECK((xen.policy_max & ~xen.host) == 0 && (xen.host & ~xcr0) == 0 && (xen.policy_max & 3) == 3);
    CHECK((xen.policy_max & 0x60000) == 0);
    ctx.xen_xcr0_accum = xcr0;
    if (xcr0 & ~xen.policy_max) {
        /* This host's whole XCR0 is more than Xen gives a guest: refused, naming the bits. */
        FAILS_WITH(-EINVAL, e, xstate_validate(a, std_size, host, XSTATE_PROFILE_XEN, &ctx, &e));
        CHECK(strcmp(e.rule, "xcr0_accum must be a subset of the policy's maximum XCR0") == 0);
        ctx.xen_policy_max = xcr0; /* a Xen that offered it */
    }
    OK(xstate_validate(a, std_size, host, XSTATE_PROFILE_XEN, &ctx, &e));
    ctx.xen_xcr0_accum = ctx.xen_policy_max = 0;

    /* A Xen guest's blob: the guest's XCR0 is what Xen offers, saved by XSAVE with that RFBM;
     * written, read back, and saved for the toolstack example. */
    uint64_t guest = xcr0 & xen.policy_max;
    size_t guest_size = 0, blob_len = 0;
    OK(xstate_layout_standard_size(host, guest, &guest_size, &e));
    uint8_t *ga = area_alloc(guest_size);
    xsave64(ga, guest);
    OK(xstate_xen_domctl_write(guest, guest, ga, guest_size, host, host, NULL, NULL, &blob_len, &e));
    CHECK(blob_len == 16 + guest_size);
    uint8_t *blob = malloc(blob_len);
    OK(xstate_xen_domctl_write(guest, guest, ga, guest_size, host, host, NULL, blob, &blob_len, &e));
    xstate_blob_info bi;
    OK(xstate_xen_domctl_parse(blob, blob_len, host, NULL, &bi, &e));
    CHECK(bi.xcr0 == guest && bi.accum == guest && bi.xss == 0);
    CHECK(bi.image_offset == 16 && bi.image_len == guest_size && bi.form == XSTATE_FORM_STANDARD);
    CHECK(memcmp(blob + 16, ga, 416) == 0);
    write_file(scratch, "host.domctl", blob, blob_len);
    free(blob);
    free(ga);
    /* The whole XCR0 in a blob for a Xen that allows it (an explicit host), refused by default
     * where it has AMX. */
    size_t whole_len = 0;
    xstate_xen_host all = {xcr0, xcr0};
    OK(xstate_xen_domctl_write(xcr0, xcr0, a, std_size, host, host, &all, NULL, &whole_len, &e));
    CHECK(whole_len == 16 + std_size);
    if (xcr0 & ~xen.policy_max)
        FAILS_WITH(-EINVAL, e, xstate_xen_domctl_write(xcr0, xcr0, a, std_size, host, host, NULL, NULL, &whole_len, &e));

    if (!compaction) {
        SKIP("host: the CPU this runs on has no XSAVEC (CPUID 0xD.1 EAX[1] = 0; under valgrind: valgrind's): "
             "compacted images not tested on the CPU");
        xstate_layout_free(host);
        free(a);
        free(scratch_area);
        return;
    }
    size_t csize = 0;
    OK(xstate_layout_compacted_size(host, xcr0, &csize, &e));
    uint8_t *b = area_alloc(csize);
    xsave64(a, xcr0); /* both saves back to back: the same register state */
    xsavec64(b, xcr0);
    CHECK(u64_at(b + 520) == (1ull << 63 | xcr0));
    OK(xstate_validate(b, csize, host, XSTATE_PROFILE_HARDWARE, &ctx, &e));

    /* compacted -> standard: size query first, then a buffer too small, then the real one. */
    size_t need = 0;
    OK(xstate_convert(b, csize, host, host, xcr0, XSTATE_FORM_STANDARD, 0, NULL, &need, &e));
    CHECK(need == std_size);
    uint8_t *c = area_alloc(std_size), *d = area_alloc(std_size);
    size_t small = need - 1;
    FAILS_WITH(-ERANGE, e, xstate_convert(b, csize, host, host, xcr0, XSTATE_FORM_STANDARD, 0, c, &small, &e));
    CHECK(small == need);
    for (size_t i = 0; i < std_size; i++)
        CHECK(c[i] == 0); /* a refused call writes nothing */
    OK(xstate_convert(b, csize, host, host, xcr0, XSTATE_FORM_STANDARD, 0, c, &need, &e));
    CHECK(need == std_size);
    /* The CPU loads the converted image and saves the state XSAVE saved at first. */
    xrstor_then_xsave(c, d, scratch_area, xcr0);
    same_state(a, d, std_size, "XSAVEC image converted to standard, restored");

    /* standard -> compacted, restored the same way. */
    need = 0;
    OK(xstate_convert(a, std_size, host, host, xcr0, XSTATE_FORM_COMPACTED, 0, NULL, &need, &e));
    CHECK(need == csize);
    uint8_t *f = area_alloc(csize);
    OK(xstate_convert(a, std_size, host, host, xcr0, XSTATE_FORM_COMPACTED, 0, f, &need, &e));
    CHECK(u64_at(f + 520) == (1ull << 63 | xcr0));
    memset(d, 0, std_size);
    xrstor_then_xsave(f, d, scratch_area, xcr0);
    same_state(a, d, std_size, "XSAVE image converted to compacted, restored");

    /* The forward-compatible blob keeps the compacted form. */
    size_t fc_len = 0;
    OK(xstate_fc_blob_write(xcr0, xcr0, b, csize, host, host, NULL, NULL, &fc_len, &e));
    CHECK(fc_len == 16 + csize);
    uint8_t *fc = malloc(fc_len);
    OK(xstate_fc_blob_write(xcr0, xcr0, b, csize, host, host, NULL, fc, &fc_len, &e));
    OK(xstate_fc_blob_parse(fc, fc_len, host, NULL, &bi, &e));
    CHECK(bi.form == XSTATE_FORM_COMPACTED && bi.accum == xcr0 && bi.image_len == csize);
    /* ... which Xen's rules refuse at its XCOMP_BV (-EOPNOTSUPP), on a Xen whose policy
     * allows every state of it (else -EINVAL comes first, for AMX on an AMX host). */
    FAILS_WITH(-EOPNOTSUPP, e, xstate_xen_domctl_parse(fc, fc_len, host, &all, &bi, &e));
    free(fc);

    xstate_layout_free(host);
    free(a);
    free(b);
    free(c);
    free(d);
    free(f);
    free(scratch_area);
}

/* ---- 2. corpus dumps ------------------------------------------------------------------- */

/* A standard image for AMD Genoa's layout with x87, SSE, AVX and AVX-512 in use, each byte of
 * the extended components a pattern of its offset. */
static uint8_t *genoa_image(size_t *len) {
    *len = 0x980; /* standard_size(0xe7) on Zen 4 */
    uint8_t *p = area_alloc(*len);
    p[0] = 0x7f; /* FCW 0x037F */
    p[1] = 0x03;
    uint32_t mxcsr = 0x9fc0;
    memcpy(p + 24, &mxcsr, 4);
    uint32_t mask = 0xffff;
    memcpy(p + 28, &mask, 4);
    for (size_t i = 160; i < 416; i++)
        p[i] = (uint8_t)(i * 7);
    for (size_t i = 576; i < *len; i++)
        p[i] = (uint8_t)(i ^ (i >> 8));
    uint64_t bv = 0xe7;
    memcpy(p + 512, &bv, 8);
    return p;
}

static void test_corpus(const char *shared, xstate_layout **genoa_out, xstate_layout **amx_out) {
    xstate_error e;
    char path[4096];
    xstate_layout *genoa = NULL, *amx = NULL;
    snprintf(path, sizeof path, "%s/dumps/AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt", shared);
    OK(xstate_layout_from_dump(path, &genoa, &e));
    snprintf(path, sizeof path, "%s/host-intel-amx-kvm.txt", shared);
    OK(xstate_layout_from_dump(path, &amx, &e));

    /* The same dump without its leaf 0xD lines (leaf 1 says XSAVE): an unusable dump
     * (-EINVAL), not a CPU without XSAVE (-EOPNOTSUPP, which a caller may take for an
     * FXSAVE-only host). */
    {
        snprintf(path, sizeof path, "%s/dumps/AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt", shared);
        FILE *f = fopen(path, "r");
        CHECK(f != NULL);
        static char text[1 << 20];
        size_t len = 0;
        char line[1024];
        while (fgets(line, sizeof line, f) && len + strlen(line) < sizeof text) {
            if (!strstr(line, "0000000D")) {
                memcpy(text + len, line, strlen(line));
                len += strlen(line);
            }
        }
        fclose(f);
        xstate_layout *none = NULL;
        FAILS_WITH(-EINVAL, e, xstate_layout_from_dump_text(text, len, &none, &e));
        CHECK(none == NULL && strstr(e.message, "leaf 0xD") != NULL);
        /* The partial reader too (it answered -EOPNOTSUPP, "no XSAVE"). */
        char tmp[] = "/tmp/xstate-capi-no0d-XXXXXX";
        int fd = mkstemp(tmp);
        CHECK(fd >= 0);
        CHECK(write(fd, text, len) == (ssize_t)len);
        close(fd);
        uint64_t omitted = 0;
        FAILS_WITH(-EINVAL, e, xstate_layout_from_dump_partial(tmp, &none, &omitted, &e));
        CHECK(none == NULL && strstr(e.message, "leaf 0xD") != NULL);
        unlink(tmp);
    }

    /* AMD Zen 4 (Genoa): AVX-512 right after AVX, PKRU at 0x980, CET supervisor states. */
    size_t n = 0;
    CHECK(xstate_layout_xcr0_supported(genoa) == 0x2e7);
    CHECK(xstate_layout_xss_supported(genoa) == 0x1800);
    OK(xstate_layout_standard_size(genoa, 0x2e7, &n, &e));
    CHECK(n == 0x988);
    OK(xstate_layout_standard_size(genoa, 0xe7, &n, &e));
    CHECK(n == 0x980);
    OK(xstate_layout_compacted_size(genoa, 0x18e7, &n, &e));
    CHECK(n == 0x980 + 16 + 24);
    OK(xstate_layout_compacted_offset(genoa, 12, 0x18e7, &n, &e));
    CHECK(n == 0x990);
    xstate_component_info info;
    OK(xstate_layout_component(genoa, 5, &info, &e));
    CHECK(info.size == 64 && info.offset == 0x340 && !info.supervisor);
    OK(xstate_layout_component(genoa, 11, &info, &e));
    CHECK(info.size == 16 && info.supervisor);

    /* An old dump without the subleaf of a component its CPU enumerates (LWP on Bulldozer):
     * refused, or read with LWP left out and named, and then nothing answers for LWP. */
    xstate_layout *bulldozer = NULL;
    uint64_t omitted = 0;
    snprintf(path, sizeof path, "%s/dumps/AuthenticAMD/AuthenticAMD0600F01_K15_Bulldozer_CPUID.txt", shared);
    xstate_error f;
    FAILS_WITH(-EINVAL, f, xstate_layout_from_dump(path, &bulldozer, &f));
    CHECK(strstr(f.message, "subleaf 62") != NULL && bulldozer == NULL);
    OK(xstate_layout_from_dump_partial(path, &bulldozer, &omitted, &e));
    CHECK(omitted == 1ull << 62);
    OK(xstate_layout_standard_size(bulldozer, 0x7, &n, &e));
    CHECK(n == 0x340);
    FAILS_WITH(-EINVAL, f, xstate_layout_standard_size(bulldozer, 1ull << 62 | 0x7, &n, &f));
    FAILS_WITH(-ENOENT, f, xstate_layout_component(bulldozer, 62, &info, &f));
    xstate_layout_free(bulldozer);
    snprintf(path, sizeof path, "%s/host-intel-amx-kvm.txt", shared);
    OK(xstate_layout_from_dump_partial(path, &bulldozer, &omitted, &e));
    CHECK(omitted == 0); /* a complete dump */
    xstate_layout_free(bulldozer);

    /* The Intel AMX guest: holes before opmask and TILECFG, tiles 64-byte aligned. */
    OK(xstate_layout_standard_size(amx, 0x600e7, &n, &e));
    CHECK(n == 0x2b00);
    OK(xstate_layout_compacted_size(amx, 0x600e7, &n, &e));
    CHECK(n == 0x29c0);
    OK(xstate_layout_compacted_offset(amx, 17, 0x600e7, &n, &e));
    CHECK(n == 0x980);
    OK(xstate_layout_compacted_offset(amx, 18, 0x600e7, &n, &e));
    CHECK(n == 0x9c0);
    OK(xstate_layout_component(amx, 18, &info, &e));
    CHECK(info.size == 8192 && info.offset == 0xb00 && info.align64 && info.xfd);
    OK(xstate_layout_component(amx, 5, &info, &e));
    CHECK(info.offset == 0x440);

    /* Across layouts: Genoa's opmask at 0x340 lands at Intel's 0x440, and back. */
    size_t glen;
    uint8_t *g = genoa_image(&glen);
    xstate_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.xcr0 = 0xe7;
    OK(xstate_validate(g, glen, genoa, XSTATE_PROFILE_HARDWARE, &ctx, &e));
    size_t ilen = 0;
    OK(xstate_convert(g, glen, genoa, amx, 0xe7, XSTATE_FORM_STANDARD, 0, NULL, &ilen, &e));
    CHECK(ilen == 0xa80);
    uint8_t *in = area_alloc(ilen);
    OK(xstate_convert(g, glen, genoa, amx, 0xe7, XSTATE_FORM_STANDARD, 0, in, &ilen, &e));
    CHECK(memcmp(in + 0x440, g + 0x340, 64) == 0);   /* opmask */
    CHECK(memcmp(in + 0x480, g + 0x380, 512) == 0);  /* ZMM_Hi256 */
    CHECK(memcmp(in + 0x680, g + 0x580, 1024) == 0); /* Hi16_ZMM */
    CHECK(memcmp(in + 0x240, g + 0x240, 256) == 0);  /* AVX */
    for (size_t i = 0x340; i < 0x440; i++)
        CHECK(in[i] == 0); /* the MPX hole */
    OK(xstate_validate(in, ilen, amx, XSTATE_PROFILE_HARDWARE, &ctx, &e));
    size_t back_len = glen;
    uint8_t *back = area_alloc(glen);
    OK(xstate_convert(in, ilen, amx, genoa, 0xe7, XSTATE_FORM_STANDARD, 0, back, &back_len, &e));
    CHECK(back_len == glen);
    CHECK(memcmp(back, g, 416) == 0 && memcmp(back + 512, g + 512, glen - 512) == 0);
    /* Compacted for the AMX guest: the same 0x980 bytes as Genoa's compacted image. */
    size_t clen = 0;
    OK(xstate_convert(g, glen, genoa, amx, 0xe7, XSTATE_FORM_COMPACTED, 0, NULL, &clen, &e));
    CHECK(clen == 0x980);

    /* On an AVX-512 host the CPU loads the re-laid-out image: its opmask is Genoa's. */
    xstate_layout *host = NULL;
    uint64_t xcr0 = has_xsave() ? xgetbv0() : 0;
    if ((xcr0 & 0xe7) == 0xe7 && xstate_layout_from_host(&host, &e) == 0) {
        size_t hlen = 0;
        OK(xstate_convert(g, glen, genoa, host, xcr0, XSTATE_FORM_STANDARD, 0, NULL, &hlen, &e));
        uint8_t *h = area_alloc(hlen), *out = area_alloc(hlen), *scr = area_alloc(hlen);
        OK(xstate_convert(g, glen, genoa, host, xcr0, XSTATE_FORM_STANDARD, 0, h, &hlen, &e));
        xrstor_then_xsave(h, out, scr, xcr0);
        OK(xstate_layout_component(host, 5, &info, &e));
        CHECK(memcmp(out + info.offset, g + 0x340, 64) == 0);
        OK(xstate_layout_component(host, 7, &info, &e));
        CHECK(memcmp(out + info.offset, g + 0x580, 1024) == 0);
        CHECK(u32_at(out + 24) == 0x9fc0); /* MXCSR */
        free(h);
        free(out);
        free(scr);
        xstate_layout_free(host);
    } else {
        SKIP("corpus: the CPU this runs on has no AVX-512 enabled (XCR0 %#llx; under valgrind: valgrind's): "
             "Genoa's image not restored on the CPU",
             (unsigned long long)xcr0);
    }

    /* Migration compatibility with reasons. */
    xstate_compat *r = NULL;
    xstate_side from = {genoa, 0x2e7, 0}, to = {amx, 0x600e7, 0};
    OK(xstate_compat_check(&from, &to, NULL, 0, &r, &e));
    CHECK(xstate_compat_verdict(r) == XSTATE_COMPAT_INCOMPATIBLE);
    int pkru_missing = 0;
    for (size_t i = 0; i < xstate_compat_reason_count(r); i++) {
        const char *s = xstate_compat_reason(r, i);
        CHECK(s != NULL && xstate_compat_reason_kind(r, i) != NULL);
        if (strstr(s, "pkru") && strstr(s, "missing"))
            pkru_missing = 1;
    }
    CHECK(pkru_missing);
    CHECK(xstate_compat_reason(r, xstate_compat_reason_count(r)) == NULL);
    CHECK(xstate_compat_mask(r) & 0x200);
    xstate_compat_free(r);
    from.xcr0 = 0xe7;
    OK(xstate_compat_check(&from, &to, NULL, 0, &r, &e));
    CHECK(xstate_compat_verdict(r) == XSTATE_COMPAT_AFTER_RELAYOUT);
    CHECK(strcmp(xstate_compat_reason_kind(r, 0), "offset_differs") == 0);
    CHECK(strstr(xstate_compat_reason(r, 0), "0x340") && strstr(xstate_compat_reason(r, 0), "0x440"));
    xstate_compat_free(r);
    /* With one image: where state sits matters for what it uses, but the image is
     * standard_size(XCR0) bytes: Genoa's 2432 for 0xe7 is not Sapphire Rapids' 2688, so even
     * x87/SSE alone move only re-laid out; with XCR0 0x7 (832 bytes on both) as is. */
    uint8_t *legacy_only = area_alloc(glen);
    memcpy(legacy_only, g, 512);
    uint64_t bv = 0x3;
    memcpy(legacy_only + 512, &bv, 8);
    OK(xstate_compat_check(&from, &to, legacy_only, glen, &r, &e));
    CHECK(xstate_compat_verdict(r) == XSTATE_COMPAT_AFTER_RELAYOUT);
    CHECK(strcmp(xstate_compat_reason_kind(r, 0), "standard_size_differs") == 0);
    xstate_compat_free(r);
    from.xcr0 = 0x7;
    OK(xstate_compat_check(&from, &to, legacy_only, glen, &r, &e));
    CHECK(xstate_compat_verdict(r) == XSTATE_COMPAT_AS_IS);
    xstate_compat_free(r);

    free(g);
    free(in);
    free(back);
    free(legacy_only);
    *genoa_out = genoa;
    *amx_out = amx;
}

/* ---- 3. policies and save areas --------------------------------------------------------- */

static void test_policy(xstate_layout *genoa, xstate_layout *amx) {
    xstate_error e;
    xstate_policy *avx512 = NULL, *all = NULL;
    OK(xstate_policy_new(amx, "avx,avx512", &avx512, &e));
    OK(xstate_policy_new(amx, "all", &all, &e));
    CHECK(xstate_policy_xcr0_max(avx512) == 0xe7 && xstate_policy_xss_max(avx512) == 0);
    CHECK(xstate_policy_xcr0_max(all) == 0x600e7);
    size_t n = 0;
    OK(xstate_policy_area_size(avx512, XSTATE_FORM_STANDARD, &n, &e));
    CHECK(n == 2688); /* docs/POLICY.md: 1000 vCPUs */
    OK(xstate_policy_area_size(avx512, XSTATE_FORM_COMPACTED, &n, &e));
    CHECK(n == 2432);
    OK(xstate_policy_area_size(all, XSTATE_FORM_STANDARD, &n, &e));
    CHECK(n == 11008);
    OK(xstate_policy_area_size(all, XSTATE_FORM_COMPACTED, &n, &e));
    CHECK(n == 10688);
    xstate_cpuid_regs leaf[64];
    OK(xstate_policy_leaf0d(avx512, 0xe7, 0, leaf, &e));
    CHECK(leaf[0].eax == 0xe7 && leaf[0].ebx == 0xa80 && leaf[0].ecx == 0xa80 && leaf[0].edx == 0);
    CHECK(leaf[17].eax == 0 && leaf[18].eax == 0 && leaf[5].ebx == 0x440);
    const xstate_layout *guest = xstate_policy_layout(avx512);
    CHECK(guest != NULL && xstate_layout_xcr0_supported(guest) == 0xe7);
    /* The derived leaf is a layout like any other. */
    xstate_layout *again = NULL;
    OK(xstate_layout_from_cpuid(leaf, 64, &again, &e));
    OK(xstate_layout_standard_size(again, 0xe7, &n, &e));
    CHECK(n == 0xa80);
    xstate_layout_free(again);

    /* A save area: XSETBV rules, load, store, resize, and the Busy rule. */
    xstate_area *area = NULL;
    OK(xstate_area_new(avx512, XSTATE_FORM_STANDARD, &area, &e));
    CHECK(xstate_area_size(area) == 2688);
    CHECK(xstate_area_xcr0(area) == 1 && xstate_area_xcr0_accum(area) == 1);
    FAILS_WITH(-EINVAL, e, xstate_area_set_xcr0(area, 0x5, &e)); /* AVX without SSE: #GP */
    FAILS_WITH(-EINVAL, e, xstate_area_set_xcr0(area, 0x60007, &e)); /* beyond the policy */
    OK(xstate_area_set_xcr0(area, 0xe7, &e));
    size_t glen;
    uint8_t *g = genoa_image(&glen);
    size_t ilen = 0xa80;
    uint8_t *img = area_alloc(ilen);
    OK(xstate_convert(g, glen, genoa, amx, 0xe7, XSTATE_FORM_STANDARD, 0, img, &ilen, &e));
    OK(xstate_area_load(area, img, ilen, &e));
    size_t out_len = 0;
    OK(xstate_area_store(area, XSTATE_FORM_STANDARD, NULL, &out_len, &e));
    CHECK(out_len == 0xa80);
    uint8_t *out = area_alloc(out_len);
    OK(xstate_area_store(area, XSTATE_FORM_STANDARD, out, &out_len, &e));
    CHECK(memcmp(out + 0x440, g + 0x340, 64) == 0);
    OK(xstate_area_set_policy(area, all, &e)); /* grows, keeps the state */
    CHECK(xstate_area_size(area) == 11008);
    OK(xstate_area_set_xcr0(area, 0x600e7, &e));
    OK(xstate_area_set_xcr0(area, 0xe7, &e));
    /* The guest once enabled AMX: shrinking to a policy without it is refused (Xen: -EBUSY). */
    FAILS_WITH(-EBUSY, e, xstate_area_set_policy(area, avx512, &e));
    CHECK(strstr(e.message, "busy") != NULL);
    CHECK(xstate_area_size(area) == 11008); /* nothing changed */
    CHECK(xstate_area_xcr0_accum(area) == 0x600e7);
    memset(out, 0, out_len);
    OK(xstate_area_store(area, XSTATE_FORM_STANDARD, out, &out_len, &e));
    CHECK(memcmp(out + 0x440, g + 0x340, 64) == 0);
    xstate_area_free(area);

    /* The area outlives the policy handle it was made from. */
    OK(xstate_area_new(all, XSTATE_FORM_COMPACTED, &area, &e));
    xstate_policy_free(all);
    CHECK(xstate_area_size(area) == 10688);
    xstate_area_free(area);

    /* Refusals name the feature. */
    xstate_policy *p = NULL;
    FAILS_WITH(-EOPNOTSUPP, e, xstate_policy_new(genoa, "amx", &p, &e));
    CHECK(strstr(e.message, "amx") != NULL && p == NULL);
    FAILS_WITH(-EINVAL, e, xstate_policy_new(amx, "avx,frobnicate", &p, &e));
    CHECK(strstr(e.message, "frobnicate") != NULL);
    FAILS_WITH(-EINVAL, e, xstate_policy_new(amx, "avx512", &p, &e)); /* needs avx */
    OK(xstate_policy_from_masks(genoa, 0x2e7, 0, &p, &e));
    CHECK(xstate_policy_xcr0_max(p) == 0x2e7);
    xstate_policy_free(p);

    xstate_policy_free(avx512);
    free(g);
    free(img);
    free(out);
}

/* ---- 4. bad input ---------------------------------------------------------------------- */

static void test_bad_input(xstate_layout *genoa, xstate_layout *amx, const char *scratch) {
    xstate_error e;
    xstate_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.xcr0 = 0xe7;
    size_t glen;
    uint8_t *g = genoa_image(&glen);

    /* NULL pointers where something is required. */
    FAILS_WITH(-EINVAL, e, xstate_validate(NULL, glen, genoa, XSTATE_PROFILE_HARDWARE, &ctx, &e));
    FAILS_WITH(-EINVAL, e, xstate_validate(g, glen, NULL, XSTATE_PROFILE_HARDWARE, &ctx, &e));
    FAILS_WITH(-EINVAL, e, xstate_validate(g, glen, genoa, XSTATE_PROFILE_HARDWARE, NULL, &e));
    FAILS_WITH(-EINVAL, e, xstate_layout_from_host(NULL, &e));
    FAILS_WITH(-EINVAL, e, xstate_validate(g, glen, genoa, 7, &ctx, &e)); /* no such profile */
    ctx.xen_caller = 2; /* no such caller */
    FAILS_WITH(-EINVAL, e, xstate_validate(g, glen, genoa, XSTATE_PROFILE_XEN, &ctx, &e));
    ctx.xen_caller = XSTATE_XEN_CALLER_DOMCTL;
    CHECK(xstate_validate(g, glen, genoa, 7, &ctx, NULL) == -EINVAL);     /* err may be NULL */

    /* Truncated. */
    /* Shorter than the legacy region and header: shorter than any restore reads (-EFAULT),
     * for ptrace too when a whole number of words (else its -EINVAL comes first). */
    FAILS_WITH(-EFAULT, e, xstate_validate(g, 575, genoa, XSTATE_PROFILE_HARDWARE, &ctx, &e));
    CHECK(strstr(e.rule, "576") != NULL);
    FAILS_WITH(-EFAULT, e, xstate_validate(g, 512, genoa, XSTATE_PROFILE_LINUX, &ctx, &e));
    FAILS_WITH(-EINVAL, e, xstate_validate(g, 575, genoa, XSTATE_PROFILE_LINUX, &ctx, &e));
    FAILS_WITH(-EFAULT, e, xstate_validate(g, glen - 1, genoa, XSTATE_PROFILE_HARDWARE, &ctx, &e));
    FAILS_WITH(-EFAULT, e, xstate_validate(g, glen - 64, genoa, XSTATE_PROFILE_LINUX, &ctx, &e));
    /* ptrace takes whole 8-byte words only */
    FAILS_WITH(-EINVAL, e, xstate_validate(g, glen - 1, genoa, XSTATE_PROFILE_LINUX, &ctx, &e));
    size_t n = 4096;
    uint8_t *buf = area_alloc(n);
    FAILS_WITH(-EFAULT, e, xstate_convert(g, 600, genoa, amx, 0xe7, XSTATE_FORM_STANDARD, 0, buf, &n, &e));
    n = 4096;
    FAILS_WITH(-EFAULT, e, xstate_convert(g, 100, genoa, amx, 0xe7, XSTATE_FORM_STANDARD, 0, buf, &n, &e));

    /* Wrong masks. */
    ctx.xcr0 = 0x3;
    FAILS_WITH(-EINVAL, e, xstate_validate(g, glen, genoa, XSTATE_PROFILE_HARDWARE, &ctx, &e));
    CHECK(strcmp(e.rule, "XSTATE_BV must be a subset of XCR0") == 0);
    CHECK(strstr(e.message, "avx") != NULL && strstr(e.message, "#GP") != NULL);
    ctx.xcr0 = 0xe7;
    ctx.xen_host = 0x7; /* Xen's host has not enabled AVX-512 */
    /* XEN_DOMCTL_setvcpuextstate first refuses an image larger than the host's maximum ... */
    FAILS_WITH(-EINVAL, e, xstate_validate(g, glen, genoa, XSTATE_PROFILE_XEN, &ctx, &e));
    CHECK(strstr(e.message, "standard_size(host xfeature_mask)") != NULL);
    /* ... the HVM loader has no such rule: validate_xstate() says -EOPNOTSUPP */
    ctx.xen_caller = XSTATE_XEN_CALLER_HVM;
    FAILS_WITH(-EOPNOTSUPP, e, xstate_validate(g, glen, genoa, XSTATE_PROFILE_XEN, &ctx, &e));
    ctx.xen_caller = XSTATE_XEN_CALLER_DOMCTL;
    ctx.xen_host = 0;
    /* KVM_SET_XSAVE reads its 4096-byte struct kvm_xsave: the image alone is short ... */
    FAILS_WITH(-EFAULT, e, xstate_validate(g, glen, genoa, XSTATE_PROFILE_KVM, &ctx, &e));
    uint8_t *kvm = area_alloc(4096);
    memcpy(kvm, g, glen);
    OK(xstate_validate(kvm, 4096, genoa, XSTATE_PROFILE_KVM, &ctx, &e));
    ctx.kvm_buffer = 8192; /* ... and a KVM_CAP_XSAVE2 buffer of 8192 bytes is shorter still */
    FAILS_WITH(-EFAULT, e, xstate_validate(kvm, 4096, genoa, XSTATE_PROFILE_KVM, &ctx, &e));
    ctx.kvm_buffer = 0;
    ctx.kvm_supported = 0x7; /* KVM does not support AVX-512 */
    FAILS_WITH(-EINVAL, e, xstate_validate(kvm, 4096, genoa, XSTATE_PROFILE_KVM, &ctx, &e));
    ctx.kvm_supported = 0;
    free(kvm);
    ctx.mxcsr_mask = 0xffbf; /* DAZ (bit 6) is reserved on this CPU */
    FAILS_WITH(-EINVAL, e, xstate_validate(g, glen, genoa, XSTATE_PROFILE_HARDWARE, &ctx, &e));
    CHECK(strstr(e.message, "MXCSR") != NULL);
    ctx.mxcsr_mask = 0;
    n = 4096;
    FAILS_WITH(-EINVAL, e, xstate_convert(g, glen, genoa, amx, 0x5, XSTATE_FORM_STANDARD, 0, buf, &n, &e));
    n = 4096; /* compaction mask without AVX-512, which is in use */
    FAILS_WITH(-EINVAL, e, xstate_convert(g, glen, genoa, amx, 0xe7, XSTATE_FORM_COMPACTED, 0x7, buf, &n, &e));
    CHECK(strstr(e.message, "compaction mask") != NULL);
    n = 4096; /* PKRU in use, and the AMX guest has none */
    uint8_t *with_pkru = area_alloc(0x988);
    memcpy(with_pkru, g, glen);
    uint64_t pkru_bv = 0x2e7;
    memcpy(with_pkru + 512, &pkru_bv, 8);
    FAILS_WITH(-EINVAL, e, xstate_convert(with_pkru, 0x988, genoa, amx, 0x2e7, XSTATE_FORM_STANDARD, 0, buf, &n, &e));
    CHECK(strstr(e.message, "pkru") != NULL);
    free(with_pkru);
    FAILS_WITH(-EINVAL, e, xstate_convert(g, glen, genoa, amx, 0xe7, 9, 0, buf, &n, &e));

    /* A reserved header byte: Xen says -EIO and the byte's offset. */
    g[530] = 1;
    FAILS_WITH(-EIO, e, xstate_validate(g, glen, genoa, XSTATE_PROFILE_XEN, &ctx, &e));
    CHECK(e.offset == 530);
    FAILS_WITH(-EINVAL, e, xstate_validate(g, glen, genoa, XSTATE_PROFILE_HARDWARE, &ctx, &e));
    g[530] = 0;

    /* Garbage. */
    uint8_t *junk = malloc(4096);
    uint32_t seed = 12345;
    for (size_t i = 0; i < 4096; i++) {
        seed = seed * 1103515245 + 12345;
        junk[i] = (uint8_t)(seed >> 16);
    }
    for (int p = 0; p < 4; p++) {
        int rc = xstate_validate(junk, 4096, genoa, p, &ctx, &e);
        CHECK(rc < 0 && e.code == rc && strlen(e.message) > 0);
    }
    xstate_blob_info bi;
    FAILS_WITH(-EINVAL, e, xstate_xen_domctl_parse(junk, 4096, genoa, NULL, &bi, &e));
    FAILS_WITH(-EINVAL, e, xstate_fc_blob_parse(junk, 4096, genoa, NULL, &bi, &e));
    xstate_layout *l = NULL;
    FAILS_WITH(-EINVAL, e, xstate_layout_from_dump_text((const char *)junk, 4096, &l, &e));
    CHECK(l == NULL);
    xstate_cpuid_regs regs[64];
    memcpy(regs, junk, sizeof regs);
    FAILS_WITH(-EINVAL, e, xstate_layout_from_cpuid(regs, 64, &l, &e));
    FAILS_WITH(-EINVAL, e, xstate_layout_from_cpuid(regs, 65, &l, &e));
    memset(regs, 0, sizeof regs);
    regs[0].eax = 0x7; /* AVX supported, but subleaf 2 missing */
    regs[0].ecx = 0x340;
    FAILS_WITH(-EINVAL, e, xstate_layout_from_cpuid(regs, 3, &l, &e));
    free(junk);

    /* Layout queries out of range. */
    xstate_component_info info;
    FAILS_WITH(-EINVAL, e, xstate_layout_component(genoa, 63, &info, &e));
    FAILS_WITH(-ENOENT, e, xstate_layout_component(genoa, 17, &info, &e)); /* no tiles on Zen 4 */
    FAILS_WITH(-EINVAL, e, xstate_layout_standard_size(genoa, 0x600e7, &n, &e));
    FAILS_WITH(-ENOENT, e, xstate_layout_compacted_offset(genoa, 9, 0xe7, &n, &e)); /* not in XCOMP_BV */
    char path[4096];
    snprintf(path, sizeof path, "%s/no-such-dump.txt", scratch);
    FAILS_WITH(-ENOENT, e, xstate_layout_from_dump(path, &l, &e));
    CHECK(strstr(e.message, "no-such-dump.txt") != NULL);

    /* Xen blobs: a byte short, a compacted image, "no state" with a non-zero XCR0. */
    size_t blen = 0;
    OK(xstate_xen_domctl_write(0xe7, 0xe7, g, glen, genoa, genoa, NULL, NULL, &blen, &e));
    uint8_t *blob = malloc(blen);
    OK(xstate_xen_domctl_write(0xe7, 0xe7, g, glen, genoa, genoa, NULL, blob, &blen, &e));
    OK(xstate_xen_domctl_parse(blob, blen, genoa, NULL, &bi, &e));
    FAILS_WITH(-EINVAL, e, xstate_xen_domctl_parse(blob, blen - 1, genoa, NULL, &bi, &e));
    CHECK(strstr(e.message, "16 + standard_size") != NULL);
    uint64_t xcr0_zero = 0;
    memcpy(blob, &xcr0_zero, 8); /* xcr0 = 0 with state: Xen's valid_xcr0 fails */
    FAILS_WITH(-EINVAL, e, xstate_xen_domctl_parse(blob, blen, genoa, NULL, &bi, &e));
    uint64_t xcomp = 1ull << 63 | 0xe7;
    uint64_t xcr0 = 0xe7;
    memcpy(blob, &xcr0, 8);
    memcpy(blob + 16 + 520, &xcomp, 8);
    FAILS_WITH(-EOPNOTSUPP, e, xstate_xen_domctl_parse(blob, blen, genoa, NULL, &bi, &e));
    xstate_xen_host xh = {0x7, 0x7}; /* a host with AVX only: the blob is too big for it */
    memset(blob + 16 + 520, 0, 8);
    FAILS_WITH(-EINVAL, e, xstate_xen_domctl_parse(blob, blen, genoa, &xh, &bi, &e));
    uint8_t no_state[16] = {0};
    OK(xstate_xen_domctl_parse(no_state, 16, genoa, NULL, &bi, &e));
    CHECK(bi.accum == 0 && bi.image_len == 0 && bi.form == -1);
    no_state[0] = 1;
    FAILS_WITH(-EINVAL, e, xstate_xen_domctl_parse(no_state, 16, genoa, NULL, &bi, &e));
    /* Writing refuses state the target cannot hold (PKRU in use, to the AMX guest). */
    uint64_t bv = 0x2e7;
    uint8_t *gp = area_alloc(0x988);
    memcpy(gp, g, glen);
    memcpy(gp + 512, &bv, 8);
    blen = 0;
    FAILS_WITH(-EINVAL, e, xstate_xen_domctl_write(0x2e7, 0x2e7, gp, 0x988, genoa, amx, NULL, NULL, &blen, &e));
    free(gp);
    free(blob);

    /* A save area refuses an image XRSTOR would refuse, and keeps its state. */
    xstate_policy *p = NULL;
    xstate_area *area = NULL;
    OK(xstate_policy_new(genoa, "avx,avx512", &p, &e));
    OK(xstate_area_new(p, XSTATE_FORM_STANDARD, &area, &e));
    FAILS_WITH(-EINVAL, e, xstate_area_load(area, g, glen, &e)); /* XCR0 is still x87 only */
    OK(xstate_area_set_xcr0(area, 0xe7, &e));
    FAILS_WITH(-EFAULT, e, xstate_area_load(area, g, 575, &e));
    FAILS_WITH(-EINVAL, e, xstate_area_set_xss(area, 0x800, &e)); /* CET is not in the policy */
    n = 10;
    FAILS_WITH(-ERANGE, e, xstate_area_store(area, XSTATE_FORM_STANDARD, buf, &n, &e));
    CHECK(n == 0x980);
    xstate_area_free(area);
    xstate_policy_free(p);

    /* A verdict needs masks the CPUs can hold: no x87, AVX without SSE, a bit Genoa does not
     * enumerate, a supervisor state it lacks are refused, as the CLI refuses them (each was
     * "compatible"). */
    struct xstate_side from = {genoa, 0xe7, 0}, to = {genoa, 0xe7, 0};
    struct xstate_compat *r = NULL;
    uint64_t bad_xcr0[] = {0x0, 0x5, 0xe7 | (1ull << 40)};
    for (size_t i = 0; i < sizeof bad_xcr0 / sizeof bad_xcr0[0]; i++) {
        from.xcr0 = bad_xcr0[i];
        FAILS_WITH(-EINVAL, e, xstate_compat_check(&from, &to, NULL, 0, &r, &e));
        CHECK(r == NULL);
        from.xcr0 = 0xe7;
        to.xcr0 = bad_xcr0[i];
        FAILS_WITH(-EINVAL, e, xstate_compat_check(&from, &to, NULL, 0, &r, &e));
        to.xcr0 = 0xe7;
    }
    from.xss = 0x100; /* PT */
    FAILS_WITH(-EINVAL, e, xstate_compat_check(&from, &to, NULL, 0, &r, &e));
    from.xss = 0;

    /* A length no object can have (past PTRDIFF_MAX) is refused before it is read. */
    FAILS_WITH(-EINVAL, e, xstate_validate(g, SIZE_MAX, genoa, XSTATE_PROFILE_HARDWARE, &ctx, &e));
    n = 4096;
    FAILS_WITH(-EINVAL, e, xstate_convert(g, SIZE_MAX, genoa, genoa, 0xe7, XSTATE_FORM_STANDARD, 0, buf, &n, &e));
    xstate_layout *huge = NULL;
    FAILS_WITH(-EINVAL, e, xstate_layout_from_dump_text("x", SIZE_MAX, &huge, &e));
    FAILS_WITH(-EINVAL, e, xstate_compat_check(&from, &to, g, SIZE_MAX, &r, &e));

    /* An empty feature list is no selection. */
    FAILS_WITH(-EINVAL, e, xstate_policy_new(genoa, "", &p, &e));
    FAILS_WITH(-EINVAL, e, xstate_policy_new(genoa, " , ", &p, &e));

    free(g);
    free(buf);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SHARED_CPUID_DIR|- SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    CHECK(strncmp(xstate_version(), "0.", 2) == 0);
    char name[32];
    CHECK(xstate_component_name(18, name, sizeof name) == (int)strlen("tiledata"));
    CHECK(strcmp(name, "tiledata") == 0);
    CHECK(xstate_component_name(18, name, 4) == -ERANGE && name[0] == 0);
    CHECK(xstate_component_name(63, name, sizeof name) == -EINVAL);

    test_host(argv[2]);
    if (strcmp(argv[1], "-") == 0) {
        SKIP("corpus, policy and bad-input parts: ../shared/cpuid not found");
    } else {
        xstate_layout *genoa = NULL, *amx = NULL;
        test_corpus(argv[1], &genoa, &amx);
        test_policy(genoa, amx);
        test_bad_input(genoa, amx, argv[2]);
        xstate_layout_free(genoa);
        xstate_layout_free(amx);
    }
    xstate_layout_free(NULL); /* free functions take NULL */
    xstate_policy_free(NULL);
    xstate_area_free(NULL);
    xstate_compat_free(NULL);
    printf("test_api: %d checks passed\n", checks_passed);
    return 0;
}
