/* layout.c: block-sparse attention layouts (layout.h): construction (full, from a mask), the
 * mask of a layout, selection from a block-mass tensor (top-k, cumulative-mass threshold),
 * density, recall and the fit check used by the sparse attention op.
 *
 * Every selection first decides a keep flag per block (u8 [H, nqb, nkb]), then compacts the
 * flags into CSR (build_csr). Rows (or heads) are decided independently, in parallel, each by
 * a sequential computation, so results do not depend on the thread count. Blocks are ranked by
 * a 64-bit key: descending mass in the high half, the block index in the low half (ties go to
 * the lower index); the keys of a row are distinct, so partial selection is exact. */
#include "layout.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "opcheck.h"

/* A mass on a device other than the CPU: selection and recall go to that device's backend. */
static bool on_device(const ada_tensor *t) { return t && t->storage->device.type != ADA_CPU; }

void ada_layout_free(ada_layout *l) {
  if (!l || --l->refcount > 0) return;
  ada_derived_free(l->derived); /* what backends derived from it (a device mirror) */
  free(l->offsets);
  free(l->indices);
  free(l);
}

ada_layout *ada_layout_retain(ada_layout *l) {
  l->refcount++;
  return l;
}

/* Sizes every layout must have: at least one head and block, block 64 or 128, and block
 * indices of one head (qb * nkb + kb) that fit 32 bits. */
static ada_status check_dims(const char *op, int64_t heads, int64_t nqb, int64_t nkb, int64_t block) {
  if (heads < 1 || nqb < 1 || nkb < 1 || heads > INT32_MAX || nqb > INT32_MAX || nkb > INT32_MAX)
    return ada_fail(ADA_EINVAL, "%s: heads, nqb and nkb must be in [1, %d], got %lld, %lld, %lld", op, INT32_MAX,
                    (long long)heads, (long long)nqb, (long long)nkb);
  if (nqb * nkb > (int64_t)UINT32_MAX)
    return ada_fail(ADA_EINVAL, "%s: %lld x %lld blocks per head is too many (fewer than 2^32 allowed)", op, (long long)nqb,
                    (long long)nkb);
  return ada_layout_check_block(op, "block", block);
}

ada_status ada_layout_check_block(const char *op, const char *arg, int64_t block) {
  if (ada_attn_block_ok(block)) return ADA_OK;
  return ada_fail(ADA_EINVAL, "%s: %s must be 64 or 128, got %lld", op, arg, (long long)block);
}

/* A layout with offsets allocated (indices later, when nnz is known). */
static ada_status new_layout(ada_layout **out, const char *op, int32_t heads, int32_t nqb, int32_t nkb, int32_t block) {
  ada_layout *l = calloc(1, sizeof *l);
  if (l) l->refcount = 1;
  if (l) l->offsets = malloc(sizeof(int64_t) * (size_t)heads * ((size_t)nqb + 1));
  if (l) l->derived = ada_derived_new();
  if (!l || !l->offsets || !l->derived) {
    if (l) free(l->offsets), ada_derived_free(l->derived);
    free(l);
    return ada_fail(ADA_ENOMEM, "%s: out of memory for a layout of %d heads x %d rows", op, heads, nqb);
  }
  l->heads = heads;
  l->nqb = nqb;
  l->nkb = nkb;
  l->block = block;
  *out = l;
  return ADA_OK;
}

ada_status ada_layout_new(ada_layout **out, const char *op, int32_t heads, int32_t nqb, int32_t nkb, int32_t block) {
  ada_status s = check_dims(op, heads, nqb, nkb, block);
  return s ? s : new_layout(out, op, heads, nqb, nkb, block);
}

static ada_status alloc_indices(ada_layout *l, const char *op) {
  l->indices = malloc(sizeof(int32_t) * (size_t)(l->nnz > 0 ? l->nnz : 1));
  if (!l->indices) return ada_fail(ADA_ENOMEM, "%s: out of memory for %lld layout entries", op, (long long)l->nnz);
  return ADA_OK;
}

/* The CSR layout of the keep flags keep[h * s0 + qb * s1 + kb * s2] (nonzero = kept). */
static ada_status build_csr(ada_layout **out, const char *op, int32_t heads, int32_t nqb, int32_t nkb, int32_t block,
                            const uint8_t *keep, int64_t s0, int64_t s1, int64_t s2) {
  ada_layout *l;
  ada_status s = new_layout(&l, op, heads, nqb, nkb, block);
  if (s) return s;
  const int64_t rows = (int64_t)heads * nqb;
  /* row counts go to offsets[h * (nqb + 1) + qb + 1], then a running sum makes them absolute */
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const uint8_t *p = keep + (r / nqb) * s0 + (r % nqb) * s1;
    int64_t c = 0;
    for (int32_t kb = 0; kb < nkb; kb++) c += p[kb * s2] != 0;
    l->offsets[(r / nqb) * (nqb + 1) + r % nqb + 1] = c;
  }
  int64_t run = 0;
  for (int32_t h = 0; h < heads; h++) {
    int64_t *o = l->offsets + (int64_t)h * (nqb + 1);
    o[0] = run;
    for (int32_t qb = 1; qb <= nqb; qb++) o[qb] = run += o[qb];
  }
  l->nnz = run;
  if ((s = alloc_indices(l, op))) {
    ada_layout_free(l);
    return s;
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const uint8_t *p = keep + (r / nqb) * s0 + (r % nqb) * s1;
    int32_t *dst = l->indices + l->offsets[(r / nqb) * (nqb + 1) + r % nqb];
    for (int32_t kb = 0; kb < nkb; kb++)
      if (p[kb * s2]) *dst++ = kb;
  }
  *out = l;
  return ADA_OK;
}

