/* attention_sm80.cu: the sm80 attention family, ada_launch_attention_sm80 and
 * ada_attention_sm80_supports (dense and block-sparse attention, block mass, attention fused with
 * block mass) on tensor cores with mma.sync (sm_80 and later). Shared device helpers (cp.async,
 * ldmatrix, mma, ex2, bf16 packing, output stores) are in attention_common.cuh; the host's plan
 * (runtime/cuda/attention_plan.c) chooses this family, its tiles and its variant.
 *
 * FlashAttention-2 style. One CTA of 4 warps per (query tile, head); a warp owns 16 * MT query
 * rows (MT m16 tiles), so a CTA covers 64 * MT rows (MT = 2: 128 rows; MT = 1: 64 rows, the query
 * block of a sparse layout of 64). Key tiles of 64 keys:
 *   - Q (the CTA's rows) and two stages of K and V live in shared memory, each row of D bf16 as
 *     16-byte chunks XOR-swizzled by the row (chunk c of row r at c ^ (r & 7)), so that ldmatrix
 *     and the cp.async writes are free of bank conflicts;
 *   - cp.async double buffering with one barrier per tile: at the top of tile t a thread waits
 *     for its own copies of tile t, the barrier makes every copy visible and proves that tile t-1
 *     is done everywhere, then the copies of tile t+1 go into the other stage and overlap the
 *     arithmetic of tile t;
 *   - S = Q K^T with ldmatrix + mma.m16n8k16 (f32 accumulators), the online softmax in registers
 *     with exp2 and scale*log2(e) folded into one FFMA, P rounded to bf16 and O += P V with
 *     ldmatrix.trans on V. Rows are reduced across the 4 threads of a quad with shuffles; the
 *     accumulators are rescaled only when some row max of the warp moved (a warp vote), and the
 *     factor is exactly 1 for an unchanged max. ADA_ATTN_KSPLIT=2 splits a tile into two softmax
 *     steps of 32 keys (fewer live scores); 1 (the default) measured faster on the H100.
 *   - Registers: the 128-row D = 128 kernels use 255 registers with 72 (dense) to 180 (fused)
 *     bytes of spill loads, ptxas's choice for its ldmatrix/mma scheduling: a few loop-invariant
 *     values and the row sums l, reloaded once per 64-key tile (about 10 L1 loads per ~1300
 *     instructions); the D = 64 and 64-row kernels do not spill.
 *   - Keys at or past kv_valid: rows of K and V past it are zero-filled by cp.async and their
 *     scores set to -inf (only the tile that holds kv_valid needs the test). Query rows past Sq
 *     are zero-filled and never written.
 *   - A negative scale negates Q in shared memory once (sign bits), so that the running max is
 *     taken over scale * q.k with |scale| folded in.
 * Modes: ADA_ATTN_DENSE walks tiles 0 .. ceil(kv_valid / 64) - 1; ADA_ATTN_SPARSE walks the layout's list of key
 * blocks of the (head, query block), blocks of 128 as two tiles; ADA_ATTN_FUSED is ADA_ATTN_DENSE plus the block
 * mass under lse_in: the softmax already has the tile's row sums of exp(s - m) at the running max
 * m, so exp(s - lse_in) summed over the tile is that sum times exp(m - lse_in) (guarded by
 * sum > 0, as the CPU does); ADA_ATTN_MASS computes the scores and sums exp(s - lse_in) directly, without
 * V. The mass of a (query block, key block) is reduced over a warp with shuffles, written per
 * warp into a two-slot shared buffer and, after the next barrier, summed over the warps of the
 * query block in a fixed order (no atomics: the same bits every run) and divided by its valid
 * rows. Mass blocks of 64 with 128-row tiles give two mass rows per CTA; mass key blocks of 128
 * span two tiles.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "attention_common.cuh"
#include "kernels.h"

namespace {

using namespace ada_attn;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBN = 64; /* keys per tile */
constexpr float kLog2e = 1.4426950408889634f;
#ifndef ADA_ATTN_KSPLIT
#define ADA_ATTN_KSPLIT 1
#endif
constexpr int kKSplit = ADA_ATTN_KSPLIT; /* softmax steps per key tile (1: 64 keys, 2: 32 keys) */

