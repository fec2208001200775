/* cache_fuzz.c: libFuzzer harness of the AdaSpa cache reader (runtime/adaspa/cache.c, over the
 * safetensors reader). Each input is a whole file. A failure must be a clean status whose message
 * starts "ada_cache_load: " and names the file. A cache that loads must hold valid layouts and
 * finite-or-(-inf) LSEs, and come back the same through ada_cache_save and ada_cache_load (every
 * layer's steps, layout, density, recall and LSE). Heap per input within 4 x the file + 64 KiB
 * (the round trip's second copy is freed before the first is checked against it: see below). */
#include "fuzz_common.h"

#include <math.h>
#include <string.h>

#include "../../runtime/adaspa/cache.h"
#include "../../runtime/layout.h"
#include "../../runtime/status.h"
#include "../../runtime/tensor.h"

static char g_copy[96];
static size_t g_loaded; /* inputs that loaded (and went through the round trip) */

static void report_loaded(void) { fprintf(stderr, "cache_fuzz: %zu inputs loaded as caches and came back the same\n", g_loaded); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  fz_init("cache_fuzz");
  atexit(report_loaded);
  /* the OpenMP runtime's first parallel region (the layout checks run one) allocates its thread
     team once, about 1 MB: made here, before any input is measured */
  int threads = 0;
#pragma omp parallel
  __atomic_add_fetch(&threads, 1, __ATOMIC_RELAXED);
  (void)threads;
  snprintf(g_copy, sizeof g_copy, "/dev/shm/adaspa-cache-fuzz-%d.safetensors", (int)getpid());
  return 0;
}

static bool same_layout(const ada_layout *a, const ada_layout *b) {
  if (!a || !b) return a == b;
  if (a->heads != b->heads || a->nqb != b->nqb || a->nkb != b->nkb || a->block != b->block || a->nnz != b->nnz) return false;
  size_t no = (size_t)a->heads * ((size_t)a->nqb + 1);
  return memcmp(a->offsets, b->offsets, no * sizeof *a->offsets) == 0 &&
         (a->nnz == 0 || memcmp(a->indices, b->indices, (size_t)a->nnz * sizeof *a->indices) == 0);
}

static bool same_values(const double *a, const double *b, int32_t n) {
  if (!a || !b) return a == b;
  return memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

static bool same_lse(const ada_tensor *a, const ada_tensor *b) {
  if (!a || !b) return a == b;
  if (a->ndim != 2 || b->ndim != 2 || a->shape[0] != b->shape[0] || a->shape[1] != b->shape[1]) return false;
  return memcmp(ada_tensor_data(a), ada_tensor_data(b), (size_t)ada_tensor_numel(a) * sizeof(float)) == 0;
}

/* Every loaded layer obeys the format's rules. */
static void walk(const ada_cache *c) {
  for (int32_t i = 0; i < ada_cache_layers(c); i++) {
    const ada_layout *l = ada_cache_layout(c, i);
    if ((l != NULL) != (ada_cache_layout_step(c, i) >= 0)) abort();
    if (l && (ada_layout_validate(l, "cache_fuzz") != ADA_OK || !ada_cache_density(c, i))) abort();
    const double *r = ada_cache_recall(c, i);
    for (int32_t h = 0; l && r && h < l->heads; h++)
      if (!(r[h] >= 0 && r[h] <= 1)) abort();
    const ada_tensor *t = ada_cache_lse(c, i);
    if ((t != NULL) != (ada_cache_lse_step(c, i) >= 0)) abort();
    if (t) {
      const float *p = ada_tensor_data(t);
      for (int64_t k = 0; k < ada_tensor_numel(t); k++)
        if (isnan(p[k]) || p[k] == INFINITY) abort();
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fz_file(data, size);
  fz_mem_begin();
  ada_cache *c;
  if (ada_cache_load(&c, path) != ADA_OK) {
    const char *m = ada_last_error();
    if (strncmp(m, "ada_cache_load: ", 16) != 0 || !strstr(m, path)) {
      fprintf(stderr, "cache_fuzz: failure without the \"ada_cache_load: <path>\" form: %s\n", m);
      abort();
    }
    fz_mem_end(size, 64 << 10);
    return 0;
  }
  walk(c);
  fz_mem_end(size, 64 << 10);
  /* the round trip (not counted against the input's bound: the second cache is the same size) */
  if (ada_cache_save(c, g_copy) != ADA_OK) {
    fprintf(stderr, "cache_fuzz: a loaded cache does not save: %s\n", ada_last_error());
    abort();
  }
  ada_cache *d;
  if (ada_cache_load(&d, g_copy) != ADA_OK) {
    fprintf(stderr, "cache_fuzz: a saved cache does not load again: %s\n", ada_last_error());
    abort();
  }
  if (ada_cache_layers(c) != ada_cache_layers(d)) abort();
  for (int32_t i = 0; i < ada_cache_layers(c); i++) {
    const ada_layout *l = ada_cache_layout(c, i);
    if (ada_cache_layout_step(c, i) != ada_cache_layout_step(d, i) || ada_cache_lse_step(c, i) != ada_cache_lse_step(d, i) ||
        !same_layout(l, ada_cache_layout(d, i)) || !same_lse(ada_cache_lse(c, i), ada_cache_lse(d, i)) ||
        (l && (!same_values(ada_cache_density(c, i), ada_cache_density(d, i), l->heads) ||
               !same_values(ada_cache_recall(c, i), ada_cache_recall(d, i), l->heads)))) {
      fprintf(stderr, "cache_fuzz: layer %d differs after a save and a load\n", (int)i + 1);
      abort();
    }
  }
  ada_cache_free(d);
  ada_cache_free(c);
  unlink(g_copy);
  g_loaded++;
  return 0;
}
