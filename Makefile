# adaspa build.  make | make test | make asan | make fuzz | make install PREFIX=... | make clean | make deps
#   CUDA=1 forces the CUDA backend, CUDA=0 disables it; by default it is built when nvcc is found.
#   WERROR=0 turns warnings back into warnings (CI and the default build use -Werror).
.DEFAULT_GOAL := all
SHELL := /bin/bash

VERSION   := 0.1.0
BUILD     ?= build
PREFIX    ?= /usr/local
CUDA_HOME ?= $(firstword $(wildcard /usr/local/cuda) /usr)
NVCC      ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard $(CUDA_HOME)/bin/nvcc))
ifeq ($(origin CUDA),undefined)
  CUDA := $(if $(NVCC),1,0)
endif
ifeq ($(CUDA),1)
  ifeq ($(NVCC),)
    $(error CUDA=1 but nvcc was not found (set NVCC=/path/to/nvcc or CUDA_HOME))
  endif
endif
WERROR  ?= 1
SANITIZE ?=

PKG_CFLAGS := $(shell pkg-config --cflags luajit libpng libedit 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs luajit libpng libedit 2>/dev/null)
ifeq ($(PKG_LIBS),)
  PKG_LIBS := -lluajit-5.1 -lpng16 -ledit
endif

CC      ?= gcc
OPT     ?= -O2
CFLAGS  := -std=c11 $(OPT) -g -fopenmp -fPIC -Wall -Wextra -Wshadow -Wno-unused-parameter \
           -D_POSIX_C_SOURCE=200809L -DADA_VERSION='"$(VERSION)"' $(if $(filter 1,$(WERROR)),-Werror)
LDFLAGS := -fopenmp
LIBS    := $(PKG_LIBS) -lm
ifneq ($(SANITIZE),)
  CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS += -fsanitize=$(SANITIZE)
endif

CUDA_ARCHS := -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a
NVFLAGS := -std=c++17 -O3 -g -lineinfo $(CUDA_ARCHS) -Xcompiler -fPIC,-Wall,-Wextra \
           $(if $(filter 1,$(WERROR)),-Werror all-warnings -Xcompiler -Werror) -DADA_VERSION='"$(VERSION)"'

