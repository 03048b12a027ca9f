/* A toolstack's "set vCPU extended state", the path of Xen's XEN_DOMCTL_setvcpuextstate: a
 * vCPU's blob {xcr0, xcr0_accum, standard XSAVE image} arrives in a file (a migration stream,
 * a saved domain), written on another host. Before handing it to the hypervisor, check it with
 * Xen's own rules against the layout of the host that wrote it, ask whether this host can take
 * the state, and re-lay it out for this host.
 *
 * usage: set_vcpu_extstate BLOB [--from-cpuid DUMP] [-o OUT]
 *   BLOB             the Xen domctl blob
 *   --from-cpuid F   CPUID dump of the host that wrote the blob (default: this host)
 *   -o OUT           write the blob for this host to OUT
 * exit: 0 the blob can be set on this host; 1 it is invalid or this host cannot hold its state;
 *       2 usage or I/O error. Errors are one line on stderr.
 *
 * build: cc set_vcpu_extstate.c $(pkg-config --cflags --libs xstate) -o set_vcpu_extstate
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xstate.h>

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 65536, n = 0;
    uint8_t *p = malloc(cap);
    size_t got;
    while (p && (got = fread(p + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *q = realloc(p, cap *= 2);
            if (!q) {
                free(p);
                p = NULL;
            }
            p = q;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(p);
        return NULL;
    }
    *len = n;
    return p;
}

/* One line on stderr; exit 1 for invalid input, 2 for I/O (the library's -ENOENT, -EACCES...). */
static int fail(const char *what, const xstate_error *e) {
    fprintf(stderr, "set_vcpu_extstate: %s: %s\n", what, e->message);
    return e->code == -ENOENT || e->code == -EACCES ? 2 : 1;
}

int main(int argc, char **argv) {
    const char *blob_path = NULL, *from_cpuid = NULL, *out_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--from-cpuid") == 0 && i + 1 < argc)
            from_cpuid = argv[++i];
        else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc)
            out_path = argv[++i];
        else if (!blob_path && argv[i][0] != '-')
            blob_path = argv[i];
        else
            blob_path = NULL, i = argc;
    }
    if (!blob_path) {
        fprintf(stderr, "usage: set_vcpu_extstate BLOB [--from-cpuid DUMP] [-o OUT]\n");
        return 2;
    }
    size_t len = 0;
    uint8_t *blob = read_file(blob_path, &len);
    if (!blob) {
        fprintf(stderr, "set_vcpu_extstate: %s: %s\n", blob_path, strerror(errno));
        return 2;
    }

    xstate_error e;
    xstate_layout *src = NULL, *host = NULL;
    xstate_compat *report = NULL;
    uint8_t *out = NULL;
    int rc = 1;
    const char *what = blob_path;
    if (xstate_layout_from_host(&host, &e) != 0) {
        what = "this host's layout";
        goto failed;
    }
    if (from_cpuid && xstate_layout_from_dump(from_cpuid, &src, &e) != 0) {
        what = from_cpuid;
        goto failed;
    }
    const xstate_layout *writer = src ? src : host;

    /* 1. Xen's rules, on the layout the image was saved in. */
    xstate_blob_info info;
    if (xstate_xen_domctl_parse(blob, len, writer, NULL, &info, &e) != 0)
        goto failed;
    printf("blob: %zu bytes, xcr0 %#" PRIx64 ", xcr0_accum %#" PRIx64 ", image %zu bytes\n", len, info.xcr0,
           info.accum, info.image_len);

    /* 2. Can this host hold what the vCPU has ever enabled? */
    xstate_side from = {writer, info.accum, 0};
    xstate_side to = {host, xstate_layout_xcr0_supported(host), 0};
    const uint8_t *image = info.image_len ? blob + info.image_offset : NULL;
    if (xstate_compat_check(&from, &to, image, info.image_len, &report, &e) != 0)
        goto failed;
    printf("this host: %s\n", xstate_compat_verdict_text(report));
    for (size_t i = 0; i < xstate_compat_reason_count(report); i++)
        printf("  %s: %s\n", xstate_compat_reason_kind(report, i), xstate_compat_reason(report, i));
    if (xstate_compat_verdict(report) == XSTATE_COMPAT_INCOMPATIBLE) {
        fprintf(stderr, "set_vcpu_extstate: %s: this host cannot hold the vCPU's state\n", blob_path);
        goto done;
    }

    /* 3. The blob for this host: size first, then the bytes; the library reads its output back
     * with Xen's rules for this host before returning it. */
    size_t out_len = 0;
    if (xstate_xen_domctl_write(info.xcr0, info.accum, image, info.image_len, writer, host, NULL, NULL, &out_len,
                                &e) != 0)
        goto failed;
    out = malloc(out_len);
    if (!out || xstate_xen_domctl_write(info.xcr0, info.accum, image, info.image_len, writer, host, NULL, out,
                                        &out_len, &e) != 0)
        goto failed;
    printf("for this host: %zu bytes for XEN_DOMCTL_setvcpuextstate\n", out_len);
    rc = 0;
    if (out_path) {
        FILE *f = fopen(out_path, "wb");
        int written = f && fwrite(out, 1, out_len, f) == out_len;
        if (f && fclose(f) != 0)
            written = 0;
        if (!written) {
            fprintf(stderr, "set_vcpu_extstate: %s: %s\n", out_path, strerror(errno));
            rc = 2;
        }
    }
    goto done;

failed:
    rc = fail(what, &e);
done:
    free(out);
    free(blob);
    xstate_compat_free(report);
    xstate_layout_free(src);
    xstate_layout_free(host);
    return rc;
}
