/* nn.cu: the non-GEMM neural-network ops: row-wise elementwise ops (modulate, gated_add, add,
 * mul, scale, silu, gelu_tanh, gelu), layernorm / rmsnorm (and the fused layernorm + modulate, and
 * gated_add + layernorm + modulate), softmax, 3D RoPE, patchify / unpatchify and the sinusoidal
 * timestep embedding.
 *
 * Math is f32 (the CPU reference's order of operations); RoPE and timestep angles are computed
 * in double as the CPU does. Each tensor carries its own dtype (f32, bf16, f16). Kernels are
 * specialized on one dtype when every tensor of the call has it (the model's case: all bf16 or
 * all f32), else read the dtype of each tensor at run time (a warp-uniform branch).
 *
 * Rows are processed in chunks of 8 elements per thread: with `vec` a chunk is one 16-byte load
 * (bf16/f16) or two (f32); the last, partial chunk of a row and the unaligned case use scalar
 * loads. The row-wise and RoPE kernels run a 2D grid: threads along a row's chunks (x), rows
 * along blocks (y in the block, x of the grid), grid-stride both ways with about 8 rows per
 * thread on large tensors (a broadcast operand's chunk is loaded once per thread). Norms keep a row in
 * registers (one group of 8, 16, 32 or 128 threads per row, f32 sums reduced by shuffles and,
 * for 128, shared memory; a warp per row up to 2048 wide, a block of 128 above), two passes over
 * the registers (mean, then squared deviations); rows wider than 8192 are read again in each pass.
 * Softmax runs a warp per row: an online pass (maximum and sum of exponentials, merged by
 * shuffles), then a writing pass that reads the row again.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

namespace {

constexpr int kThreads = 128;
constexpr int DT_ANY = -1;

/* The dtype of a tensor: the specialization's when there is one, else the run-time value. */
template <int DT> __device__ __forceinline__ int dt_of(int rt) { return DT == DT_ANY ? rt : DT; }

__device__ __forceinline__ float ld1(const void *p, int dt, int64_t i) {
  if (dt == ADA_F32) return ((const float *)p)[i];
  const uint16_t h = ((const uint16_t *)p)[i];
  if (dt == ADA_BF16) return __uint_as_float((uint32_t)h << 16);
  return __half2float(__ushort_as_half(h));
}

__device__ __forceinline__ void st1(void *p, int dt, int64_t i, float v) {
  if (dt == ADA_F32) ((float *)p)[i] = v;
  else if (dt == ADA_BF16) ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
  else ((__half *)p)[i] = __float2half_rn(v);
}

/* 8 elements from element i (16-byte aligned). */
__device__ __forceinline__ void ld8(const void *p, int dt, int64_t i, float v[8]) {
  if (dt == ADA_F32) {
    const float4 a = *(const float4 *)((const float *)p + i), b = *(const float4 *)((const float *)p + i + 4);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
  } else {
    const uint4 u = *(const uint4 *)((const uint16_t *)p + i);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
      if (dt == ADA_BF16) {
        v[2 * k] = __uint_as_float(w[k] << 16);
        v[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
      } else {
        __half2 h;
        memcpy(&h, &w[k], 4);
        const float2 f = __half22float2(h);
        v[2 * k] = f.x;
        v[2 * k + 1] = f.y;
      }
    }
  }
}

