/* elementwise.c: CPU copy/convert, fill, arange, randn and reductions over strided views. */
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu.h"

enum { CHUNK = 1 << 14 };

static int64_t numel_of(const ada_strided *l) {
  int64_t n = 1;
  for (int32_t i = 0; i < l->ndim; i++) n *= l->shape[i];
  return n;
}

/* Merges neighbouring dimensions that are contiguous with each other in every layout given,
 * and drops size-1 dimensions, so the inner loop runs as long as possible. */
static void coalesce(int32_t nl, ada_strided **ls) {
  ada_strided *a = ls[0];
  int32_t nd = 0;
  int64_t shape[ADA_MAX_DIMS], st[2][ADA_MAX_DIMS];
  for (int32_t d = 0; d < a->ndim; d++) {
    if (a->shape[d] == 1) continue;
    int merge = nd > 0;
    for (int32_t k = 0; k < nl && merge; k++)
      merge = st[k][nd - 1] == ls[k]->stride[d] * ls[k]->shape[d];
    if (merge) {
      shape[nd - 1] *= a->shape[d];
      for (int32_t k = 0; k < nl; k++) st[k][nd - 1] = ls[k]->stride[d];
    } else {
      shape[nd] = a->shape[d];
      for (int32_t k = 0; k < nl; k++) st[k][nd] = ls[k]->stride[d];
      nd++;
    }
  }
  if (nd == 0) { shape[0] = 1; for (int32_t k = 0; k < nl; k++) st[k][0] = 1; nd = 1; }
  for (int32_t k = 0; k < nl; k++) {
    ls[k]->ndim = nd;
    for (int32_t d = 0; d < nd; d++) { ls[k]->shape[d] = shape[d]; ls[k]->stride[d] = st[k][d]; }
  }
}

/* Element offset of logical row-major index i. */
static int64_t offset_of(const ada_strided *l, int64_t i) {
  int64_t off = 0;
  for (int32_t d = l->ndim - 1; d >= 0; d--) {
    off += (i % l->shape[d]) * l->stride[d];
    i /= l->shape[d];
  }
  return off;
}

void ada_cpu_copy(void *dst, ada_dtype ddt, const ada_strided *dl0, const void *src, ada_dtype sdt,
                  const ada_strided *sl0) {
  ada_strided dl = *dl0, sl = *sl0;
  ada_strided *ls[2] = {&dl, &sl};
  coalesce(2, ls);
  const int64_t n = numel_of(&dl);
  const int32_t ds = ada_dtype_size(ddt), ss = ada_dtype_size(sdt);
  if (dl.ndim == 1 && dl.stride[0] == 1 && sl.stride[0] == 1) {
    char *d = dst;
    const char *s = src;
    if (ddt == sdt) { memcpy(d, s, (size_t)(n * ds)); return; }
    if (sdt == ADA_F32 && ddt == ADA_BF16) {
      const float *fs = src; uint16_t *hd = dst;
#pragma omp parallel for schedule(static) if (n > CHUNK)
      for (int64_t i = 0; i < n; i++) hd[i] = ada_f32_to_bf16(fs[i]);
      return;
    }
    if (sdt == ADA_BF16 && ddt == ADA_F32) {
      const uint16_t *hs = src; float *fd = dst;
#pragma omp parallel for schedule(static) if (n > CHUNK)
      for (int64_t i = 0; i < n; i++) /* NaNs come out quiet, as through ada_load */
        fd[i] = ada_bits_f32(((uint32_t)hs[i] << 16) | ((hs[i] & 0x7fff) > 0x7f80 ? 0x400000u : 0u));
      return;
    }
  }
  const int64_t nchunks = (n + CHUNK - 1) / CHUNK;
  const int32_t last = dl.ndim - 1;
#pragma omp parallel for schedule(static) if (nchunks > 1)
  for (int64_t c = 0; c < nchunks; c++) {
    int64_t i0 = c * CHUNK, i1 = i0 + CHUNK < n ? i0 + CHUNK : n;
    for (int64_t i = i0; i < i1;) {
      /* run along the innermost dimension from index i to the end of its row or chunk */
      int64_t col = i % dl.shape[last];
      int64_t len = dl.shape[last] - col;
      if (len > i1 - i) len = i1 - i;
      char *d = (char *)dst + offset_of(&dl, i) * ds;
      const char *s = (const char *)src + offset_of(&sl, i) * ss;
      const int64_t dstep = dl.stride[last] * ds, sstep = sl.stride[last] * ss;
      if (ddt == sdt && ds == 4) {
        for (int64_t j = 0; j < len; j++) memcpy(d + j * dstep, s + j * sstep, 4);
      } else if (ddt == sdt && ds == 2) {
        for (int64_t j = 0; j < len; j++) memcpy(d + j * dstep, s + j * sstep, 2);
      } else if (ddt == sdt) {
        for (int64_t j = 0; j < len; j++) d[j * dstep] = s[j * sstep];
      } else {
        for (int64_t j = 0; j < len; j++) ada_store(d + j * dstep, ddt, ada_load(s + j * sstep, sdt));
      }
      i += len;
    }
  }
}

