/* gemm.c: the CPU f32 GEMM behind linear and matmul. BLIS-style loops: column blocks of NC,
 * depth blocks of KC whose B panel is packed once (shared), row blocks of mc whose A block
 * each thread packs into its own buffer, and a 6x16 register-tile micro-kernel: AVX2+FMA
 * intrinsics when the CPU has them (checked at run time), else portable C with GCC vector
 * extensions. Edge tiles run the same kernel on zero-padded panels, and the depth is always
 * summed in the same KC blocks, so every output element gets the same arithmetic whatever the
 * thread count or block split. */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cpu.h"
#include "cpu_nn.h"

enum { MR = 6, NR = 16, KC = 256, MC = 144, NC = 4080 };

/* Runs one MR x NR tile over depth kc: t = a panel [kc, MR] . b panel [kc, NR] (both packed
 * k-major), then c [MR, NR] (row stride ldc) = t (+ bias [NR] when non-NULL) if first, else
 * c += t. */
typedef void (*micro_kernel)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int first,
                             const float *bias);

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Portable kernel: GCC vector extensions of 4 floats (SSE2, NEON), the tile in two 6x8 halves so
 * the accumulators fit in 16 registers. */
typedef float v4f __attribute__((vector_size(16)));

static void kernel_c(int64_t kc, const float *restrict a, const float *restrict b, float *restrict c, int64_t ldc,
                     int first, const float *restrict bias) {
  float t[MR * NR];
  for (int half = 0; half < 2; half++) {
    v4f acc[MR][2];
    memset(acc, 0, sizeof acc);
    const float *ap = a, *bp = b + 8 * half;
    for (int64_t p = 0; p < kc; p++, ap += MR, bp += NR) {
      v4f b0, b1;
      memcpy(&b0, bp, sizeof b0);
      memcpy(&b1, bp + 4, sizeof b1);
#pragma GCC unroll 6
      for (int i = 0; i < MR; i++) {
        const v4f ai = {ap[i], ap[i], ap[i], ap[i]};
        acc[i][0] += ai * b0;
        acc[i][1] += ai * b1;
      }
    }
    for (int i = 0; i < MR; i++) memcpy(t + i * NR + 8 * half, acc[i], sizeof acc[i]);
  }
  for (int i = 0; i < MR; i++, c += ldc) {
    if (!first)
      for (int j = 0; j < NR; j++) c[j] += t[i * NR + j];
    else if (bias)
      for (int j = 0; j < NR; j++) c[j] = t[i * NR + j] + bias[j];
    else
      for (int j = 0; j < NR; j++) c[j] = t[i * NR + j];
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static void kernel_avx2(int64_t kc, const float *restrict a,
                                                             const float *restrict b, float *restrict c,
                                                             int64_t ldc, int first, const float *restrict bias) {
  for (int i = 0; i < MR; i++) {
    _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch((const char *)(c + i * ldc + NR - 1), _MM_HINT_T0);
  }
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#define ROW(i)                                 \
  ai = _mm256_broadcast_ss(a + i);             \
  c##i##0 = _mm256_fmadd_ps(ai, b0, c##i##0); \
  c##i##1 = _mm256_fmadd_ps(ai, b1, c##i##1);
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; p++, a += MR, b += NR) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
    __m256 ai;
    ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
  }
#undef ROW
  __m256 e0 = _mm256_setzero_ps(), e1 = e0;
  if (first && bias) {
    e0 = _mm256_loadu_ps(bias);
    e1 = _mm256_loadu_ps(bias + 8);
  }
#define OUT(i)                                                                      \
  if (!first) {                                                                     \
    e0 = _mm256_loadu_ps(c + i * ldc);                                              \
    e1 = _mm256_loadu_ps(c + i * ldc + 8);                                          \
  }                                                                                 \
  _mm256_storeu_ps(c + i * ldc, first && !bias ? c##i##0 : _mm256_add_ps(e0, c##i##0)); \
  _mm256_storeu_ps(c + i * ldc + 8, first && !bias ? c##i##1 : _mm256_add_ps(e1, c##i##1));
  OUT(0) OUT(1) OUT(2) OUT(3) OUT(4) OUT(5)
#undef OUT
}
#endif

static micro_kernel pick_kernel(void) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kernel_avx2;
#endif
  return kernel_c;
}

/* Packs rows [0, mc) x depth [0, kc) of a (strides rs, cs) into MR-row panels, k-major, zero rows
 * past mc. */
static void pack_a(float *restrict dst, const float *a, int64_t rs, int64_t cs, int64_t mc, int64_t kc) {
  for (int64_t i0 = 0; i0 < mc; i0 += MR, dst += MR * kc) {
    const int64_t mr = min64(MR, mc - i0);
    if (cs == 1) {
      for (int64_t i = 0; i < mr; i++) {
        const float *src = a + (i0 + i) * rs;
        for (int64_t p = 0; p < kc; p++) dst[p * MR + i] = src[p];
      }
    } else {
      for (int64_t p = 0; p < kc; p++)
        for (int64_t i = 0; i < mr; i++) dst[p * MR + i] = a[(i0 + i) * rs + p * cs];
    }
    for (int64_t i = mr; i < MR; i++)
      for (int64_t p = 0; p < kc; p++) dst[p * MR + i] = 0.0f;
  }
}

/* Packs depth [0, kc) x columns [0, nr) (nr <= NR) of b (strides rs, cs) into one k-major panel,
 * zero columns past nr. */
static void pack_b(float *restrict dst, const float *b, int64_t rs, int64_t cs, int64_t kc, int64_t nr) {
  if (nr < NR) memset(dst, 0, sizeof(float) * (size_t)(kc * NR));
  if (cs == 1) {
    for (int64_t p = 0; p < kc; p++)
      for (int64_t j = 0; j < nr; j++) dst[p * NR + j] = b[p * rs + j];
  } else {
    for (int64_t j = 0; j < nr; j++) {
      const float *src = b + j * cs;
      for (int64_t p = 0; p < kc; p++) dst[p * NR + j] = src[p * rs];
    }
  }
}

/* An edge tile: c [mr, nr] = tile (+ bias) on the first depth block, c += tile on the others,
 * the same arithmetic as the kernels' own epilogue. */
static void store_tile(float *restrict c, int64_t ldc, const float *restrict tile, int64_t mr, int64_t nr, int first,
                       const float *restrict bias) {
  for (int64_t i = 0; i < mr; i++, c += ldc, tile += NR) {
    if (!first)
      for (int64_t j = 0; j < nr; j++) c[j] += tile[j];
    else if (bias)
      for (int64_t j = 0; j < nr; j++) c[j] = tile[j] + bias[j];
    else
      for (int64_t j = 0; j < nr; j++) c[j] = tile[j];
  }
}

/* Fewer rows than a tile, with unit-stride dot products (linear's x . w^T): c[i, j] = a_i . b_j
 * read straight from the operands, so each column of b crosses the memory bus once (packing
 * would triple the traffic of these memory-bound shapes). Fixed summation order. */
static void gemm_dots(float *c, int64_t ldc, const float *a, int64_t rsa, const float *b, int64_t csb,
                      const float *bias, int64_t m, int64_t n, int64_t k) {
#pragma omp parallel for schedule(dynamic, 16) if (n * k > 32768)
  for (int64_t j = 0; j < n; j++) {
    const float *bj = b + j * csb;
    for (int64_t i = 0; i < m; i++) {
      const float *ai = a + i * rsa;
      v4f s[4] = {{0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}};
      int64_t p = 0;
      for (; p + 16 <= k; p += 16)
        for (int q = 0; q < 4; q++) {
          v4f x, y;
          memcpy(&x, ai + p + 4 * q, sizeof x);
          memcpy(&y, bj + p + 4 * q, sizeof y);
          s[q] += x * y;
        }
      float tail = 0.0f;
      for (; p < k; p++) tail += ai[p] * bj[p];
      const v4f t = (s[0] + s[1]) + (s[2] + s[3]);
      const float r = ((t[0] + t[1]) + (t[2] + t[3])) + tail;
      c[i * ldc + j] = bias ? r + bias[j] : r;
    }
  }
}

ada_status ada_cpu_gemm(float *c, int64_t ldc, const float *a, int64_t rsa, int64_t csa, const float *b,
                        int64_t rsb, int64_t csb, const float *bias, int64_t m, int64_t n, int64_t k) {
  if (m < MR && csa == 1 && rsb == 1) {
    gemm_dots(c, ldc, a, rsa, b, csb, bias, m, n, k);
    return ADA_OK;
  }
  const micro_kernel kern = pick_kernel();
  const int nt = ada_cpu_threads();
  /* row blocks: a multiple of the thread count when there are enough of them; else each row
   * block is shared by n_jg column groups */
  int64_t n_ic = cdiv(m, MC);
  if (n_ic >= nt) n_ic = cdiv(n_ic, nt) * nt;
  const int64_t mc = cdiv(cdiv(m, n_ic), MR) * MR;
  n_ic = cdiv(m, mc);
  const int64_t n_jg = n_ic < nt ? cdiv(nt, n_ic) : 1;
  const int64_t kc_max = min64(k, KC);
  const size_t b_len = (size_t)(cdiv(min64(n, NC), NR) * NR * kc_max);
  const size_t a_len = (size_t)(cdiv(mc * kc_max, 16) * 16); /* keeps every buffer 64-byte aligned */
  const size_t bytes = sizeof(float) * (b_len + a_len * (size_t)nt);
  float *buf = aligned_alloc(64, cdiv((int64_t)bytes, 64) * 64);
  if (!buf) return ada_fail(ADA_ENOMEM, "gemm: cannot allocate %zu bytes of packing buffers", bytes);
  float *const bp = buf;

#pragma omp parallel num_threads(nt) if (m * n * k > 32768)
  {
#ifdef _OPENMP
    float *const ap = buf + b_len + a_len * (size_t)omp_get_thread_num();
#else
    float *const ap = buf + b_len;
#endif
    float tile[MR * NR];
    for (int64_t jc = 0; jc < n; jc += NC) {
      const int64_t nc = min64(NC, n - jc), n_jr = cdiv(nc, NR), per_group = cdiv(n_jr, n_jg);
      for (int64_t pc = 0; pc < k; pc += KC) {
        const int64_t kc = min64(KC, k - pc);
#pragma omp for schedule(dynamic, 4)
        for (int64_t jr = 0; jr < n_jr; jr++)
          pack_b(bp + jr * kc * NR, b + pc * rsb + (jc + jr * NR) * csb, rsb, csb, kc, min64(NR, nc - jr * NR));
        int64_t packed = -1;
#pragma omp for schedule(dynamic)
        for (int64_t task = 0; task < n_ic * n_jg; task++) {
          const int64_t ic = task / n_jg, jg = task % n_jg, i0 = ic * mc, mcur = min64(mc, m - i0);
          if (ic != packed) {
            pack_a(ap, a + i0 * rsa + pc * csa, rsa, csa, mcur, kc);
            packed = ic;
          }
          for (int64_t jr = jg * per_group; jr < min64(n_jr, (jg + 1) * per_group); jr++) {
            const int64_t j0 = jc + jr * NR, nr = min64(NR, nc - jr * NR);
            for (int64_t ir = 0; ir < mcur; ir += MR) {
              float *const cij = c + (i0 + ir) * ldc + j0;
              const float *const bj = bias ? bias + j0 : NULL;
              const int64_t mr = min64(MR, mcur - ir);
              if (mr == MR && nr == NR) {
                kern(kc, ap + ir * kc, bp + jr * kc * NR, cij, ldc, pc == 0, bj);
              } else {
                kern(kc, ap + ir * kc, bp + jr * kc * NR, tile, NR, 1, NULL);
                store_tile(cij, ldc, tile, mr, nr, pc == 0, bj);
              }
            }
          }
        }
      }
    }
  }
  free(buf);
  return ADA_OK;
}
