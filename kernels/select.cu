/* select.cu: block-sparse layout selection on the device (runtime/cuda/select_cuda.c drives it).
 *
 * ada_launch_select_rows: one CTA per (head, query-block row) r = h * nqb + qb. The row's nkb
 * (<= 4096) masses become 64-bit rank keys in shared memory, exactly as runtime/layout.c ranks
 * them: forced blocks get a zero high half (so they come first), the others (UINT32_MAX - mass
 * bits) << 32 | index (more mass first, then the lower index; -0 counts as 0); a block-wide
 * bitonic sort orders them. The row keeps the first count keys:
 *   topk (mode 0):      count = max(round(density[h] * nkb), forced);
 *   threshold (mode 1): forced + want, with want computed as layout.c does (the row total and
 *                       the cumulative mass in rank order summed in double by one thread, in
 *                       the CPU's order, from copies of the row in shared memory by index and
 *                       by rank, so that its loads are short).
 * It writes count[r] and the kept blocks as a bitmask bits[r * W + w] (W = ceil(nkb / 32)); a
 * value that is not finite or negative lowers *bad to its flat index (atomicMin).
 * ada_launch_select_offsets: one CTA scans the counts into CSR offsets [H * (nqb + 1)] (layout.h).
 * ada_launch_select_fill: one CTA per row turns the bitmask into ascending block indices.
 * ada_launch_layout_recall: per row total and kept mass (double), then per head sums in row order.
 */
#include <cuda_runtime.h>
#include <float.h>
#include <stdint.h>

#include "kernels.h"