/* Copies NROWS rows of a [*, D] bf16 view into swizzled shared memory at dst; rows >= lim are
 * zero-filled. src is this thread's first chunk (row tid / CH, chunk tid % CH), step the distance
 * between the rows it copies (kThreads / CH rows). */
template <int D, int NROWS>
__device__ __forceinline__ void load_tile(uint32_t dst, const __nv_bfloat16 *src, int64_t step, int64_t lim, int tid) {
  constexpr int CH = D / 8;
  constexpr int ITERS = NROWS * CH / kThreads;
  constexpr int RSTEP = kThreads / CH;
  static_assert(NROWS * CH % kThreads == 0, "tile chunks must divide among the threads");
  const int c = tid % CH, r0 = tid / CH;
  dst += (uint32_t)(r0 * D * 2 + ((c ^ (r0 & 7)) << 4)); /* r & 7 is the same for every r below */
#pragma unroll
  for (int i = 0; i < ITERS; i++) {
    const bool ok = r0 + i * RSTEP < lim;
    cp_async16(dst + (uint32_t)(i * RSTEP * D * 2), src, ok ? 16 : 0); /* 0 bytes read: zeros */
    src += step;
  }
}

/* Negates the chunks of Q this thread copied (after its copies completed). */
template <int D, int NROWS> __device__ __forceinline__ void negate_tile(unsigned char *base, int tid) {
  constexpr int CH = D / 8;
  constexpr int ITERS = NROWS * CH / kThreads;
  const int c = tid % CH, r0 = tid / CH;
  const int swz = (c ^ (r0 & 7)) << 4;
#pragma unroll
  for (int i = 0; i < ITERS; i++) {
    const int r = r0 + i * (kThreads / CH);
    uint4 *p = reinterpret_cast<uint4 *>(base + r * D * 2 + swz);
    uint4 x = *p;
    x.x ^= 0x80008000u;
    x.y ^= 0x80008000u;
    x.z ^= 0x80008000u;
    x.w ^= 0x80008000u;
    *p = x;
  }
}

/* Q, two stages of K (and V), then the mass partials red[2][kWarps] (f32). */
template <int D, int MT, int MODE> constexpr int smem_bytes() {
  return 64 * MT * D * 2 + 2 * kBN * D * 2 * (MODE == ADA_ATTN_MASS ? 1 : 2) + 2 * kWarps * 4;
}

