/*
 * winograd_avx512.c: the input and output transforms of the Winograd F(4x4, 3x3) convolution
 * (driver, weight transform and the algorithm's description: winograd.c), 16 channels per
 * 512-bit register. Lavin and Gray's matrices for the points 0, +-1, +-2 and infinity:
 *   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
 *   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
 *   G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
 * All three transforms are separable: the 1-D one down the columns of the tile, then along its
 * rows.
 */
#include <immintrin.h>
#include <stdint.h>

#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/transpose_avx512.h"

// t = B^T d for six values, as adds and multiplies by 2, 4 and 5 in a shared order.
static inline void bt6(const __m512 d[6], __m512 t[6])
{
    const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f);
    const __m512 two = _mm512_set1_ps(2.0f);
    const __m512 s34 = _mm512_add_ps(d[3], d[4]), s12 = _mm512_add_ps(d[1], d[2]);
    const __m512 d43 = _mm512_sub_ps(d[4], d[3]), d12 = _mm512_sub_ps(d[1], d[2]);
    const __m512 d42 = _mm512_sub_ps(d[4], d[2]), d31 = _mm512_sub_ps(d[3], d[1]);
    t[0] = _mm512_fnmadd_ps(five, d[2], _mm512_fmadd_ps(four, d[0], d[4]));
    t[1] = _mm512_fnmadd_ps(four, s12, s34);
    t[2] = _mm512_fmadd_ps(four, d12, d43);
    t[3] = _mm512_fmadd_ps(two, d31, d42);
    t[4] = _mm512_fnmadd_ps(two, d31, d42);
    t[5] = _mm512_fnmadd_ps(five, d[3], _mm512_fmadd_ps(four, d[1], d[5]));
}

// o = A^T m for six values.
static inline void at6(const __m512 m[6], __m512 o[4])
{
    const __m512 two = _mm512_set1_ps(2.0f), four = _mm512_set1_ps(4.0f);
    const __m512 eight = _mm512_set1_ps(8.0f);
    const __m512 p12 = _mm512_add_ps(m[1], m[2]), q12 = _mm512_sub_ps(m[1], m[2]);
    const __m512 p34 = _mm512_add_ps(m[3], m[4]), q34 = _mm512_sub_ps(m[3], m[4]);
    o[0] = _mm512_add_ps(_mm512_add_ps(m[0], p12), p34);
    o[1] = _mm512_fmadd_ps(two, q34, q12);
    o[2] = _mm512_fmadd_ps(four, p34, p12);
    o[3] = _mm512_add_ps(_mm512_fmadd_ps(eight, q34, q12), m[5]);
}

// 16 channels at p as float32, from float32 or (bf) bf16 (exact: bf16 is float32's top half).
static inline __m512 load16(const void *p, int bf)
{
    if (!bf) return _mm512_loadu_ps(p);
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

// Rounds 16 floats to bf16 as nk_f32_to_bf16 does (nearest even; zeros and denormals to a signed
// zero, NaNs quiet) and stores the km lanes at p.
static inline void store16_bf16(uint16_t *p, __mmask16 km, __m512 v)
{
    const __m512i u = _mm512_castps_si512(v), hi = _mm512_srli_epi32(u, 16);
    const __m512i exp   = _mm512_and_si512(u, _mm512_set1_epi32(0x7f800000));
    const __m512i mag   = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
    const __mmask16 zd  = _mm512_cmpeq_epi32_mask(exp, _mm512_setzero_si512());
    const __mmask16 nan = _mm512_cmpgt_epi32_mask(mag, _mm512_set1_epi32(0x7f800000));
    const __m512i odd   = _mm512_and_si512(hi, _mm512_set1_epi32(1));
    __m512i r           = _mm512_srli_epi32(
                  _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd)), 16);
    r = _mm512_mask_mov_epi32(r, zd, _mm512_and_si512(hi, _mm512_set1_epi32(0x8000)));
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x0040)));
    _mm256_mask_storeu_epi16(p, km, _mm512_cvtepi32_epi16(r));
}

// The input transform from float32 or (bf) bf16 activations; bf is a constant at each call.
static inline __attribute__((always_inline)) void
in_tile(const void *x, int bf, int H, int W, int C, int ih0, int iw0, float *v, int64_t ves)
{
    const __m512 zero = _mm512_setzero_ps();
    int rok[6], cok[6];
    for (int i = 0; i < 6; i++) {
        rok[i] = ih0 + i >= 0 && ih0 + i < H;
        cok[i] = iw0 + i >= 0 && iw0 + i < W;
    }
    for (int c = 0; c < C; c += 16) {
        __m512 t[6][6]; // t[i][j] = (B^T d)[i][j]
        for (int j = 0; j < 6; j++) {
            __m512 d[6], o[6];
            for (int i = 0; i < 6; i++) {
                const int64_t off = ((int64_t)(ih0 + i) * W + iw0 + j) * C + c;
                d[i] = rok[i] && cok[j] ? load16(bf ? (const void *)((const uint16_t *)x + off)
                                                    : (const void *)((const float *)x + off),
                                                 bf)
                                        : zero;
            }
            bt6(d, o);
            for (int i = 0; i < 6; i++)
                t[i][j] = o[i];
        }
        for (int i = 0; i < 6; i++) {
            __m512 o[6];
            bt6(t[i], o);
            for (int j = 0; j < 6; j++)
                _mm512_storeu_ps(v + (i * 6 + j) * ves + c, o[j]);
        }
    }
}

