/*
 * test_cuda.c: the CUDA kernels against their references (kernels/ref). Prints SKIP when the
 * build has no CUDA (no nvcc, or CUDA=0) or the machine has no GPU; runs everywhere else.
 */
#include "kernels/nk.h"
#include "tests/check.h"

#include <string.h>

#ifndef NT_HAVE_CUDA
int main(void)
{
    check_skip("built without CUDA (nvcc not found or CUDA=0)");
}
#else
static float *to_dev(const float *h, int64_t n)
{
    void *d = NULL;
    CHECK(nk_cuda_malloc(&d, (size_t)n * sizeof(float)) == 0);
    if (d && h) CHECK(nk_cuda_h2d(d, h, (size_t)n * sizeof(float)) == 0);
    return d;
}

int main(void)
{
    int ndev = nk_cuda_device_count();
    if (ndev == 0) check_skip("no CUDA device");
    char name[256];
    CHECK(nk_cuda_device_name(0, name, sizeof(name)) == 0);
    printf("device 0: %s (%d devices)\n", name, ndev);
    static const int64_t sizes[] = {1, 7, 33, 1023, 1 << 20, (1 << 24) + 5};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        int64_t n = sizes[s];
        float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
        float *ref = malloc(sizeof(float) * (size_t)n), *got = malloc(sizeof(float) * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            a[i] = nk_u01(1, (uint64_t)i) - 0.5f;
            b[i] = nk_u01(2, (uint64_t)i) - 0.5f;
        }
        float *da = to_dev(a, n), *db = to_dev(b, n), *dy = to_dev(NULL, n);
        char what[64];
        CHECK(nk_relu_fwd_cuda(n, da, dy) == 0);
        nk_cuda_d2h(got, dy, (size_t)n * sizeof(float));
        nk_relu_fwd_ref(n, a, ref);
        snprintf(what, sizeof(what), "relu_fwd n=%lld", (long long)n);
        CHECK_CLOSE(what, got, ref, n, 0, 0); // exact: a select
        CHECK(nk_relu_bwd_cuda(n, da, db, dy) == 0);
        nk_cuda_d2h(got, dy, (size_t)n * sizeof(float));
        nk_relu_bwd_ref(n, a, b, ref);
        snprintf(what, sizeof(what), "relu_bwd n=%lld", (long long)n);
        CHECK_CLOSE(what, got, ref, n, 0, 0);
        CHECK(nk_add_fwd_cuda(n, da, db, dy) == 0);
        nk_cuda_d2h(got, dy, (size_t)n * sizeof(float));
        nk_add_fwd_ref(n, a, b, ref);
        snprintf(what, sizeof(what), "add n=%lld", (long long)n);
        CHECK_CLOSE(what, got, ref, n, 0, 0); // exact: one rounding either way
        nk_cuda_free(da), nk_cuda_free(db), nk_cuda_free(dy);
        free(a), free(b), free(ref), free(got);
    }
    return check_summary("test_cuda");
}
#endif
