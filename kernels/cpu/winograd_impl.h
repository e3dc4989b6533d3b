/*
 * winograd_impl.h: the transforms of the Winograd F(4x4, 3x3) convolution (driver and the
 * algorithm: winograd.c), written once on a vector of VL channels and compiled per ISA:
 * winograd_avx512.c (16 channels a vector), winograd_avx2.c (8). Lavin and Gray's matrices for
 * the points 0, +-1, +-2 and infinity:
 *   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
 *   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
 *   G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
 * All three transforms are separable: the 1-D one down the columns of the tile, then along its
 * rows. Every channel count here is a multiple of 16 (nk_wino_ok), so no vector is ragged and
 * nothing is masked.
 *
 * The includer defines the vector type vf, its width VL (8 or 16), the operations vzero, vset1,
 * vadd, vsub, vmul, vfmadd, vfnmadd, vmax (MAXPS: the second operand when the first is NaN), vload,
 * vstore, vstream (aligned, non-temporal), vload_x (VL channels of float32 or, bf != 0, of bf16),
 * vstore_bf16 (rounded as nk_f32_to_bf16), transpose16x16, and WINO_TABLE, WINO_ISA, WINO_GEMM for
 * the nk_wino_kernel it defines.
 */

// t = B^T d for six values, as adds and multiplies by 2, 4 and 5 in a shared order.
static inline void bt6(const vf d[6], vf t[6])
{
    const vf four = vset1(4.0f), five = vset1(5.0f), two = vset1(2.0f);
    const vf s34 = vadd(d[3], d[4]), s12 = vadd(d[1], d[2]);
    const vf d43 = vsub(d[4], d[3]), d12 = vsub(d[1], d[2]);
    const vf d42 = vsub(d[4], d[2]), d31 = vsub(d[3], d[1]);
    t[0] = vfnmadd(five, d[2], vfmadd(four, d[0], d[4]));
    t[1] = vfnmadd(four, s12, s34);
    t[2] = vfmadd(four, d12, d43);
    t[3] = vfmadd(two, d31, d42);
    t[4] = vfnmadd(two, d31, d42);
    t[5] = vfnmadd(five, d[3], vfmadd(four, d[1], d[5]));
}

// o = A^T m for six values.
static inline void at6(const vf m[6], vf o[4])
{
    const vf two = vset1(2.0f), four = vset1(4.0f), eight = vset1(8.0f);
    const vf p12 = vadd(m[1], m[2]), q12 = vsub(m[1], m[2]);
    const vf p34 = vadd(m[3], m[4]), q34 = vsub(m[3], m[4]);
    o[0] = vadd(vadd(m[0], p12), p34);
    o[1] = vfmadd(two, q34, q12);
    o[2] = vfmadd(four, p34, p12);
    o[3] = vadd(vfmadd(eight, q34, q12), m[5]);
}

// The input transform from float32 or (bf) bf16 activations; bf is a constant at each call.
static inline __attribute__((always_inline)) void
in_tile(const void *x, int bf, int H, int W, int C, int ih0, int iw0, float *v, int64_t ves)
{
    const vf zero = vzero();
    int rok[6], cok[6];
    for (int i = 0; i < 6; i++) {
        rok[i] = ih0 + i >= 0 && ih0 + i < H;
        cok[i] = iw0 + i >= 0 && iw0 + i < W;
    }
    for (int c = 0; c < C; c += VL) {
        vf t[6][6]; // t[i][j] = (B^T d)[i][j]
        for (int j = 0; j < 6; j++) {
            vf d[6], o[6];
            for (int i = 0; i < 6; i++) {
                const int64_t off = ((int64_t)(ih0 + i) * W + iw0 + j) * C + c;
                d[i] = rok[i] && cok[j] ? vload_x(bf ? (const void *)((const uint16_t *)x + off)
                                                     : (const void *)((const float *)x + off),
                                                  bf)
                                        : zero;
            }
            bt6(d, o);
            for (int i = 0; i < 6; i++)
                t[i][j] = o[i];
        }
        for (int i = 0; i < 6; i++) {
            vf o[6];
            bt6(t[i], o);
            for (int j = 0; j < 6; j++)
                vstore(v + (i * 6 + j) * ves + c, o[j]);
        }
    }
}

