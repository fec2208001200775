/* attention.c: the CPU attention kernels (see cpu_attn.h). A task is one (head, query tile):
 * its queries are scaled and stored transposed in panels of 16 rows, once; for each key block the
 * key and value rows are copied to scratch, the scores come out transposed, st [key][query row],
 * from a register-tiled loop over contiguous panel rows and broadcast key elements; the online
 * softmax (running max m, running sum l) runs across query rows (contiguous), and acc [row][D]
 * += P V from a register-tiled loop over contiguous value rows. Block mass reuses the score tiles. */
#include "cpu_attn.h"
#include "stage.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* The micro-kernels work on 8-float vectors (GCC vector extensions) over register tiles of CB
 * columns by KR keys (scores) or RB query rows (P V). On x86-64 the hot functions are compiled for
 * AVX-512, AVX2+FMA and the baseline, chosen at load time; there a*b + c may contract to an FMA. */
typedef float vf __attribute__((vector_size(32)));
enum { VW = 8, RB = 4, KR = 6, CB = 2 * VW };
#define VLOAD(v, p) memcpy(&(v), (p), sizeof(vf))
#define VSTORE(p, v) memcpy((p), &(v), sizeof(vf))
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HOT __attribute__((optimize("fp-contract=fast"), target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#endif

/* exp of 8 floats: n = round(x log2 e), r = x - n ln 2 (two-part ln 2), e^r by its degree-6
 * Taylor polynomial (|r| <= ln 2 / 2: relative error about 1.2e-7), times 2^n through the
 * exponent bits. x < -87.33 gives 0 (expf's denormals there, below 1.2e-38, flush to 0), x >
 * 88.72 gives +inf, NaN stays NaN; so exp(-inf) = 0 as the online softmax needs. Written with
 * vector extensions so that each target_clones variant vectorizes it (glibc's expf is scalar). */
typedef int32_t vi __attribute__((vector_size(32)));
#define VSEL(mask, a, b) ((vf)(((mask) & (vi)(a)) | (~(mask) & (vi)(b))))
/* yp[0..8) = exp(xp[0..8)); inlined into the HOT functions, so compiled for each of their targets
 * (pointers, not vector values, cross the call: no vector ABI on the baseline target). */
static inline __attribute__((always_inline)) void vexp8(float *yp, const float *xp) {
  vf x;
  VLOAD(x, xp);
  const vf zero = {0}, inf = zero + INFINITY;
  const vf lo = zero - 87.33654f, hi = zero + 88.72283f;
  vf xc = VSEL(x < lo, lo, x);
  xc = VSEL(xc > hi, hi, xc);
  const vf shift = zero + 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
  const vf n = (xc * 1.44269504088896341f + shift) - shift;
  const vf r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
  vf p = zero + (1.0f / 720.0f);
  p = p * r + (1.0f / 120.0f);
  p = p * r + (1.0f / 24.0f);
  p = p * r + (1.0f / 6.0f);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const vi ni = __builtin_convertvector(n, vi); /* -126 .. 128 */
  const vi h1 = ni >> 1, h2 = ni - h1;            /* 2^n as 2^h1 * 2^h2, both normal */
  const vf s1 = (vf)((h1 + 127) << 23), s2 = (vf)((h2 + 127) << 23);
  vf y = p * s1 * s2;
  y = VSEL(x < lo, zero, y);
  y = VSEL(x > hi, inf, y);
  y = VSEL(x != x, x, y);
  VSTORE(yp, y);
}

/* exp of n floats of p in place (a partial last vector through a padded copy). */
static inline __attribute__((always_inline)) void vexp_n(float *p, int32_t n) {
  int32_t i = 0;
  for (; i + VW <= n; i += VW) vexp8(p + i, p + i);
  if (i < n) {
    float t[VW] = {0};
    memcpy(t, p + i, sizeof(float) * (size_t)(n - i));
    vexp8(t, t);
    memcpy(p + i, t, sizeof(float) * (size_t)(n - i));
  }
}

/* Per-thread scratch for query tiles of BQ rows and key blocks of BK keys:
 *   qt [BQ][D] the scaled queries in transposed panels (load_qt);
 *   kb, vb [BK + KR][ldkv] the key and value rows of a block (copy_rows);
 *   st [BK + KR][BQ] the scores of a block, st[j * BQ + r] for key j and query row r, then the
 *     probabilities;
 *   acc [BQ][D] output accumulators; per query row: m running max, l running sum, mn new max,
 *     rs the block's row sums. */
typedef struct scratch {
  float *qt, *kb, *vb, *st, *acc, *m, *l, *mn, *rs;
  int32_t ldkv;
} scratch;

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

static size_t pad16(size_t n) { return (n + 15) & ~(size_t)15; }

/* Row stride of the copied key and value rows: D plus one line of 16 floats, so that the rows of a
 * block spread over the sets of the L1 cache whatever the input's row stride. */
static int32_t kv_stride(int32_t dim) { return (int32_t)pad16((size_t)dim) + 16; }

static size_t scratch_floats(int32_t bq, int32_t bk, int32_t dim) {
  return 2 * pad16((size_t)bq * (size_t)dim) + 2 * (size_t)(bk + KR) * (size_t)kv_stride(dim) +
         pad16((size_t)(bk + KR) * (size_t)bq) + 4 * pad16((size_t)bq);
}

static scratch scratch_at(float *base, int32_t bq, int32_t bk, int32_t dim) {
  const size_t qd = pad16((size_t)bq * (size_t)dim), q = pad16((size_t)bq);
  scratch w;
  w.ldkv = kv_stride(dim);
  w.qt = base;
  w.acc = w.qt + qd;
  w.kb = w.acc + qd;
  w.vb = w.kb + (size_t)(bk + KR) * (size_t)w.ldkv;
  w.st = w.vb + (size_t)(bk + KR) * (size_t)w.ldkv;
  w.m = w.st + pad16((size_t)(bk + KR) * (size_t)bq);
  w.l = w.m + q;
  w.mn = w.l + q;
  w.rs = w.mn + q;
  return w;
}

/* dst[j * ld + d] = src[j * rs + d] for rows j < n and d < D; rows n..(n rounded up to KR)-1 zero. */
static void copy_rows(const float *src, int64_t rs, int32_t n, int32_t D, int32_t ld, float *dst) {
  for (int32_t j = 0; j < n; j++) memcpy(dst + (size_t)j * ld, src + j * rs, sizeof(float) * (size_t)D);
  for (int32_t j = n; j % KR; j++) memset(dst + (size_t)j * ld, 0, sizeof(float) * (size_t)D);
}

/* The scaled queries q[i0 + r, h] * scale, r < br, transposed into panels of CB rows:
 * qt[(r / CB) * D * CB + d * CB + r % CB]; rows br..brp-1 are zero. */
static void load_qt(const ada_cpu_qkv *a, int32_t h, int64_t i0, int32_t br, int32_t brp, float *qt) {
  const int32_t D = a->dim;
  memset(qt, 0, sizeof(float) * (size_t)brp * (size_t)D);
  for (int32_t r = 0; r < br; r++) {
    const float *src = a->q + (i0 + r) * a->q_rs + (int64_t)h * a->q_hs;
    float *dst = qt + (size_t)(r / CB) * D * CB + r % CB;
    for (int32_t d = 0; d < D; d++) dst[(size_t)d * CB] = src[d] * a->scale;
  }
}

/* st[j * ld + r] = k[j * rs] . q_r for keys j < bc (rounded up to KR: the rows past bc are zero)
 * and query rows r < brp (a multiple of CB), q_r from the panels of load_qt: tiles of KR keys by
 * CB rows, each d step one contiguous piece of a panel times KR broadcast key elements; a panel
 * stays in L1 while the keys go by. */
HOT static void scores(const float *k, int64_t rs, int32_t bc, const float *qt, int32_t brp, int32_t D, int32_t ld,
                       float *st) {
  for (int32_t r = 0; r < brp; r += CB) {
    const float *panel = qt + (size_t)r * D;
    for (int32_t j = 0; j < bc; j += KR) {
      const float *k0 = k + j * rs, *k1 = k0 + rs, *k2 = k1 + rs, *k3 = k2 + rs, *k4 = k3 + rs, *k5 = k4 + rs;
      vf c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0},
         c50 = {0}, c51 = {0}, q0, q1;
      const float *qp = panel;
      for (int32_t d = 0; d < D; d++, qp += CB) {
        VLOAD(q0, qp);
        VLOAD(q1, qp + VW);
        c00 += k0[d] * q0;
        c01 += k0[d] * q1;
        c10 += k1[d] * q0;
        c11 += k1[d] * q1;
        c20 += k2[d] * q0;
        c21 += k2[d] * q1;
        c30 += k3[d] * q0;
        c31 += k3[d] * q1;
        c40 += k4[d] * q0;
        c41 += k4[d] * q1;
        c50 += k5[d] * q0;
        c51 += k5[d] * q1;
      }
      float *o = st + (size_t)j * ld + r;
      VSTORE(o, c00);
      VSTORE(o + VW, c01);
      VSTORE(o + ld, c10);
      VSTORE(o + ld + VW, c11);
      VSTORE(o + 2 * ld, c20);
      VSTORE(o + 2 * ld + VW, c21);
      VSTORE(o + 3 * ld, c30);
      VSTORE(o + 3 * ld + VW, c31);
      VSTORE(o + 4 * ld, c40);
      VSTORE(o + 4 * ld + VW, c41);
      VSTORE(o + 5 * ld, c50);
      VSTORE(o + 5 * ld + VW, c51);
    }
  }
}

/* acc[r] += sum_j pt[j * ld + r] * v[j * rs] for query rows r < brp (a multiple of RB) and keys
 * j < bc: tiles of RB rows by CB columns of acc, each j step one contiguous piece of a value row
 * times RB broadcast probabilities; the CB columns of the value block stay in L1 while the rows
 * of acc go by. A scalar loop takes the last D % CB columns. */
HOT static void accumulate_pv(const float *pt, int32_t ld, const float *v, int64_t rs, int32_t brp, int32_t bc,
                              int32_t D, float *acc) {
  const int32_t dv = D / CB * CB;
  for (int32_t d = 0; d < dv; d += CB) {
    for (int32_t r = 0; r < brp; r += RB) {
      float *a0 = acc + (size_t)r * D + d, *a1 = a0 + D, *a2 = a1 + D, *a3 = a2 + D;
      vf c00, c01, c10, c11, c20, c21, c30, c31, v0, v1;
      VLOAD(c00, a0);
      VLOAD(c01, a0 + VW);
      VLOAD(c10, a1);
      VLOAD(c11, a1 + VW);
      VLOAD(c20, a2);
      VLOAD(c21, a2 + VW);
      VLOAD(c30, a3);
      VLOAD(c31, a3 + VW);
      const float *vp = v + d, *p = pt + r;
      for (int32_t j = 0; j < bc; j++, vp += rs, p += ld) {
        VLOAD(v0, vp);
        VLOAD(v1, vp + VW);
        c00 += p[0] * v0;
        c01 += p[0] * v1;
        c10 += p[1] * v0;
        c11 += p[1] * v1;
        c20 += p[2] * v0;
        c21 += p[2] * v1;
        c30 += p[3] * v0;
        c31 += p[3] * v1;
      }
      VSTORE(a0, c00);
      VSTORE(a0 + VW, c01);
      VSTORE(a1, c10);
      VSTORE(a1 + VW, c11);
      VSTORE(a2, c20);
      VSTORE(a2 + VW, c21);
      VSTORE(a3, c30);
      VSTORE(a3 + VW, c31);
    }
  }
  for (int32_t d = dv; d < D; d++) {
    for (int32_t r = 0; r < brp; r++) {
      float c = acc[(size_t)r * D + d];
      for (int32_t j = 0; j < bc; j++) c += pt[(size_t)j * ld + r] * v[j * rs + d];
      acc[(size_t)r * D + d] = c;
    }
  }
}

/* One online-softmax step for query rows r < br over the scores st of bc keys: mn = max(m, the
 * block's max); st = exp(st - mn); rs = the block's row sums; l = l * exp(m - mn) + rs, acc rows
 * scaled by exp(m - mn) (0 on the first block, where m = -inf); m = mn. */
HOT static void softmax_step(float *st, int32_t ld, int32_t bc, int32_t br, int32_t D, float *m, float *l, float *mn,
                             float *rs, float *acc) {
  for (int32_t r = 0; r < br; r++) {
    mn[r] = m[r];
    rs[r] = 0;
  }
  for (int32_t j = 0; j < bc; j++) {
    const float *s = st + (size_t)j * ld;
    for (int32_t r = 0; r < br; r++) mn[r] = s[r] > mn[r] ? s[r] : mn[r];
  }
  for (int32_t j = 0; j < bc; j++) {
    float *s = st + (size_t)j * ld;
    for (int32_t r = 0; r < br; r++) s[r] -= mn[r];
    vexp_n(s, br);
    for (int32_t r = 0; r < br; r++) rs[r] += s[r];
  }
  for (int32_t r = 0; r < br; r++) {
    const float alpha = expf(m[r] - mn[r]);
    l[r] = l[r] * alpha + rs[r];
    m[r] = mn[r];
    if (alpha != 1.0f) {
      float *o = acc + (size_t)r * D;
      for (int32_t d = 0; d < D; d++) o[d] *= alpha;
    }
  }
}

/* sum over query rows r < br and keys j < bc of exp(st[j * ld + r] - lse[r]); rs is scratch. */
HOT static double block_sum(const float *st, int32_t ld, int32_t bc, int32_t br, const float *lse, float *rs) {
  for (int32_t r = 0; r < br; r++) rs[r] = 0;
  float t[VW];
  for (int32_t j = 0; j < bc; j++) {
    const float *s = st + (size_t)j * ld;
    int32_t r0 = 0;
    for (; r0 + VW <= br; r0 += VW) {
      vf a, b, c;
      VLOAD(a, s + r0);
      VLOAD(b, lse + r0);
      a -= b;
      VSTORE(t, a);
      vexp8(t, t);
      VLOAD(a, t);
      VLOAD(c, rs + r0);
      c += a;
      VSTORE(rs + r0, c);
    }
    if (r0 < br) {
      const int32_t n = br - r0;
      for (int32_t i = 0; i < VW; i++) t[i] = i < n ? s[r0 + i] - lse[r0 + i] : -INFINITY;
      vexp8(t, t);
      for (int32_t i = 0; i < n; i++) rs[r0 + i] += t[i];
    }
  }
  double sum = 0;
  for (int32_t r = 0; r < br; r++) sum += rs[r];
  return sum;
}

/* Rows, padded rows and block counts of a task. */
typedef struct tile {
  int64_t i0, nqb, nkb, nkv;
  int32_t br, brp;
} tile;

static tile tile_of(const ada_cpu_qkv *a, int32_t bq, int32_t bk, int64_t qb) {
  tile t;
  t.i0 = qb * bq;
  t.nqb = cdiv(a->sq, bq);
  t.nkb = cdiv(a->skv, bk);
  t.nkv = cdiv(a->kv_valid, bk);
  t.br = (int32_t)(a->sq - t.i0 < bq ? a->sq - t.i0 : bq);
  t.brp = (t.br + CB - 1) / CB * CB;
  return t;
}

/* Keys of key block kb that are below kv_valid. */
static int32_t keys_in(const ada_cpu_qkv *a, int32_t bk, int64_t kb) {
  const int64_t left = a->kv_valid - kb * bk;
  return (int32_t)(left < bk ? left : bk);
}

/* One (head h, query tile qb) task of ada_cpu_attention. */
static void attention_task(const ada_cpu_qkv *a, int32_t bq, int32_t bk, const int64_t *offsets,
                           const int32_t *indices, const float *lse_cached, float *out, float *lse, float *mass,
                           int32_t h, int64_t qb, const scratch *w) {
  const int32_t D = a->dim;
  const tile t = tile_of(a, bq, bk, qb);
  load_qt(a, h, t.i0, t.br, t.brp, w->qt);
  memset(w->acc, 0, sizeof(float) * (size_t)t.brp * (size_t)D);
  for (int32_t r = 0; r < t.br; r++) {
    w->m[r] = -INFINITY;
    w->l[r] = 0;
  }
  float *mrow = mass ? mass + ((int64_t)h * t.nqb + qb) * t.nkb : NULL;
  if (mrow) memset(mrow, 0, sizeof(float) * (size_t)t.nkb);
  const float *lc = lse_cached ? lse_cached + (int64_t)h * a->sq + t.i0 : NULL;

  const int32_t *list = NULL;
  int64_t n = t.nkv;
  if (offsets) {
    const int64_t *off = offsets + (int64_t)h * (t.nqb + 1) + qb;
    list = indices + off[0];
    n = off[1] - off[0];
  }
  for (int64_t i = 0; i < n; i++) {
    const int64_t kb = list ? list[i] : i;
    if (kb >= t.nkv) break; /* indices increase: the rest lies past kv_valid */
    const int32_t bc = keys_in(a, bk, kb);
    const int64_t j0 = kb * bk;
    copy_rows(a->k + j0 * a->k_rs + (int64_t)h * a->k_hs, a->k_rs, bc, D, w->ldkv, w->kb);
    copy_rows(a->v + j0 * a->v_rs + (int64_t)h * a->v_hs, a->v_rs, bc, D, w->ldkv, w->vb);
    scores(w->kb, w->ldkv, bc, w->qt, t.brp, D, bq, w->st);
    softmax_step(w->st, bq, bc, t.br, D, w->m, w->l, w->mn, w->rs, w->acc);
    accumulate_pv(w->st, bq, w->vb, w->ldkv, t.brp, bc, D, w->acc);
    if (mrow) {
      /* sum_j exp(s_j - lse_cached) = rs * exp(m - lse_cached), in double against overflow */
      double msum = 0;
      for (int32_t r = 0; r < t.br; r++)
        if (w->rs[r] > 0) msum += (double)w->rs[r] * exp((double)w->m[r] - (double)lc[r]);
      mrow[kb] = (float)(msum / t.br);
    }
  }

  for (int32_t r = 0; r < t.br; r++) {
    const float l = w->l[r], inv = l > 0 ? 1.0f / l : 0.0f;
    float *o = out + ((t.i0 + r) * a->heads + h) * D;
    const float *c = w->acc + (size_t)r * D;
    for (int32_t d = 0; d < D; d++) o[d] = c[d] * inv;
    lse[(int64_t)h * a->sq + t.i0 + r] = l > 0 ? w->m[r] + logf(l) : -INFINITY;
  }
}

/* One (head h, query block qb) task of ada_cpu_block_mass. */
static void mass_task(const ada_cpu_qkv *a, int32_t B, const float *lse, float *mass, int32_t h, int64_t qb,
                      const scratch *w) {
  const tile t = tile_of(a, B, B, qb);
  load_qt(a, h, t.i0, t.br, t.brp, w->qt);
  float *mrow = mass + ((int64_t)h * t.nqb + qb) * t.nkb;
  const float *lr = lse + (int64_t)h * a->sq + t.i0;
  for (int64_t kb = 0; kb < t.nkb; kb++) {
    if (kb >= t.nkv) {
      mrow[kb] = 0;
      continue;
    }
    const int32_t bc = keys_in(a, B, kb);
    copy_rows(a->k + kb * B * a->k_rs + (int64_t)h * a->k_hs, a->k_rs, bc, a->dim, w->ldkv, w->kb);
    scores(w->kb, w->ldkv, bc, w->qt, t.brp, a->dim, B, w->st);
    mrow[kb] = (float)(block_sum(w->st, B, bc, t.br, lr, w->rs) / t.br);
  }
}

static int32_t max_threads(void) {
#ifdef _OPENMP
  return (int32_t)omp_get_max_threads();
#else
  return 1;
#endif
}

static int32_t thread_num(void) {
#ifdef _OPENMP
  return (int32_t)omp_get_thread_num();
#else
  return 0;
#endif
}

/* Scratch for every thread of the next parallel region, or NULL (the error recorded). */
static float *scratch_alloc(const char *op, size_t per) {
  const size_t bytes = sizeof(float) * per * (size_t)max_threads();
  float *ws = aligned_alloc(64, bytes);
  if (!ws) ada_fail(ADA_ENOMEM, "%s: cannot allocate %zu bytes of CPU scratch", op, bytes);
  return ws;
}

ada_status ada_cpu_attention(const ada_cpu_qkv *a, int32_t qblock, int32_t kblock, const int64_t *offsets,
                             const int32_t *indices, const float *lse_cached, float *out, float *lse, float *mass) {
  const size_t per = scratch_floats(qblock, kblock, a->dim);
  float *ws = scratch_alloc("attention", per);
  if (!ws) return ADA_ENOMEM;
  const int64_t nqb = cdiv(a->sq, qblock), ntask = (int64_t)a->heads * nqb;
#pragma omp parallel for schedule(dynamic)
  for (int64_t t = 0; t < ntask; t++) {
    const scratch w = scratch_at(ws + per * (size_t)thread_num(), qblock, kblock, a->dim);
    attention_task(a, qblock, kblock, offsets, indices, lse_cached, out, lse, mass, (int32_t)(t / nqb), t % nqb, &w);
  }
  free(ws);
  return ADA_OK;
}

ada_status ada_cpu_block_mass(const ada_cpu_qkv *a, int32_t block, const float *lse, float *mass) {
  const size_t per = scratch_floats(block, block, a->dim);
  float *ws = scratch_alloc("block_mass", per);
  if (!ws) return ADA_ENOMEM;
  const int64_t nqb = cdiv(a->sq, block), ntask = (int64_t)a->heads * nqb;
#pragma omp parallel for schedule(dynamic)
  for (int64_t t = 0; t < ntask; t++) {
    const scratch w = scratch_at(ws + per * (size_t)thread_num(), block, block, a->dim);
    mass_task(a, block, lse, mass, (int32_t)(t / nqb), t % nqb, &w);
  }
  free(ws);
  return ADA_OK;
}

/* ---- the op entries (backend.h): plan, f32 staging, finiteness of a given lse ----------------- */

ada_status ada_cpu_attention_plan(const ada_attn_call *c, ada_attn_plan *out) {
  if (c->family && strcmp(c->family, "cpu") != 0)
    return ada_fail(ADA_EUNSUPPORTED, "%s: family %s: the cpu backend has the kernel family cpu only", c->op,
                    c->family);
  if (c->variant && c->variant[0])
    return ada_fail(ADA_EUNSUPPORTED, "%s: variant %s: the cpu kernel family has no variants", c->op, c->variant);
  memset(out, 0, sizeof *out);
  strcpy(out->family, "cpu");
  strcpy(out->schedule, "natural");
  out->dim = (int32_t)c->q->shape[2];
  /* Dense attention runs query tiles of 128 rows against key blocks of 64: the same row results
   * as sparse attention over a full layout of blocks of 64, with half the key and value traffic.
   * The others run blocks x blocks (the layout's, or the mass block). */
  out->tile_rows = c->mode == ADA_ATTN_DENSE ? 128 : c->block;
  out->tile_keys = c->mode == ADA_ATTN_DENSE ? 64 : c->block;
  return ADA_OK;
}

static ada_status check_finite(const char *op, const char *arg, const ada_tensor *orig, const ada_tensor *f32) {
  const float *x = ada_tensor_data(f32);
  const int64_t n = ada_tensor_numel(f32);
  int64_t bad = 0;
  float first = 0;
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(x[i]) && !bad++) first = x[i];
  if (!bad) return ADA_OK;
  char shape[96];
  ada_shape_format(orig->ndim, orig->shape, shape, sizeof shape);
  return ada_fail(ADA_EINVAL, "%s: %s %s must be finite, got %lld non-finite values (the first is %g)", op, arg, shape,
                  (long long)bad, (double)first);
}

