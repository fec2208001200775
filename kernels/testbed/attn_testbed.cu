/* attn_testbed.cu: the attention kernel test bed (make testbed; build/attn_testbed [quick | time
 * [CASE] | bandwidth]).
 * One GPU call validates every kernel family against a float64 reference and against each other,
 * then times them: for each case it poisons the outputs (NaN), runs the launcher, checks that
 * every element was written and finite, compares out and lse, and reports the median of timed
 * runs (CUDA events) with TFLOP/s counted as 4 * D * (computed query-key pairs).
 * Families: sm80 (kernels/attention.cu, mma.sync) and sm90 (kernels/attention_sm90.cu, wgmma +
 * TMA + warp specialization), through their C-ABI launchers, so it needs no runtime or Lua.
 */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../kernels.h"
#include "../../runtime/walk.h"


#define CK(x)                                                                                                           \
  do {                                                                                                                  \
    cudaError_t e_ = (x);                                                                                               \
    if (e_ != cudaSuccess) {                                                                                            \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));                               \
      exit(1);                                                                                                          \
    }                                                                                                                   \
  } while (0)

static __host__ __device__ uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

__global__ void fill_normal(__nv_bfloat16 *x, int64_t n, uint64_t seed, float sd) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    uint64_t h = (uint64_t)i * 0x9e3779b97f4a7c15ull + seed;
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 29;
    const float u1 = ((h >> 40) + 1) * (1.0f / 16777217.0f), u2 = ((h & 0xffffff) + 0.5f) * (1.0f / 16777216.0f);
    x[i] = __float2bfloat16(sd * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2));
  }
}

__global__ void fill_u32(uint32_t *x, int64_t n, uint32_t v) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) x[i] = v;
}

struct Case {
  const char *name;
  int64_t s, kv_valid;
  int heads;
  double density; /* 0: dense; > 0: sparse with layout blocks of `block`; < 0: fused dense + mass of blocks of `block` */
  int block;
  int check; /* 1: float64 reference on all rows; 2: on sampled rows; 0: cross-family only */
  int time;
};

struct Layout {
  std::vector<int64_t> off;
  std::vector<int32_t> idx;
  std::vector<int32_t> order;
  int64_t pairs = 0; /* computed (query, key) pairs, clipped to sq and kv_valid */
};

/* Random row-wise layout, densities per head spread 10x around the mean (0.25 d .. 2.5 d, capped),
 * the diagonal and the last block column kept, plus a few empty and full rows; the rows of the
 * last 256 tokens (text) are full, as AdaSpa keeps them. */
/* The timed cases' layouts: per-head densities 0.25x to 2.5x d (the densest head last), 1% of the
 * rows full and 1% empty, the text rows full; TESTBED_LAYOUT=uniform: every head at d, no full or
 * empty rows but the text rows; TESTBED_LAYOUT=topk: as uniform, but every row exactly round(d nkb)
 * blocks, the text columns among them (the attention bench's row-wise top-k and AdaSpa's
 * selection). Rows of one length keep the persistent CTAs of a head in step, reading the same
 * stretch of its K/V; the per-block draws' spread (13 blocks at 720p d0.1) does not: L2 hit rate
 * 0.955 against 0.832 at 720p d0.1 in kernels/testbed/l2_sim.lua (seventeenth session) */