ada_status ada_layout_full(ada_layout **out, int32_t heads, int32_t nqb, int32_t nkb, int32_t block) {
  ada_status s = check_dims("full", heads, nqb, nkb, block);
  if (s) return s;
  ada_layout *l;
  if ((s = new_layout(&l, "full", heads, nqb, nkb, block))) return s;
  for (int64_t h = 0; h < heads; h++)
    for (int64_t qb = 0; qb <= nqb; qb++) l->offsets[h * (nqb + 1) + qb] = (h * nqb + qb) * nkb;
  l->nnz = (int64_t)heads * nqb * nkb;
  if ((s = alloc_indices(l, "full"))) {
    ada_layout_free(l);
    return s;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < l->nnz; i++) l->indices[i] = (int32_t)(i % nkb);
  *out = l;
  return ADA_OK;
}

ada_status ada_layout_from_mask(ada_layout **out, const ada_tensor *mask, int32_t block) {
  const char *op = "from_mask";
  if (!mask) return ada_fail(ADA_EINVAL, "%s: mask is missing", op);
  if (mask->dtype != ADA_U8 || mask->ndim != 3)
    return ada_fail(ADA_EINVAL, "%s: mask must be a u8 tensor [H, nqb, nkb], got %s %s", op, ada_dtype_name(mask->dtype),
                    ada_chk_shape_str(mask));
  ada_status s;
  if ((s = ada_chk_cpu(op, mask)) || (s = check_dims(op, mask->shape[0], mask->shape[1], mask->shape[2], block)))
    return s;
  return build_csr(out, op, (int32_t)mask->shape[0], (int32_t)mask->shape[1], (int32_t)mask->shape[2], block,
                   ada_tensor_data(mask), mask->stride[0], mask->stride[1], mask->stride[2]);
}

ada_status ada_layout_to_mask(ada_tensor **out, const ada_layout *l) {
  if (!l) return ada_fail(ADA_EINVAL, "to_mask: layout is missing");
  int64_t shape[3] = {l->heads, l->nqb, l->nkb};
  ada_tensor *m;
  ada_status s = ada_tensor_full(&m, 3, shape, 0, ADA_U8, (ada_device){ADA_CPU, 0});
  if (s) return s;
  uint8_t *p = ada_tensor_data(m);
  const int64_t rows = (int64_t)l->heads * l->nqb;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const int64_t *o = l->offsets + (r / l->nqb) * (l->nqb + 1) + r % l->nqb;
    for (int64_t i = o[0]; i < o[1]; i++) p[r * l->nkb + l->indices[i]] = 1;
  }
  *out = m;
  return ADA_OK;
}

/* The first row of head h whose offsets do not continue the previous row (or head) and stay
 * within nnz, or whose indices are not strictly increasing within [0, nkb); -1 when none. */
static int64_t malformed_row(const ada_layout *l, int64_t h) {
  const int64_t *o = l->offsets + h * (l->nqb + 1);
  if (o[0] < 0 || o[0] != (h ? o[-1] : 0)) return 0;
  for (int64_t qb = 0; qb < l->nqb; qb++) {
    if (o[qb + 1] < o[qb] || o[qb + 1] > l->nnz || (h == l->heads - 1 && qb == l->nqb - 1 && o[qb + 1] != l->nnz))
      return qb;
    for (int64_t i = o[qb]; i < o[qb + 1]; i++)
      if (l->indices[i] < 0 || l->indices[i] >= l->nkb || (i > o[qb] && l->indices[i] <= l->indices[i - 1])) return qb;
  }
  return -1;
}

ada_status ada_layout_check(const ada_layout *l, const char *op, int32_t heads, int64_t sq, int64_t skv) {
  if (!l) return ada_fail(ADA_EINVAL, "%s: layout is missing", op);
  if (l->heads != heads)
    return ada_fail(ADA_EINVAL, "%s: layout has %d heads, the attention has %d", op, l->heads, heads);
  if (!ada_attn_block_ok(l->block) || sq < 1 || skv < 1 || l->nqb != (sq + l->block - 1) / l->block ||
      l->nkb != (skv + l->block - 1) / l->block)
    return ada_fail(ADA_EINVAL,
                    "%s: layout has %d x %d blocks of %d, attention over %lld queries and %lld keys needs %lld x %lld",
                    op, l->nqb, l->nkb, l->block, (long long)sq, (long long)skv,
                    (long long)((sq + l->block - 1) / l->block), (long long)((skv + l->block - 1) / l->block));
  return ADA_OK;
}