static void nk_wino4_in_avx512(const float *xb, int H, int W, int C, int ih0, int iw0, float *v,
                               int64_t ves)
{
    in_tile(xb, 0, H, W, C, ih0, iw0, v, ves);
}

static void nk_wino4_in_bf16_avx512(const uint16_t *xb, int H, int W, int C, int ih0, int iw0,
                                    float *v, int64_t ves)
{
    in_tile(xb, 1, H, W, C, ih0, iw0, v, ves);
}

static void nk_wino4_out_avx512(const float *m, int64_t mes, int n, float *y, uint16_t *yb,
                                int64_t ldh, int64_t ldw, int rows, int cols, const float *bias,
                                const float *sc, const float *sh, const float *res, int relu)
{
    const __m512 zero = _mm512_setzero_ps();
    for (int k = 0; k < n; k += 16) {
        const __mmask16 km = n - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - k)) - 1u);
        __m512 s[4][6]; // s = A^T m
        for (int j = 0; j < 6; j++) {
            __m512 a[6], o[4];
            for (int i = 0; i < 6; i++)
                a[i] = _mm512_loadu_ps(m + (i * 6 + j) * mes + k);
            at6(a, o);
            for (int i = 0; i < 4; i++)
                s[i][j] = o[i];
        }
        const __m512 vb = bias ? _mm512_maskz_loadu_ps(km, bias + k) : zero;
        const __m512 vs = sc ? _mm512_maskz_loadu_ps(km, sc + k) : zero;
        const __m512 vh = sc ? _mm512_maskz_loadu_ps(km, sh + k) : zero;
        for (int i = 0; i < rows; i++) {
            __m512 o[4];
            at6(s[i], o);
            for (int j = 0; j < cols; j++) {
                const int64_t off = i * ldh + j * ldw + k;
                __m512 r          = o[j];
                if (bias) r = _mm512_add_ps(r, vb);
                if (sc) r = _mm512_fmadd_ps(r, vs, vh);
                if (res) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(km, res + off));
                // MAXPS returns its second operand when the first is NaN: NaN -> 0, as the refs.
                if (relu) r = _mm512_max_ps(r, zero);
                if (yb)
                    store16_bf16(yb + off, km, r);
                else
                    _mm512_mask_storeu_ps(y + off, km, r);
            }
        }
    }
}

// u = G g for three values.
static inline void g3(const __m512 g[3], __m512 u[6])
{
    const __m512 q = _mm512_set1_ps(0.25f), s6 = _mm512_set1_ps(1.0f / 6);
    const __m512 s12 = _mm512_set1_ps(1.0f / 12), s24 = _mm512_set1_ps(1.0f / 24);
    const __m512 p02 = _mm512_add_ps(g[0], g[2]);
    const __m512 a   = _mm512_fmadd_ps(s24, g[0], _mm512_mul_ps(s6, g[2]));
    u[0]             = _mm512_mul_ps(q, g[0]);
    u[1]             = _mm512_mul_ps(_mm512_set1_ps(-1.0f / 6), _mm512_add_ps(p02, g[1]));
    u[2]             = _mm512_mul_ps(_mm512_set1_ps(-1.0f / 6), _mm512_sub_ps(p02, g[1]));
    u[3]             = _mm512_fmadd_ps(s12, g[1], a);
    u[4]             = _mm512_fnmadd_ps(s12, g[1], a);
    u[5]             = g[2];
}

static void nk_wino4_wt_avx512(const float *g, int64_t ld, float *u, int64_t ues, int nt)
{
    __m512 t[6][3]; // t = G g
    for (int s = 0; s < 3; s++) {
        __m512 a[3], o[6];
        for (int r = 0; r < 3; r++)
            a[r] = _mm512_loadu_ps(g + (r * 3 + s) * ld);
        g3(a, o);
        for (int i = 0; i < 6; i++)
            t[i][s] = o[i];
    }
    for (int i = 0; i < 6; i++) {
        __m512 o[6];
        g3(t[i], o);
        for (int j = 0; j < 6; j++) {
            if (nt)
                _mm512_stream_ps(u + (i * 6 + j) * ues, o[j]);
            else
                _mm512_storeu_ps(u + (i * 6 + j) * ues, o[j]);
        }
    }
}