template <int D, int MT, int MODE, typename OutT, int KS, int KH>
__global__ void __launch_bounds__(kThreads, 2) attn_kernel(const ada_attn_params p) {
  static_assert(KH == 1 || (KH == 2 && KS == 1 && MODE == ADA_ATTN_SPARSE), "key halves: sparse tiles in one softmax step only");
  constexpr int WR = kWarps / KH; /* row groups: warp = wk * WR + wr */
  constexpr int ROWS = 16 * MT * WR; /* query rows of the CTA */
  constexpr int WROWS = 16 * MT;
  constexpr int NTH = kBN / 8 / KS / KH; /* n8 tiles of this warp's part of a key tile */
  constexpr int DT = D / 8;     /* n8 tiles of the head dimension */
  constexpr bool HAS_V = MODE != ADA_ATTN_MASS;
  constexpr bool HAS_MASS = MODE == ADA_ATTN_FUSED || MODE == ADA_ATTN_MASS;
  constexpr uint32_t TILE = kBN * D * 2;
  constexpr uint32_t STAGE = TILE * (HAS_V ? 2 : 1);

  extern __shared__ __align__(1024) unsigned char smem[];
  float(*red)[kWarps] = reinterpret_cast<float(*)[kWarps]>(smem + ROWS * D * 2 + 2 * STAGE);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wr = warp % WR, wk = warp / WR; /* row group, key half (KH = 2) */
  const int g = lane >> 2, tig = lane & 3;
  const int64_t sq = p.sq, kv_valid = p.kv_valid;
  const int64_t nqt = (sq + ROWS - 1) / ROWS;
  const int64_t item = p.order ? (int64_t)p.order[blockIdx.x] : (int64_t)blockIdx.x;
  const int h = (int)(item / nqt);
  const int64_t qt = item - (int64_t)h * nqt;
  const int64_t q0 = qt * ROWS;

  /* this thread's first chunk of each tile it copies (see load_tile) */
  const int lc = tid % (D / 8), lr = tid / (D / 8);
  constexpr int RSTEP = kThreads / (D / 8);
  const __nv_bfloat16 *qg = static_cast<const __nv_bfloat16 *>(p.q) + (int64_t)h * p.q_hs + lr * p.q_rs + lc * 8;
  const __nv_bfloat16 *kg = static_cast<const __nv_bfloat16 *>(p.k) + (int64_t)h * p.k_hs + lr * p.k_rs + lc * 8;
  const __nv_bfloat16 *vg =
      HAS_V ? static_cast<const __nv_bfloat16 *>(p.v) + (int64_t)h * p.v_hs + lr * p.v_rs + lc * 8 : nullptr;
  const int64_t kstep = RSTEP * p.k_rs, vstep = RSTEP * p.v_rs;

  /* the key tiles of this CTA: j0(t) = first key of tile t, t < n */
  const int32_t *list = nullptr;
  int lb_shift = 0; /* log2(tiles per layout block) */
  int n;
  if constexpr (MODE == ADA_ATTN_SPARSE) {
    const int64_t *o = p.offsets + (int64_t)h * (nqt + 1) + qt;
    list = p.indices + o[0];
    lb_shift = p.layout_block == 128 ? 1 : 0;
    n = (int)(o[1] - o[0]) << lb_shift;
  } else {
    n = (int)((kv_valid + kBN - 1) / kBN);
  }
  auto tile_j0 = [&](int t) -> int64_t {
    if constexpr (MODE == ADA_ATTN_SPARSE) return (int64_t)list[t >> lb_shift] * (kBN << lb_shift) + (int64_t)(t & ((1 << lb_shift) - 1)) * kBN;
    return (int64_t)t * kBN;
  };
  if constexpr (MODE == ADA_ATTN_SPARSE)
    while (n > 0 && tile_j0(n - 1) >= kv_valid) n--; /* indices increase: drop tiles past kv_valid */

  /* mass bookkeeping: mass key blocks span 1 << mshift tiles; the CTA's rows form mgroups mass
   * rows (query blocks), each written by thread `group` through mrow (NULL elsewhere and past Sq),
   * as the sum of its warps' partials (fixed order) times 1 / its valid rows */
  static_assert(kWarps == 4, "write_mass sums 2 or 4 warps");
  const int mb = HAS_MASS ? p.mass_block : 64;
  const int mshift = mb == 128 ? 1 : 0;
  const int mgroups = ROWS / mb > 0 ? ROWS / mb : 1;
  float *mrow = nullptr;
  float minv = 0.0f;
  if (HAS_MASS) {
    const int64_t nmqb = (sq + mb - 1) / mb, nmkb = (p.skv + mb - 1) / mb, nkvm = (kv_valid + mb - 1) / mb;
    for (int gi = 0; gi < mgroups; gi++) {
      const int64_t mq = q0 / mb + gi;
      if (mq >= nmqb) break;
      float *row = p.mass + ((int64_t)h * nmqb + mq) * nmkb;
      for (int64_t kb = nkvm + tid; kb < nmkb; kb += kThreads) row[kb] = 0.0f; /* past kv_valid */
      if (tid == gi) {
        mrow = row;
        minv = 1.0f / (float)(sq - mq * mb < mb ? sq - mq * mb : mb);
      }
    }
  }

  const float sabs = fabsf(p.scale), sl2 = sabs * kLog2e;
  const uint32_t sq_u = smem_u32(smem);
  const uint32_t sk_u = sq_u + ROWS * D * 2;

  /* per-lane ldmatrix addresses. A lane reads row `row` (row & 7 == lane & 7), chunk 2 kk + hi
   * of its 16 columns, stored at chunk (2 kk + hi) ^ (lane & 7) = ((hi ^ (lane & 7)) ^ 2 kk): the
   * offset of k step kk is the lane's offset XOR (kk << 5), as the chunk bits (4..7 for D = 128,
   * 4..6 for D = 64) lie below the row bits. */
  const int l7 = lane & 7;
  const int rowA = l7 + ((lane >> 3) & 1) * 8, hiA = lane >> 4;      /* Q (A) and V (trans B) */
  const int rowK = l7 + ((lane >> 4) & 1) * 8, hiK = (lane >> 3) & 1; /* K (B) */
  const uint32_t qa_off = (uint32_t)((wr * WROWS + rowA) * D * 2 + ((hiA ^ l7) << 4));
  const uint32_t ka_off = (uint32_t)(rowK * D * 2 + ((hiK ^ l7) << 4));
  const uint32_t va_off = (uint32_t)(rowA * D * 2 + ((hiA ^ l7) << 4));

  float acc[MT][HAS_V ? DT : 1][4];
  float m[MT][2], l[MT][2], lc2[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
#pragma unroll
    for (int rh = 0; rh < 2; rh++) {
      m[mt][rh] = -INFINITY;
      l[mt][rh] = 0.0f;
      const int64_t row = q0 + wr * WROWS + mt * 16 + g + rh * 8;
      lc2[mt][rh] = HAS_MASS ? (row < sq ? p.lse_in[(int64_t)h * sq + row] * kLog2e : INFINITY) : 0.0f;
    }
#pragma unroll
    for (int dt = 0; dt < (HAS_V ? DT : 1); dt++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[mt][dt][e] = 0.0f;
  }
  float mpart = 0.0f; /* this thread's share of the current mass block */
  int pend = -1;      /* mass key block whose warp partials wait in red[pend & 1] */

  auto write_mass = [&](int kbm) {
    if (mrow) {
      const float *r = red[kbm & 1];
      mrow[kbm] = (mgroups == 2 ? r[2 * tid] + r[2 * tid + 1] : (r[0] + r[1]) + (r[2] + r[3])) * minv;
    }
  };

  if (n > 0) {
    load_tile<D, ROWS>(sq_u, qg + q0 * p.q_rs, RSTEP * p.q_rs, sq - q0, tid);
    const int64_t j0 = tile_j0(0);
    load_tile<D, kBN>(sk_u, kg + j0 * p.k_rs, kstep, kv_valid - j0, tid);
    if (HAS_V) load_tile<D, kBN>(sk_u + TILE, vg + j0 * p.v_rs, vstep, kv_valid - j0, tid);
    cp_async_commit();
  }

  for (int t = 0; t < n; t++) {
    cp_async_wait_all();
    if (t == 0 && p.scale < 0) negate_tile<D, ROWS>(smem, tid);
    __syncthreads();
    if (HAS_MASS && pend >= 0) {
      write_mass(pend);
      pend = -1;
    }
    if (t + 1 < n) {
      const int64_t j1 = tile_j0(t + 1);
      const uint32_t st = sk_u + (uint32_t)((t + 1) & 1) * STAGE;
      load_tile<D, kBN>(st, kg + j1 * p.k_rs, kstep, kv_valid - j1, tid);
      if (HAS_V) load_tile<D, kBN>(st + TILE, vg + j1 * p.v_rs, vstep, kv_valid - j1, tid);
      cp_async_commit();
    }
    const int64_t j0 = tile_j0(t);
    const uint32_t ks_u = sk_u + (uint32_t)(t & 1) * STAGE;

#pragma unroll
    for (int hf = 0; hf < KS; hf++) { /* the tile in KS parts of kBN / KS keys, one softmax step each */
      const int64_t jh = j0 + hf * (kBN / KS) + wk * (kBN / KH);
      /* S = Q K^T */
      float s[MT][NTH][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NTH; nt++)
#pragma unroll
          for (int e = 0; e < 4; e++) s[mt][nt][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) ldsm_x4(a[mt], sq_u + (qa_off ^ (uint32_t)(kk << 5)) + (uint32_t)(mt * 16 * D * 2));
        const uint32_t kaddr = ks_u + (ka_off ^ (uint32_t)(kk << 5)) + (uint32_t)((hf * (kBN / KS) + wk * (kBN / KH)) * D * 2);
#pragma unroll
        for (int np = 0; np < NTH / 2; np++) {
          uint32_t b[4];
          ldsm_x4(b, kaddr + (uint32_t)(np * 16 * D * 2));
#pragma unroll
          for (int mt = 0; mt < MT; mt++) {
            mma_bf16(s[mt][2 * np], a[mt], b[0], b[1]);
            mma_bf16(s[mt][2 * np + 1], a[mt], b[2], b[3]);
          }
        }
      }
      if (jh + kBN / KS / KH > kv_valid) {
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
          for (int nt = 0; nt < NTH; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++)
              if (jh + nt * 8 + 2 * tig + (e & 1) >= kv_valid) s[mt][nt][e] = -INFINITY;
      }

      if constexpr (MODE == ADA_ATTN_MASS) {
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
          for (int nt = 0; nt < NTH; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) mpart += ex2(fmaf(s[mt][nt][e], sl2, -lc2[mt][e >> 1]));
      } else {
        /* online softmax, rows (mt, rh): this thread holds columns 2 tig, 2 tig + 1 of each n8
         * tile; the running max m is in raw q.k units, ms = m * |scale| * log2(e) */
        float ms[MT][2], alpha[MT][2];
        bool rescale = false;
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
#pragma unroll
          for (int rh = 0; rh < 2; rh++) {
            float mx = m[mt][rh];
#pragma unroll
            for (int nt = 0; nt < NTH; nt++) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * rh], s[mt][nt][2 * rh + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            ms[mt][rh] = mx == -INFINITY ? 0.0f : mx * sl2;
            alpha[mt][rh] = mx == m[mt][rh] ? 1.0f : ex2((m[mt][rh] - mx) * sl2); /* exactly 1 when unchanged */
            rescale |= mx != m[mt][rh];
            m[mt][rh] = mx;
          }
        }
        if (__any_sync(0xffffffffu, rescale)) { /* after the first tiles the max rarely moves */
#pragma unroll
          for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int dt = 0; dt < DT; dt++) {
              acc[mt][dt][0] *= alpha[mt][0];
              acc[mt][dt][1] *= alpha[mt][0];
              acc[mt][dt][2] *= alpha[mt][1];
              acc[mt][dt][3] *= alpha[mt][1];
            }
        }
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
#pragma unroll
          for (int rh = 0; rh < 2; rh++) {
            float rs = 0.0f;
#pragma unroll
            for (int nt = 0; nt < NTH; nt++) {
#pragma unroll
              for (int e = 0; e < 2; e++) {
                const float pv = ex2(fmaf(s[mt][nt][2 * rh + e], sl2, -ms[mt][rh]));
                s[mt][nt][2 * rh + e] = pv;
                rs += pv;
              }
            }
            l[mt][rh] = fmaf(l[mt][rh], alpha[mt][rh], rs);
            if (HAS_MASS) mpart += rs > 0.0f ? rs * ex2(ms[mt][rh] - lc2[mt][rh]) : 0.0f;
          }
        }
        /* O += P V, P as bf16 A fragments (the f32 scores die here) */
        uint32_t pa[MT][NTH / 2][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
          for (int kk = 0; kk < NTH / 2; kk++) {
            pa[mt][kk][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
            pa[mt][kk][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
            pa[mt][kk][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
            pa[mt][kk][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
          }
        const uint32_t vaddr = ks_u + TILE + (uint32_t)((hf * (kBN / KS) + wk * (kBN / KH)) * D * 2);
#pragma unroll
        for (int kk = 0; kk < NTH / 2; kk++) {
#pragma unroll
          for (int dp = 0; dp < D / 16; dp++) {
            uint32_t b[4];
            ldsm_x4_t(b, vaddr + (va_off ^ (uint32_t)(dp << 5)) + (uint32_t)(kk * 16 * D * 2));
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
              mma_bf16(acc[mt][2 * dp], pa[mt][kk], b[0], b[1]);
              mma_bf16(acc[mt][2 * dp + 1], pa[mt][kk], b[2], b[3]);
            }
          }
        }
      }
    }

    if (HAS_MASS && (t == n - 1 || ((t + 1) & ((1 << mshift) - 1)) == 0)) {
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) mpart += __shfl_xor_sync(0xffffffffu, mpart, o);
      const int kbm = t >> mshift;
      if (lane == 0) red[kbm & 1][warp] = mpart;
      mpart = 0.0f;
      pend = kbm;
    }
  }
  if (n == 0) cp_async_wait_all();
  if (HAS_MASS) {
    __syncthreads();
    if (pend >= 0) write_mass(pend);
  }
  if constexpr (HAS_V) {

  if constexpr (KH == 2) {
    /* The two key halves of each row group meet: warp (wr, 1) leaves its running max, row sums
     * (quad-reduced) and accumulators in the stage buffers (rows padded to D + 8 floats: no bank
     * conflicts), warp (wr, 0) rescales both to the common max and finishes the rows. */
    constexpr int XS = D + 8;
    __syncthreads(); /* every warp is done with the stage buffers; no copy is pending */
    float *xacc = reinterpret_cast<float *>(smem + ROWS * D * 2) + wr * (WROWS * XS + 2 * WROWS);
    float *xm = xacc + WROWS * XS, *xl = xm + WROWS;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int rh = 0; rh < 2; rh++) {
        float ls = l[mt][rh];
        ls += __shfl_xor_sync(0xffffffffu, ls, 1);
        ls += __shfl_xor_sync(0xffffffffu, ls, 2);
        l[mt][rh] = ls;
      }
    if (wk == 1) {
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int rh = 0; rh < 2; rh++) {
          const int r = mt * 16 + g + rh * 8;
          if (tig == 0) {
            xm[r] = m[mt][rh];
            xl[r] = l[mt][rh];
          }
#pragma unroll
          for (int dt = 0; dt < DT; dt++)
            *reinterpret_cast<float2 *>(xacc + r * XS + dt * 8 + 2 * tig) = make_float2(acc[mt][dt][2 * rh], acc[mt][dt][2 * rh + 1]);
        }
    }
    __syncthreads();
    if (wk == 1) return;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int rh = 0; rh < 2; rh++) {
        const int r = mt * 16 + g + rh * 8;
        const float m1 = xm[r], l1 = xl[r], m0 = m[mt][rh];
        const float mx = fmaxf(m0, m1);
        const float a0 = mx == -INFINITY ? 0.0f : (m0 == mx ? 1.0f : ex2((m0 - mx) * sl2));
        const float a1 = mx == -INFINITY ? 0.0f : (m1 == mx ? 1.0f : ex2((m1 - mx) * sl2));
        m[mt][rh] = mx;
        l[mt][rh] = tig == 0 ? fmaf(l[mt][rh], a0, l1 * a1) : 0.0f; /* the epilogue sums the quad */
#pragma unroll
        for (int dt = 0; dt < DT; dt++) {
          const float2 o = *reinterpret_cast<const float2 *>(xacc + r * XS + dt * 8 + 2 * tig);
          acc[mt][dt][2 * rh] = fmaf(acc[mt][dt][2 * rh], a0, o.x * a1);
          acc[mt][dt][2 * rh + 1] = fmaf(acc[mt][dt][2 * rh + 1], a0, o.y * a1);
        }
      }
  }

  /* epilogue: out = acc / l, lse = scale * m + log(l) */
  OutT *out = static_cast<OutT *>(p.out);
  const int64_t o_rs = (int64_t)p.heads * p.out_dim;
  const int od = p.out_dim;
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
#pragma unroll
    for (int rh = 0; rh < 2; rh++) {
      float ls = l[mt][rh];
      ls += __shfl_xor_sync(0xffffffffu, ls, 1);
      ls += __shfl_xor_sync(0xffffffffu, ls, 2);
      const int64_t row = q0 + wr * WROWS + mt * 16 + g + rh * 8;
      if (row >= sq) continue;
      const float inv = ls > 0.0f ? 1.0f / ls : 0.0f;
      OutT *orow = out + row * o_rs + (int64_t)h * od;
      if (od == D) {
#pragma unroll
        for (int dt = 0; dt < DT; dt++)
          OutPair<OutT>::store2(orow + dt * 8 + 2 * tig, acc[mt][dt][2 * rh] * inv, acc[mt][dt][2 * rh + 1] * inv);
      } else {
#pragma unroll
        for (int dt = 0; dt < DT; dt++) {
          const int c = dt * 8 + 2 * tig;
          if (c < od) OutPair<OutT>::store1(orow + c, acc[mt][dt][2 * rh] * inv);
          if (c + 1 < od) OutPair<OutT>::store1(orow + c + 1, acc[mt][dt][2 * rh + 1] * inv);
        }
      }
      if (tig == 0) p.lse[(int64_t)h * sq + row] = ls > 0.0f ? fmaf(m[mt][rh], sabs, logf(ls)) : -INFINITY;
    }
  }
  }
}

