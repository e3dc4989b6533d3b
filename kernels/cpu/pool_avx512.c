/*
 * pool_avx512.c: the max pooling loops of pool_impl.h compiled with AVX-512 (the Makefile
 * gives *_avx512.c its flags); called from pool.c only when the CPU has AVX-512.
 */
#include <string.h>

#include "kernels/nk.h"

#define POOL_NAME(f) pool_##f##_avx512
#include "kernels/cpu/pool_impl.h"
