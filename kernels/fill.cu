/* fill.cu: ada_launch_fill (a strided view set to one value) and ada_launch_arange (contiguous
 * dst[i] = start + i * step).
 *
 * fill: the host converts the value once with ada_store (exactly the CPU's bit pattern), the
 * kernels write that pattern as a 1-, 2- or 4-byte integer. The view is coalesced like the CPU
 * backend does; 1 dim left: dst[i*stride]; 2+ dims: row-major index decomposed per dim (32-bit
 * division when the element count fits).
 * arange: start + (double)i * step with __dmul_rn/__dadd_rn (never an FMA: the CPU computes
 * it as a separately rounded multiply and add), then ada_store in the destination dtype.
 * Grid-stride loops, 256 threads, grid capped at 65535*4 blocks.
 */
#include <cuda_runtime.h>

#include "kernels.h"

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535 * 4;

unsigned grid_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return (unsigned)(b < kMaxBlocks ? b : kMaxBlocks);
}

/* Coalesced view for 2+ dims: dims 1..ndim-1 innermost first, then the outermost stride. */
struct Geo {
  int32_t ndim;
  int64_t shape[ADA_MAX_DIMS - 1];
  int64_t st[ADA_MAX_DIMS - 1];
  int64_t outer_st;
};

template <typename T>
__global__ void __launch_bounds__(kThreads) fill_1d(T *__restrict__ dst, int64_t ds, T v, int64_t n) {
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) dst[i * ds] = v;
}

template <typename T, typename I>
__global__ void __launch_bounds__(kThreads) fill_nd(T *__restrict__ dst, Geo g, T v, int64_t n) {
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
    I rem = (I)i;
    int64_t off = 0;
#pragma unroll
    for (int d = 0; d < ADA_MAX_DIMS - 1; d++) {
      if (d + 1 < g.ndim) {
        const I sz = (I)g.shape[d];
        const I q = rem / sz;
        off += (int64_t)(rem - q * sz) * g.st[d];
        rem = q;
      }
    }
    dst[off + (int64_t)rem * g.outer_st] = v;
  }
}

template <typename T>
int launch_fill(void *dst, const Geo &g, const unsigned char *pattern, int64_t n, cudaStream_t st) {
  T v;
  memcpy(&v, pattern, sizeof v);
  if (g.ndim == 1)
    fill_1d<T><<<grid_for(n), kThreads, 0, st>>>((T *)dst, g.outer_st, v, n);
  else if (n <= (int64_t)UINT32_MAX)
    fill_nd<T, uint32_t><<<grid_for(n), kThreads, 0, st>>>((T *)dst, g, v, n);
  else
    fill_nd<T, int64_t><<<grid_for(n), kThreads, 0, st>>>((T *)dst, g, v, n);
  return (int)cudaGetLastError();
}

template <ada_dtype D, typename T>
__global__ void __launch_bounds__(kThreads)
arange_k(T *__restrict__ dst, int64_t n, double start, double step_v) {
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
    T r;
    ada_store(&r, D, __dadd_rn(start, __dmul_rn((double)i, step_v)));
    dst[i] = r;
  }
}

template <ada_dtype D, typename T>
int launch_arange(void *dst, int64_t n, double start, double step, cudaStream_t st) {
  arange_k<D, T><<<grid_for(n), kThreads, 0, st>>>((T *)dst, n, start, step);
  return (int)cudaGetLastError();
}

} // namespace

extern "C" int ada_launch_fill(void *dst, ada_dtype ddt, const ada_strided *dl, double value,
                               void *stream) {
  if (!dl || dl->ndim < 0 || dl->ndim > ADA_MAX_DIMS || (unsigned)ddt >= (unsigned)ADA_NDTYPES)
    return (int)cudaErrorInvalidValue;
  int64_t n = 1;
  for (int32_t d = 0; d < dl->ndim; d++) {
    if (dl->shape[d] < 0) return (int)cudaErrorInvalidValue;
    n *= dl->shape[d];
  }
  if (n == 0) return 0;
  if (!dst) return (int)cudaErrorInvalidValue;

  /* coalesce like the CPU backend (outermost first) */
  int32_t nd = 0;
  int64_t shape[ADA_MAX_DIMS], st[ADA_MAX_DIMS];
  for (int32_t d = 0; d < dl->ndim; d++) {
    if (dl->shape[d] == 1) continue;
    if (nd > 0 && st[nd - 1] == dl->stride[d] * dl->shape[d]) {
      shape[nd - 1] *= dl->shape[d];
      st[nd - 1] = dl->stride[d];
    } else {
      shape[nd] = dl->shape[d];
      st[nd] = dl->stride[d];
      nd++;
    }
  }
  if (nd == 0) { shape[0] = 1; st[0] = 1; nd = 1; }
  Geo g;
  g.ndim = nd;
  g.outer_st = st[0];
  for (int32_t d = 0; d < ADA_MAX_DIMS - 1; d++) {
    const int32_t k = nd - 1 - d;
    g.shape[d] = k >= 1 ? shape[k] : 1;
    g.st[d] = k >= 1 ? st[k] : 0;
  }

  unsigned char pattern[8] = {0};
  ada_store(pattern, ddt, value); /* host-side: the CPU's exact bits */
  cudaStream_t s = (cudaStream_t)stream;
  switch (ada_dtype_size(ddt)) {
  case 4: return launch_fill<uint32_t>(dst, g, pattern, n, s);
  case 2: return launch_fill<uint16_t>(dst, g, pattern, n, s);
  default: return launch_fill<uint8_t>(dst, g, pattern, n, s);
  }
}

extern "C" int ada_launch_arange(void *dst, ada_dtype ddt, int64_t n, double start, double step,
                                 void *stream) {
  if (n < 0 || (unsigned)ddt >= (unsigned)ADA_NDTYPES) return (int)cudaErrorInvalidValue;
  if (n == 0) return 0;
  if (!dst) return (int)cudaErrorInvalidValue;
  cudaStream_t s = (cudaStream_t)stream;
  switch (ddt) {
  case ADA_F32: return launch_arange<ADA_F32, float>(dst, n, start, step, s);
  case ADA_BF16: return launch_arange<ADA_BF16, uint16_t>(dst, n, start, step, s);
  case ADA_F16: return launch_arange<ADA_F16, uint16_t>(dst, n, start, step, s);
  case ADA_I32: return launch_arange<ADA_I32, int32_t>(dst, n, start, step, s);
  case ADA_I16: return launch_arange<ADA_I16, int16_t>(dst, n, start, step, s);
  case ADA_U8: return launch_arange<ADA_U8, uint8_t>(dst, n, start, step, s);
  default: return (int)cudaErrorInvalidValue;
  }
}