ada_status ada_layout_validate(const ada_layout *l, const char *op) {
  if (!l) return ada_fail(ADA_EINVAL, "%s: layout is missing", op);
  /* heads in parallel */
  const int64_t heads = l->heads;
  int64_t bad = heads;
#pragma omp parallel for schedule(static) reduction(min : bad)
  for (int64_t h = 0; h < heads; h++)
    if (malformed_row(l, h) >= 0 && h < bad) bad = h;
  if (bad < heads)
    return ada_fail(ADA_EINVAL,
                    "%s: layout row %lld of head %lld is malformed (offsets must be contiguous and key blocks "
                    "strictly increasing within [0, %d))",
                    op, (long long)malformed_row(l, bad), (long long)bad, l->nkb);
  return ADA_OK;
}

void ada_layout_density(const ada_layout *l, double *density) {
  const double per = (double)l->nqb * l->nkb;
  for (int64_t h = 0; h < l->heads; h++)
    density[h] = (double)(l->offsets[h * (l->nqb + 1) + l->nqb] - l->offsets[h * (l->nqb + 1)]) / per;
}

/* ---- mass ------------------------------------------------------------------------------- */

/* The mass as a contiguous f32 CPU view (*tmp owns a staged copy) after checking it: a float
 * tensor [H, nqb, nkb] (want[i] >= 0 fixes a size) on the CPU whose values are finite and >= 0. */
static ada_status stage_mass(const char *op, const ada_tensor *mass, const int64_t *want, int32_t block,
                             const float **m, ada_tensor **tmp) {
  ada_status s;
  *tmp = NULL;
  if ((s = ada_chk_float(op, "mass", mass)) || (s = ada_chk_shape(op, "mass", mass, 3, want)) ||
      (s = ada_chk_cpu(op, mass)) || (s = check_dims(op, mass->shape[0], mass->shape[1], mass->shape[2], block)))
    return s;
  const ada_tensor *use = mass;
  if (mass->dtype != ADA_F32 || !ada_tensor_is_contiguous(mass)) {
    if ((s = ada_tensor_to(tmp, mass, ADA_F32, mass->storage->device))) return s;
    use = *tmp;
  }
  const float *p = ada_tensor_data(use);
  const int64_t n = ada_tensor_numel(use);
  int64_t bad = n;
#pragma omp parallel for schedule(static) reduction(min : bad)
  for (int64_t i = 0; i < n; i++)
    if (!(p[i] >= 0 && p[i] <= FLT_MAX) && i < bad) bad = i;
  if (bad < n) {
    const int64_t nqb = mass->shape[1], nkb = mass->shape[2];
    s = ada_fail(ADA_EINVAL,
                 "%s: mass must be finite and >= 0, got %g at head %lld, query block %lld, key block %lld (counting from 1)",
                 op, (double)p[bad], (long long)(bad / (nqb * nkb) + 1), (long long)(bad / nkb % nqb + 1),
                 (long long)(bad % nkb + 1));
    ada_tensor_free(*tmp);
    *tmp = NULL;
    return s;
  }
  *m = p;
  return ADA_OK;
}

ada_status ada_layout_recall(const ada_layout *l, const ada_tensor *mass, double *recall) {
  if (!l) return ada_fail(ADA_EINVAL, "recall: layout is missing");
  const int64_t want[3] = {l->heads, l->nqb, l->nkb};
  const float *m;
  ada_tensor *tmp;
  ada_status s;
  if (on_device(mass)) {
    /* on the device (no finiteness check there) */
    if ((s = ada_chk_float("recall", "mass", mass)) || (s = ada_chk_shape("recall", "mass", mass, 3, want))) return s;
    const ada_backend *b = ada_backend_of(mass);
    if (b->ops.layout_recall) return b->ops.layout_recall(l, mass, recall);
    ada_tensor *host;
    if ((s = ada_tensor_to(&host, mass, ADA_F32, (ada_device){ADA_CPU, 0}))) return s;
    s = ada_layout_recall(l, host, recall);
    ada_tensor_free(host);
    return s;
  }
  s = stage_mass("recall", mass, want, l->block, &m, &tmp);
  if (s) return s;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < l->heads; h++) {
    double kept = 0, total = 0;
    for (int64_t qb = 0; qb < l->nqb; qb++) {
      const float *row = m + (h * l->nqb + qb) * l->nkb;
      const int64_t *o = l->offsets + h * (l->nqb + 1) + qb;
      for (int64_t kb = 0; kb < l->nkb; kb++) total += row[kb];
      for (int64_t i = o[0]; i < o[1]; i++) kept += row[l->indices[i]];
    }
    recall[h] = total > 0 ? kept / total : 1.0;
  }
  ada_tensor_free(tmp);
  return ADA_OK;
}

/* ---- selection ---------------------------------------------------------------------------- */