static void wino4_in(const float *xb, int H, int W, int C, int ih0, int iw0, float *v, int64_t ves)
{
    in_tile(xb, 0, H, W, C, ih0, iw0, v, ves);
}

static void wino4_in_bf16(const uint16_t *xb, int H, int W, int C, int ih0, int iw0, float *v,
                          int64_t ves)
{
    in_tile(xb, 1, H, W, C, ih0, iw0, v, ves);
}

static void wino4_out(const float *m, int64_t mes, int n, float *y, uint16_t *yb, int64_t ldh,
                      int64_t ldw, int rows, int cols, const float *bias, const float *sc,
                      const float *sh, const float *res, int relu)
{
    const vf zero = vzero();
    for (int k = 0; k < n; k += VL) {
        vf s[4][6]; // s = A^T m
        for (int j = 0; j < 6; j++) {
            vf a[6], o[4];
            for (int i = 0; i < 6; i++)
                a[i] = vload(m + (i * 6 + j) * mes + k);
            at6(a, o);
            for (int i = 0; i < 4; i++)
                s[i][j] = o[i];
        }
        const vf vb = bias ? vload(bias + k) : zero;
        const vf vs = sc ? vload(sc + k) : zero;
        const vf vh = sc ? vload(sh + k) : zero;
        for (int i = 0; i < rows; i++) {
            vf o[4];
            at6(s[i], o);
            for (int j = 0; j < cols; j++) {
                const int64_t off = i * ldh + j * ldw + k;
                vf r              = o[j];
                if (bias) r = vadd(r, vb);
                if (sc) r = vfmadd(r, vs, vh);
                if (res) r = vadd(r, vload(res + off));
                // MAXPS returns its second operand when the first is NaN: NaN -> 0, as the refs.
                if (relu) r = vmax(r, zero);
                if (yb)
                    vstore_bf16(yb + off, r);
                else
                    vstore(y + off, r);
            }
        }
    }
}

// u = G g for three values.
static inline void g3(const vf g[3], vf u[6])
{
    const vf q = vset1(0.25f), s6 = vset1(1.0f / 6), s12 = vset1(1.0f / 12);
    const vf s24 = vset1(1.0f / 24);
    const vf p02 = vadd(g[0], g[2]);
    const vf a   = vfmadd(s24, g[0], vmul(s6, g[2]));
    u[0]         = vmul(q, g[0]);
    u[1]         = vmul(vset1(-1.0f / 6), vadd(p02, g[1]));
    u[2]         = vmul(vset1(-1.0f / 6), vsub(p02, g[1]));
    u[3]         = vfmadd(s12, g[1], a);
    u[4]         = vfnmadd(s12, g[1], a);
    u[5]         = g[2];
}

static void wino4_wt(const float *g, int64_t ld, float *u, int64_t ues, int nt)
{
    for (int h = 0; h < 16; h += VL) {
        vf t[6][3]; // t = G g
        for (int s = 0; s < 3; s++) {
            vf a[3], o[6];
            for (int r = 0; r < 3; r++)
                a[r] = vload(g + (r * 3 + s) * ld + h);
            g3(a, o);
            for (int i = 0; i < 6; i++)
                t[i][s] = o[i];
        }
        for (int i = 0; i < 6; i++) {
            vf o[6];
            g3(t[i], o);
            for (int j = 0; j < 6; j++) {
                float *dst = u + (i * 6 + j) * ues + h;
                if (nt)
                    vstream(dst, o[j]);
                else
                    vstore(dst, o[j]);
            }
        }
    }
}

