/*
 * bn_avx2.c: the batch normalisation loops of bn_impl.h compiled with AVX2 and FMA (the Makefile
 * gives *_avx2.c its flags); called from bn.c only when the CPU has AVX2 but not AVX-512.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>

#include "kernels/nk.h"

#define BN_NAME(f) bn_##f##_avx2
#include "kernels/cpu/bn_impl.h"