static ada_status check_force(const char *op, const ada_layout_force *f, int32_t nqb, int32_t nkb) {
  if (!f) return ADA_OK;
  if (f->n_cols < 0 || f->n_rows < 0 || (f->n_cols > 0 && !f->cols) || (f->n_rows > 0 && !f->rows))
    return ada_fail(ADA_EINVAL, "%s: force has %d column and %d row ranges but %s", op, f->n_cols, f->n_rows,
                    "their arrays are missing or the counts are negative");
  for (int32_t i = 0; i < f->n_cols; i++)
    if (f->cols[i][0] < 0 || f->cols[i][0] > f->cols[i][1] || f->cols[i][1] > nkb)
      return ada_fail(ADA_EINVAL, "%s: force.cols[%d] = [%d, %d) is not a range within [0, %d)", op, i, f->cols[i][0],
                      f->cols[i][1], nkb);
  for (int32_t i = 0; i < f->n_rows; i++)
    if (f->rows[i][0] < 0 || f->rows[i][0] > f->rows[i][1] || f->rows[i][1] > nqb)
      return ada_fail(ADA_EINVAL, "%s: force.rows[%d] = [%d, %d) is not a range within [0, %d)", op, i, f->rows[i][0],
                      f->rows[i][1], nqb);
  return ADA_OK;
}

/* Sets the forced flags of row qb (keep[0, nkb) zeroed first); returns how many. */
static int64_t force_row(const ada_layout_force *f, int32_t qb, int32_t nkb, uint8_t *keep) {
  memset(keep, 0, (size_t)nkb);
  if (!f) return 0;
  for (int32_t i = 0; i < f->n_rows; i++)
    if (qb >= f->rows[i][0] && qb < f->rows[i][1]) {
      memset(keep, 1, (size_t)nkb);
      return nkb;
    }
  for (int32_t i = 0; i < f->n_cols; i++) memset(keep + f->cols[i][0], 1, (size_t)(f->cols[i][1] - f->cols[i][0]));
  if (f->diagonal && qb < nkb) keep[qb] = 1;
  int64_t n = 0;
  for (int32_t kb = 0; kb < nkb; kb++) n += keep[kb];
  return n;
}

/* Rank key of a block: smaller is better (more mass, then lower index). Mass is >= 0, so its
 * bits order like its values (-0 is taken as 0). */
static inline uint64_t rank_key(float mass, uint32_t index) {
  uint32_t bits;
  memcpy(&bits, &mass, 4);
  if (mass == 0) bits = 0;
  return ((uint64_t)(UINT32_MAX - bits) << 32) | index;
}

static inline void swap_key(uint64_t *a, int64_t i, int64_t j) {
  uint64_t t = a[i];
  a[i] = a[j];
  a[j] = t;
}

static int cmp_key(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* Lomuto partition of a[lo, hi) around the median of three; returns the pivot's final place. */
static int64_t partition(uint64_t *a, int64_t lo, int64_t hi) {
  int64_t mid = lo + (hi - lo) / 2, last = hi - 1;
  if (a[mid] < a[lo]) swap_key(a, lo, mid);
  if (a[last] < a[lo]) swap_key(a, lo, last);
  if (a[mid] < a[last]) swap_key(a, mid, last);
  const uint64_t pv = a[last];
  int64_t i = lo;
  for (int64_t j = lo; j < last; j++)
    if (a[j] < pv) swap_key(a, i++, j);
  swap_key(a, i, last);
  return i;
}

/* Reorders the distinct keys[0, n) so that keys[0, m) are the m best, and returns m: the
 * smallest count whose weights reach need (weight of a key: w[low 32 bits], or 1 when w is
 * NULL); 0 when need <= 0, n when the weights never reach it. Average O(n). */
static int64_t select_best(uint64_t *keys, int64_t n, const float *w, double need) {
  if (need <= 0) return 0;
  int64_t lo = 0, hi = n; /* keys[0, lo) are taken; the answer lies in (lo, hi] */
  double acc = 0;         /* weight of keys[0, lo) */
  for (int depth = 0; hi - lo > 16 && depth < 64; depth++) {
    const int64_t p = partition(keys, lo, hi);
    double sum = (double)(p - lo);
    if (w) {
      sum = 0;
      for (int64_t i = lo; i < p; i++) sum += w[(uint32_t)keys[i]];
    }
    if (acc + sum >= need) {
      hi = p;
    } else {
      acc += sum + (w ? w[(uint32_t)keys[p]] : 1.0);
      if (acc >= need) return p + 1;
      lo = p + 1;
    }
  }
  qsort(keys + lo, (size_t)(hi - lo), sizeof *keys, cmp_key);
  for (int64_t i = lo; i < hi; i++) {
    acc += w ? w[(uint32_t)keys[i]] : 1.0;
    if (acc >= need) return i + 1;
  }
  return hi;
}

/* Keys of the blocks of m[0, n) not yet kept; returns their count. */
static int64_t rank_free(const float *m, const uint8_t *keep, int64_t n, uint64_t *keys) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; i++)
    if (!keep[i]) keys[c++] = rank_key(m[i], (uint32_t)i);
  return c;
}

static void keep_best(const uint64_t *keys, int64_t m, uint8_t *keep) {
  for (int64_t i = 0; i < m; i++) keep[(uint32_t)keys[i]] = 1;
}

/* Shared front of topk and threshold: checks, staged mass, per-thread key scratch of
 * `scratch` keys and the zeroed keep flags [H, nqb, nkb]. */
typedef struct select_ctx {
  const float *m;
  ada_tensor *tmp;
  int32_t heads, nqb, nkb;
  uint64_t *keys; /* [threads][scratch] */
  int64_t scratch;
  uint8_t *keep;
} select_ctx;

static void select_end(select_ctx *c) {
  ada_tensor_free(c->tmp);
  free(c->keys);
  free(c->keep);
}