template <int D, int MT, int MODE, typename OutT, int KH>
int launch_one(const ada_attn_params &p, int64_t ctas, cudaStream_t st) {
  constexpr int KS = KH == 2 ? 1 : kKSplit;
  constexpr int bytes = smem_bytes<D, MT / KH, MODE>(); /* Q: 64 * MT / KH rows */
  static_assert(KH == 1 || 2 * (16 * MT * (D + 8) + 32 * MT) * 4 <= 2 * kBN * D * 2 * 2, "the merge fits the stages");
  cudaError_t e =
      cudaFuncSetAttribute(attn_kernel<D, MT, MODE, OutT, KS, KH>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e != cudaSuccess) return (int)e;
  attn_kernel<D, MT, MODE, OutT, KS, KH><<<(unsigned)ctas, kThreads, bytes, st>>>(p);
  return (int)cudaGetLastError();
}

/* KH = 2: the 4 warps are 2 row groups of 16 * MT rows x 2 halves of each key tile. */
template <int D, int MT, int MODE, int KH = 1> int launch_out(const ada_attn_params &p, int64_t ctas, cudaStream_t st) {
  if (MODE == ADA_ATTN_MASS) return launch_one<D, MT, MODE, float, KH>(p, ctas, st);
  switch (p.out_dtype) {
  case ADA_F32: return launch_one<D, MT, MODE, float, KH>(p, ctas, st);
  case ADA_BF16: return launch_one<D, MT, MODE, __nv_bfloat16, KH>(p, ctas, st);
  case ADA_F16: return launch_one<D, MT, MODE, __half, KH>(p, ctas, st);
  default: return (int)cudaErrorInvalidValue;
  }
}

