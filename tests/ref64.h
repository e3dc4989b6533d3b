/*
 * ref64.h: prototypes of the double twins of the reference kernels: each kernels/ref/ file
 * compiled again with -DNK_REAL=double -DNK_REF_SUFFIX=_f64 (Makefile rule $(BUILD)/ref64/%.o).
 * Same contracts as the float *_ref functions in kernels/nk.h, with every float argument a
 * double. For tests only (the gradient checks in tests/test_grad.c); the library never links them.
 */
#ifndef REF64_H
#define REF64_H

#include "kernels/nk.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---- convolution ----
void nk_conv2d_fwd_ref_f64(const nk_conv_desc *d, const double *x, const double *w, const double *b,
                           double *y);
void nk_conv2d_bwd_data_ref_f64(const nk_conv_desc *d, const double *dy, const double *w,
                                double *dx);
void nk_conv2d_bwd_filter_ref_f64(const nk_conv_desc *d, const double *x, const double *dy,
                                  double *dw, double *db);

// ---- batch normalisation ----
void nk_bn_fwd_train_ref_f64(int64_t M, int C, const double *x, const double *gamma,
                             const double *beta, double eps, int relu, double *y, double *mean,
                             double *invstd);
void nk_bn_fwd_infer_ref_f64(int64_t M, int C, const double *x, const double *gamma,
                             const double *beta, const double *mmean, const double *mvar,
                             double eps, double *y);
void nk_bn_bwd_train_ref_f64(int64_t M, int C, const double *x, const double *ry, const double *dy,
                             const double *gamma, const double *mean, const double *invstd,
                             double *dx, double *dgamma, double *dbeta);
void nk_bn_bwd_infer_ref_f64(int64_t M, int C, const double *x, const double *dy,
                             const double *gamma, const double *mmean, const double *mvar,
                             double eps, double *dx, double *dgamma, double *dbeta);

// ---- elementwise ----
void nk_relu_fwd_ref_f64(int64_t n, const double *x, double *y);
void nk_relu_bwd_ref_f64(int64_t n, const double *y, const double *dy, double *dx);
void nk_add_fwd_ref_f64(int64_t n, const double *a, const double *b, double *y);

// ---- zero padding, pooling ----
void nk_zeropad_fwd_ref_f64(int N, int H, int W, int C, int pt, int pb, int pl, int pr,
                            const double *x, double *y);
void nk_zeropad_bwd_ref_f64(int N, int H, int W, int C, int pt, int pb, int pl, int pr,
                            const double *dy, double *dx);
void nk_maxpool_fwd_ref_f64(const nk_conv_desc *d, const double *x, double *y);
void nk_maxpool_bwd_ref_f64(const nk_conv_desc *d, const double *x, const double *dy, double *dx);
void nk_gap_fwd_ref_f64(int N, int HW, int C, const double *x, double *y);
void nk_gap_bwd_ref_f64(int N, int HW, int C, const double *dy, double *dx);

// ---- dense ----
void nk_dense_fwd_ref_f64(int N, int C, int K, const double *x, const double *w, const double *b,
                          int relu, double *y);
void nk_dense_bwd_data_ref_f64(int N, int C, int K, const double *dy, const double *w, double *dx);
void nk_dense_bwd_filter_ref_f64(int N, int C, int K, const double *x, const double *dy, double *dw,
                                 double *db);

// ---- dropout, loss ----
void nk_dropout_fwd_ref_f64(int64_t n, double rate, uint64_t key, const double *x, double *y);
void nk_dropout_bwd_ref_f64(int64_t n, double rate, uint64_t key, const double *dy, double *dx);
double nk_bce_fwd_ref_f64(int N, const double *z, const double *t, const double *wt, double *p);
void nk_bce_bwd_ref_f64(int N, const double *z, const double *t, const double *wt, double *dz);

// ---- GEMM ----
void nk_sgemm_ref_f64(int ta, int tb, int M, int N, int K, double alpha, const double *A, int lda,
                      const double *B, int ldb, double beta, double *C, int ldc);

#ifdef __cplusplus
}
#endif
#endif
