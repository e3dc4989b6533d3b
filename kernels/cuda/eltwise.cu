/*
 * eltwise.cu: the first CUDA kernels (ReLU forward/backward, add) and the device runtime
 * primitives (discovery, memory, copies) that libnet's CUDA buffers will be built on.
 * Contracts in kernels/nk.h; checked against kernels/ref in tests/test_cuda.c (SKIP without a GPU).
 */
#include "kernels/nk.h"

#include <cuda_runtime.h>
#include <stdio.h>

int nk_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); // clear the sticky "no driver" error
        return 0;
    }
    return n;
}

int nk_cuda_device_name(int dev, char *buf, size_t len)
{
    cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, dev);
    if (e != cudaSuccess) return (int)e;
    snprintf(buf, len, "%s (sm_%d%d, %.1f GiB)", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1 << 30));
    return 0;
}

const char *nk_cuda_errstr(int err)
{
    return cudaGetErrorString((cudaError_t)err);
}

int nk_cuda_malloc(void **d_p, size_t bytes)
{
    return (int)cudaMalloc(d_p, bytes);
}

void nk_cuda_free(void *d_p)
{
    if (d_p) cudaFree(d_p);
}

int nk_cuda_h2d(void *d_dst, const void *src, size_t bytes)
{
    return (int)cudaMemcpy(d_dst, src, bytes, cudaMemcpyHostToDevice);
}

int nk_cuda_d2h(void *dst, const void *d_src, size_t bytes)
{
    return (int)cudaMemcpy(dst, d_src, bytes, cudaMemcpyDeviceToHost);
}

// Grid-stride loops: any n with a bounded grid.
__global__ void relu_fwd_kernel(int64_t n, const float *x, float *y)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

__global__ void relu_bwd_kernel(int64_t n, const float *y, const float *dy, float *dx)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

__global__ void add_fwd_kernel(int64_t n, const float *a, const float *b, float *y)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = a[i] + b[i];
}

static int grid_for(int64_t n)
{
    int64_t g = (n + 255) / 256;
    return (int)(g < 1 ? 1 : g > 65535 ? 65535 : g);
}

static int finish(void)
{
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    return (int)e;
}

int nk_relu_fwd_cuda(int64_t n, const float *d_x, float *d_y)
{
    relu_fwd_kernel<<<grid_for(n), 256>>>(n, d_x, d_y);
    return finish();
}

int nk_relu_bwd_cuda(int64_t n, const float *d_y, const float *d_dy, float *d_dx)
{
    relu_bwd_kernel<<<grid_for(n), 256>>>(n, d_y, d_dy, d_dx);
    return finish();
}

int nk_add_fwd_cuda(int64_t n, const float *d_a, const float *d_b, float *d_y)
{
    add_fwd_kernel<<<grid_for(n), 256>>>(n, d_a, d_b, d_y);
    return finish();
}
