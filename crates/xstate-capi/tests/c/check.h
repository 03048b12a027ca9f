/* Small check macros for the libxstate C tests: a failed check prints the file, line, the
 * expression and the library's last message, and exits 1. */
#ifndef XSTATE_TEST_CHECK_H
#define XSTATE_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Atomic int checks_passed;

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);        \
            exit(1);                                                                        \
        }                                                                                   \
        checks_passed++;                                                                    \
    } while (0)

/* A call that must succeed; it reports into the `xstate_error e` in scope, whose message is
 * printed otherwise. */
#define OK(call)                                                                            \
    do {                                                                                    \
        int ok_rc_ = (call);                                                                \
        if (ok_rc_ != 0) {                                                                  \
            fprintf(stderr, "%s:%d: %s returned %d: %s\n", __FILE__, __LINE__, #call,       \
                    ok_rc_, e.message);                                                     \
            exit(1);                                                                        \
        }                                                                                   \
        checks_passed++;                                                                    \
    } while (0)

/* A call that must fail with `want` (a negative errno) and fill `e` accordingly. */
#define FAILS_WITH(want, e, call)                                                           \
    do {                                                                                    \
        memset(&(e), 0x5a, sizeof(e));                                                      \
        int f_rc_ = (call);                                                                 \
        if (f_rc_ != (want)) {                                                              \
            fprintf(stderr, "%s:%d: %s returned %d, expected %s = %d (message: %.*s)\n",    \
                    __FILE__, __LINE__, #call, f_rc_, #want, (want),                        \
                    (int)sizeof((e).message), (e).message);                                 \
            exit(1);                                                                        \
        }                                                                                   \
        CHECK((e).code == (want));                                                          \
        CHECK(memchr((e).message, 0, sizeof((e).message)) != NULL);                         \
        CHECK(strlen((e).message) > 0);                                                     \
        CHECK(memchr((e).rule, 0, sizeof((e).rule)) != NULL && (e).rule[0] != 0);            \
    } while (0)

#define SKIP(...)                                                                           \
    do {                                                                                    \
        printf("SKIP: " __VA_ARGS__);                                                       \
        printf("\n");                                                                       \
    } while (0)

#endif