static ada_status select_begin(select_ctx *c, const char *op, const ada_tensor *mass, const double *frac,
                               const char *frac_name, const ada_layout_force *force, int32_t block, bool per_head) {
  const int64_t any[3] = {-1, -1, -1};
  memset(c, 0, sizeof *c);
  if (!frac) return ada_fail(ADA_EINVAL, "%s: %s is missing", op, frac_name);
  ada_status s = stage_mass(op, mass, any, block, &c->m, &c->tmp);
  if (s) return s;
  c->heads = (int32_t)mass->shape[0];
  c->nqb = (int32_t)mass->shape[1];
  c->nkb = (int32_t)mass->shape[2];
  for (int32_t h = 0; h < c->heads && !s; h++)
    if (!(frac[h] >= 0 && frac[h] <= 1)) s = ada_fail(ADA_EINVAL, "%s: %s[%d] = %g is outside [0, 1]", op, frac_name, h, frac[h]);
  if (s || (s = check_force(op, force, c->nqb, c->nkb))) {
    select_end(c);
    return s;
  }
  c->scratch = per_head ? (int64_t)c->nqb * c->nkb : c->nkb;
  c->keys = malloc(sizeof(uint64_t) * (size_t)c->scratch * (size_t)omp_get_max_threads());
  c->keep = malloc((size_t)c->heads * (size_t)c->nqb * (size_t)c->nkb);
  if (!c->keys || !c->keep) {
    select_end(c);
    return ada_fail(ADA_ENOMEM, "%s: out of memory for the selection of %d x %d x %d blocks", op, c->heads, c->nqb, c->nkb);
  }
  return ADA_OK;
}

static ada_status select_finish(select_ctx *c, ada_layout **out, const char *op, int32_t block) {
  const int64_t per = (int64_t)c->nqb * c->nkb;
  ada_status s = build_csr(out, op, c->heads, c->nqb, c->nkb, block, c->keep, per, c->nkb, 1);
  select_end(c);
  return s;
}

/* A mass on another device: checks the arguments as the CPU path does, then selects there (its backend)
 * (mode 0: row-wise top-k, 1: threshold; per_head: the per-head top-k, which runs on the CPU),
 * or on a host copy when the device path does not take it. *done says whether it answered. */
static ada_status select_device(ada_layout **out, const char *op, const ada_tensor *mass, int32_t mode, bool per_head,
                             const double *frac, const char *frac_name, int32_t min_blocks, int32_t max_blocks,
                             const ada_layout_force *force, int32_t block, ada_tensor **host) {
  const int64_t any[3] = {-1, -1, -1};
  ada_status s;
  *host = NULL;
  if (!frac) return ada_fail(ADA_EINVAL, "%s: %s is missing", op, frac_name);
  if ((s = ada_chk_float(op, "mass", mass)) || (s = ada_chk_shape(op, "mass", mass, 3, any)) ||
      (s = check_dims(op, mass->shape[0], mass->shape[1], mass->shape[2], block)))
    return s;
  for (int64_t h = 0; h < mass->shape[0]; h++)
    if (!(frac[h] >= 0 && frac[h] <= 1))
      return ada_fail(ADA_EINVAL, "%s: %s[%d] = %g is outside [0, 1]", op, frac_name, (int)h, frac[h]);
  if ((s = check_force(op, force, (int32_t)mass->shape[1], (int32_t)mass->shape[2]))) return s;
  *out = NULL;
  const ada_backend *b = ada_backend_of(mass);
  if (!per_head && b->ops.layout_select &&
      (s = b->ops.layout_select(out, op, mass, mode, frac, min_blocks, max_blocks, force, block)))
    return s;
  if (*out) return ADA_OK;
  return ada_tensor_to(host, mass, ADA_F32, (ada_device){ADA_CPU, 0}); /* the caller selects on it */
}

ada_status ada_layout_topk(ada_layout **out, const ada_tensor *mass, const double *density, bool row_wise,
                           const ada_layout_force *force, int32_t block) {
  if (on_device(mass)) {
    ada_tensor *host;
    ada_status s = select_device(out, "topk", mass, 0, !row_wise, density, "density", 0, 0, force, block, &host);
    if (s || !host) return s;
    s = ada_layout_topk(out, host, density, row_wise, force, block);
    ada_tensor_free(host);
    return s;
  }
  select_ctx c;
  ada_status s = select_begin(&c, "topk", mass, density, "density", force, block, !row_wise);
  if (s) return s;
  const int32_t nqb = c.nqb, nkb = c.nkb;
  if (row_wise) {
    const int64_t rows = (int64_t)c.heads * nqb;
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; r++) {
      uint64_t *keys = c.keys + c.scratch * omp_get_thread_num();
      uint8_t *keep = c.keep + r * nkb;
      const float *m = c.m + r * nkb;
      const int64_t forced = force_row(force, (int32_t)(r % nqb), nkb, keep);
      int64_t k = (int64_t)floor(density[r / nqb] * nkb + 0.5);
      if (k < forced) k = forced;
      const int64_t n = rank_free(m, keep, nkb, keys);
      keep_best(keys, select_best(keys, n, NULL, (double)(k - forced)), keep);
    }
  } else {
    const int64_t per = (int64_t)nqb * nkb;
#pragma omp parallel for schedule(dynamic, 1)
    for (int32_t h = 0; h < c.heads; h++) {
      uint64_t *keys = c.keys + c.scratch * omp_get_thread_num();
      uint8_t *keep = c.keep + h * per;
      int64_t forced = 0;
      for (int32_t qb = 0; qb < nqb; qb++) forced += force_row(force, qb, nkb, keep + (int64_t)qb * nkb);
      int64_t k = (int64_t)floor(density[h] * (double)per + 0.5);
      if (k < forced) k = forced;
      const int64_t n = rank_free(c.m + h * per, keep, per, keys);
      keep_best(keys, select_best(keys, n, NULL, (double)(k - forced)), keep);
    }
  }
  return select_finish(&c, out, "topk", block);
}

