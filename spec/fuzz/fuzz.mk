# spec/fuzz/fuzz.mk: builds the libFuzzer harnesses (clang, ASan + UBSan) into build-fuzz/.
# Used by `make fuzz` (see spec/fuzz/run.sh); the runtime is compiled once with coverage.
CLANG   ?= clang
FBUILD  ?= build-fuzz
FCFLAGS := -std=c11 -O1 -g -fopenmp -fno-omit-frame-pointer -D_POSIX_C_SOURCE=200809L \
           -fsanitize=address,undefined -fno-sanitize-recover=undefined \
           $(shell pkg-config --cflags libpng 2>/dev/null)
FLIBS   := $(shell pkg-config --libs libpng 2>/dev/null || echo -lpng16) -lm
RT      := $(filter-out runtime/main.c,$(wildcard runtime/*.c runtime/cpu/*.c runtime/io/*.c runtime/adaspa/*.c))
RT_OBJ  := $(RT:%.c=$(FBUILD)/obj/%.o)
HARNESS := json safetensors png layout cache

all: $(HARNESS:%=$(FBUILD)/%_fuzz)

$(FBUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CLANG) $(FCFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FBUILD)/%_fuzz: spec/fuzz/%_fuzz.c spec/fuzz/fuzz_common.h $(RT_OBJ)
	$(CLANG) $(FCFLAGS) -fsanitize=fuzzer $< $(RT_OBJ) $(FLIBS) -o $@

-include $(RT_OBJ:.o=.d)
