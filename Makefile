# pneumo: one Makefile for the library (build/libnet.a), the data/weights layer
# (build/libpneumo.a), the `pneumo` command, tests and benchmarks. See README.md.
#
#   make            library + build/pneumo          make test     every test, then a summary line
#   make bench      benchmark binaries              make asan     ASan+UBSan build running the tests
#   make format     clang-format in place           make format-check
#   CUDA=0          leave CUDA out even when nvcc exists; NATIVE=1 adds -march=native
#   WERROR=1        warnings are errors (CI sets it)

CC      ?= cc
CFLAGS  ?= -O2 -g
BUILD   ?= build
PREFIX  ?= /usr/local

WARN     = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter
ifeq ($(WERROR),1)
WARN    += -Werror
endif
ifeq ($(NATIVE),1)
CFLAGS  += -march=native
endif

PKGS     = hdf5 jansson libpng libturbojpeg libcurl expat libcrypto hiredis libmicrohttpd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

BASE_CFLAGS = -std=c11 -D_GNU_SOURCE -fopenmp -fPIC -I. $(WARN) $(CFLAGS) -MMD -MP
LDLIBS      = $(PKG_LIBS) -fopenmp -lm -lpthread

# ---- CUDA (optional) ----
# nvcc may be a wrapper script (e.g. /usr/local/bin/nvcc), so the toolkit root is
# the first of (nvcc's ../, /usr/local/cuda) that holds libcudart; without one,
# CUDA is left out rather than failing at link time.
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA_ARCH ?= sm_90
ifeq ($(CUDA),0)
NVCC :=
endif
CUDA_LIBDIR_OF = $(firstword $(dir $(wildcard $(1)/lib64/libcudart.so $(1)/targets/*/lib/libcudart.so)))
CUDA_HOME ?= $(firstword $(foreach d,$(patsubst %/bin/nvcc,%,$(realpath $(NVCC))) /usr/local/cuda,$(if $(call CUDA_LIBDIR_OF,$(d)),$(d))))
CUDA_LIBDIR := $(if $(NVCC),$(if $(CUDA_HOME),$(call CUDA_LIBDIR_OF,$(CUDA_HOME))))
CUDA_SRCS := $(if $(CUDA_LIBDIR),$(wildcard kernels/cuda/*.cu),)
ifneq ($(strip $(CUDA_SRCS)),)
CUDA_OBJS  := $(CUDA_SRCS:%.cu=$(BUILD)/%.o)
BASE_CFLAGS += -DNT_HAVE_CUDA
LDLIBS     += -L$(CUDA_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR) -lcudart -lstdc++
endif

# ---- sources ----
KERNEL_SRCS  := $(wildcard kernels/ref/*.c) $(wildcard kernels/cpu/*.c)
LIBNET_SRCS  := $(wildcard libnet/*.c)
DATA_SRCS    := $(wildcard data/*.c) $(wildcard weights/*.c)
CMD_SRCS     := $(wildcard cmd/*.c)
TEST_SRCS    := $(wildcard tests/test_*.c)
TEST_HELPERS := $(filter-out $(TEST_SRCS),$(wildcard tests/*.c))
BENCH_SRCS   := $(wildcard bench/bench_*.c)

KERNEL_OBJS := $(KERNEL_SRCS:%.c=$(BUILD)/%.o)
LIBNET_OBJS := $(LIBNET_SRCS:%.c=$(BUILD)/%.o)
DATA_OBJS   := $(DATA_SRCS:%.c=$(BUILD)/%.o)
CMD_OBJS    := $(CMD_SRCS:%.c=$(BUILD)/%.o)
# Everything of cmd/ but main(), so that tests can call the command-side code (event files, ...).
CMD_LIB_OBJS := $(filter-out $(BUILD)/cmd/main.o,$(CMD_OBJS))
TEST_BINS   := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
TEST_HOBJS  := $(TEST_HELPERS:%.c=$(BUILD)/%.o)
BENCH_BINS  := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)

# The reference kernels compiled a second time in double precision (symbols suffixed _f64),
# for the gradient checks of tests/test_grad.c.
REF64_OBJS := $(patsubst kernels/ref/%.c,$(BUILD)/ref64/%.o,$(wildcard kernels/ref/*.c))
.SECONDARY: $(REF64_OBJS) $(TEST_HOBJS)

LIBNET  = $(BUILD)/libnet.a
LIBDATA = $(BUILD)/libpneumo.a
LIBCMD  = $(BUILD)/libcmd.a
PNEUMO  = $(BUILD)/pneumo

.PHONY: all test bench asan format format-check clean install info-line demo
all: info-line $(LIBNET) $(LIBDATA) $(PNEUMO) $(BUILD)/libnet.pc

info-line:
	@echo "cuda: $(if $(strip $(CUDA_SRCS)),yes ($(CUDA_ARCH)),no$(if $(NVCC),$(if $(CUDA_LIBDIR), (no .cu sources), (nvcc found but no libcudart)), (nvcc not found or CUDA=0))) | openmp: yes | cc: $(CC)"

# SIMD files get their own flags; dispatch is at run time (kernels/cpu/cpu.c).
$(BUILD)/kernels/cpu/%_avx512.o: BASE_CFLAGS += -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mavx2
$(BUILD)/kernels/cpu/%_avx2.o: BASE_CFLAGS += -mavx2 -mfma
$(BUILD)/kernels/cpu/%_avx512bf16.o: BASE_CFLAGS += -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512bf16 -mfma -mavx2
$(BUILD)/kernels/cpu/%_amx.o: BASE_CFLAGS += -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512bf16 -mamx-tile -mamx-bf16 -mfma -mavx2
# The C model of the AMX tiles runs in every test run; -O3 vectorises its dot products (its share
# of test_ops' time, perf: 37 % at -O2, 16 % at -O3).
$(BUILD)/kernels/cpu/gemm_amx_emu.o: BASE_CFLAGS += -O3

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(PKG_CFLAGS) -c $< -o $@

$(BUILD)/ref64/%.o: kernels/ref/%.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -DNK_REAL=double -DNK_REF_SUFFIX=_f64 -c $< -o $@

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) -O2 -arch=$(CUDA_ARCH) -Xcompiler -fPIC -I. -c $< -o $@

$(LIBNET): $(KERNEL_OBJS) $(LIBNET_OBJS) $(CUDA_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIBDATA): $(DATA_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIBCMD): $(CMD_LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(PNEUMO): $(CMD_OBJS) $(LIBDATA) $(LIBNET)
	$(CC) $(CFLAGS) -o $@ $(CMD_OBJS) $(LIBDATA) $(LIBNET) $(LDLIBS)

$(BUILD)/libnet.pc: Makefile
	@mkdir -p $(dir $@)
	@printf 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include/pneumo\n\nName: libnet\nDescription: pneumo deep-learning library (tensors, ops, Keras ResNet50 v1)\nVersion: 0.1.0\nCflags: -I$${includedir} -fopenmp\nLibs: -L$${libdir} -lnet -ljansson -fopenmp -lm\n' '$(PREFIX)' > $@

install: all
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/pneumo/libnet $(DESTDIR)$(PREFIX)/include/pneumo/kernels $(DESTDIR)$(PREFIX)/bin
	install -m 644 $(LIBNET) $(DESTDIR)$(PREFIX)/lib/
	install -m 644 $(BUILD)/libnet.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/
	install -m 644 libnet/nt.h $(DESTDIR)$(PREFIX)/include/pneumo/libnet/
	install -m 644 kernels/nk.h $(DESTDIR)$(PREFIX)/include/pneumo/kernels/
	install -m 755 $(PNEUMO) $(DESTDIR)$(PREFIX)/bin/

$(BUILD)/tests/%: tests/%.c $(TEST_HOBJS) $(REF64_OBJS) $(LIBCMD) $(LIBDATA) $(LIBNET)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(PKG_CFLAGS) -o $@ $< $(TEST_HOBJS) $(REF64_OBJS) $(LIBCMD) $(LIBDATA) $(LIBNET) $(LDLIBS)

# Benchmarks compare against OpenBLAS when it is installed (scripts/install-deps.sh --bench).
HAVE_OPENBLAS := $(shell test -f /usr/include/x86_64-linux-gnu/cblas.h -o -f /usr/include/cblas.h && echo 1)
ifeq ($(HAVE_OPENBLAS),1)
BENCH_LIBS ?= -DHAVE_OPENBLAS -lopenblas
endif

$(BUILD)/bench/%: bench/%.c $(LIBDATA) $(LIBNET)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(PKG_CFLAGS) -o $@ $< $(LIBDATA) $(LIBNET) $(LDLIBS) $(BENCH_LIBS)

test: all $(TEST_BINS)
	@PNEUMO=$(PNEUMO) BUILD=$(BUILD) sh tests/run.sh $(TEST_BINS)

bench: all $(BENCH_BINS)

# The README's main job on local defaults: the shipped model (or, without one, a freshly
# initialised network), its summary, and a prediction over the shipped sample X-rays.
DEMO_MODEL = $(if $(wildcard weights/pneumo-resnet50.safetensors),weights/pneumo-resnet50.safetensors,$(BUILD)/demo.safetensors)
demo: all
	@test -f $(DEMO_MODEL) || $(PNEUMO) init --out $(DEMO_MODEL)
	$(PNEUMO) info $(DEMO_MODEL) | tail -n 7
	$(PNEUMO) predict --model $(DEMO_MODEL) --format table data/samples/*.jpeg

asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" test

FORMAT_SRCS = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(FORMAT_SRCS)
format-check:
	clang-format --dry-run --Werror $(FORMAT_SRCS)

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