static void nk_wino4_wt_flip_avx512(const float *w, int64_t ldc, int64_t ldtap, float *u,
                                    int64_t ldk, int64_t ues, int nt)
{
    // tmp[rs][j][i]: tap rs of the turned filter, channel k0 + j, channel c0 + i.
    float tmp[9][16][16] __attribute__((aligned(64)));
    for (int rs = 0; rs < 9; rs++) {
        const float *src = w + (int64_t)(8 - rs) * ldtap; // tap (2 - r, 2 - s)
        __m512 r[16];
        for (int i = 0; i < 16; i++)
            r[i] = _mm512_loadu_ps(src + i * ldc);
        transpose16(r);
        for (int j = 0; j < 16; j++)
            _mm512_store_ps(tmp[rs][j], r[j]);
    }
    for (int j = 0; j < 16; j++)
        nk_wino4_wt_avx512(tmp[0][j], 16 * 16, u + j * ldk, ues, nt);
}

// ---- weight gradient: dW = G^T [ sum over tiles (A dY A^T) . (B^T D B) ] G ----

// z = A dy for four values (A = (A^T)^T, 6 x 4).
static inline void a6(const __m512 z[4], __m512 o[6])
{
    const __m512 two = _mm512_set1_ps(2.0f), four = _mm512_set1_ps(4.0f);
    const __m512 eight = _mm512_set1_ps(8.0f);
    const __m512 p02 = _mm512_add_ps(z[0], z[2]), p13 = _mm512_add_ps(z[1], z[3]);
    const __m512 q = _mm512_fmadd_ps(four, z[2], z[0]);
    const __m512 r = _mm512_fmadd_ps(eight, z[3], _mm512_mul_ps(two, z[1]));
    o[0]           = z[0];
    o[1]           = _mm512_add_ps(p02, p13);
    o[2]           = _mm512_sub_ps(p02, p13);
    o[3]           = _mm512_add_ps(q, r);
    o[4]           = _mm512_sub_ps(q, r);
    o[5]           = z[3];
}

static void nk_wino4_dy_avx512(const float *dyb, int P, int Q, int K, int oh0, int ow0, float *z,
                               int64_t zes)
{
    const __m512 zero = _mm512_setzero_ps();
    for (int k = 0; k < K; k += 16) {
        __m512 t[6][4]; // t = A dY
        for (int j = 0; j < 4; j++) {
            __m512 a[4], o[6];
            for (int i = 0; i < 4; i++)
                a[i] = oh0 + i < P && ow0 + j < Q
                           ? _mm512_loadu_ps(dyb + ((int64_t)(oh0 + i) * Q + ow0 + j) * K + k)
                           : zero;
            a6(a, o);
            for (int i = 0; i < 6; i++)
                t[i][j] = o[i];
        }
        for (int i = 0; i < 6; i++) {
            __m512 o[6];
            a6(t[i], o);
            for (int j = 0; j < 6; j++)
                _mm512_storeu_ps(z + (i * 6 + j) * zes + k, o[j]);
        }
    }
}

// o = G^T m for six values.
static inline void gt6(const __m512 m[6], __m512 o[3])
{
    const __m512 s6 = _mm512_set1_ps(1.0f / 6), s12 = _mm512_set1_ps(1.0f / 12);
    const __m512 s24 = _mm512_set1_ps(1.0f / 24), q = _mm512_set1_ps(0.25f);
    const __m512 p12 = _mm512_add_ps(m[1], m[2]), q21 = _mm512_sub_ps(m[2], m[1]);
    const __m512 p34 = _mm512_add_ps(m[3], m[4]), q34 = _mm512_sub_ps(m[3], m[4]);
    o[0] = _mm512_fmadd_ps(s24, p34, _mm512_fnmadd_ps(s6, p12, _mm512_mul_ps(q, m[0])));
    o[1] = _mm512_fmadd_ps(s12, q34, _mm512_mul_ps(s6, q21));
    o[2] = _mm512_fmadd_ps(s6, _mm512_sub_ps(p34, p12), m[5]);
}

static void nk_wino4_dw_avx512(const float *m, int64_t mes, float *dw, int64_t ldtap)
{
    __m512 t[3][6]; // t = G^T M
    for (int j = 0; j < 6; j++) {
        __m512 a[6], o[3];
        for (int i = 0; i < 6; i++)
            a[i] = _mm512_loadu_ps(m + (i * 6 + j) * mes);
        gt6(a, o);
        for (int r = 0; r < 3; r++)
            t[r][j] = o[r];
    }
    for (int r = 0; r < 3; r++) {
        __m512 o[3];
        gt6(t[r], o);
        for (int s = 0; s < 3; s++)
            _mm512_storeu_ps(dw + (r * 3 + s) * ldtap, o[s]);
    }
}

const nk_wino_kernel nk_wino_kernel_avx512 = {
    .isa     = NK_ISA_AVX512,
    .gemm    = &nk_gemm_kernel_avx512,
    .in      = nk_wino4_in_avx512,
    .in_bf16 = nk_wino4_in_bf16_avx512,
    .out     = nk_wino4_out_avx512,
    .wt      = nk_wino4_wt_avx512,
    .wt_flip = nk_wino4_wt_flip_avx512,
    .dy      = nk_wino4_dy_avx512,
    .dw      = nk_wino4_dw_avx512,
};