static Layout make_layout(int heads, int64_t s, int64_t kvv, int block, double d, uint64_t seed) {
  static const char *const kind = getenv("TESTBED_LAYOUT") ? getenv("TESTBED_LAYOUT") : "";
  static const bool topk = !strcmp(kind, "topk"), uniform = topk || !strcmp(kind, "uniform");
  Layout L;
  const int64_t nqb = (s + block - 1) / block, nkb = (s + block - 1) / block;
  L.off.push_back(0);
  std::vector<int32_t> row;
  std::vector<std::pair<int64_t, int32_t>> len;
  for (int h = 0; h < heads; h++) {
    const double dh = uniform ? d : std::min(1.0, d * (0.25 + 2.25 * (double)h / std::max(1, heads - 1)));
    for (int64_t qb = 0; qb < nqb; qb++) {
      row.clear();
      const uint64_t r = mix(seed ^ ((uint64_t)h << 40) ^ (uint64_t)qb);
      if (qb * block >= s - 256) { /* the text rows (the last 256 tokens) attend to every block */
        for (int64_t kb = 0; kb < nkb; kb++) row.push_back((int32_t)kb);
      } else if (!uniform && r % 97 == 0) { /* empty row */
      } else if (!uniform && r % 89 == 0) {
        for (int64_t kb = 0; kb < nkb; kb++) row.push_back((int32_t)kb);
      } else if (topk) { /* the text columns, then distinct uniform draws up to k */
        const int64_t text0 = std::max<int64_t>(0, (s - 256) / block), k = std::max<int64_t>(nkb - text0, (int64_t)floor(dh * (double)nkb + 0.5));
        std::vector<char> keep(nkb, 0);
        for (int64_t kb = text0; kb < nkb; kb++) keep[kb] = 1;
        for (int64_t n = nkb - text0, j = 0; n < k && text0 > 0; j++) {
          const int64_t kb = (int64_t)(mix(r + (uint64_t)j) % (uint64_t)text0);
          if (!keep[kb]) keep[kb] = 1, n++;
        }
        for (int64_t kb = 0; kb < nkb; kb++)
          if (keep[kb]) row.push_back((int32_t)kb);
      } else {
        for (int64_t kb = 0; kb < nkb; kb++) {
          const double u = (double)(mix(r + (uint64_t)kb) >> 11) * (1.0 / 9007199254740992.0);
          if (u < dh || kb == qb || kb == nkb - 1) row.push_back((int32_t)kb);
        }
      }
      for (int32_t kb : row) {
        const int64_t q0 = qb * block, k0 = (int64_t)kb * block;
        const int64_t nq = std::min<int64_t>(block, s - q0), nk = std::max<int64_t>(0, std::min<int64_t>(block, kvv - k0));
        L.pairs += nq * nk;
      }
      L.idx.insert(L.idx.end(), row.begin(), row.end());
      L.off.push_back((int64_t)L.idx.size());
      len.push_back({(int64_t)row.size(), (int32_t)(h * nqb + qb)});
    }
  }
  /* per head the offsets restart: the kernels index offsets[h * (nqb + 1) + qb] */
  std::vector<int64_t> off2;
  for (int h = 0; h < heads; h++) {
    off2.push_back(L.off[h * nqb]);
    for (int64_t qb = 0; qb < nqb; qb++) off2.push_back(L.off[h * nqb + qb + 1]);
  }
  L.off = off2;
  std::stable_sort(len.begin(), len.end(), [](const std::pair<int64_t, int32_t> &a, const std::pair<int64_t, int32_t> &b) {
    return a.first > b.first;
  });
  for (auto &x : len) L.order.push_back(x.second);
  return L;
}

static float bf2f(__nv_bfloat16 x) { return __bfloat162float(x); }

/* float64 reference of rows [r, r + 1) of head h: out[128], lse */
static void ref_row(const std::vector<__nv_bfloat16> &qkv, int64_t s, int heads, int64_t kvv, float scale, int h,
                    int64_t r, const Layout *L, int block, double *out, double *lse) {
  const int64_t rs = 3 * (int64_t)heads * 128;
  std::vector<double> sc;
  std::vector<int64_t> keys;
  if (L) {
    const int64_t nqb = (s + block - 1) / block, qb = r / block;
    for (int64_t i = L->off[h * (nqb + 1) + qb]; i < L->off[h * (nqb + 1) + qb + 1]; i++)
      for (int64_t j = (int64_t)L->idx[i] * block; j < std::min<int64_t>(((int64_t)L->idx[i] + 1) * block, kvv); j++) keys.push_back(j);
  } else {
    for (int64_t j = 0; j < kvv; j++) keys.push_back(j);
  }
  double mx = -INFINITY;
  for (int64_t j : keys) {
    double acc = 0;
    for (int d = 0; d < 128; d++) acc += (double)bf2f(qkv[r * rs + h * 128 + d]) * bf2f(qkv[j * rs + heads * 128 + h * 128 + d]);
    sc.push_back(acc * scale);
    mx = std::max(mx, acc * scale);
  }
  double l = 0;
  for (double &x : sc) l += (x = exp(x - mx));
  for (int d = 0; d < 128; d++) out[d] = 0;
  for (size_t i = 0; i < keys.size(); i++)
    for (int d = 0; d < 128; d++) out[d] += sc[i] * bf2f(qkv[keys[i] * rs + 2 * heads * 128 + h * 128 + d]);
  for (int d = 0; d < 128; d++) out[d] = l > 0 ? out[d] / l : 0;
  *lse = l > 0 ? mx + log(l) : -INFINITY;
}