__device__ __forceinline__ void st8(void *p, int dt, int64_t i, const float v[8]) {
  if (dt == ADA_F32) {
    *(float4 *)((float *)p + i) = make_float4(v[0], v[1], v[2], v[3]);
    *(float4 *)((float *)p + i + 4) = make_float4(v[4], v[5], v[6], v[7]);
  } else {
    uint32_t w[4];
#pragma unroll
    for (int k = 0; k < 4; k++) {
      if (dt == ADA_BF16) {
        const __nv_bfloat162 b = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
        memcpy(&w[k], &b, 4);
      } else {
        const __half2 h = __floats2half2_rn(v[2 * k], v[2 * k + 1]);
        memcpy(&w[k], &h, 4);
      }
    }
    *(uint4 *)((uint16_t *)p + i) = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

/* Chunk of n (1..8) elements from element i; missing ones read as 0. */
__device__ __forceinline__ void ldc(const void *p, int dt, int64_t i, int n, bool vec, float v[8]) {
  if (vec && n == 8) {
    ld8(p, dt, i, v);
  } else {
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = k < n ? ld1(p, dt, i + k) : 0.0f;
  }
}

__device__ __forceinline__ void stc(void *p, int dt, int64_t i, int n, bool vec, const float v[8]) {
  if (vec && n == 8) {
    st8(p, dt, i, v);
  } else {
#pragma unroll
    for (int k = 0; k < 8; k++)
      if (k < n) st1(p, dt, i + k, v[k]);
  }
}

__device__ __forceinline__ int64_t row_start(const ada_nn_rows &g, int64_t r) {
  if (g.n1 == 1) return r * g.s0;
  const uint32_t q = (uint32_t)r / (uint32_t)g.n1;
  return (int64_t)q * g.s0 + (r - (int64_t)q * g.n1) * g.s1;
}

/* ---- row-wise elementwise ops ------------------------------------------------------------- */

struct EwParams {
  void *out;
  int odt;
  int64_t rows, c;
  ada_nn_operand x, a, b;
  float s;
  bool vec;
};

template <int KIND> __host__ __device__ constexpr int n_operands() {
  return KIND == ADA_NN_MODULATE || KIND == ADA_NN_GATED_ADD ? 2 : KIND == ADA_NN_ADD || KIND == ADA_NN_MUL ? 1 : 0;
}

template <int KIND, int DT>
__global__ void __launch_bounds__(kThreads) ew_kernel(const EwParams P) {
  constexpr int nops = n_operands<KIND>();
  const int64_t chunks = (P.c + 7) / 8;
  const int xdt = dt_of<DT>(P.x.dt), adt = dt_of<DT>(P.a.dt), bdt = dt_of<DT>(P.b.dt), odt = dt_of<DT>(P.odt);
  /* chunk outer, rows inner: a broadcast operand's chunk is loaded once per thread */
  for (int64_t j = (int64_t)blockIdx.y * blockDim.x + threadIdx.x; j < chunks; j += (int64_t)gridDim.y * blockDim.x) {
    const int64_t c0 = j * 8;
    const int n = P.c - c0 < 8 ? (int)(P.c - c0) : 8;
    float a[8], b[8];
    if (nops >= 1 && P.a.bcast) ldc(P.a.p, adt, c0, n, P.vec, a);
    if (nops >= 2 && P.b.bcast) ldc(P.b.p, bdt, c0, n, P.vec, b);
    for (int64_t r = (int64_t)blockIdx.x * blockDim.y + threadIdx.y; r < P.rows; r += (int64_t)gridDim.x * blockDim.y) {
      float x[8], y[8];
      ldc(P.x.p, xdt, row_start(P.x.rows, r) + c0, n, P.vec, x);
      if (nops >= 1 && !P.a.bcast) ldc(P.a.p, adt, row_start(P.a.rows, r) + c0, n, P.vec, a);
      if (nops >= 2 && !P.b.bcast) ldc(P.b.p, bdt, row_start(P.b.rows, r) + c0, n, P.vec, b);
#pragma unroll
      for (int k = 0; k < 8; k++) {
        const float v = x[k];
        if (KIND == ADA_NN_MODULATE) y[k] = v * (1.0f + b[k]) + a[k];
        else if (KIND == ADA_NN_GATED_ADD) y[k] = v + a[k] * b[k];
        else if (KIND == ADA_NN_ADD) y[k] = v + a[k];
        else if (KIND == ADA_NN_MUL) y[k] = v * a[k];
        else if (KIND == ADA_NN_SCALE) y[k] = v * P.s;
        else if (KIND == ADA_NN_SILU) y[k] = v / (1.0f + expf(-v));
        else if (KIND == ADA_NN_GELU_TANH) y[k] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
        else y[k] = 0.5f * v * erfcf(-v * 0.7071067811865476f); /* = 1 + erf(v / sqrt 2), accurate for v < 0 */
      }
      stc(P.out, odt, r * P.c + c0, n, P.vec, y);
    }
  }
}

/* Block shape for rows of `chunks` chunks: tx threads along a row (a power of two up to 128), the
 * rest of the 128 over rows; grid x over rows (grid-stride), grid y over a row's chunks. */
void shape_2d(int64_t rows, int64_t chunks, dim3 *grid, dim3 *block) {
  unsigned tx = 1;
  while (tx < (unsigned)kThreads && (int64_t)tx < chunks) tx *= 2;
  const unsigned ty = (unsigned)kThreads / tx;
  int64_t gx = (rows + ty - 1) / ty, gy = (chunks + tx - 1) / tx;
  if (gy > 65535) gy = 65535;
  /* large grids: about 8 rows per thread (index math and broadcast loads amortized), keeping
   * at least 16384 blocks (many waves on any GPU) */
  if (gx * gy > 16384) {
    const int64_t fewer = (gx + 7) / 8, floor_gx = (16384 + gy - 1) / gy;
    gx = fewer > floor_gx ? fewer : floor_gx < gx ? floor_gx : gx;
  }
  const int64_t max_gx = gy > 1 ? (int64_t)1 << 20 : ((int64_t)1 << 31) - 1;
  if (gx > max_gx) gx = max_gx;
  *block = dim3(tx, ty, 1);
  *grid = dim3((unsigned)gx, (unsigned)gy, 1);
}

template <int KIND, int DT> int launch_ew(const EwParams &P, cudaStream_t st) {
  dim3 grid, block;
  shape_2d(P.rows, (P.c + 7) / 8, &grid, &block);
  ew_kernel<KIND, DT><<<grid, block, 0, st>>>(P);
  return (int)cudaGetLastError();
}

template <int KIND> int launch_ew_dt(const EwParams &P, int dt, cudaStream_t st) {
  switch (dt) {
  case ADA_F32: return launch_ew<KIND, ADA_F32>(P, st);
  case ADA_BF16: return launch_ew<KIND, ADA_BF16>(P, st);
  default: return launch_ew<KIND, DT_ANY>(P, st);
  }
}

/* The dtype shared by every listed dtype (entries < 0 are ignored), else DT_ANY. */
int common_dt(const int *dts, int n) {
  int d = DT_ANY;
  for (int i = 0; i < n; i++) {
    if (dts[i] < 0) continue;
    if (d == DT_ANY) d = dts[i];
    else if (d != dts[i]) return DT_ANY;
  }
  return d;
}

/* ---- norms ------------------------------------------------------------------------------- */

struct NormParams {
  void *out;
  int odt;
  const void *x;
  int xdt;
  ada_nn_rows xr;
  int64_t rows, c;
  double eps;
  const void *w, *bias, *shift, *scale;
  int wdt, bdt, shdt, scdt;
  bool vec;
  /* MODE 3 (gated_add + layernorm + modulate): the row is x + gate * y, rounded to xodt and
   * stored in x_out (contiguous) */
  ada_nn_operand g, y;
  void *xout;
  int xodt;
};

/* v as stored in dtype dt and read back (round to nearest even, as st1 and st8 store). */
__device__ __forceinline__ float round_dt(float v, int dt) {
  if (dt == ADA_BF16) return __bfloat162float(__float2bfloat16_rn(v));
  if (dt == ADA_F16) return __half2float(__float2half_rn(v));
  return v;
}

/* Chunk of n (0..8) elements from column c0 of row r of a norm's input (missing ones 0): x at xo,
 * or in MODE 3 x + gate * y (the row-wise gated_add's arithmetic), rounded to x_out's dtype and
 * stored there, the value a separate gated_add would have written. */
template <int MODE>
__device__ __forceinline__ void norm_load(const NormParams &P, int64_t r, int64_t xo, int64_t c0, int n, int xdt,
                                          int gdt, int ydt, int xodt, float v[8]) {
  ldc(P.x, xdt, xo + c0, n, P.vec, v);
  if (MODE == 3) {
    float g[8], y[8];
    ldc(P.g.p, gdt, (P.g.bcast ? 0 : row_start(P.g.rows, r)) + c0, n, P.vec, g);
    ldc(P.y.p, ydt, (P.y.bcast ? 0 : row_start(P.y.rows, r)) + c0, n, P.vec, y);
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = round_dt(v[k] + g[k] * y[k], xodt);
    stc(P.xout, xodt, r * P.c + c0, n, P.vec, v);
  }
}

/* Sum over the G threads of a group (aligned lanes of a warp for G <= 32; the block for G = 128). */
template <int G> __device__ __forceinline__ float group_sum(float v, float *red) {
#pragma unroll
  for (int o = (G < 32 ? G : 32) / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (G > 32) {
    const int warp = threadIdx.x / 32;
    __syncthreads(); /* red is free again (its previous use has been read) */
    if ((threadIdx.x & 31) == 0) red[warp] = v;
    __syncthreads();
    v = 0.0f;
#pragma unroll
    for (int i = 0; i < G / 32; i++) v += red[i];
  }
  return v;
}

/* Normalizes one chunk (columns c0..c0+7 of the row whose output starts at oo) and stores it. */
template <int MODE>
__device__ __forceinline__ void norm_emit(const NormParams &P, const float *src, int64_t c0, int64_t oo, float mean,
                                          float rstd, int xdt, int odt, int wdt, int bdt, int shdt, int scdt) {
  const int n = P.c - c0 < 8 ? (int)(P.c - c0) : 8;
  float y[8], t[8];
#pragma unroll
  for (int k = 0; k < 8; k++) y[k] = MODE == 1 ? src[k] * rstd : (src[k] - mean) * rstd;
  if (P.w) {
    ldc(P.w, wdt, c0, n, P.vec, t);
#pragma unroll
    for (int k = 0; k < 8; k++) y[k] *= t[k];
  }
  if (MODE != 1 && P.bias) {
    ldc(P.bias, bdt, c0, n, P.vec, t);
#pragma unroll
    for (int k = 0; k < 8; k++) y[k] += t[k];
  }
  if (MODE >= 2) {
    float sh[8];
    ldc(P.scale, scdt, c0, n, P.vec, t);
    ldc(P.shift, shdt, c0, n, P.vec, sh);
#pragma unroll
    for (int k = 0; k < 8; k++) y[k] = y[k] * (1.0f + t[k]) + sh[k];
  }
  stc(P.out, odt, oo + c0, n, P.vec, y);
}

/* MODE 0: layernorm, 1: rmsnorm, 2: layernorm + modulate, 3: gated_add, then layernorm + modulate.
 * G threads per row; each keeps up to MAXCH chunks of its row in registers (MAXCH 0: the row is
 * read from memory in each pass: in MODE 3 the first pass writes x_out and the others read it
 * back, each thread its own chunks). */
template <int DT, int G, int MAXCH, int MODE>
__global__ void __launch_bounds__(kThreads) norm_kernel(const NormParams P) {
  constexpr int R = kThreads / G; /* rows per block */
  __shared__ float red[kThreads / 32];
  const int lane = threadIdx.x % G, grp = threadIdx.x / G;
  const int xdt = dt_of<DT>(P.xdt), odt = dt_of<DT>(P.odt), wdt = dt_of<DT>(P.wdt), bdt = dt_of<DT>(P.bdt);
  const int shdt = dt_of<DT>(P.shdt), scdt = dt_of<DT>(P.scdt);
  const int gdt = dt_of<DT>(P.g.dt), ydt = dt_of<DT>(P.y.dt), xodt = dt_of<DT>(P.xodt);
  const int64_t chunks = (P.c + 7) / 8;
  const float inv_c = 1.0f / (float)P.c;
  /* where passes after the first read the row: x, or in MODE 3 x_out */
  const void *const xsrc = MODE == 3 ? P.xout : P.x;
  const int sdt = MODE == 3 ? xodt : xdt;
  /* the loop bound is uniform over the block (shuffles and barriers need every thread) */
  for (int64_t base = (int64_t)blockIdx.x * R; base < P.rows; base += (int64_t)gridDim.x * R) {
    const int64_t r = base + grp;
    const bool active = r < P.rows;
    const int64_t xo = active ? row_start(P.xr, r) : 0, oo = r * P.c, so = MODE == 3 ? oo : xo;
    float v[MAXCH > 0 ? MAXCH : 1][8];
    float sum = 0.0f;
    if (MODE != 1) {
      if (MAXCH > 0) {
#pragma unroll
        for (int i = 0; i < MAXCH; i++) {
          const int64_t j = lane + (int64_t)i * G, c0 = j * 8;
          const int n = !active || j >= chunks ? 0 : P.c - c0 < 8 ? (int)(P.c - c0) : 8;
          norm_load<MODE>(P, r, xo, c0, n, xdt, gdt, ydt, xodt, v[i]);
#pragma unroll
          for (int k = 0; k < 8; k++) sum += v[i][k];
        }
      } else if (active) {
        for (int64_t j = lane; j < chunks; j += G) {
          const int64_t c0 = j * 8;
          const int n = P.c - c0 < 8 ? (int)(P.c - c0) : 8;
          norm_load<MODE>(P, r, xo, c0, n, xdt, gdt, ydt, xodt, v[0]);
#pragma unroll
          for (int k = 0; k < 8; k++) sum += v[0][k];
        }
      }
      sum = group_sum<G>(sum, red);
    }
    const float mean = MODE == 1 ? 0.0f : sum * inv_c;
    float sq = 0.0f;
    if (MAXCH > 0) {
#pragma unroll
      for (int i = 0; i < MAXCH; i++) {
        const int64_t j = lane + (int64_t)i * G, c0 = j * 8;
        const int n = !active || j >= chunks ? 0 : P.c - c0 < 8 ? (int)(P.c - c0) : 8;
        if (MODE == 1) ldc(P.x, xdt, xo + c0, n, P.vec, v[i]);
#pragma unroll
        for (int k = 0; k < 8; k++) {
          const float d = k < n ? v[i][k] - mean : 0.0f;
          sq += d * d;
        }
      }
    } else if (active) {
      for (int64_t j = lane; j < chunks; j += G) {
        const int64_t c0 = j * 8;
        const int n = P.c - c0 < 8 ? (int)(P.c - c0) : 8;
        ldc(xsrc, sdt, so + c0, n, P.vec, v[0]);
#pragma unroll
        for (int k = 0; k < 8; k++) {
          const float d = k < n ? v[0][k] - mean : 0.0f;
          sq += d * d;
        }
      }
    }
    sq = group_sum<G>(sq, red);
    const float rstd = (float)(1.0 / sqrt((double)(sq * inv_c) + P.eps));
    if (!active) continue;
    if (MAXCH > 0) {
#pragma unroll
      for (int i = 0; i < MAXCH; i++) {
        const int64_t j = lane + (int64_t)i * G;
        if (j < chunks) norm_emit<MODE>(P, v[i], j * 8, oo, mean, rstd, xdt, odt, wdt, bdt, shdt, scdt);
      }
    } else {
      for (int64_t j = lane; j < chunks; j += G) {
        const int64_t c0 = j * 8;
        ldc(xsrc, sdt, so + c0, P.c - c0 < 8 ? (int)(P.c - c0) : 8, P.vec, v[0]);
        norm_emit<MODE>(P, v[0], c0, oo, mean, rstd, xdt, odt, wdt, bdt, shdt, scdt);
      }
    }
  }
}

template <int DT, int G, int MAXCH, int MODE> int launch_norm_cfg(const NormParams &P, cudaStream_t st) {
  constexpr int R = kThreads / G;
  int64_t blocks = (P.rows + R - 1) / R;
  if (blocks > ((int64_t)1 << 31) - 1) blocks = ((int64_t)1 << 31) - 1;
  norm_kernel<DT, G, MAXCH, MODE><<<(unsigned)blocks, kThreads, 0, st>>>(P);
  return (int)cudaGetLastError();
}

template <int DT, int MODE> int launch_norm_mode(const NormParams &P, cudaStream_t st) {
  const int64_t chunks = (P.c + 7) / 8;
  if (chunks <= 8) return launch_norm_cfg<DT, 8, 1, MODE>(P, st);
  if (chunks <= 16) return launch_norm_cfg<DT, 16, 1, MODE>(P, st);
  if (chunks <= 32) return launch_norm_cfg<DT, 32, 1, MODE>(P, st);
  if (chunks <= 128) return launch_norm_cfg<DT, 32, 4, MODE>(P, st);
  /* measured on the H100 (bf16, 119056 x 3072 worth of rows): a warp per row wins up to 2048
   * (0.64 ms against 0.68 for a block per row), a block per row from there (3072: 0.59 ms
   * against 0.77 for a warp holding 12 chunks per lane) */
  if (chunks <= 256) return launch_norm_cfg<DT, 32, 8, MODE>(P, st);
  if (chunks <= 512) return launch_norm_cfg<DT, 128, 4, MODE>(P, st);
  if (chunks <= 1024) return launch_norm_cfg<DT, 128, 8, MODE>(P, st);
  return launch_norm_cfg<DT, 128, 0, MODE>(P, st);
}

template <int DT> int launch_norm_dt(const NormParams &P, int mode, cudaStream_t st) {
  switch (mode) {
  case 0: return launch_norm_mode<DT, 0>(P, st);
  case 1: return launch_norm_mode<DT, 1>(P, st);
  case 2: return launch_norm_mode<DT, 2>(P, st);
  default: return launch_norm_mode<DT, 3>(P, st);
  }
}

/* ---- softmax ---------------------------------------------------------------------------------- */

struct SoftmaxParams {
  void *out;
  int odt;
  const void *x;
  int xdt;
  ada_nn_rows xr;
  int64_t rows, c;
  float scale;
};

/* Merges (m2, s2) into the online-softmax state (m, s): m the maximum so far, s the sum of
 * exp(v - m). -inf values add nothing; a NaN makes the state NaN (the row's outputs become NaN,
 * as on the CPU). */
__device__ __forceinline__ void softmax_merge(float &m, float &s, float m2, float s2) {
  if (m != m || m2 != m2) {
    m = s = NAN;
  } else if (m2 == -INFINITY) {
  } else if (m == -INFINITY) {
    m = m2;
    s = s2;
  } else if (m2 > m) {
    s = s * expf(m - m2) + s2;
    m = m2;
  } else {
    s += s2 * expf(m2 - m);
  }
}

/* A warp per row: one pass for the row's maximum and sum of exponentials (online, merged by
 * shuffles), one pass to write exp(v - m) / s. Reads each element in its own dtype. */
__global__ void __launch_bounds__(kThreads) softmax_kernel(const SoftmaxParams P) {
  const int lane = threadIdx.x % 32, warps = kThreads / 32;
  for (int64_t r = (int64_t)blockIdx.x * warps + threadIdx.x / 32; r < P.rows; r += (int64_t)gridDim.x * warps) {
    const int64_t xo = row_start(P.xr, r), oo = r * P.c;
    float m = -INFINITY, s = 0.0f;
    for (int64_t j = lane; j < P.c; j += 32) softmax_merge(m, s, P.scale * ld1(P.x, P.xdt, xo + j), 1.0f);
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
      softmax_merge(m, s, m2, s2);
    }
    const float inv = 1.0f / s;
    for (int64_t j = lane; j < P.c; j += 32) {
      const float v = P.scale * ld1(P.x, P.xdt, xo + j);
      st1(P.out, P.odt, oo + j, m == -INFINITY ? 0.0f : expf(v - m) * inv);
    }
  }
}

/* ---- 3D RoPE ------------------------------------------------------------------------------- */

struct RopeParams {
  void *out;
  int odt;
  const void *x;
  int xdt;
  ada_nn_rows xr; /* rows = (token, head): n1 = h */
  int64_t rows, d, h, n_tokens;
  int32_t grid[3], half[3];
  const float *cs[3], *sn[3]; /* per axis: [grid[a], half[a]] */
  bool vec;
  /* rmsnorm_rope3d only: weight [d] (NULL: none; 16-byte aligned) and eps */
  const void *w;
  int wdt;
  float eps;
};

/* cos and sin of pos * theta^(-2k / dim) for every axis, position and pair, in double. */
struct RopeTable {
  float *cs[3], *sn[3];
  int32_t grid[3], axes[3];
  int64_t start[4]; /* entry ranges of the axes */
  double theta;
};

__global__ void rope_table_kernel(const RopeTable T) {
  const int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= T.start[3]) return;
  const int a = e < T.start[1] ? 0 : e < T.start[2] ? 1 : 2;
  const int64_t i = e - T.start[a];
  const int32_t half = T.axes[a] / 2;
  const int32_t pos = (int32_t)(i / half), k = (int32_t)(i % half);
  const double ang = (double)pos * pow(T.theta, -2.0 * k / T.axes[a]);
  T.cs[a][i] = (float)cos(ang);
  T.sn[a][i] = (float)sin(ang);
}

/* Rotates the chunk of n (1..8) elements from c0 (even) of a head at grid position (p0, p1, p2). */
__device__ __forceinline__ void rope_rotate(const RopeParams &P, int32_t p0, int32_t p1, int32_t p2, int64_t c0, int n,
                                            const float v[8], float y[8]) {
  const int h01 = P.half[0] + P.half[1];
#pragma unroll
  for (int q = 0; q < 4; q++) {
    const int pj = (int)(c0 / 2) + q; /* pair index in the head */
    const int a = pj < P.half[0] ? 0 : pj < h01 ? 1 : 2;
    const int k = pj - (a == 0 ? 0 : a == 1 ? P.half[0] : h01);
    float c = 1.0f, s = 0.0f;
    if (2 * q < n) {
      const int32_t ti = (a == 0 ? p0 * P.half[0] : a == 1 ? p1 * P.half[1] : p2 * P.half[2]) + k;
      c = (a == 0 ? P.cs[0] : a == 1 ? P.cs[1] : P.cs[2])[ti];
      s = (a == 0 ? P.sn[0] : a == 1 ? P.sn[1] : P.sn[2])[ti];
    }
    const float x0 = v[2 * q], x1 = v[2 * q + 1];
    y[2 * q] = x0 * c - x1 * s;
    y[2 * q + 1] = x0 * s + x1 * c;
  }
}

/* Grid position of token tok (32-bit arithmetic: rows = s * h < 2^32, checked by the launcher;
 * 64-bit divisions would cost more than the memory traffic). */
__device__ __forceinline__ void rope_pos(const RopeParams &P, uint32_t tok, int32_t &p0, int32_t &p1, int32_t &p2) {
  const uint32_t g1 = (uint32_t)P.grid[1], g2 = (uint32_t)P.grid[2], q = tok / g2;
  p0 = (int32_t)(tok / (g1 * g2));
  p1 = (int32_t)(q - (q / g1) * g1);
  p2 = (int32_t)(tok - q * g2);
}

/* rows (token, head) over blockDim.y and gridDim.x; a row's d/8 chunks over blockDim.x and gridDim.y. */
template <int DT>
__global__ void __launch_bounds__(kThreads) rope_kernel(const RopeParams P) {
  const int64_t chunks = (P.d + 7) / 8;
  const int xdt = dt_of<DT>(P.xdt), odt = dt_of<DT>(P.odt);
  const uint32_t h = (uint32_t)P.h;
  for (int64_t r = (int64_t)blockIdx.x * blockDim.y + threadIdx.y; r < P.rows; r += (int64_t)gridDim.x * blockDim.y) {
    const uint32_t r32 = (uint32_t)r, tok = r32 / h;
    const int64_t xo = (int64_t)tok * P.xr.s0 + (int64_t)(r32 - tok * h) * P.xr.s1, oo = r * P.d;
    const bool rot = tok < (uint64_t)P.n_tokens;
    int32_t p0 = 0, p1 = 0, p2 = 0; /* scalars: no local-memory array */
    if (rot) rope_pos(P, tok, p0, p1, p2);
    for (int64_t j = (int64_t)blockIdx.y * blockDim.x + threadIdx.x; j < chunks; j += (int64_t)gridDim.y * blockDim.x) {
      const int64_t c0 = j * 8;
      const int n = P.d - c0 < 8 ? (int)(P.d - c0) : 8;
      float v[8], y[8];
      ldc(P.x, xdt, xo + c0, n, P.vec, v);
      if (rot) {
        rope_rotate(P, p0, p1, p2, c0, n, v, y);
      } else {
#pragma unroll
        for (int k = 0; k < 8; k++) y[k] = v[k];
      }
      stc(P.out, odt, oo + c0, n, P.vec, y);
    }
  }
}

/* rmsnorm + RoPE: a row's chunks are the blockDim.x (a power of two <= 32, >= d/8) lanes of one
 * warp, which reduce the sum of squares by shuffles; gridDim.y is 1. One read and one write of x. */
template <int DT>
__global__ void __launch_bounds__(kThreads) rmsnorm_rope_kernel(const RopeParams P) {
  const int xdt = dt_of<DT>(P.xdt), odt = dt_of<DT>(P.odt);
  const uint32_t h = (uint32_t)P.h, tx = blockDim.x;
  const uint32_t lane = (threadIdx.y * tx + threadIdx.x) % 32;
  const unsigned mask = tx >= 32 ? 0xffffffffu : ((1u << tx) - 1u) << (lane & ~(tx - 1u));
  const int64_t c0 = (int64_t)threadIdx.x * 8;
  const int n = c0 >= P.d ? 0 : P.d - c0 < 8 ? (int)(P.d - c0) : 8;
  const bool wvec = P.vec && (P.wdt == ADA_F32 || P.wdt == ADA_BF16 || P.wdt == ADA_F16);
  float w[8];
  if (P.w && n > 0) {
    ldc(P.w, P.wdt, c0, n, wvec, w);
  } else {
#pragma unroll
    for (int k = 0; k < 8; k++) w[k] = 1.0f;
  }
  const float inv_d = 1.0f / (float)P.d;
  /* every lane of a row's group takes the same trips (same threadIdx.y): the shuffles are safe */
  for (int64_t r = (int64_t)blockIdx.x * blockDim.y + threadIdx.y; r < P.rows; r += (int64_t)gridDim.x * blockDim.y) {
    const uint32_t r32 = (uint32_t)r, tok = r32 / h;
    const int64_t xo = (int64_t)tok * P.xr.s0 + (int64_t)(r32 - tok * h) * P.xr.s1, oo = r * P.d;
    float v[8], y[8];
    if (n > 0) {
      ldc(P.x, xdt, xo + c0, n, P.vec, v);
    } else {
#pragma unroll
      for (int k = 0; k < 8; k++) v[k] = 0.0f;
    }
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; k++) ss += v[k] * v[k];
    for (uint32_t o = tx / 2; o > 0; o /= 2) ss += __shfl_xor_sync(mask, ss, (int)o);
    const float rr = rsqrtf(ss * inv_d + P.eps);
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = v[k] * rr * w[k];
    if (n == 0) continue;
    if (tok < (uint64_t)P.n_tokens) {
      int32_t p0, p1, p2;
      rope_pos(P, tok, p0, p1, p2);
      rope_rotate(P, p0, p1, p2, c0, n, v, y);
    } else {
#pragma unroll
      for (int k = 0; k < 8; k++) y[k] = v[k];
    }
    stc(P.out, odt, oo + c0, n, P.vec, y);
  }
}

