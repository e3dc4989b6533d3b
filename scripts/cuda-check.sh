#!/bin/sh
# cuda-check.sh: builds the kernels (kernels/ref, kernels/cpu, kernels/cuda) and tests/test_cuda
# with nothing but a C compiler and the CUDA toolkit, then runs the test (and, where it works,
# compute-sanitizer's memcheck over it). For a GPU machine that lacks the project's other
# dependencies (HDF5, libcurl, ...): `sh scripts/cuda-check.sh [BUILD_DIR]`.
set -eu
B=${1:-build-cuda}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
ROOT=$(dirname "$(dirname "$(readlink -f "$NVCC")")")
LIBDIR=$ROOT/lib64
[ -f "$LIBDIR/libcudart.so" ] || LIBDIR=$(dirname "$(ls "$ROOT"/targets/*/lib/libcudart.so | head -1)")
echo "nvcc: $NVCC ($("$NVCC" --version | tail -1)); libcudart: $LIBDIR"
command -v nvidia-smi >/dev/null && nvidia-smi -L || true
OBJS=$(for f in kernels/ref/*.c kernels/cpu/*.c kernels/cuda/*.cu; do echo "$B/${f%.*}.o"; done)
make -s -j"$(nproc)" BUILD="$B" NVCC="$NVCC" CUDA_HOME="$ROOT" WERROR=1 $OBJS
cc -std=c11 -D_GNU_SOURCE -fopenmp -I. -O2 -DNT_HAVE_CUDA -Wall -Wextra -Werror \
   -Wno-unused-parameter -o "$B/test_cuda" tests/test_cuda.c $OBJS \
   -L"$LIBDIR" -Wl,-rpath,"$LIBDIR" -lcudart -lstdc++ -lm -lpthread
"$B/test_cuda"
if command -v compute-sanitizer >/dev/null; then
    compute-sanitizer --tool memcheck --error-exitcode 3 "$B/test_cuda" >"$B/memcheck.log" 2>&1 &&
        echo "memcheck: clean ($(tail -1 "$B/memcheck.log"))" ||
        { tail -20 "$B/memcheck.log"; echo "memcheck: FAILED"; exit 3; }
fi
