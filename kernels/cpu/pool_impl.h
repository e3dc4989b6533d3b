/*
 * pool_impl.h: the max pooling loops (forward and backward), written once and compiled three
 * times: by pool.c (baseline flags), pool_avx2.c (AVX2) and pool_avx512.c (AVX-512), each defining
 * POOL_NAME(f) to name its copy; pool.c picks one at run time. The running argmax is a compare and
 * two selects per channel: with AVX-512 they become masked moves (blends with AVX2), while the
 * baseline build branches on the data,
 * and which tap wins is unpredictable (pool1's backward at batch 16 on random post-ReLU data:
 * 36 ms baseline, 10-11 ms AVX-512; 45 -> 8 ms inside a training step).
 */

// The forward: one output row (n, p) per iteration, the window's taps max'ed over contiguous
// channels (strict >, so a NaN in x never replaces the running maximum, as the reference). In
// the baseline build GCC -O2 left the channel loop scalar: pool1 at batch 16 took 5.8 ms.
void POOL_NAME(maxpool_fwd)(const nk_exec *ex, const nk_conv_desc *d, const float *x, float *y)
{
    const int C = d->C;
    // One output row (n, p) per iteration.
#pragma omp parallel for num_threads(ex && ex->nthreads > 0 ? ex->nthreads : 1) schedule(static)
    for (int64_t np = 0; np < (int64_t)d->N * d->P; np++) {
        const int n = (int)(np / d->P), p = (int)(np % d->P);
        for (int q = 0; q < d->Q; q++) {
            float *o  = y + ((np * d->Q) + q) * C;
            int first = 1;
            for (int r = 0; r < d->R; r++) {
                const int h = p * d->stride - d->pad_h + r;
                if (h < 0 || h >= d->H) continue;
                for (int s = 0; s < d->S; s++) {
                    const int w = q * d->stride - d->pad_w + s;
                    if (w < 0 || w >= d->W) continue;
                    const float *i = x + (((int64_t)n * d->H + h) * d->W + w) * C;
                    if (first) {
                        memcpy(o, i, (size_t)C * sizeof(float));
                        first = 0;
                    } else {
#pragma omp simd
                        for (int c = 0; c < C; c++)
                            o[c] = i[c] > o[c] ? i[c] : o[c];
                    }
                }
            }
            if (first) memset(o, 0, (size_t)C * sizeof(float)); // an empty window, as the ref
        }
    }
}

void POOL_NAME(maxpool_bwd)(const nk_exec *ex, const nk_conv_desc *d, const float *x,
                            const float *dy, float *dx)
{
    const int C       = d->C;
    const int64_t row = (int64_t)d->W * C; // floats per input row
    // Windows overlap inside an image, so each thread owns whole images. Each window's taps are
    // listed once (offsets of whole pixels); then 64 channels at a time keep the running maximum
    // and its tap in registers, reading contiguous NHWC pixels. dx's rows are zeroed just before
    // the first window row that covers them, so they are still in cache when the windows add
    // into them (not in one pass over the image first).
#pragma omp parallel for num_threads(ex && ex->nthreads > 0 ? ex->nthreads : 1) schedule(static)
    for (int n = 0; n < d->N; n++) {
        const float *xn = x + (int64_t)n * d->H * row;
        float *dxn      = dx + (int64_t)n * d->H * row;
        int zeroed      = 0; // rows [0, zeroed) of dxn are zeroed
        for (int p = 0; p < d->P; p++) {
            int hend = p * d->stride - d->pad_h + d->R;
            hend     = hend < d->H ? hend : d->H;
            if (hend > zeroed) {
                memset(dxn + zeroed * row, 0, (size_t)(hend - zeroed) * row * sizeof(float));
                zeroed = hend;
            }
            for (int q = 0; q < d->Q; q++) {
                const float *g = dy + (((int64_t)n * d->P + p) * d->Q + q) * C;
                int64_t tap[64];
                int nt = 0;
                for (int r = 0; r < d->R; r++) {
                    const int h = p * d->stride - d->pad_h + r;
                    if (h < 0 || h >= d->H) continue;
                    for (int s = 0; s < d->S; s++) {
                        const int w = q * d->stride - d->pad_w + s;
                        if (w < 0 || w >= d->W || nt == 64) continue;
                        tap[nt++] = ((int64_t)h * d->W + w) * C;
                    }
                }
                if (nt == 0) continue;
                for (int c0 = 0; c0 < C; c0 += 64) {
                    const int cw = C - c0 < 64 ? C - c0 : 64;
                    float best[64];
                    int64_t at[64];
#pragma omp simd
                    for (int c = 0; c < cw; c++) {
                        best[c] = xn[tap[0] + c0 + c];
                        at[c]   = tap[0];
                    }
                    // The first maximum in row-major (r, s) order, as the reference: strict >.
                    for (int t = 1; t < nt; t++) {
                        const float *xt = xn + tap[t] + c0;
#pragma omp simd
                        for (int c = 0; c < cw; c++) {
                            const float v = xt[c];
                            const int up  = v > best[c];
                            best[c]       = up ? v : best[c];
                            at[c]         = up ? tap[t] : at[c];
                        }
                    }
                    for (int c = 0; c < cw; c++)
                        dxn[at[c] + c0 + c] += g[c0 + c];
                }
            }
        }
        if (zeroed < d->H) // rows that no window covers
            memset(dxn + zeroed * row, 0, (size_t)(d->H - zeroed) * row * sizeof(float));
    }
}