/* ---- patchify, unpatchify, timestep embedding (small, not on the hot path) ------------------ */

struct PatchParams {
  void *out;
  int odt;
  const void *x;
  int xdt;
  int64_t xs0, xs1, xs2, ldx;
  int64_t c, t, h, w;
};

/* out [ntok, 4c]: one thread per output element. */
__global__ void __launch_bounds__(kThreads) patchify_kernel(const PatchParams P) {
  const int64_t hh = P.h / 2, ww = P.w / 2, ntok = P.t * hh * ww, nf = 4 * P.c;
  const int64_t total = ntok * nf, step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
    const int64_t tok = e / nf, f = e - tok * nf;
    const int64_t ci = f / 4, kh = (f / 2) & 1, kw = f & 1;
    const int64_t ti = tok / (hh * ww), i = (tok / ww) % hh, j = tok % ww;
    st1(P.out, P.odt, e, ld1(P.x, P.xdt, ci * P.xs0 + ti * P.xs1 + (2 * i + kh) * P.xs2 + 2 * j + kw));
  }
}

/* out [c, t, h, w]: one thread per output element. */
__global__ void __launch_bounds__(kThreads) unpatchify_kernel(const PatchParams P) {
  const int64_t hh = P.h / 2, ww = P.w / 2, total = P.c * P.t * P.h * P.w;
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
    const int64_t xw = e % P.w, row = e / P.w;
    const int64_t ci = row / (P.t * P.h), ti = (row / P.h) % P.t, y = row % P.h;
    const int64_t src = (ti * hh + y / 2) * ww * P.ldx + ci * 4 + (y % 2) * 2 + (xw / 2) * P.ldx + xw % 2;
    st1(P.out, P.odt, e, ld1(P.x, P.xdt, src));
  }
}