RT_SRC  := $(wildcard runtime/*.c runtime/cpu/*.c runtime/io/*.c runtime/adaspa/*.c)
LUA_SRC := $(wildcard runtime/lua/*.c)
# The CUDA backend (runtime/cuda/ and kernels/) registers itself at start-up; without it nothing
# of it is compiled or linked. A kernel family file kernels/attention_smNN.cu that exists is
# built and listed in the attention plan (runtime/cuda/attention_plan.c) through -DADA_HAVE_SMNN.
# NCCL (the communicator's GPU transport, runtime/cuda/nccl.c): built with the CUDA backend when
# nccl.h is found (NCCL_HOME, CUDA_HOME, /usr, /usr/local); NCCL=0 leaves it out, NCCL=1 insists.
# libnccl itself is loaded at run time (dlopen), only when ADASPA_COMM_DEVICE=nccl asks for it.
ifeq ($(CUDA),1)
  NCCL_H := $(firstword $(wildcard $(if $(NCCL_HOME),$(NCCL_HOME)/include/nccl.h) $(CUDA_HOME)/include/nccl.h \
                                   /usr/include/nccl.h /usr/local/include/nccl.h))
  NCCL_SO := $(firstword $(wildcard $(if $(NCCL_HOME),$(NCCL_HOME)/lib/libnccl.so.2 $(NCCL_HOME)/lib64/libnccl.so.2) \
                                    $(CUDA_HOME)/lib64/libnccl.so.2 $(CUDA_HOME)/lib/libnccl.so.2 \
                                    /usr/lib/x86_64-linux-gnu/libnccl.so.2 /usr/local/lib/libnccl.so.2))
  ifeq ($(origin NCCL),undefined)
    NCCL := $(if $(NCCL_H),1,0)
  endif
  ifeq ($(NCCL),1)
    ifeq ($(NCCL_H),)
      $(error NCCL=1 but nccl.h was not found (set NCCL_HOME))
    endif
  endif
endif
ifeq ($(CUDA),1)
  CU_HOST := $(wildcard runtime/cuda/*.c)
  ifneq ($(NCCL),1)
    CU_HOST := $(filter-out runtime/cuda/nccl.c,$(CU_HOST))
  endif
  WITH_NCCL := $(NCCL)
  CU_SRC  := $(wildcard kernels/*.cu)
  CU_FAMILIES := $(patsubst kernels/attention_%.cu,%,$(wildcard kernels/attention_sm*.cu))
  CFLAGS_CUDA := -I$(CUDA_HOME)/include $(foreach f,$(CU_FAMILIES),-DADA_HAVE_$(shell echo $(f) | tr a-z A-Z))
  ifeq ($(NCCL),1)
    CFLAGS_NCCL := -I$(dir $(NCCL_H)) -DADA_HAVE_NCCL -DADA_NCCL_LIBDIR='"$(patsubst %/,%,$(dir $(NCCL_SO)))"'
  endif
  LIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart_static -ldl -lrt -lpthread -lstdc++
else
  CU_HOST :=
  CU_SRC  :=
endif
C_SRC := $(RT_SRC) $(LUA_SRC) $(CU_HOST)
OBJ := $(C_SRC:%.c=$(BUILD)/obj/%.o) $(CU_SRC:%.cu=$(BUILD)/obj/%.o)
DEP := $(OBJ:.o=.d)

BACKENDS := cpu$(if $(filter 1,$(CUDA)), cuda)$(if $(filter 1,$(WITH_NCCL)), (comm: nccl, $(NCCL_H)))

.PHONY: all deps deps-check test asan fuzz install uninstall clean bench run print-backends testbed
# DEPS_CHECK=0 skips the dependency check (machines without a package registry, such as the GPU
# machine, whose kit in .gpu/ provides LuaJIT and busted but no ffmpeg)
DEPS_CHECK ?= 1
all: $(if $(filter 1,$(DEPS_CHECK)),deps-check) print-backends $(BUILD)/adaspa

print-backends:
	@echo "adaspa: backends: $(BACKENDS) $(if $(filter 1,$(CUDA)),(nvcc: $(NVCC)),$(if $(NVCC),(CUDA=0: CUDA backend disabled),(no nvcc found: CUDA backend not built)))"

deps-check:
	@.ci/deps.sh check 2>/dev/null || $(MAKE) --no-print-directory deps

deps:
	@.ci/deps.sh install

$(BUILD)/adaspa: $(OBJ)
	$(CC) $(LDFLAGS) -o $@ $(OBJ) $(LIBS)

$(BUILD)/obj/runtime/cuda/%.o: runtime/cuda/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CFLAGS_CUDA) $(PKG_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/runtime/cuda/nccl.o: runtime/cuda/nccl.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CFLAGS_CUDA) $(CFLAGS_NCCL) $(PKG_CFLAGS) -MMD -MP -c $< -o $@

# the plan lists the families whose files exist: rebuilt when one comes or goes
$(BUILD)/obj/runtime/cuda/attention_plan.o: $(wildcard kernels/attention_sm*.cu)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -MMD -MP -c $< -o $@

-include $(DEP)

# Specs run inside the real binary; the last line is "N passed, N failed, N skipped".
SPEC_ARGS ?=
test: all
	@$(BUILD)/adaspa spec/busted.lua $(SPEC_ARGS)

# AddressSanitizer + UBSan build (CPU backend) in build-asan/, and its specs.
asan:
	@$(MAKE) --no-print-directory BUILD=build-asan CUDA=0 SANITIZE=address,undefined OPT=-O1 all
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ADASPA_BIN=build-asan/adaspa build-asan/adaspa spec/busted.lua $(SPEC_ARGS)

# Fuzz campaign (spec/fuzz/run.sh): libFuzzer on the safetensors, JSON, PNG and layout-message readers, Lua
# mutators on traces and recipe overrides; FUZZ_SECONDS per harness (12: about a minute in all).
FUZZ_SECONDS ?= 12
fuzz: all
	@.ci/deps.sh check-fuzz 2>/dev/null || $(MAKE) --no-print-directory deps
	@FUZZ_SECONDS=$(FUZZ_SECONDS) spec/fuzz/run.sh

# The main job: build if needed, then adaspa run (RECIPE_ARGS=field=value ...): the small trained
# model (recipes/tiny.lua) without a GPU when its weights are there, else recipes/hunyuan.lua.
RECIPE_ARGS ?=
run: all
	@$(BUILD)/adaspa run $(RECIPE_ARGS)

bench: all
	@for f in recipes/bench/*.lua; do [ -f "$$f" ] && $(BUILD)/adaspa "$$f"; done; true

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/adaspa
	install -m 755 $(BUILD)/adaspa $(DESTDIR)$(PREFIX)/bin/adaspa
	cp -r lua $(DESTDIR)$(PREFIX)/share/adaspa/
	cp -r recipes $(DESTDIR)$(PREFIX)/share/adaspa/
	if [ -d models ]; then cp -r models $(DESTDIR)$(PREFIX)/share/adaspa/; fi
	@echo "adaspa: installed to $(DESTDIR)$(PREFIX) (binary bin/adaspa, library share/adaspa/lua)"

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/adaspa
	rm -rf $(DESTDIR)$(PREFIX)/share/adaspa

clean:
	rm -rf build build-asan build-fuzz

# The attention kernel test bed (kernels/testbed/): validates every kernel family against a float64
# reference and each other, then times them; needs a GPU to run (build/attn_testbed [quick]).
testbed: $(BUILD)/attn_testbed
$(BUILD)/attn_testbed: kernels/testbed/attn_testbed.cu $(BUILD)/obj/kernels/attention_sm80.o $(BUILD)/obj/kernels/attention_sm90.o
	$(NVCC) $(NVFLAGS) -Xcompiler -fopenmp -o $@ $^