namespace {

constexpr int kSortThreads = 512;
constexpr int kMaxNkb = 4096;
constexpr int kFillThreads = 128; /* >= kMaxNkb / 32 words */
constexpr int kScanThreads = 1024;
constexpr int kRecallThreads = 256;

__device__ __forceinline__ bool forced_col(const int32_t *cols, int32_t n_cols, int32_t diagonal, int32_t qb,
                                           int32_t kb) {
  if (diagonal && kb == qb) return true;
  for (int32_t i = 0; i < n_cols; i++)
    if (kb >= cols[2 * i] && kb < cols[2 * i + 1]) return true;
  return false;
}

__global__ void __launch_bounds__(kSortThreads)
select_rows(const float *__restrict__ mass, int32_t nqb, int32_t nkb, int32_t pow2, int32_t mode,
            const double *__restrict__ frac, int32_t min_blocks, int32_t max_blocks, const int32_t *__restrict__ force,
            int32_t n_cols, int32_t n_rows, int32_t diagonal, int64_t *__restrict__ count, uint32_t *__restrict__ bits,
            unsigned long long *__restrict__ bad) {
  extern __shared__ unsigned long long keys[]; /* [pow2], the bitmask words, (threshold) 2 rows */
  uint32_t *words = (uint32_t *)(keys + pow2);
  float *by_index = (float *)(words + ((nkb + 31) / 32 + 1) / 2 * 2); /* threshold: the row, by index */
  float *by_rank = by_index + pow2;                                    /* threshold: the row, by rank */
  __shared__ int32_t s_forced, s_count;
  const int64_t r = blockIdx.x;
  const int32_t qb = (int32_t)(r % nqb), h = (int32_t)(r / nqb);
  const int32_t W = (nkb + 31) / 32;
  const float *m = mass + r * nkb;
  const int32_t *cols = force, *rows = force + 2 * n_cols;
  bool all = false;
  for (int32_t i = 0; i < n_rows; i++)
    if (qb >= rows[2 * i] && qb < rows[2 * i + 1]) all = true;
  if (threadIdx.x == 0) s_forced = 0;
  for (int32_t w = threadIdx.x; w < W; w += blockDim.x) words[w] = 0;
  __syncthreads();
  int32_t nf = 0;
  for (int32_t i = threadIdx.x; i < pow2; i += blockDim.x) {
    unsigned long long key = ~0ull;
    if (i < nkb) {
      const float v = m[i];
      if (mode == 1) by_index[i] = v;
      if (!(v >= 0.0f && v <= FLT_MAX)) atomicMin(bad, (unsigned long long)(r * nkb + i));
      if (all || forced_col(cols, n_cols, diagonal, qb, i)) {
        key = (unsigned long long)i;
        nf++;
      } else {
        const uint32_t b = v == 0.0f ? 0u : __float_as_uint(v);
        key = ((unsigned long long)(0xffffffffu - b) << 32) | (uint32_t)i;
      }
    }
    keys[i] = key;
  }
  if (nf) atomicAdd(&s_forced, nf);
  __syncthreads();
  for (int32_t k = 2; k <= pow2; k <<= 1) {
    for (int32_t j = k >> 1; j > 0; j >>= 1) {
      for (int32_t p = threadIdx.x; p < pow2 / 2; p += blockDim.x) { /* one compare-exchange pair each */
        const int32_t i = ((p & ~(j - 1)) << 1) | (p & (j - 1)), ixj = i + j;
        const unsigned long long a = keys[i], b = keys[ixj];
        if ((a > b) == ((i & k) == 0)) {
          keys[i] = b;
          keys[ixj] = a;
        }
      }
      __syncthreads();
    }
  }
  const int64_t forced = s_forced;
  if (mode == 1) { /* the row in rank order, so that one thread's sums below read shared memory */
    for (int32_t i = threadIdx.x; i < nkb; i += blockDim.x) by_rank[i] = by_index[(uint32_t)keys[i]];
    __syncthreads();
  }
  if (mode == 0) {
    if (threadIdx.x == 0) {
      const int64_t k = (int64_t)floor(frac[h] * nkb + 0.5);
      s_count = (int32_t)(k < forced ? forced : k);
    }
  } else if (threadIdx.x == 0) {
    /* one thread, in the CPU's order: the row total by index, the forced mass, then the
     * cumulative mass of the free blocks in rank order */
    const int64_t n = nkb - forced;
    double total = 0, kept = 0;
#pragma unroll 8
    for (int32_t kb = 0; kb < nkb; kb++) total += by_index[kb];
    for (int64_t i = 0; i < forced; i++) kept += by_rank[i];
    const double need = frac[h] * total - kept;
    int64_t got = 0;
    if (need > 0) {
      double acc = 0;
      got = n;
      for (int64_t i = 0; i < n; i++) {
        acc += by_rank[forced + i];
        if (acc >= need) {
          got = i + 1;
          break;
        }
      }
    }
    {
      int64_t want = got;
      if (want < min_blocks - forced) want = min_blocks - forced < n ? min_blocks - forced : n;
      if (max_blocks > 0 && want > max_blocks - forced) want = max_blocks > forced ? max_blocks - forced : 0;
      int64_t c = forced + want;
      s_count = (int32_t)(c > nkb ? nkb : c);
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) count[r] = s_count;
  const int32_t c = s_count;
  for (int32_t i = threadIdx.x; i < c; i += blockDim.x) {
    const uint32_t kb = (uint32_t)keys[i];
    atomicOr(&words[kb >> 5], 1u << (kb & 31));
  }
  __syncthreads();
  for (int32_t w = threadIdx.x; w < W; w += blockDim.x) bits[r * W + w] = words[w];
}

__global__ void __launch_bounds__(kScanThreads)
select_offsets(const int64_t *__restrict__ count, int64_t rows, int32_t nqb, int64_t *__restrict__ offsets) {
  __shared__ int64_t part[kScanThreads];
  const int64_t chunk = (rows + kScanThreads - 1) / kScanThreads;
  const int64_t lo = threadIdx.x * chunk, hi = lo + chunk < rows ? lo + chunk : rows;
  int64_t s = 0;
  for (int64_t r = lo; r < hi; r++) s += count[r];
  part[threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t run = 0;
    for (int i = 0; i < kScanThreads; i++) {
      const int64_t t = part[i];
      part[i] = run;
      run += t;
    }
  }
  __syncthreads();
  int64_t run = part[threadIdx.x];
  for (int64_t r = lo; r < hi; r++) {
    const int64_t h = r / nqb, qb = r % nqb;
    offsets[h * (nqb + 1) + qb] = run;
    run += count[r];
    if (qb == nqb - 1) offsets[h * (nqb + 1) + nqb] = run;
  }
}

__global__ void __launch_bounds__(kFillThreads)
select_fill(const uint32_t *__restrict__ bits, int32_t nqb, int32_t nkb, const int64_t *__restrict__ offsets,
            int32_t *__restrict__ indices) {
  __shared__ int32_t pre[kFillThreads];
  const int64_t r = blockIdx.x;
  const int32_t W = (nkb + 31) / 32;
  const uint32_t word = (int32_t)threadIdx.x < W ? bits[r * W + threadIdx.x] : 0u;
  pre[threadIdx.x] = __popc(word);
  __syncthreads();
  for (int d = 1; d < kFillThreads; d <<= 1) { /* inclusive Hillis-Steele scan */
    const int32_t v = (int)threadIdx.x >= d ? pre[threadIdx.x - d] : 0;
    __syncthreads();
    pre[threadIdx.x] += v;
    __syncthreads();
  }
  int32_t *dst = indices + offsets[(r / nqb) * (nqb + 1) + r % nqb] + pre[threadIdx.x] - __popc(word);
  uint32_t w = word;
  while (w) {
    const int b = __ffs(w) - 1;
    *dst++ = (int32_t)(threadIdx.x * 32 + b);
    w &= w - 1;
  }
}

__global__ void __launch_bounds__(kRecallThreads)
recall_rows(const float *__restrict__ mass, int32_t nqb, int32_t nkb, const int64_t *__restrict__ offsets,
            const int32_t *__restrict__ indices, double *__restrict__ total, double *__restrict__ kept) {
  __shared__ double st[kRecallThreads], sk[kRecallThreads];
  const int64_t r = blockIdx.x;
  const float *m = mass + r * nkb;
  const int64_t *o = offsets + (r / nqb) * (nqb + 1) + r % nqb;
  double t = 0, k = 0;
  for (int32_t i = threadIdx.x; i < nkb; i += blockDim.x) t += m[i];
  for (int64_t i = o[0] + threadIdx.x; i < o[1]; i += blockDim.x) k += m[indices[i]];
  st[threadIdx.x] = t;
  sk[threadIdx.x] = k;
  __syncthreads();
  for (int d = kRecallThreads / 2; d > 0; d >>= 1) {
    if ((int)threadIdx.x < d) {
      st[threadIdx.x] += st[threadIdx.x + d];
      sk[threadIdx.x] += sk[threadIdx.x + d];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    total[r] = st[0];
    kept[r] = sk[0];
  }
}

__global__ void recall_heads(const double *__restrict__ total, const double *__restrict__ kept, int32_t heads,
                             int32_t nqb, double *__restrict__ recall) {
  const int32_t h = blockIdx.x * blockDim.x + threadIdx.x;
  if (h >= heads) return;
  double t = 0, k = 0;
  for (int64_t qb = 0; qb < nqb; qb++) {
    t += total[(int64_t)h * nqb + qb];
    k += kept[(int64_t)h * nqb + qb];
  }
  recall[h] = t > 0 ? k / t : 1.0;
}

} // namespace

extern "C" int ada_select_max_nkb(void) { return kMaxNkb; }

extern "C" int ada_launch_select_rows(const float *mass, int32_t heads, int32_t nqb, int32_t nkb, int32_t mode,
                                      const double *frac, int32_t min_blocks, int32_t max_blocks, const int32_t *force,
                                      int32_t n_cols, int32_t n_rows, int32_t diagonal, int64_t *count, uint32_t *bits,
                                      unsigned long long *bad, void *stream) {
  if (heads < 1 || nqb < 1 || nkb < 1 || nkb > kMaxNkb || (mode != 0 && mode != 1) || !mass || !frac || !count ||
      !bits || !bad || ((n_cols > 0 || n_rows > 0) && !force))
    return (int)cudaErrorInvalidValue;
  int32_t pow2 = 32;
  while (pow2 < nkb) pow2 <<= 1;
  const size_t words = (size_t)((nkb + 31) / 32 + 1) / 2 * 2; /* even: the float rows stay 8-byte aligned */
  const size_t shm = sizeof(unsigned long long) * (size_t)pow2 + sizeof(uint32_t) * words +
                     (mode == 1 ? 2 * sizeof(float) * (size_t)pow2 : 0);
  if (shm > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(select_rows, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm);
    if (e != cudaSuccess) return (int)e;
  }
  const int threads = pow2 / 2 < kSortThreads ? pow2 / 2 : kSortThreads;
  select_rows<<<(unsigned)((int64_t)heads * nqb), threads, shm, (cudaStream_t)stream>>>(
      mass, nqb, nkb, pow2, mode, frac, min_blocks, max_blocks, force, n_cols, n_rows, diagonal, count, bits, bad);
  return (int)cudaGetLastError();
}

extern "C" int ada_launch_select_offsets(const int64_t *count, int32_t heads, int32_t nqb, int64_t *offsets,
                                         void *stream) {
  if (heads < 1 || nqb < 1 || !count || !offsets) return (int)cudaErrorInvalidValue;
  select_offsets<<<1, kScanThreads, 0, (cudaStream_t)stream>>>(count, (int64_t)heads * nqb, nqb, offsets);
  return (int)cudaGetLastError();
}

extern "C" int ada_launch_select_fill(const uint32_t *bits, int32_t heads, int32_t nqb, int32_t nkb,
                                      const int64_t *offsets, int32_t *indices, void *stream) {
  if (heads < 1 || nqb < 1 || nkb < 1 || nkb > kMaxNkb || !bits || !offsets || !indices)
    return (int)cudaErrorInvalidValue;
  select_fill<<<(unsigned)((int64_t)heads * nqb), kFillThreads, 0, (cudaStream_t)stream>>>(bits, nqb, nkb, offsets,
                                                                                           indices);
  return (int)cudaGetLastError();
}

extern "C" int ada_launch_layout_recall(const float *mass, int32_t heads, int32_t nqb, int32_t nkb,
                                        const int64_t *offsets, const int32_t *indices, double *scratch,
                                        double *recall, void *stream) {
  if (heads < 1 || nqb < 1 || nkb < 1 || !mass || !offsets || !indices || !scratch || !recall)
    return (int)cudaErrorInvalidValue;
  const int64_t rows = (int64_t)heads * nqb;
  cudaStream_t st = (cudaStream_t)stream;
  recall_rows<<<(unsigned)rows, kRecallThreads, 0, st>>>(mass, nqb, nkb, offsets, indices, scratch, scratch + rows);
  int e = (int)cudaGetLastError();
  if (e) return e;
  recall_heads<<<(heads + 127) / 128, 128, 0, st>>>(scratch, scratch + rows, heads, nqb, recall);
  return (int)cudaGetLastError();
}