struct TembParams {
  void *out;
  int odt;
  const void *t;
  int tdt;
  int64_t ts, n, dim;
  double lm;
};

__global__ void __launch_bounds__(kThreads) temb_kernel(const TembParams P) {
  const int64_t half = P.dim / 2, total = P.n * half, step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
    const int64_t i = e / half, k = e - i * half;
    const double a = (double)ld1(P.t, P.tdt, i * P.ts) * exp(-P.lm * (double)k / (double)half);
    st1(P.out, P.odt, i * P.dim + k, (float)cos(a));
    st1(P.out, P.odt, i * P.dim + half + k, (float)sin(a));
  }
}

unsigned blocks_1d(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  const int64_t cap = (int64_t)65535 * 16;
  return (unsigned)(b < 1 ? 1 : b < cap ? b : cap);
}

bool float_dt(int d) { return d == ADA_F32 || d == ADA_BF16 || d == ADA_F16; }

} // namespace

/* ---- launchers -------------------------------------------------------------------------------- */

extern "C" int ada_launch_rowwise(int32_t kind, void *out, ada_dtype odt, int64_t rows, int64_t c,
                                  const ada_nn_operand *x, const ada_nn_operand *a, const ada_nn_operand *b, float s,
                                  int32_t vec, void *stream) {
  if (!out || !x || !x->p || rows < 1 || c < 1 || !float_dt(odt) || !float_dt(x->dt)) return (int)cudaErrorInvalidValue;
  const ada_nn_operand none = {NULL, ADA_F32, 1, {1, 0, 0}};
  EwParams P;
  P.out = out;
  P.odt = odt;
  P.rows = rows;
  P.c = c;
  P.x = *x;
  P.a = a ? *a : none;
  P.b = b ? *b : none;
  P.s = s;
  P.vec = vec != 0;
  int nops = 0;
  switch (kind) {
  case ADA_NN_MODULATE: case ADA_NN_GATED_ADD: nops = 2; break;
  case ADA_NN_ADD: case ADA_NN_MUL: nops = 1; break;
  case ADA_NN_SCALE: case ADA_NN_SILU: case ADA_NN_GELU_TANH: case ADA_NN_GELU: break;
  default: return (int)cudaErrorInvalidValue;
  }
  if ((nops >= 1 && (!P.a.p || !float_dt(P.a.dt))) || (nops >= 2 && (!P.b.p || !float_dt(P.b.dt))))
    return (int)cudaErrorInvalidValue;
  const int dts[4] = {odt, x->dt, nops >= 1 ? (int)P.a.dt : -1, nops >= 2 ? (int)P.b.dt : -1};
  const int dt = common_dt(dts, 4);
  cudaStream_t st = (cudaStream_t)stream;
  switch (kind) {
  case ADA_NN_MODULATE: return launch_ew_dt<ADA_NN_MODULATE>(P, dt, st);
  case ADA_NN_GATED_ADD: return launch_ew_dt<ADA_NN_GATED_ADD>(P, dt, st);
  case ADA_NN_ADD: return launch_ew_dt<ADA_NN_ADD>(P, dt, st);
  case ADA_NN_MUL: return launch_ew_dt<ADA_NN_MUL>(P, dt, st);
  case ADA_NN_SCALE: return launch_ew_dt<ADA_NN_SCALE>(P, dt, st);
  case ADA_NN_SILU: return launch_ew_dt<ADA_NN_SILU>(P, dt, st);
  case ADA_NN_GELU_TANH: return launch_ew_dt<ADA_NN_GELU_TANH>(P, dt, st);
  default: return launch_ew_dt<ADA_NN_GELU>(P, dt, st);
  }
}