/* The plan's tiles: 128-row CTAs, or for sparse layouts of 64, 64-row CTAs as 2 row groups of
 * 32 rows x 2 key halves (key_halves 2: each warp reads half of every K and V tile, a third less
 * shared-memory traffic per MMA; variant "halves") or 4 warps of 16 rows (key_halves 1; "rows"). */
template <int D> int launch_dim(const ada_attn_params &p, cudaStream_t st) {
  if (p.tile_rows == 64) { /* sparse over blocks of 64 (supports() admits nothing else) */
    const int64_t ctas64 = (int64_t)p.heads * ((p.sq + 63) / 64);
    if (p.key_halves == 1) return launch_out<D, 1, ADA_ATTN_SPARSE>(p, ctas64, st);
    return launch_out<D, 2, ADA_ATTN_SPARSE, 2>(p, ctas64, st);
  }
  const int64_t ctas = (int64_t)p.heads * ((p.sq + 127) / 128);
  switch (p.mode) {
  case ADA_ATTN_DENSE: return launch_out<D, 2, ADA_ATTN_DENSE>(p, ctas, st);
  case ADA_ATTN_SPARSE: return launch_out<D, 2, ADA_ATTN_SPARSE>(p, ctas, st);
  case ADA_ATTN_FUSED: return launch_out<D, 2, ADA_ATTN_FUSED>(p, ctas, st);
  case ADA_ATTN_MASS: return launch_out<D, 2, ADA_ATTN_MASS>(p, ctas, st);
  default: return (int)cudaErrorInvalidValue;
  }
}

} // namespace