/* min_blocks beyond nkb keep the whole row; forced blocks are kept even beyond max_blocks. */
ada_status ada_layout_threshold(ada_layout **out, const ada_tensor *mass, const double *recall, int32_t min_blocks,
                                int32_t max_blocks, const ada_layout_force *force, int32_t block) {
  const char *op = "threshold";
  if (min_blocks < 0) return ada_fail(ADA_EINVAL, "%s: min_blocks must be >= 0, got %d", op, min_blocks);
  if (max_blocks > 0 && max_blocks < min_blocks)
    return ada_fail(ADA_EINVAL, "%s: max_blocks = %d is below min_blocks = %d", op, max_blocks, min_blocks);
  if (on_device(mass)) {
    ada_tensor *host;
    ada_status s = select_device(out, op, mass, 1, false, recall, "recall", min_blocks, max_blocks, force, block, &host);
    if (s || !host) return s;
    s = ada_layout_threshold(out, host, recall, min_blocks, max_blocks, force, block);
    ada_tensor_free(host);
    return s;
  }
  select_ctx c;
  ada_status s = select_begin(&c, op, mass, recall, "recall", force, block, false);
  if (s) return s;
  const int32_t nqb = c.nqb, nkb = c.nkb;
  const int64_t rows = (int64_t)c.heads * nqb;
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t r = 0; r < rows; r++) {
    uint64_t *keys = c.keys + c.scratch * omp_get_thread_num();
    uint8_t *keep = c.keep + r * nkb;
    const float *m = c.m + r * nkb;
    const int64_t forced = force_row(force, (int32_t)(r % nqb), nkb, keep);
    double total = 0, kept = 0;
    for (int32_t kb = 0; kb < nkb; kb++) {
      total += m[kb];
      if (keep[kb]) kept += m[kb];
    }
    const int64_t n = rank_free(m, keep, nkb, keys);
    const int64_t got = select_best(keys, n, m, recall[r / nqb] * total - kept);
    int64_t want = got;
    if (want < min_blocks - forced) want = min_blocks - forced < n ? min_blocks - forced : n;
    if (max_blocks > 0 && want > max_blocks - forced) want = max_blocks > forced ? max_blocks - forced : 0;
    if (want > got) select_best(keys + got, n - got, NULL, (double)(want - got));
    else if (want < got) select_best(keys, got, NULL, (double)want);
    keep_best(keys, want, keep);
  }
  return select_finish(&c, out, op, block);
}

/* ---- messages ---------------------------------------------------------------------------- */

#define MSG_MAGIC 0x31594c41u /* "ALY1" */

typedef struct msg_header {
  uint32_t magic, width;
  int32_t heads, nqb, nkb, block;
  uint64_t nnz, total;
} msg_header;
_Static_assert(sizeof(msg_header) == ADA_LAYOUT_MSG_HEADER, "the message header is 40 bytes");

static uint32_t msg_width(int32_t nkb) { return nkb <= 65536 ? 2u : 4u; }

static int64_t head_nnz(const ada_layout *l, int32_t h) {
  const int64_t *o = l->offsets + (int64_t)h * (l->nqb + 1);
  return o[l->nqb] - o[0];
}

size_t ada_layout_msg_size(const ada_layout *l, const int32_t *heads, int32_t n) {
  size_t nnz = 0;
  for (int32_t j = 0; j < n; j++) nnz += (size_t)head_nnz(l, heads[j]);
  return ADA_LAYOUT_MSG_HEADER + (size_t)n * ((size_t)l->nqb + 1) * sizeof(uint64_t) + nnz * msg_width(l->nkb);
}

