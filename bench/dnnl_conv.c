/*
 * dnnl_conv.c: the oneDNN peer for `pneumo bench conv`: ResNet50's 20 distinct convolutions
 * (the table of cmd/bench.c) through oneDNN's C API (2.x), forward inference, NHWC activations as
 * pneumo's, weights in the layout oneDNN picks (prepacked, as pneumo packs bf16 weights once),
 * f32, or bf16 activations in and out (as `pneumo bench conv --dtype bf16` times pneumo's, the
 * way bf16 inference passes them between convolutions). Prints lines like pneumo's:
 *   op=conv name=... dtype=f32 impl=onednn:<kernel> N=16 ... threads=2 ms= gflops=
 * Built and run only by bench/run.sh (cc -O2 -fopenmp bench/dnnl_conv.c -ldnnl): never linked
 * into libnet. Usage: dnnl_conv [--batch N] [--threads N] [--dtype f32|bf16] [--repeat N]
 * [--algo direct|winograd|auto] (winograd: the 3x3 stride-1 shapes only, oneDNN's layouts)
 * [--conv H,C,K,R[,S[,P]]] (one shape instead, as `pneumo bench conv --conv` takes and names it).
 */
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

typedef struct {
    const char *name;
    int H, C, K, R, stride, pad, count;
} conv_shape;

static const conv_shape shapes[] = {
    {"conv1_7x7s2", 230, 3, 64, 7, 2, 0, 1},
    {"conv2_1x1_64_64", 56, 64, 64, 1, 1, 0, 1},
    {"conv2_3x3", 56, 64, 64, 3, 1, 1, 3},
    {"conv2_1x1_expand", 56, 64, 256, 1, 1, 0, 4},
    {"conv2_1x1_reduce", 56, 256, 64, 1, 1, 0, 2},
    {"conv3_1x1s2_reduce", 56, 256, 128, 1, 2, 0, 1},
    {"conv3_1x1s2_proj", 56, 256, 512, 1, 2, 0, 1},
    {"conv3_3x3", 28, 128, 128, 3, 1, 1, 4},
    {"conv3_1x1_expand", 28, 128, 512, 1, 1, 0, 4},
    {"conv3_1x1_reduce", 28, 512, 128, 1, 1, 0, 3},
    {"conv4_1x1s2_reduce", 28, 512, 256, 1, 2, 0, 1},
    {"conv4_1x1s2_proj", 28, 512, 1024, 1, 2, 0, 1},
    {"conv4_3x3", 14, 256, 256, 3, 1, 1, 6},
    {"conv4_1x1_expand", 14, 256, 1024, 1, 1, 0, 6},
    {"conv4_1x1_reduce", 14, 1024, 256, 1, 1, 0, 5},
    {"conv5_1x1s2_reduce", 14, 1024, 512, 1, 2, 0, 1},
    {"conv5_1x1s2_proj", 14, 1024, 2048, 1, 2, 0, 1},
    {"conv5_3x3", 7, 512, 512, 3, 1, 1, 3},
    {"conv5_1x1_expand", 7, 512, 2048, 1, 1, 0, 3},
    {"conv5_1x1_reduce", 7, 2048, 512, 1, 1, 0, 2},
};