extern "C" int ada_launch_attention(const ada_attn_params *p, void *stream) {
  if (!p || !p->q || !p->k || p->sq < 1 || p->skv < 1 || p->kv_valid < 1 || p->kv_valid > p->skv || p->heads < 1 ||
      !(p->scale != 0.0f) || !isfinite(p->scale) || (p->dim != 64 && p->dim != 128))
    return (int)cudaErrorInvalidValue;
  const bool mass = p->mode == ADA_ATTN_FUSED || p->mode == ADA_ATTN_MASS;
  if (p->mode < ADA_ATTN_DENSE || p->mode > ADA_ATTN_MASS || (p->mode != ADA_ATTN_MASS && (!p->v || !p->out || !p->lse)) ||
      (mass && (!p->lse_in || !p->mass || (p->mass_block != 64 && p->mass_block != 128))) ||
      (p->mode == ADA_ATTN_SPARSE && (!p->offsets || !p->indices || (p->layout_block != 64 && p->layout_block != 128))) ||
      (p->mode != ADA_ATTN_SPARSE && (p->offsets || p->order)) ||
      (p->mode != ADA_ATTN_MASS && (p->out_dim < 1 || p->out_dim > p->dim)))
    return (int)cudaErrorInvalidValue;
  const int64_t rows = p->mode == ADA_ATTN_SPARSE ? p->layout_block : 128;
  if ((int64_t)p->heads * ((p->sq + rows - 1) / rows) > (int64_t)INT32_MAX) return (int)cudaErrorInvalidValue;
  cudaStream_t st = (cudaStream_t)stream;
  return p->dim == 64 ? launch_dim<64>(*p, st) : launch_dim<128>(*p, st);
}