ada_status ada_layout_encode(const ada_layout *l, const int32_t *heads, int32_t n, void *buf, size_t cap, size_t *bytes) {
  const char *op = "layout encode";
  if (!l) return ada_fail(ADA_EINVAL, "%s: layout is missing", op);
  if (n < 1) return ada_fail(ADA_EINVAL, "%s: a message holds at least one head, got %d", op, n);
  for (int32_t j = 0; j < n; j++)
    if (heads[j] < 0 || heads[j] >= l->heads)
      return ada_fail(ADA_EINVAL, "%s: head %d is out of range 1..%d", op, heads[j] + 1, l->heads);
  size_t size = ada_layout_msg_size(l, heads, n);
  if (size > cap) return ada_fail(ADA_EINVAL, "%s: the message needs %zu bytes, the buffer has %zu", op, size, cap);
  const uint32_t w = msg_width(l->nkb);
  msg_header hd = {MSG_MAGIC, w, n, l->nqb, l->nkb, l->block, 0, size};
  char *p = (char *)buf + sizeof hd;
  uint64_t run = 0;
  for (int32_t j = 0; j < n; j++) {
    const int64_t *o = l->offsets + (int64_t)heads[j] * (l->nqb + 1);
    for (int32_t qb = 0; qb <= l->nqb; qb++, p += sizeof(uint64_t)) {
      uint64_t v = run + (uint64_t)(o[qb] - o[0]);
      memcpy(p, &v, sizeof v);
    }
    run += (uint64_t)(o[l->nqb] - o[0]);
  }
  hd.nnz = run;
  memcpy(buf, &hd, sizeof hd);
  for (int32_t j = 0; j < n; j++) {
    const int64_t *o = l->offsets + (int64_t)heads[j] * (l->nqb + 1);
    for (int64_t i = o[0]; i < o[l->nqb]; i++, p += w) {
      if (w == 2) {
        uint16_t v = (uint16_t)l->indices[i];
        memcpy(p, &v, 2);
      } else
        memcpy(p, &l->indices[i], 4);
    }
  }
  *bytes = size;
  return ADA_OK;
}

/* Checks the header of the message at p (avail bytes left) against the first one's sizes (first
 * NULL: this is the first). */
static ada_status msg_check_header(const msg_header *h, size_t at, size_t avail, const msg_header *first, const char *op) {
  if (h->magic != MSG_MAGIC)
    return ada_fail(ADA_EINVAL, "%s: the message at byte %zu is not a layout message (magic 0x%08x)", op, at, (unsigned)h->magic);
  ada_status s = check_dims(op, h->heads, h->nqb, h->nkb, h->block);
  if (s) return s;
  if (h->width != msg_width(h->nkb))
    return ada_fail(ADA_EINVAL, "%s: the message at byte %zu has %u-byte indices, %d key blocks need %u", op, at,
                    (unsigned)h->width, h->nkb, (unsigned)msg_width(h->nkb));
  if (first && (h->nqb != first->nqb || h->nkb != first->nkb || h->block != first->block))
    return ada_fail(ADA_EINVAL, "%s: the message at byte %zu has %d x %d blocks of %d, the first one %d x %d of %d", op, at,
                    h->nqb, h->nkb, h->block, first->nqb, first->nkb, first->block);
  /* sizes in 64 bits without overflow: heads, nqb < 2^31 and nqb * nkb < 2^32 */
  uint64_t offs = (uint64_t)h->heads * ((uint64_t)h->nqb + 1);
  uint64_t most = (uint64_t)h->heads * (uint64_t)h->nqb * (uint64_t)h->nkb;
  if (h->nnz > most)
    return ada_fail(ADA_EINVAL, "%s: the message at byte %zu claims %llu entries, more than its %d heads of %d x %d blocks hold",
                    op, at, (unsigned long long)h->nnz, h->heads, h->nqb, h->nkb);
  if (offs > avail / sizeof(uint64_t) || h->nnz > avail / h->width ||
      h->total != ADA_LAYOUT_MSG_HEADER + offs * sizeof(uint64_t) + h->nnz * h->width || h->total > avail)
    return ada_fail(ADA_EINVAL,
                    "%s: the message at byte %zu (%d heads, %d x %d blocks, %llu entries) says %llu bytes, needs %llu, "
                    "and %zu are left",
                    op, at, h->heads, h->nqb, h->nkb, (unsigned long long)h->nnz, (unsigned long long)h->total,
                    (offs > avail / sizeof(uint64_t) || h->nnz > avail / h->width)
                        ? (unsigned long long)UINT64_MAX
                        : (unsigned long long)(ADA_LAYOUT_MSG_HEADER + offs * sizeof(uint64_t) + h->nnz * h->width),
                    avail);
  return ADA_OK;
}