/* f32 views of the inputs (q, k, v, lse_in; NULL entries skip) with a contiguous last dimension;
 * lse_in fully contiguous. Temporaries go to tmp[] (free with release()). */
typedef struct staged {
  const ada_tensor *t[4];
  ada_tensor *tmp[4];
} staged;

static void release(staged *st) {
  for (int i = 0; i < 4; i++) ada_tensor_free(st->tmp[i]);
}

static ada_status stage(staged *st, const ada_attn_call *c) {
  const ada_tensor *in[4] = {c->q, c->k, c->v, c->lse_in};
  for (int i = 0; i < 4; i++) {
    st->t[i] = NULL;
    st->tmp[i] = NULL;
  }
  for (int i = 0; i < 4; i++) {
    if (!in[i]) continue;
    ada_status s = ada_cpu_f32_in(in[i], i == 3, &st->t[i], &st->tmp[i]);
    if (s) {
      release(st);
      return s;
    }
  }
  if (c->lse_in) {
    ada_status s = check_finite(c->op, c->mode == ADA_ATTN_MASS ? "lse" : "lse_cached", c->lse_in, st->t[3]);
    if (s) {
      release(st);
      return s;
    }
  }
  return ADA_OK;
}

static ada_cpu_qkv kernel_args(const staged *st, const ada_attn_call *c) {
  const ada_tensor *q = st->t[0], *k = st->t[1], *v = st->t[2];
  ada_cpu_qkv a;
  a.q = ada_tensor_data(q);
  a.k = ada_tensor_data(k);
  a.v = v ? ada_tensor_data(v) : NULL;
  a.q_rs = q->stride[0];
  a.q_hs = q->stride[1];
  a.k_rs = k->stride[0];
  a.k_hs = k->stride[1];
  a.v_rs = v ? v->stride[0] : 0;
  a.v_hs = v ? v->stride[1] : 0;
  a.sq = q->shape[0];
  a.skv = k->shape[0];
  a.kv_valid = c->kv_valid;
  a.heads = (int32_t)q->shape[1];
  a.dim = (int32_t)q->shape[2];
  a.scale = c->scale;
  return a;
}