typedef int (*launch_fn)(const ada_attn_params *, void *);
/* sm80 with the plan's tiles (sparse blocks of 64: 64-row CTAs as two row groups x two key halves) */
static int launch_sm80(const ada_attn_params *p, void *st) {
  ada_attn_params q = *p;
  const bool r64 = q.mode == ADA_ATTN_SPARSE && q.layout_block == 64;
  q.tile_rows = r64 ? 64 : 128;
  q.key_halves = r64 ? 2 : 1;
  q.variant = 0;
  return ada_launch_attention_sm80(&q, st);
}
/* variant v; block 64 walks head-major, or with tail the case's tail walk (the plan's variant "tail") */
static int sm90_variant(const ada_attn_params *p, int v, void *st, bool tail = false) {
  ada_attn_params q = *p;
  if (!tail) q.walk = nullptr;
  q.tile_rows = 128;
  q.key_halves = 1;
  q.variant = v;
  return ada_launch_attention_sm90(&q, st);
}
static int sm90_v1(const ada_attn_params *p, void *st) { return sm90_variant(p, 1, st); }
static int sm90_v2(const ada_attn_params *p, void *st) { return sm90_variant(p, 2, st); }
static int sm90_v3(const ada_attn_params *p, void *st) { return sm90_variant(p, 3, st); }
static int sm90_v4(const ada_attn_params *p, void *st) { return sm90_variant(p, 4, st); }
static int sm90_v3t(const ada_attn_params *p, void *st) { return sm90_variant(p, 3, st, true); } /* cases with a walk */
/* block 64 in N passes over the key blocks (ada_attn_params.kv_split: a pass's blocks) */
static int sm90_split(const ada_attn_params *p, int passes, void *st) {
  ada_attn_params q = *p;
  q.kv_split = (int32_t)(((q.kv_valid + 63) / 64 + passes - 1) / passes);
  return sm90_variant(&q, 3, st);
}
/* blocks of 128 in the head-major order (runtime/walk.h, ada_order_head; the plan's variant "head"):
 * the case's order, set before its families run */
static const int32_t *g_order_head = nullptr;
static int sm90_v3o(const ada_attn_params *p, void *st) {
  ada_attn_params q = *p;
  q.order = g_order_head;
  return sm90_variant(&q, 3, st);
}
/* block 64 in one pass with the sweep (ada_attn_params.sweep_ns, the plan's variant "sweep") */
static int sm90_v3w(const ada_attn_params *p, void *st) {
  ada_attn_params q = *p;
  q.sweep_ns = 1230;
  return sm90_variant(&q, 3, st);
}
static int sm90_v3x2(const ada_attn_params *p, void *st) { return sm90_split(p, 2, st); }
static int sm90_v3x3(const ada_attn_params *p, void *st) { return sm90_split(p, 3, st); }
static int sm90_v3x4(const ada_attn_params *p, void *st) { return sm90_split(p, 4, st); }
/* A/B flags on variant v: static_walk (the fixed-stride walk instead of the in-kernel counter)
 * and l2_hint (a mask of ada_l2_hint: Q evict-first, K/V evict-last, streaming out) */
static int sm90_flags(const ada_attn_params *p, int v, int static_walk, int l2_hint, void *st) {
  ada_attn_params q = *p;
  q.static_walk = static_walk;
  q.l2_hint = l2_hint;
  return sm90_variant(&q, v, st);
}
static int sm90_v3s(const ada_attn_params *p, void *st) { return sm90_flags(p, 3, 1, 0, st); }
static int sm90_v4s(const ada_attn_params *p, void *st) { return sm90_flags(p, 4, 1, 0, st); }
static int sm90_v3h(const ada_attn_params *p, void *st) { return sm90_flags(p, 3, 0, ADA_L2_ALL, st); }
static int sm90_v4h(const ada_attn_params *p, void *st) { return sm90_flags(p, 4, 0, ADA_L2_ALL, st); }
/* the K/V priority alone (for the fused pass, which the whole set made 2% slower) */
static int sm90_v3k(const ada_attn_params *p, void *st) { return sm90_flags(p, 3, 0, ADA_L2_KV_LAST, st); }
static int sm90_v4k(const ada_attn_params *p, void *st) { return sm90_flags(p, 4, 0, ADA_L2_KV_LAST, st); }

/* `attn_testbed bandwidth`: what L2 and HBM deliver to the SMs, for block 64's roofline (NOTES: a
 * 64 x 64 tile does 64 FLOP a byte of K and V, so 450 TFLOP/s needs 7 TB/s of K/V).
 * - stream: each thread reads 16 bytes at a time, consecutive across the grid, over a buffer of
 *   N MB, `reps` times (cache-global loads: L2, not L1);
 * - tiles: one head's K/V tiles as the block-64 kernel gathers them from a [S, 3, 24, 128] bf16
 *   tensor: 64 rows of 256 bytes, rows 18,432 bytes apart, K at column 24 + h and V at 48 + h,
 *   each warp one random key block at a time (K then V, 32 KB). A head's K and V are 512 S bytes:
 *   S = 16,384 (8 MB, all in L2), 67,576 (540p, 35 MB), 119,056 (720p, 61 MB, over the L2). */