extern "C" int ada_launch_norm(const ada_nn_norm_args *a, void *stream) {
  if (!a || !a->out || !a->x.p || a->rows < 1 || a->c < 1 || !float_dt(a->odt) || !float_dt(a->x.dt) ||
      (a->w && !float_dt(a->wdt)) || (a->bias && !float_dt(a->bdt)) || (!a->shift != !a->scale) ||
      (a->shift && (a->rms || !float_dt(a->shdt) || !float_dt(a->scdt))) || (a->rms && a->bias) ||
      (!a->gate.p != !a->y.p))
    return (int)cudaErrorInvalidValue;
  const bool fused = a->y.p != NULL;
  if (fused && (!a->shift || !a->x_out || a->x_out == a->out || !float_dt(a->gate.dt) || !float_dt(a->y.dt) ||
                !float_dt(a->xodt)))
    return (int)cudaErrorInvalidValue;
  NormParams P;
  P.out = a->out;
  P.odt = a->odt;
  P.x = a->x.p;
  P.xdt = a->x.dt;
  P.xr = a->x.rows;
  P.rows = a->rows;
  P.c = a->c;
  P.eps = a->eps;
  P.w = a->w;
  P.bias = a->bias;
  P.shift = a->shift;
  P.scale = a->scale;
  P.wdt = a->w ? a->wdt : -1;
  P.bdt = a->bias ? a->bdt : -1;
  P.shdt = a->shift ? a->shdt : -1;
  P.scdt = a->scale ? a->scdt : -1;
  P.vec = a->vec != 0;
  const ada_nn_operand none = {NULL, ADA_F32, 1, {1, 0, 0}};
  P.g = fused ? a->gate : none;
  P.y = fused ? a->y : none;
  P.xout = fused ? a->x_out : NULL;
  P.xodt = fused ? (int)a->xodt : -1;
  const int dts[9] = {P.odt, P.xdt, P.wdt, P.bdt, P.shdt, P.scdt, fused ? (int)P.g.dt : -1, fused ? (int)P.y.dt : -1,
                      P.xodt};
  const int mode = a->rms ? 1 : fused ? 3 : a->shift ? 2 : 0;
  cudaStream_t st = (cudaStream_t)stream;
  switch (common_dt(dts, 9)) {
  case ADA_F32: return launch_norm_dt<ADA_F32>(P, mode, st);
  case ADA_BF16: return launch_norm_dt<ADA_BF16>(P, mode, st);
  default: return launch_norm_dt<DT_ANY>(P, mode, st);
  }
}