void ada_cpu_fill(void *dst, ada_dtype ddt, const ada_strided *dl0, double value) {
  ada_strided dl = *dl0;
  ada_strided *ls[1] = {&dl};
  coalesce(1, ls);
  const int64_t n = numel_of(&dl);
  const int32_t ds = ada_dtype_size(ddt);
  unsigned char pattern[8];
  ada_store(pattern, ddt, value);
  const int64_t nchunks = (n + CHUNK - 1) / CHUNK;
  const int32_t last = dl.ndim - 1;
#pragma omp parallel for schedule(static) if (nchunks > 1)
  for (int64_t c = 0; c < nchunks; c++) {
    int64_t i0 = c * CHUNK, i1 = i0 + CHUNK < n ? i0 + CHUNK : n;
    for (int64_t i = i0; i < i1;) {
      int64_t col = i % dl.shape[last];
      int64_t len = dl.shape[last] - col;
      if (len > i1 - i) len = i1 - i;
      char *d = (char *)dst + offset_of(&dl, i) * ds;
      const int64_t step = dl.stride[last] * ds;
      for (int64_t j = 0; j < len; j++) memcpy(d + j * step, pattern, (size_t)ds);
      i += len;
    }
  }
}

void ada_cpu_arange(void *dst, ada_dtype ddt, int64_t n, double start, double step) {
  const int32_t ds = ada_dtype_size(ddt);
#pragma omp parallel for schedule(static) if (n > CHUNK)
  for (int64_t i = 0; i < n; i++) ada_store((char *)dst + i * ds, ddt, ADA_DADD(start, ADA_DMUL((double)i, step)));
}

void ada_cpu_randn(void *dst, ada_dtype ddt, int64_t n, uint64_t seed) {
#pragma omp parallel for schedule(static) if (n > 4096)
  for (int64_t i = 0; i < n; i++) {
    float v = ada_randn_at(seed, (uint64_t)i);
    switch (ddt) {
    case ADA_BF16: ((uint16_t *)dst)[i] = ada_f32_to_bf16(v); break;
    case ADA_F16: ((uint16_t *)dst)[i] = ada_f32_to_f16(v); break;
    default: ((float *)dst)[i] = v; break;
    }
  }
}

static double combine(ada_reduce_op op, double a, double b) {
  switch (op) {
  case ADA_REDUCE_MAX: return (a != a || b != b) ? NAN : (a > b ? a : b);
  case ADA_REDUCE_MIN: return (a != a || b != b) ? NAN : (a < b ? a : b);
  default: return a + b;
  }
}

double ada_cpu_reduce(const void *src, ada_dtype sdt, const ada_strided *sl0, ada_reduce_op op) {
  ada_strided sl = *sl0;
  ada_strided *ls[1] = {&sl};
  coalesce(1, ls);
  const int64_t n = numel_of(&sl);
  const int32_t ss = ada_dtype_size(sdt);
  const int32_t last = sl.ndim - 1;
  /* a fixed split of the index space, so the result does not depend on the thread count */
  enum { PARTS = 256 };
  double part[PARTS];
  const double init = op == ADA_REDUCE_MAX ? -INFINITY : op == ADA_REDUCE_MIN ? INFINITY : 0.0;
#pragma omp parallel for schedule(static) if (n > CHUNK)
  for (int32_t p = 0; p < PARTS; p++) {
    int64_t i0 = n * p / PARTS, i1 = n * (p + 1) / PARTS;
    double acc = init;
    for (int64_t i = i0; i < i1;) {
      int64_t col = i % sl.shape[last];
      int64_t len = sl.shape[last] - col;
      if (len > i1 - i) len = i1 - i;
      const char *s = (const char *)src + offset_of(&sl, i) * ss;
      const int64_t step = sl.stride[last] * ss;
      for (int64_t j = 0; j < len; j++) {
        double v = ada_load(s + j * step, sdt);
        acc = combine(op, acc, op == ADA_REDUCE_SUMSQ ? v * v : v);
      }
      i += len;
    }
    part[p] = acc;
  }
  double r = init;
  for (int32_t p = 0; p < PARTS; p++) r = combine(op, r, part[p]);
  return r;
}

void ada_cpu_set_threads(int32_t n) {
#ifdef _OPENMP
  static int32_t dflt = 0;
  if (dflt == 0) dflt = (int32_t)omp_get_max_threads();
  omp_set_num_threads(n > 0 ? n : dflt);
#else
  (void)n;
#endif
}

int32_t ada_cpu_threads(void) {
#ifdef _OPENMP
  return (int32_t)omp_get_max_threads();
#else
  return 1;
#endif
}