static void wino4_wt_flip(const float *w, int64_t ldc, int64_t ldtap, float *u, int64_t ldk,
                          int64_t ues, int nt)
{
    // tmp[rs][j][i]: tap rs of the turned filter, channel k0 + j, channel c0 + i.
    float tmp[9][16][16] __attribute__((aligned(64)));
    for (int rs = 0; rs < 9; rs++)
        transpose16x16(w + (int64_t)(8 - rs) * ldtap, ldc, tmp[rs]); // tap (2 - r, 2 - s)
    for (int j = 0; j < 16; j++)
        wino4_wt(tmp[0][j], 16 * 16, u + j * ldk, ues, nt);
}

// ---- weight gradient: dW = G^T [ sum over tiles (A dY A^T) . (B^T D B) ] G ----

// z = A dy for four values (A = (A^T)^T, 6 x 4).
static inline void a6(const vf z[4], vf o[6])
{
    const vf two = vset1(2.0f), four = vset1(4.0f), eight = vset1(8.0f);
    const vf p02 = vadd(z[0], z[2]), p13 = vadd(z[1], z[3]);
    const vf q = vfmadd(four, z[2], z[0]);
    const vf r = vfmadd(eight, z[3], vmul(two, z[1]));
    o[0]       = z[0];
    o[1]       = vadd(p02, p13);
    o[2]       = vsub(p02, p13);
    o[3]       = vadd(q, r);
    o[4]       = vsub(q, r);
    o[5]       = z[3];
}

static void wino4_dy(const float *dyb, int P, int Q, int K, int oh0, int ow0, float *z, int64_t zes)
{
    const vf zero = vzero();
    for (int k = 0; k < K; k += VL) {
        vf t[6][4]; // t = A dY
        for (int j = 0; j < 4; j++) {
            vf a[4], o[6];
            for (int i = 0; i < 4; i++)
                a[i] = oh0 + i < P && ow0 + j < Q
                           ? vload(dyb + ((int64_t)(oh0 + i) * Q + ow0 + j) * K + k)
                           : zero;
            a6(a, o);
            for (int i = 0; i < 6; i++)
                t[i][j] = o[i];
        }
        for (int i = 0; i < 6; i++) {
            vf o[6];
            a6(t[i], o);
            for (int j = 0; j < 6; j++)
                vstore(z + (i * 6 + j) * zes + k, o[j]);
        }
    }
}

// o = G^T m for six values.
static inline void gt6(const vf m[6], vf o[3])
{
    const vf s6 = vset1(1.0f / 6), s12 = vset1(1.0f / 12), s24 = vset1(1.0f / 24);
    const vf q   = vset1(0.25f);
    const vf p12 = vadd(m[1], m[2]), q21 = vsub(m[2], m[1]);
    const vf p34 = vadd(m[3], m[4]), q34 = vsub(m[3], m[4]);
    o[0] = vfmadd(s24, p34, vfnmadd(s6, p12, vmul(q, m[0])));
    o[1] = vfmadd(s12, q34, vmul(s6, q21));
    o[2] = vfmadd(s6, vsub(p34, p12), m[5]);
}

static void wino4_dw(const float *m, int64_t mes, float *dw, int64_t ldtap)
{
    for (int h = 0; h < 16; h += VL) {
        vf t[3][6]; // t = G^T M
        for (int j = 0; j < 6; j++) {
            vf a[6], o[3];
            for (int i = 0; i < 6; i++)
                a[i] = vload(m + (i * 6 + j) * mes + h);
            gt6(a, o);
            for (int r = 0; r < 3; r++)
                t[r][j] = o[r];
        }
        for (int r = 0; r < 3; r++) {
            vf o[3];
            gt6(t[r], o);
            for (int s = 0; s < 3; s++)
                vstore(dw + (r * 3 + s) * ldtap + h, o[s]);
        }
    }
}

const nk_wino_kernel WINO_TABLE = {
    .isa     = WINO_ISA,
    .gemm    = &WINO_GEMM,
    .in      = wino4_in,
    .in_bf16 = wino4_in_bf16,
    .out     = wino4_out,
    .wt      = wino4_wt,
    .wt_flip = wino4_wt_flip,
    .dy      = wino4_dy,
    .dw      = wino4_dw,
};