extern "C" int ada_launch_softmax(void *out, ada_dtype odt, const ada_nn_operand *x, int64_t rows, int64_t c,
                                  float scale, void *stream) {
  if (!out || !x || !x->p || rows < 1 || c < 1 || !float_dt(odt) || !float_dt(x->dt) || !(scale > 0.0f))
    return (int)cudaErrorInvalidValue;
  SoftmaxParams P;
  P.out = out;
  P.odt = odt;
  P.x = x->p;
  P.xdt = x->dt;
  P.xr = x->rows;
  P.rows = rows;
  P.c = c;
  P.scale = scale;
  const int warps = kThreads / 32;
  int64_t blocks = (rows + warps - 1) / warps;
  if (blocks > ((int64_t)1 << 31) - 1) blocks = ((int64_t)1 << 31) - 1;
  softmax_kernel<<<(unsigned)blocks, kThreads, 0, (cudaStream_t)stream>>>(P);
  return (int)cudaGetLastError();
}

extern "C" int64_t ada_rope3d_table_len(const int32_t grid[3], const int32_t axes[3]) {
  int64_t n = 0;
  for (int a = 0; a < 3; a++) n += 2 * (int64_t)grid[a] * (axes[a] / 2);
  return n;
}

/* rope3d (norm false) or rmsnorm + rope3d (norm true: d <= 256, w NULL or 16-byte aligned). */
static int launch_rope(bool norm, void *out, ada_dtype odt, const void *x, ada_dtype xdt, int64_t xs_s, int64_t xs_h,
                       int64_t s, int64_t h, int64_t d, const void *w, ada_dtype wdt, double eps,
                       const int32_t grid[3], const int32_t axes[3], double theta, int64_t n_tokens, float *table,
                       cudaStream_t st) {
  if (!out || !x || !grid || !axes || s < 1 || h < 1 || d < 2 || d % 2 || !float_dt(odt) || !float_dt(xdt) ||
      (int64_t)axes[0] + axes[1] + axes[2] != d || s * h >= ((int64_t)1 << 32) ||
      (norm && (d > 256 || !(eps > 0.0) || (w && (!float_dt(wdt) || (uintptr_t)w % 16 != 0)))))
    return (int)cudaErrorInvalidValue;
  const int64_t len = ada_rope3d_table_len(grid, axes);
  if (len > 0 && !table) return (int)cudaErrorInvalidValue;
  RopeTable T;
  RopeParams P;
  int64_t off = 0;
  T.start[0] = 0;
  for (int a = 0; a < 3; a++) {
    const int64_t n = (int64_t)grid[a] * (axes[a] / 2);
    T.cs[a] = table + off;
    T.sn[a] = table + off + n;
    T.start[a + 1] = T.start[a] + n;
    T.grid[a] = grid[a];
    T.axes[a] = axes[a];
    P.cs[a] = T.cs[a];
    P.sn[a] = T.sn[a];
    P.grid[a] = grid[a];
    P.half[a] = axes[a] / 2;
    off += 2 * n;
  }
  T.theta = theta;
  if (T.start[3] > 0) {
    rope_table_kernel<<<(unsigned)((T.start[3] + kThreads - 1) / kThreads), kThreads, 0, st>>>(T);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return (int)e;
  }
  P.out = out;
  P.odt = odt;
  P.x = x;
  P.xdt = xdt;
  P.xr.n1 = h;
  P.xr.s1 = xs_h;
  P.xr.s0 = xs_s;
  P.rows = s * h;
  P.d = d;
  P.h = h;
  P.n_tokens = n_tokens;
  const uintptr_t al = (uintptr_t)out | (uintptr_t)x;
  P.vec = al % 16 == 0 && d % 8 == 0 && xs_s % 8 == 0 && (h == 1 || xs_h % 8 == 0);
  P.w = norm ? w : NULL;
  P.wdt = norm && w ? (int)wdt : -1;
  P.eps = (float)eps;
  dim3 gr, bl;
  shape_2d(P.rows, (d + 7) / 8, &gr, &bl); /* d <= 256: blockDim.x <= 32 and gridDim.y == 1 */
  const int dt = odt == ADA_F32 && xdt == ADA_F32 ? ADA_F32 : odt == ADA_BF16 && xdt == ADA_BF16 ? ADA_BF16 : DT_ANY;
  if (norm) {
    if (dt == ADA_F32) rmsnorm_rope_kernel<ADA_F32><<<gr, bl, 0, st>>>(P);
    else if (dt == ADA_BF16) rmsnorm_rope_kernel<ADA_BF16><<<gr, bl, 0, st>>>(P);
    else rmsnorm_rope_kernel<DT_ANY><<<gr, bl, 0, st>>>(P);
  } else {
    if (dt == ADA_F32) rope_kernel<ADA_F32><<<gr, bl, 0, st>>>(P);
    else if (dt == ADA_BF16) rope_kernel<ADA_BF16><<<gr, bl, 0, st>>>(P);
    else rope_kernel<DT_ANY><<<gr, bl, 0, st>>>(P);
  }
  return (int)cudaGetLastError();
}