extern "C" int ada_attention_sm80_supports(const ada_attn_params *p) {
  if (!p || p->sq < 1 || p->skv < 1 || p->kv_valid < 1 || p->kv_valid > p->skv || p->heads < 1 ||
      !(p->scale != 0.0f) || !isfinite(p->scale) || (p->dim != 64 && p->dim != 128))
    return 0;
  if (p->mode < ADA_ATTN_DENSE || p->mode > ADA_ATTN_MASS) return 0;
  const bool mass = p->mode == ADA_ATTN_FUSED || p->mode == ADA_ATTN_MASS;
  if (mass && !ada_attn_block_ok(p->mass_block)) return 0;
  if (p->mode != ADA_ATTN_MASS && (p->out_dim < 1 || p->out_dim > p->dim ||
                                   (p->out_dtype != ADA_F32 && p->out_dtype != ADA_BF16 && p->out_dtype != ADA_F16)))
    return 0;
  if (p->mode == ADA_ATTN_SPARSE && !ada_attn_block_ok(p->layout_block)) return 0;
  const bool rows64 = p->mode == ADA_ATTN_SPARSE && p->layout_block == 64;
  if (rows64 ? !(p->tile_rows == 64 && (p->key_halves == 1 || p->key_halves == 2))
             : !(p->tile_rows == 128 && p->key_halves == 1))
    return 0;
  if ((int64_t)p->heads * ((p->sq + p->tile_rows - 1) / p->tile_rows) > (int64_t)INT32_MAX) return 0;
  return 1;
}

extern "C" int ada_launch_attention_sm80(const ada_attn_params *p, void *stream) {
  if (!ada_attention_sm80_supports(p) || !p->q || !p->k ||
      (p->mode != ADA_ATTN_MASS && (!p->v || !p->out || !p->lse)) ||
      ((p->mode == ADA_ATTN_FUSED || p->mode == ADA_ATTN_MASS) && (!p->lse_in || !p->mass)) ||
      (p->mode == ADA_ATTN_SPARSE && (!p->offsets || !p->indices)) ||
      (p->mode != ADA_ATTN_SPARSE && (p->offsets || p->order)))
    return (int)cudaErrorInvalidValue;
  cudaStream_t st = (cudaStream_t)stream;
  return p->dim == 64 ? launch_dim<64>(*p, st) : launch_dim<128>(*p, st);
}
