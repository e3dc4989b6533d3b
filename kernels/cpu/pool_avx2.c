/*
 * pool_avx2.c: the max pooling loops of pool_impl.h compiled with AVX2 and FMA (the Makefile
 * gives *_avx2.c its flags); called from pool.c only when the CPU has AVX2 but not AVX-512.
 */
#include <string.h>

#include "kernels/nk.h"

#define POOL_NAME(f) pool_##f##_avx2
#include "kernels/cpu/pool_impl.h"