ada_status ada_layout_decode(ada_layout **out, const void *msg, size_t bytes, const char *op) {
  *out = NULL;
  const char *base = msg;
  msg_header first, h;
  size_t at = 0;
  int64_t heads = 0, nnz = 0;
  ada_status s;
  /* pass 1: the headers (sizes only) */
  while (at < bytes) {
    size_t avail = bytes - at;
    if (avail < sizeof h)
      return ada_fail(ADA_EINVAL, "%s: %zu bytes at byte %zu are too few for a layout message header (%d)", op, avail, at,
                      ADA_LAYOUT_MSG_HEADER);
    memcpy(&h, base + at, sizeof h);
    if ((s = msg_check_header(&h, at, avail, at ? &first : NULL, op))) return s;
    if (!at) first = h;
    heads += h.heads;
    nnz += (int64_t)h.nnz;
    if (heads > INT32_MAX) return ada_fail(ADA_EINVAL, "%s: the messages hold more than %d heads", op, INT32_MAX);
    at += (size_t)h.total;
  }
  if (!heads) return ada_fail(ADA_EINVAL, "%s: no message (0 bytes)", op);
  ada_layout *l;
  if ((s = new_layout(&l, op, (int32_t)heads, first.nqb, first.nkb, first.block))) return s;
  l->nnz = nnz;
  if ((s = alloc_indices(l, op))) {
    ada_layout_free(l);
    return s;
  }
  /* pass 2: offsets and indices, each checked as it is read */
  int64_t hbase = 0, ibase = 0;
  for (at = 0; at < bytes; at += (size_t)h.total) {
    memcpy(&h, base + at, sizeof h);
    const char *po = base + at + sizeof h;
    const char *pi = po + (size_t)h.heads * ((size_t)h.nqb + 1) * sizeof(uint64_t);
    uint64_t prev = 0;
    for (int64_t hh = 0; hh < h.heads; hh++) {
      int64_t *o = l->offsets + (hbase + hh) * (h.nqb + 1);
      for (int64_t qb = 0; qb <= h.nqb; qb++) {
        uint64_t v;
        memcpy(&v, po + ((size_t)hh * ((size_t)h.nqb + 1) + (size_t)qb) * sizeof v, sizeof v);
        bool bad = qb == 0 ? v != prev : (v < prev || v - prev > (uint64_t)h.nkb || v > h.nnz);
        if (!bad && hh == h.heads - 1 && qb == h.nqb && v != h.nnz) bad = true;
        if (bad) {
          ada_layout_free(l);
          return ada_fail(ADA_EINVAL,
                          "%s: the message at byte %zu: offset %lld of head %lld is %llu after %llu (offsets must start "
                          "at 0, grow by at most %d a row and end at nnz %llu)",
                          op, at, (long long)qb, (long long)hh + 1, (unsigned long long)v, (unsigned long long)prev, h.nkb,
                          (unsigned long long)h.nnz);
        }
        o[qb] = ibase + (int64_t)v;
        prev = v;
      }
    }
    for (int64_t hh = 0; hh < h.heads; hh++) {
      const int64_t *o = l->offsets + (hbase + hh) * (h.nqb + 1);
      for (int64_t qb = 0; qb < h.nqb; qb++)
        for (int64_t i = o[qb]; i < o[qb + 1]; i++) {
          const char *q = pi + (size_t)(i - ibase) * h.width;
          int64_t k;
          if (h.width == 2) {
            uint16_t v;
            memcpy(&v, q, 2);
            k = v;
          } else {
            int32_t v;
            memcpy(&v, q, 4);
            k = v;
          }
          if (k < 0 || k >= h.nkb || (i > o[qb] && k <= l->indices[i - 1])) {
            ada_layout_free(l);
            return ada_fail(ADA_EINVAL,
                            "%s: the message at byte %zu: head %lld, row %lld keeps key block %lld (key blocks must be "
                            "strictly increasing within [0, %d))",
                            op, at, (long long)hh + 1, (long long)qb + 1, (long long)k, h.nkb);
          }
          l->indices[i] = (int32_t)k;
        }
    }
    hbase += h.heads;
    ibase += (int64_t)h.nnz;
  }
  *out = l;
  return ADA_OK;
}

ada_status ada_layout_pick(ada_layout **out, const ada_layout *const *parts, int32_t n_parts, const int32_t *part,
                           const int32_t *head, int32_t n, const char *op) {
  *out = NULL;
  if (n < 1 || n_parts < 1) return ada_fail(ADA_EINVAL, "%s: pick %d heads of %d layouts (at least one of each)", op, n, n_parts);
  const ada_layout *a = parts[0];
  if (!a) return ada_fail(ADA_EINVAL, "%s: layout 1 is missing", op);
  for (int32_t p = 0; p < n_parts; p++)
    if (!parts[p] || parts[p]->nqb != a->nqb || parts[p]->nkb != a->nkb || parts[p]->block != a->block)
      return ada_fail(ADA_EINVAL, "%s: layout %d is missing or differs in blocks from the first (%d x %d of %d)", op, p + 1,
                      a->nqb, a->nkb, a->block);
  int64_t nnz = 0;
  for (int32_t j = 0; j < n; j++) {
    if (part[j] < 0 || part[j] >= n_parts || head[j] < 0 || head[j] >= parts[part[j]]->heads)
      return ada_fail(ADA_EINVAL, "%s: entry %d picks head %d of layout %d, out of range", op, j + 1, head[j] + 1, part[j] + 1);
    nnz += head_nnz(parts[part[j]], head[j]);
  }
  ada_layout *l;
  ada_status s = new_layout(&l, op, n, a->nqb, a->nkb, a->block);
  if (s) return s;
  l->nnz = nnz;
  if ((s = alloc_indices(l, op))) {
    ada_layout_free(l);
    return s;
  }
  int64_t run = 0;
  for (int32_t j = 0; j < n; j++) {
    const ada_layout *src = parts[part[j]];
    const int64_t *o = src->offsets + (int64_t)head[j] * (src->nqb + 1);
    int64_t *d = l->offsets + (int64_t)j * (a->nqb + 1);
    for (int32_t qb = 0; qb <= a->nqb; qb++) d[qb] = run + (o[qb] - o[0]);
    memcpy(l->indices + run, src->indices + o[0], sizeof(int32_t) * (size_t)(o[a->nqb] - o[0]));
    run += o[a->nqb] - o[0];
  }
  *out = l;
  return ADA_OK;
}