__global__ void bw_stream(const uint4 *x, int64_t n, int reps, unsigned *sink) {
  uint32_t acc = 0;
  for (int r = 0; r < reps; r++)
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
      const uint4 v = __ldcg(x + i);
      acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
  if (acc == 0x9e3779b9u) atomicAdd(sink, 1u); /* keeps the loads */
}
__global__ void bw_tiles(const unsigned char *qkv, int64_t nkb, int tiles_per_warp, unsigned *sink) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  uint32_t acc = 0;
  for (int t = 0; t < tiles_per_warp; t++) {
    const int64_t kb = (int64_t)(mix((uint64_t)warp * 1000003ull + (uint64_t)t) % (uint64_t)nkb);
    for (int kv = 1; kv <= 2; kv++) {
      const unsigned char *base = qkv + kb * 64 * 18432 + (int64_t)(kv * 24) * 256;
#pragma unroll 8
      for (int i = 0; i < 32; i++) { /* 64 rows x 16 pieces of 16 bytes = 1024 pieces, 32 a lane */
        const int piece = i * 32 + lane, row = piece >> 4, col = piece & 15;
        const uint4 v = __ldcg(reinterpret_cast<const uint4 *>(base + (int64_t)row * 18432) + col);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
      }
    }
  }
  if (acc == 0x9e3779b9u) atomicAdd(sink, 1u);
}