ada_status ada_cpu_attention_op(const ada_attn_call *c) {
  ada_attn_plan plan;
  ada_status s = ada_cpu_attention_plan(c, &plan);
  if (s) return s;
  staged st;
  if ((s = stage(&st, c))) return s;
  const ada_cpu_qkv a = kernel_args(&st, c);
  if (c->mode == ADA_ATTN_MASS) {
    s = ada_cpu_block_mass(&a, plan.tile_keys, ada_tensor_data(st.t[3]), ada_tensor_data(c->mass));
    release(&st);
    return s;
  }
  ada_tensor *obuf, *otmp;
  if ((s = ada_cpu_f32_out(c->out, &obuf, &otmp))) {
    release(&st);
    return s;
  }
  const ada_layout *l = c->layout;
  s = ada_cpu_attention(&a, plan.tile_rows, plan.tile_keys, l ? l->offsets : NULL, l ? l->indices : NULL,
                        c->lse_in ? ada_tensor_data(st.t[3]) : NULL, ada_tensor_data(obuf), ada_tensor_data(c->lse),
                        c->mass ? ada_tensor_data(c->mass) : NULL);
  release(&st);
  if (s) {
    ada_tensor_free(otmp);
    return s;
  }
  return ada_cpu_f32_out_done(c->out, otmp);
}