extern "C" int ada_launch_rope3d(void *out, ada_dtype odt, const void *x, ada_dtype xdt, int64_t xs_s, int64_t xs_h,
                                 int64_t s, int64_t h, int64_t d, const int32_t grid[3], const int32_t axes[3],
                                 double theta, int64_t n_tokens, float *table, void *stream) {
  return launch_rope(false, out, odt, x, xdt, xs_s, xs_h, s, h, d, NULL, ADA_F32, 1.0, grid, axes, theta, n_tokens,
                     table, (cudaStream_t)stream);
}

extern "C" int ada_launch_rmsnorm_rope3d(void *out, ada_dtype odt, const void *x, ada_dtype xdt, int64_t xs_s,
                                         int64_t xs_h, int64_t s, int64_t h, int64_t d, const void *w, ada_dtype wdt,
                                         double eps, const int32_t grid[3], const int32_t axes[3], double theta,
                                         int64_t n_tokens, float *table, void *stream) {
  return launch_rope(true, out, odt, x, xdt, xs_s, xs_h, s, h, d, w, wdt, eps, grid, axes, theta, n_tokens, table,
                     (cudaStream_t)stream);
}

extern "C" int ada_launch_patchify(void *out, ada_dtype odt, const void *x, ada_dtype xdt, const int64_t xs[3],
                                   int64_t c, int64_t t, int64_t hgt, int64_t w, void *stream) {
  if (!out || !x || !xs || c < 1 || t < 1 || hgt < 2 || w < 2 || hgt % 2 || w % 2 || !float_dt(odt) || !float_dt(xdt))
    return (int)cudaErrorInvalidValue;
  const PatchParams P = {out, odt, x, xdt, xs[0], xs[1], xs[2], 0, c, t, hgt, w};
  patchify_kernel<<<blocks_1d(c * t * hgt * w), kThreads, 0, (cudaStream_t)stream>>>(P);
  return (int)cudaGetLastError();
}