static int bandwidth() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  unsigned *sink;
  CK(cudaMalloc(&sink, 4));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  auto timed = [&](auto launch) { /* the median of 5, after one warm-up run */
    launch();
    CK(cudaGetLastError());
    std::vector<float> ts;
    for (int r = 0; r < 5; r++) {
      CK(cudaEventRecord(e0));
      launch();
      CK(cudaEventRecord(e1));
      CK(cudaEventSynchronize(e1));
      float t;
      CK(cudaEventElapsedTime(&t, e0, e1));
      ts.push_back(t);
    }
    std::sort(ts.begin(), ts.end());
    return (double)ts[2] * 1e-3;
  };
  printf("bandwidth, %d SMs (TB/s: bytes the SMs read over the kernel's time)\n", sms);
  for (int mb : {8, 24, 35, 61, 512}) {
    const int64_t n = (int64_t)mb << 16; /* uint4 pieces */
    uint4 *x;
    CK(cudaMalloc(&x, n * 16));
    CK(cudaMemset(x, 1, n * 16));
    const int reps = mb >= 512 ? 2 : 16;
    const double s = timed([&] { bw_stream<<<sms * 4, 512>>>(x, n, reps, sink); });
    printf("| stream | %4d MB | %.2f TB/s |\n", mb, (double)n * 16 * reps / s * 1e-12);
    CK(cudaFree(x));
  }
  for (int64_t S : {16384LL, 67576LL, 119056LL}) {
    const int64_t nkb = S / 64;
    unsigned char *qkv;
    CK(cudaMalloc(&qkv, S * 18432));
    CK(cudaMemset(qkv, 1, S * 18432));
    const int tpw = 64, warps = sms * 8 * 2; /* 2 CTAs of 256 threads an SM */
    const double s = timed([&] { bw_tiles<<<sms * 2, 256>>>(qkv, nkb, tpw, sink); });
    printf("| K/V tiles | S %6lld (a head's K+V %3lld MB) | %.2f TB/s |\n", (long long)S, (long long)(S * 512 >> 20),
           (double)warps * tpw * 32768.0 / s * 1e-12);
    CK(cudaFree(qkv));
  }
  CK(cudaFree(sink));
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "bandwidth")) return bandwidth();
  /* quick: the untimed cases only; time: the timed cases only, outputs checked for NaN poison but
   * not compared (run the untimed cases for that); a second argument keeps the cases whose name
   * contains it */
  const bool quick = argc > 1 && !strcmp(argv[1], "quick"), time_only = argc > 1 && !strcmp(argv[1], "time");
  const char *filter = argc > 2 ? argv[2] : nullptr;
  /* TESTBED_FAMS="sm90 st3|sm90 st3 pp static": in `time` mode, time only the families named
   * (exact names, '|' between them); the others print 0 */
  const char *fams_env = getenv("TESTBED_FAMS");
  auto fam_selected = [&](const char *name) {
    if (!time_only || !fams_env || !*fams_env) return true;
    const size_t n = strlen(name);
    for (const char *s = fams_env; *s;) {
      const char *e = strchr(s, '|');
      const size_t len = e ? (size_t)(e - s) : strlen(s);
      if (len == n && !strncmp(s, name, n)) return true;
      if (!e) break;
      s = e + 1;
    }
    return false;
  };
  setvbuf(stdout, nullptr, _IOLBF, 0);
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  std::vector<Case> cases = {
      {"odd dense", 1000, 1000, 3, 0, 128, 1, 0},
      {"odd dense kv_valid", 777, 700, 2, 0, 128, 1, 0},
      {"tiny", 37, 37, 1, 0, 128, 1, 0},
      {"dense kv_valid 1409", 1500, 1409, 2, 0, 128, 1, 0},
      {"dense 352", 352, 352, 2, 0, 128, 1, 0},
      {"odd sparse128", 1500, 1431, 4, 0.3, 128, 1, 0},
      {"sparse128 empty/full rows", 4000, 4000, 5, 0.2, 128, 2, 0},
      {"540p dense", 67576, 67576, 24, 0, 128, 2, 1},
      {"720p dense", 119056, 119056, 24, 0, 128, 2, 1},
      {"720p dense text 200/256", 119056, 119000, 24, 0, 128, 0, 1},
      {"720p sparse128 d0.025", 119056, 119056, 24, 0.025, 128, 0, 1},
      {"720p sparse128 d0.05", 119056, 119056, 24, 0.05, 128, 0, 1},
      {"720p sparse128 d0.1", 119056, 119056, 24, 0.1, 128, 2, 1},
      {"720p sparse128 d0.2", 119056, 119056, 24, 0.2, 128, 0, 1},
      {"720p sparse128 d0.4", 119056, 119056, 24, 0.4, 128, 0, 1},
      {"odd sparse64", 1500, 1431, 4, 0.3, 64, 1, 0},
      {"sparse64 odd block count", 1060, 1060, 3, 0.25, 64, 1, 0},
      {"sparse64 empty/full rows", 4000, 4000, 5, 0.2, 64, 2, 0},
      {"540p sparse64 d0.1", 67576, 67576, 24, 0.1, 64, 0, 1},
      {"720p sparse64 d0.1", 119056, 119056, 24, 0.1, 64, 2, 1},
      {"720p sparse64 d0.2", 119056, 119056, 24, 0.2, 64, 0, 1},
      {"720p sparse64 d0.4", 119056, 119056, 24, 0.4, 64, 0, 1},
      {"odd fused mass64", 1000, 950, 3, -1, 64, 1, 0},
      {"odd fused mass128", 777, 777, 2, -1, 128, 1, 0},
      {"fused mass64 kv tail", 1300, 1000, 2, -1, 64, 1, 0},   /* 5 key blocks past kv_valid: the launcher's band */
      {"fused mass128 kv tail", 1300, 900, 2, -1, 128, 1, 0},
      {"540p fused mass64", 67576, 67576, 24, -1, 64, 0, 1},
      {"540p fused mass128 text", 67576, 67520, 24, -1, 128, 0, 1},
      {"720p fused mass64", 119056, 119056, 24, -1, 64, 0, 1},
      {"720p fused mass128 text", 119056, 119000, 24, -1, 128, 0, 1},
  };
  struct Fam {
    const char *name;
    launch_fn fn;
    bool block64 = false;  /* runs on block-64 sparse cases only (their walk and pass flags) */
    bool block128 = false; /* runs on block-128 sparse cases only (their head-major order) */
  } fams[] = {{"sm80", launch_sm80},
              {"sm90 st2", sm90_v1},
              {"sm90 st2 pp", sm90_v2},
              {"sm90 st3", sm90_v3},
              {"sm90 st3 pp", sm90_v4},
              {"sm90 st3 static", sm90_v3s},
              {"sm90 st3 pp static", sm90_v4s},
              {"sm90 st3 hint", sm90_v3h},
              {"sm90 st3 pp hint", sm90_v4h},
              {"sm90 st3 kv hint", sm90_v3k},
              {"sm90 st3 pp kv hint", sm90_v4k},
              {"sm90 st3 tail", sm90_v3t, true},
              {"sm90 st3 split", sm90_v3x2, true},
              {"sm90 st3 split3", sm90_v3x3, true},
              {"sm90 st3 split4", sm90_v3x4, true},
              {"sm90 st3 sweep", sm90_v3w, true},
              {"sm90 st3 head", sm90_v3o, false, true}};
  const int NF = (int)(sizeof fams / sizeof fams[0]);
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  int failures = 0;
  std::vector<std::string> table;
  for (const Case &c : cases) {
    if ((quick && c.time) || (time_only && !c.time) || (filter && !strstr(c.name, filter))) continue;
    const int H = c.heads;
    const int64_t S = c.s, n = S * 3 * H * 128;
    __nv_bfloat16 *qkv;
    CK(cudaMalloc(&qkv, n * 2));
    fill_normal<<<1024, 256, 0, st>>>(qkv, n, 1234 + (uint64_t)S, 1.0f);
    CK(cudaGetLastError());
    Layout L;
    int64_t *doff = nullptr;
    int32_t *didx = nullptr, *dord = nullptr, *dwalk = nullptr, *dordh = nullptr;
    uint32_t *dflags = nullptr;
    int64_t pairs = S * c.kv_valid * H;
    if (c.density > 0) {
      L = make_layout(H, S, c.kv_valid, c.block, c.density, 77 + (uint64_t)S);
      pairs = L.pairs;
      CK(cudaMalloc(&doff, L.off.size() * 8));
      CK(cudaMalloc(&didx, std::max<size_t>(1, L.idx.size()) * 4));
      CK(cudaMalloc(&dord, L.order.size() * 4));
      CK(cudaMemcpy(doff, L.off.data(), L.off.size() * 8, cudaMemcpyHostToDevice));
      if (!L.idx.empty()) CK(cudaMemcpy(didx, L.idx.data(), L.idx.size() * 4, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dord, L.order.data(), L.order.size() * 4, cudaMemcpyHostToDevice));
      if (c.block == 128) { /* the head-major order: family "sm90 st3 head" */
        std::vector<int32_t> oh(L.order.size());
        if (ada_order_head(H, (S + 127) / 128, (S + 127) / 128, L.off.data(), oh.data()) != 0) {
          fprintf(stderr, "%s: ada_order_head failed\n", c.name);
          exit(1);
        }
        CK(cudaMalloc(&dordh, oh.size() * 4));
        CK(cudaMemcpy(dordh, oh.data(), oh.size() * 4, cudaMemcpyHostToDevice));
      }
      if (c.block == 64) { /* the sm90 kernel's tail walk (runtime/walk.h): family "sm90 st3 tail" */
        const int64_t nqb = (S + 63) / 64;
        std::vector<int32_t> walk((size_t)H * (size_t)((nqb + 1) / 2));
        int dev = 0, sms = 0;
        CK(cudaGetDevice(&dev));
        CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        if (ada_walk64(H, nqb, L.off.data(), sms, walk.data()) != 0) {
          fprintf(stderr, "%s: ada_walk64 failed\n", c.name);
          exit(1);
        }
        CK(cudaMalloc(&dwalk, walk.size() * 4));
        CK(cudaMemcpy(dwalk, walk.data(), walk.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMalloc(&dflags, (size_t)H * (size_t)nqb * 16)); /* passes: families "sm90 st3 split*" */
      }
    }
    std::vector<__nv_bfloat16 *> out(NF);
    std::vector<float *> lse(NF);
    for (int f = 0; f < NF; f++) {
      CK(cudaMalloc(&out[f], S * H * 128 * 2));
      CK(cudaMalloc(&lse[f], S * H * 4));
    }
    ada_attn_params p;
    memset(&p, 0, sizeof p);
    p.mode = c.density > 0 ? ADA_ATTN_SPARSE : c.density < 0 ? ADA_ATTN_FUSED : ADA_ATTN_DENSE;
    p.q = qkv;
    p.k = qkv + H * 128;
    p.v = qkv + 2 * H * 128;
    p.q_rs = p.k_rs = p.v_rs = 3 * H * 128;
    p.q_hs = p.k_hs = p.v_hs = 128;
    p.sq = S;
    p.skv = S;
    p.kv_valid = c.kv_valid;
    p.heads = H;
    p.dim = 128;
    p.scale = 1.0f / sqrtf(128.0f);
    p.out_dtype = ADA_BF16;
    p.out_dim = 128;
    p.offsets = doff;
    p.indices = didx;
    p.order = dord;
    p.walk = dwalk;
    g_order_head = dordh;
    p.split_flags = dflags;
    p.layout_block = c.block;
    /* FUSED: lse_in is a dense pass's lse shifted by up to +-0.15 (a cached lse of an earlier step) */
    float *lse_in = nullptr;
    std::vector<float *> mass(NF, nullptr);
    std::vector<float> hlin;
    const int64_t mb = c.block, nmqb = (S + mb - 1) / mb, nmkb = (S + mb - 1) / mb, nmass = (int64_t)H * nmqb * nmkb;
    std::vector<std::vector<float>> hmass(NF);
    if (c.density < 0) {
      ada_attn_params d = p;
      d.mode = ADA_ATTN_DENSE;
      d.out = out[0];
      d.lse = lse[0];
      if (launch_sm80(&d, st)) failures++;
      CK(cudaStreamSynchronize(st));
      hlin.resize(S * H);
      CK(cudaMemcpy(hlin.data(), lse[0], S * H * 4, cudaMemcpyDeviceToHost));
      for (int64_t i = 0; i < S * H; i++) hlin[i] += 0.05f * (float)((i % 7) - 3);
      CK(cudaMalloc(&lse_in, S * H * 4));
      CK(cudaMemcpy(lse_in, hlin.data(), S * H * 4, cudaMemcpyHostToDevice));
      for (int f = 0; f < NF; f++) CK(cudaMalloc(&mass[f], nmass * 4));
      p.lse_in = lse_in;
      p.mass_block = (int32_t)mb;
    }
    std::vector<double> ms(NF, 0.0);
    std::vector<std::vector<__nv_bfloat16>> hout(NF);
    std::vector<std::vector<float>> hlse(NF);
    std::vector<__nv_bfloat16> hq;
    if (c.check) {
      hq.resize(n);
      CK(cudaMemcpy(hq.data(), qkv, n * 2, cudaMemcpyDeviceToHost));
    }
    for (int f = 0; f < NF; f++) {
      if (!fam_selected(fams[f].name) || (fams[f].block64 && !p.walk) || (fams[f].block128 && !g_order_head)) continue;
      p.out = out[f];
      p.lse = lse[f];
      ada_attn_params p90 = p;
      p90.tile_rows = 128;
      p90.variant = 3;
      if (f >= 1 && !ada_attention_sm90_supports(&p90)) {
        printf("%-28s %s: not supported on this device\n", c.name, fams[f].name);
        continue;
      }
      fill_u32<<<1024, 256, 0, st>>>((uint32_t *)out[f], S * H * 64, 0x7fc07fc0u); /* NaN bf16 pairs */
      fill_u32<<<1024, 256, 0, st>>>((uint32_t *)lse[f], S * H, 0x7fc00000u);
      p.mass = mass[f];
      if (mass[f]) fill_u32<<<1024, 256, 0, st>>>((uint32_t *)mass[f], nmass, 0x7fc00000u);
      int e = fams[f].fn(&p, st);
      if (e) {
        printf("%-28s %s: launch failed: %s\n", c.name, fams[f].name, cudaGetErrorString((cudaError_t)e));
        failures++;
        continue;
      }
      CK(cudaStreamSynchronize(st));
      hout[f].resize(S * H * 128);
      hlse[f].resize(S * H);
      CK(cudaMemcpy(hout[f].data(), out[f], S * H * 128 * 2, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(hlse[f].data(), lse[f], S * H * 4, cudaMemcpyDeviceToHost));
      int64_t bad = 0;
      for (size_t i = 0; i < hout[f].size(); i++) bad += !isfinite(bf2f(hout[f][i]));
      if (mass[f]) {
        hmass[f].resize(nmass);
        CK(cudaMemcpy(hmass[f].data(), mass[f], nmass * 4, cudaMemcpyDeviceToHost));
        int64_t badm = 0;
        for (float x : hmass[f]) badm += !isfinite(x);
        if (badm) {
          printf("%-28s %s: %lld mass entries not written or not finite\n", c.name, fams[f].name, (long long)badm);
          failures++;
        }
        if (c.check == 1) { /* float64 mass of every block */
          std::vector<double> ref(nmass, 0.0);
          const int64_t rs = 3 * (int64_t)H * 128;
#pragma omp parallel for schedule(dynamic)
          for (int64_t hr = 0; hr < (int64_t)H * S; hr++) {
            const int h = (int)(hr / S);
            const int64_t r = hr % S;
            std::vector<double> rowm(nmkb, 0.0);
            for (int64_t j = 0; j < c.kv_valid; j++) {
              double acc = 0;
              for (int d = 0; d < 128; d++) acc += (double)bf2f(hq[r * rs + h * 128 + d]) * bf2f(hq[j * rs + H * 128 + h * 128 + d]);
              rowm[j / mb] += exp(acc * p.scale - hlin[(int64_t)h * S + r]);
            }
            const double inv = 1.0 / (double)std::min<int64_t>(mb, S - (r / mb) * mb);
            for (int64_t kb = 0; kb < nmkb; kb++) {
#pragma omp atomic
              ref[((int64_t)h * nmqb + r / mb) * nmkb + kb] += rowm[kb] * inv;
            }
          }
          double num = 0, den = 0;
          for (int64_t i = 0; i < nmass; i++) {
            num += (hmass[f][i] - ref[i]) * (hmass[f][i] - ref[i]);
            den += ref[i] * ref[i];
          }
          const double rel = sqrt(num / den);
          printf("%-28s %s: mass vs float64: rel L2 %.2e %s\n", c.name, fams[f].name, rel, rel < 1e-2 ? "ok" : "FAIL");
          failures += rel >= 1e-2;
        }
      }
      int64_t badl = 0;
      for (size_t i = 0; i < hlse[f].size(); i++) badl += isnan(hlse[f][i]);
      if (bad || badl) {
        printf("%-28s %s: %lld outputs and %lld lse not written or not finite\n", c.name, fams[f].name, (long long)bad,
               (long long)badl);
        failures++;
      }
      if (c.check && !time_only) {
        double num = 0, den = 0, lerr = 0;
        const int64_t nrows = S * H;
        const int64_t step = c.check == 1 ? 1 : std::max<int64_t>(1, nrows / 256);
#pragma omp parallel for schedule(dynamic) reduction(+ : num, den) reduction(max : lerr)
        for (int64_t i = 0; i < nrows; i += step) {
          const int64_t ii = c.check == 1 ? i : (int64_t)(mix((uint64_t)i) % (uint64_t)nrows);
          const int h = (int)(ii % H);
          const int64_t r = ii / H;
          double ro[128], rl;
          ref_row(hq, S, H, c.kv_valid, p.scale, h, r, c.density > 0 ? &L : nullptr, c.block, ro, &rl);
          for (int d = 0; d < 128; d++) {
            const double x = bf2f(hout[f][(r * H + h) * 128 + d]);
            num += (x - ro[d]) * (x - ro[d]);
            den += ro[d] * ro[d];
          }
          const double gl = hlse[f][(int64_t)h * S + r];
          if (!(isinf(rl) && isinf(gl) && rl < 0 && gl < 0)) lerr = std::max(lerr, fabs(gl - rl));
        }
        const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        const bool ok = rel < 1e-2 && lerr < 1e-3;
        printf("%-28s %s: vs float64: rel L2 %.2e, max |lse err| %.2e %s\n", c.name, fams[f].name, rel, lerr,
               ok ? "ok" : "FAIL");
        failures += !ok;
      }
      if (c.time) {
        std::vector<float> ts;
        for (int rep = 0; rep < 7; rep++) {
          CK(cudaEventRecord(e0, st));
          if (fams[f].fn(&p, st)) failures++;
          CK(cudaEventRecord(e1, st));
          CK(cudaEventSynchronize(e1));
          float t;
          CK(cudaEventElapsedTime(&t, e0, e1));
          if (rep > 0) ts.push_back(t);
        }
        std::sort(ts.begin(), ts.end());
        ms[f] = ts[ts.size() / 2];
      }
    }
    for (int f = 1; f < NF && !time_only; f++) {
      if (hout[0].empty() || hout[f].empty()) continue;
      double num = 0, den = 0, lerr = 0;
      for (size_t i = 0; i < hout[0].size(); i++) {
        const double a = bf2f(hout[0][i]), b = bf2f(hout[f][i]);
        num += (a - b) * (a - b);
        den += a * a;
      }
      for (size_t i = 0; i < hlse[0].size(); i++)
        if (!(isinf(hlse[0][i]) && isinf(hlse[f][i]))) lerr = std::max(lerr, (double)fabsf(hlse[0][i] - hlse[f][i]));
      const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
      const bool ok = rel < 1e-2 && lerr < 1e-3;
      printf("%-28s %s vs sm80: rel L2 %.2e, max |lse diff| %.2e %s\n", c.name, fams[f].name, rel, lerr, ok ? "ok" : "FAIL");
      failures += !ok;
      if (!hmass[0].empty() && !hmass[f].empty()) {
        double mn = 0, md = 0;
        for (int64_t i = 0; i < nmass; i++) {
          mn += (hmass[0][i] - hmass[f][i]) * (hmass[0][i] - hmass[f][i]);
          md += (double)hmass[0][i] * hmass[0][i];
        }
        const double mrel = sqrt(mn / md);
        printf("%-28s %s vs sm80: mass rel L2 %.2e %s\n", c.name, fams[f].name, mrel, mrel < 1e-2 ? "ok" : "FAIL");
        failures += mrel >= 1e-2;
      }
    }
    if (c.time) {
      const double fl = 4.0 * 128 * (double)pairs;
      std::string line = "| " + std::string(c.name);
      for (int f = 0; f < NF; f++) {
        char cell[64];
        snprintf(cell, sizeof cell, " | %.1f ms %.0f", ms[f], ms[f] > 0 ? fl / ms[f] / 1e9 : 0.0);
        line += cell;
      }
      table.push_back(line + " |");
    }
    if (lse_in) CK(cudaFree(lse_in));
    for (int f = 0; f < NF; f++) {
      if (mass[f]) CK(cudaFree(mass[f]));
      CK(cudaFree(out[f]));
      CK(cudaFree(lse[f]));
    }
    CK(cudaFree(qkv));
    if (doff) {
      CK(cudaFree(doff));
      CK(cudaFree(didx));
      CK(cudaFree(dord));
      if (dwalk) CK(cudaFree(dwalk));
      if (dordh) CK(cudaFree(dordh));
      if (dflags) CK(cudaFree(dflags));
    }
  }
  printf("\n| case (ms, TFLOP/s)");
  for (int f = 0; f < NF; f++) printf(" | %s", fams[f].name);
  printf(" |\n|---");
  for (int f = 0; f < NF; f++) printf("|---");
  printf("|\n");
  for (auto &l : table) printf("%s\n", l.c_str());
  printf("\n%d failures\n", failures);
  return failures ? 1 : 0;
}
