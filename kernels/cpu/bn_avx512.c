/*
 * bn_avx512.c: the batch normalisation loops of bn_impl.h compiled with AVX-512 (the Makefile
 * gives *_avx512.c its flags); called from bn.c only when the CPU has AVX-512.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>

#include "kernels/nk.h"

#define BN_NAME(f) bn_##f##_avx512
#include "kernels/cpu/bn_impl.h"
