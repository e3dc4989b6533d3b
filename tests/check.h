/*
 * check.h: the test harness. CHECK(cond) and CHECK_CLOSE(got, ref, n, atol, rtol) report the
 * first 5 mismatches (index, expected, got) and carry on; check_summary() prints max abs/rel
 * error and returns the exit code (0 all passed, 1 something failed). A test that cannot run
 * here (no GPU, no fixture) calls check_skip(), which prints SKIP and exits 77.
 * Closeness: |got - ref| <= atol + rtol * |ref|, skipping non-finite ref entries.
 */
#ifndef CHECK_H
#define CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int check_nfail_  = 0;
static int check_ncheck_ = 0;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        check_ncheck_++;                                                                           \
        if (!(cond)) {                                                                             \
            check_nfail_++;                                                                        \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                        \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        check_ncheck_++;                                                                           \
        if (!(cond)) {                                                                             \
            check_nfail_++;                                                                        \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

// Compares n floats; prints a one-line summary with max abs and max rel error under `what`.
// Returns 1 when all are close.
static inline int check_close_f32(const char *what, const float *got, const float *ref, int64_t n,
                                  double atol, double rtol, const char *file, int line)
{
    int64_t bad    = 0;
    double max_abs = 0, max_rel = 0;
    check_ncheck_++;
    for (int64_t i = 0; i < n; i++) {
        double r = ref[i], g = got[i];
        if (!isfinite(r)) continue;
        double e = fabs(g - r);
        if (!(e == e)) e = INFINITY; // got NaN
        if (e > max_abs) max_abs = e;
        double rel = e / (fabs(r) > 1e-30 ? fabs(r) : 1e-30);
        if (fabs(r) > atol && rel > max_rel) max_rel = rel;
        if (!(e <= atol + rtol * fabs(r))) {
            if (bad < 5)
                fprintf(stderr, "  %s[%lld]: expected %.9g got %.9g\n", what, (long long)i, r, g);
            bad++;
        }
    }
    printf("%s %s: n=%lld max_abs=%.3g max_rel=%.3g (atol %.1g rtol %.1g)\n", bad ? "FAIL" : "ok  ",
           what, (long long)n, max_abs, max_rel, atol, rtol);
    if (bad) {
        fprintf(stderr, "FAIL %s:%d: %s: %lld of %lld elements differ\n", file, line, what,
                (long long)bad, (long long)n);
        check_nfail_++;
    }
    return bad == 0;
}

#define CHECK_CLOSE(what, got, ref, n, atol, rtol)                                                 \
    check_close_f32(what, got, ref, n, atol, rtol, __FILE__, __LINE__)

static inline int check_summary(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, check_ncheck_, check_nfail_);
    return check_nfail_ ? 1 : 0;
}

static inline void check_skip(const char *why)
{
    printf("SKIP %s\n", why);
    exit(77);
}

#endif