#define CHK(x)                                                                                     \
    do {                                                                                           \
        dnnl_status_t s_ = (x);                                                                    \
        if (s_ != dnnl_success) {                                                                  \
            fprintf(stderr, "dnnl_conv: %s failed (%d) at line %d\n", #x, (int)s_, __LINE__);      \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// Advises a memory object's pages as transparent huge pages (before its first touch), as
// pneumo's nt_alloc does for its large blocks, so that both sides run on the same kind of pages.
static int advise_huge(dnnl_memory_t m, const dnnl_memory_desc_t *md)
{
    void *p;
    CHK(dnnl_memory_get_data_handle(m, &p));
    const uintptr_t a = ((uintptr_t)p + 4095) & ~(uintptr_t)4095;
    const uintptr_t e = (uintptr_t)p + dnnl_memory_desc_get_size(md);
    if (e > a) (void)madvise((void *)a, e - a, MADV_HUGEPAGE);
    return 0;
}

// Fills a memory object with a harmless constant (1/8 in f32 or bf16); timing only.
static int fill(dnnl_memory_t m, const dnnl_memory_desc_t *md, int bf16)
{
    void *p;
    CHK(dnnl_memory_get_data_handle(m, &p));
    size_t bytes = dnnl_memory_desc_get_size(md);
    if (bf16) {
        uint16_t *q = p;
        for (size_t i = 0; i < bytes / 2; i++)
            q[i] = 0x3e00;
    } else {
        float *q = p;
        for (size_t i = 0; i < bytes / 4; i++)
            q[i] = 0.125f;
    }
    return 0;
}

static int run(dnnl_engine_t eng, dnnl_stream_t st, const conv_shape *c, int N, int bf16,
               int repeat, int threads, dnnl_alg_kind_t alg)
{
    const int P               = (c->H + 2 * c->pad - c->R) / c->stride + 1;
    const dnnl_data_type_t dt = bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_memory_desc_t src_md, w_md, b_md, dst_md;
    dnnl_dims_t sd = {N, c->C, c->H, c->H}, wd = {c->K, c->C, c->R, c->R}, bd = {c->K};
    dnnl_dims_t dd = {N, c->K, P, P};
    // Winograd takes only oneDNN's blocked layouts: the activations' layout is then its own
    // choice too (the reorder from NHWC is not timed, which favours oneDNN).
    const dnnl_format_tag_t act =
        alg == dnnl_convolution_winograd ? dnnl_format_tag_any : dnnl_nhwc;
    CHK(dnnl_memory_desc_init_by_tag(&src_md, 4, sd, dt, act));
    CHK(dnnl_memory_desc_init_by_tag(&w_md, 4, wd, dt, dnnl_format_tag_any));
    CHK(dnnl_memory_desc_init_by_tag(&b_md, 1, bd, dnnl_f32, dnnl_a));
    CHK(dnnl_memory_desc_init_by_tag(&dst_md, 4, dd, dt, act));
    dnnl_dims_t strides = {c->stride, c->stride}, pad = {c->pad, c->pad};
    dnnl_convolution_desc_t cd;
    CHK(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, alg, &src_md, &w_md, &b_md,
                                           &dst_md, strides, pad, pad));
    dnnl_primitive_desc_t pd;
    CHK(dnnl_primitive_desc_create(&pd, &cd, NULL, eng, NULL));
    const dnnl_memory_desc_t *wq = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *sq = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *dq = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    const char *impl             = "?";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    dnnl_memory_t sm, wm, bm, dm;
    CHK(dnnl_memory_create(&sm, sq, eng, DNNL_MEMORY_ALLOCATE));
    CHK(dnnl_memory_create(&wm, wq, eng, DNNL_MEMORY_ALLOCATE));
    CHK(dnnl_memory_create(&bm, &b_md, eng, DNNL_MEMORY_ALLOCATE));
    CHK(dnnl_memory_create(&dm, dq, eng, DNNL_MEMORY_ALLOCATE));
    if (advise_huge(sm, sq) || advise_huge(wm, wq) || advise_huge(dm, dq)) return -1;
    if (fill(sm, sq, bf16) || fill(wm, wq, bf16) || fill(bm, &b_md, 0)) return -1;
    dnnl_primitive_t prim;
    CHK(dnnl_primitive_create(&prim, pd));
    dnnl_exec_arg_t args[4] = {
        {DNNL_ARG_SRC, sm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_BIAS, bm}, {DNNL_ARG_DST, dm}};
    double t[64];
    CHK(dnnl_primitive_execute(prim, st, 4, args)); // warm-up
    CHK(dnnl_stream_wait(st));
    for (int r = 0; r < repeat; r++) {
        double t0 = now_s();
        CHK(dnnl_primitive_execute(prim, st, 4, args));
        CHK(dnnl_stream_wait(st));
        t[r] = now_s() - t0;
    }
    qsort(t, (size_t)repeat, sizeof(double), cmp_double);
    const double s  = t[repeat / 2];
    const double fl = 2.0 * N * P * P * (double)c->K * c->R * c->R * c->C;
    printf("op=conv name=%s dtype=%s impl=onednn-%d.%d:%s N=%d H=%d C=%d K=%d R=%d stride=%d "
           "count=%d threads=%d ms=%.3f gflops=%.1f\n",
           c->name, bf16 ? "bf16" : "f32", DNNL_VERSION_MAJOR, DNNL_VERSION_MINOR, impl, N, c->H,
           c->C, c->K, c->R, c->stride, c->count, threads, s * 1e3, fl / s * 1e-9);
    fflush(stdout);
    dnnl_primitive_destroy(prim);
    dnnl_primitive_desc_destroy(pd);
    dnnl_memory_destroy(sm), dnnl_memory_destroy(wm), dnnl_memory_destroy(bm);
    dnnl_memory_destroy(dm);
    return 0;
}

int main(int argc, char **argv)
{
    int N = 16, threads = 2, bf16 = 0, repeat = 5;
    dnnl_alg_kind_t alg = dnnl_convolution_direct;
    conv_shape own      = {0};
    char own_name[128];
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--batch"))
            N = (int)strtol(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--threads"))
            threads = (int)strtol(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--repeat"))
            repeat = (int)strtol(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--dtype"))
            bf16 = !strcmp(argv[i + 1], "bf16");
        else if (!strcmp(argv[i], "--algo"))
            alg = !strcmp(argv[i + 1], "winograd") ? dnnl_convolution_winograd
                  : !strcmp(argv[i + 1], "auto")   ? dnnl_convolution_auto
                                                   : dnnl_convolution_direct;
        else if (!strcmp(argv[i], "--conv")) {
            int v[6] = {0, 0, 0, 0, 1, 0};
            const int n =
                sscanf(argv[i + 1], "%d,%d,%d,%d,%d,%d", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]);
            if (n < 4 || v[0] < 1 || v[1] < 1 || v[2] < 1 || v[3] < 1 || v[4] < 1 || v[5] < 0 ||
                v[3] > v[0] + 2 * v[5]) {
                fprintf(stderr, "dnnl_conv: --conv expects H,C,K,R[,S[,P]], got \"%s\"\n",
                        argv[i + 1]);
                return 2;
            }
            snprintf(own_name, sizeof own_name, "conv_h%d_c%d_k%d_r%d_s%d_p%d", v[0], v[1], v[2],
                     v[3], v[4], v[5]);
            own = (conv_shape){own_name, v[0], v[1], v[2], v[3], v[4], v[5], 1};
        } else {
            fprintf(stderr, "dnnl_conv: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (N < 1 || threads < 1 || repeat < 1 || repeat > 64) {
        fprintf(stderr, "dnnl_conv: bad --batch, --threads or --repeat\n");
        return 2;
    }
    omp_set_num_threads(threads);
    dnnl_engine_t eng;
    dnnl_stream_t st;
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&st, eng, dnnl_stream_default_flags) != dnnl_success) {
        fprintf(stderr, "dnnl_conv: no CPU engine\n");
        return 1;
    }
    int rc          = 0;
    const size_t ns = own.name ? 1 : sizeof(shapes) / sizeof(shapes[0]);
    for (size_t i = 0; i < ns; i++) {
        const conv_shape *c = own.name ? &own : &shapes[i];
        if ((alg != dnnl_convolution_winograd || (c->R == 3 && c->stride == 1)) &&
            run(eng, st, c, N, bf16, repeat, threads, alg))
            rc = 1;
    }
    dnnl_stream_destroy(st);
    dnnl_engine_destroy(eng);
    return rc;
}