extern "C" int ada_launch_unpatchify(void *out, ada_dtype odt, const void *x, ada_dtype xdt, int64_t ldx, int64_t c,
                                     int64_t t, int64_t hgt, int64_t w, void *stream) {
  if (!out || !x || c < 1 || t < 1 || hgt < 2 || w < 2 || hgt % 2 || w % 2 || !float_dt(odt) || !float_dt(xdt))
    return (int)cudaErrorInvalidValue;
  const PatchParams P = {out, odt, x, xdt, 0, 0, 0, ldx, c, t, hgt, w};
  unpatchify_kernel<<<blocks_1d(c * t * hgt * w), kThreads, 0, (cudaStream_t)stream>>>(P);
  return (int)cudaGetLastError();
}

extern "C" int ada_launch_timestep_embedding(void *out, ada_dtype odt, const void *t, ada_dtype tdt, int64_t ts,
                                             int64_t n, int64_t dim, double log_max_period, void *stream) {
  if (!out || !t || n < 1 || dim < 2 || dim % 2 || !float_dt(odt) || !float_dt(tdt)) return (int)cudaErrorInvalidValue;
  const TembParams P = {out, odt, t, tdt, ts, n, dim, log_max_period};
  temb_kernel<<<blocks_1d(n * (dim / 2)), kThreads, 0, (cudaStream_t)stream>>>(P);
  return (int)cudaGetLastError();
}
