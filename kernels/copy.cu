/* copy.cu: ada_launch_copy, the strided copy with dtype conversion (up to ADA_MAX_DIMS dims).
 *
 * The host part coalesces the two views exactly like the CPU backend (drops size-1 dims, merges
 * neighbours contiguous with each other in both views), then launches one kernel specialized
 * on the (src, dst) dtype pair:
 *   - 1 dim left (any strides): dst[i*ds] = conv(src[i*ss]), no index arithmetic;
 *   - 2+ dims: the row-major logical index is decomposed per dim, in 32-bit when the element
 *     count fits (much cheaper division), else in 64-bit.
 * Conversion is bit-identical to the CPU's ada_store(ada_load()):
 *   - same dtype: the raw bits are moved (like the CPU's memcpy path); only the element size
 *     matters, so these use the integer kernels of that size;
 *   - float -> float: through f32 with the scalar.h conversions (round to nearest even), no
 *     double round trip; to f32, a NaN gets its quiet bit set, as the CPU's f32->f64->f32
 *     round trip in ada_load/ada_store does on x86-64 and arm64 (payload kept);
 *   - anything involving an integer dtype: ada_load to double then ada_store (integer stores
 *     truncate toward zero and saturate, NaN -> 0), the scalar.h code itself.
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

template <ada_dtype T> struct Elt;
template <> struct Elt<ADA_F32> { typedef float raw; };
template <> struct Elt<ADA_BF16> { typedef uint16_t raw; };
template <> struct Elt<ADA_F16> { typedef uint16_t raw; };
template <> struct Elt<ADA_I32> { typedef int32_t raw; };
template <> struct Elt<ADA_I16> { typedef int16_t raw; };
template <> struct Elt<ADA_U8> { typedef uint8_t raw; };

__host__ __device__ constexpr bool is_float(ada_dtype t) { return t == ADA_F32 || t == ADA_BF16 || t == ADA_F16; }

template <ada_dtype T> __device__ __forceinline__ float to_f32(typename Elt<T>::raw x) {
  if constexpr (T == ADA_BF16) return ada_bf16_to_f32(x);
  else if constexpr (T == ADA_F16) return ada_f16_to_f32(x);
  else return x;
}

template <ada_dtype T> __device__ __forceinline__ typename Elt<T>::raw from_f32(float f) {
  if constexpr (T == ADA_BF16) return ada_f32_to_bf16(f);
  else if constexpr (T == ADA_F16) return ada_f32_to_f16(f);
  else return f;
}

template <ada_dtype S, ada_dtype D>
__device__ __forceinline__ typename Elt<D>::raw convert(typename Elt<S>::raw x) {
  if constexpr (S == D) {
    return x;
  } else if constexpr (is_float(S) && D == ADA_F32) {
    /* bf16/f16 -> f32: exact, but the CPU's double round trip quiets a signaling NaN */
    uint32_t u = ada_f32_bits(to_f32<S>(x));
    return ada_bits_f32((u & 0x7fffffffu) > 0x7f800000u ? u | 0x00400000u : u);
  } else if constexpr (is_float(S) && is_float(D)) {
    return from_f32<D>(to_f32<S>(x)); /* bf16/f16 outputs set the quiet bit themselves */
  } else {
    typename Elt<D>::raw r;
    ada_store(&r, D, ada_load(&x, S)); /* dtypes are constants: the switches fold away */
    return r;
  }
}

/* Coalesced geometry for 2+ dims: the inner ndim-1 dims innermost first (shape and strides),
 * then the strides of the outermost dim, whose index is what is left of the logical index.
 * Fixed slots only, so the unrolled loop below indexes the parameters statically. */
struct Geo {
  int32_t ndim;
  int64_t shape[ADA_MAX_DIMS - 1];
  int64_t ds[ADA_MAX_DIMS - 1];
  int64_t ss[ADA_MAX_DIMS - 1];
  int64_t outer_ds, outer_ss;
};

template <ada_dtype S, ada_dtype D>
__global__ void __launch_bounds__(kThreads)
copy_1d(typename Elt<D>::raw *__restrict__ dst, int64_t ds,
        const typename Elt<S>::raw *__restrict__ src, int64_t ss, int64_t n) {
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
    dst[i * ds] = convert<S, D>(src[i * ss]);
}

template <ada_dtype S, ada_dtype D, typename I>
__global__ void __launch_bounds__(kThreads)
copy_nd(typename Elt<D>::raw *__restrict__ dst, const typename Elt<S>::raw *__restrict__ src,
        Geo g, int64_t n) {
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
    I rem = (I)i;
    int64_t doff = 0, soff = 0;
#pragma unroll
    for (int d = 0; d < ADA_MAX_DIMS - 1; d++) {
      if (d + 1 < g.ndim) {
        const I sz = (I)g.shape[d];
        const I q = rem / sz, r = rem - q * sz;
        doff += (int64_t)r * g.ds[d];
        soff += (int64_t)r * g.ss[d];
        rem = q;
      }
    }
    doff += (int64_t)rem * g.outer_ds;
    soff += (int64_t)rem * g.outer_ss;
    dst[doff] = convert<S, D>(src[soff]);
  }
}

/* The integer dtype of the same size: same-dtype copies move bits, so they share kernels. */
__host__ __device__ constexpr ada_dtype bits_of(ada_dtype t) {
  return t == ADA_F32 ? ADA_I32 : (t == ADA_BF16 || t == ADA_F16) ? ADA_I16 : t;
}

template <ada_dtype S, ada_dtype D>
int launch_pair(void *dst, const void *src, const Geo &g, int64_t n, cudaStream_t st) {
  if constexpr (S == D && bits_of(S) != S) {
    return launch_pair<bits_of(S), bits_of(S)>(dst, src, g, n, st);
  } else {
    typedef typename Elt<D>::raw DR;
    typedef typename Elt<S>::raw SR;
    DR *d = (DR *)dst;
    const SR *s = (const SR *)src;
    if (g.ndim == 1)
      copy_1d<S, D><<<grid_for(n), kThreads, 0, st>>>(d, g.outer_ds, s, g.outer_ss, n);
    else if (n <= (int64_t)UINT32_MAX)
      copy_nd<S, D, uint32_t><<<grid_for(n), kThreads, 0, st>>>(d, s, g, n);
    else
      copy_nd<S, D, int64_t><<<grid_for(n), kThreads, 0, st>>>(d, s, g, n);
    return (int)cudaGetLastError();
  }
}

template <ada_dtype S>
int dispatch_dst(ada_dtype ddt, void *dst, const void *src, const Geo &g, int64_t n,
                 cudaStream_t st) {
  switch (ddt) {
  case ADA_F32: return launch_pair<S, ADA_F32>(dst, src, g, n, st);
  case ADA_BF16: return launch_pair<S, ADA_BF16>(dst, src, g, n, st);
  case ADA_F16: return launch_pair<S, ADA_F16>(dst, src, g, n, st);
  case ADA_I32: return launch_pair<S, ADA_I32>(dst, src, g, n, st);
  case ADA_I16: return launch_pair<S, ADA_I16>(dst, src, g, n, st);
  case ADA_U8: return launch_pair<S, ADA_U8>(dst, src, g, n, st);
  default: return (int)cudaErrorInvalidValue;
  }
}

} // namespace

extern "C" int ada_launch_copy(void *dst, ada_dtype ddt, const ada_strided *dl, const void *src,
                               ada_dtype sdt, const ada_strided *sl, void *stream) {
  if (!dl || !sl || dl->ndim < 0 || dl->ndim > ADA_MAX_DIMS || sl->ndim != dl->ndim ||
      (unsigned)ddt >= (unsigned)ADA_NDTYPES || (unsigned)sdt >= (unsigned)ADA_NDTYPES)
    return (int)cudaErrorInvalidValue;
  int64_t n = 1;
  for (int32_t d = 0; d < dl->ndim; d++) {
    if (dl->shape[d] < 0 || dl->shape[d] != sl->shape[d]) return (int)cudaErrorInvalidValue;
    n *= dl->shape[d];
  }
  if (n == 0) return 0;
  if (!dst || !src) return (int)cudaErrorInvalidValue;

  /* coalesce (outermost first, as the CPU backend does), then store innermost first */
  int32_t nd = 0;
  int64_t shape[ADA_MAX_DIMS], dst_st[ADA_MAX_DIMS], src_st[ADA_MAX_DIMS];
  for (int32_t d = 0; d < dl->ndim; d++) {
    if (dl->shape[d] == 1) continue;
    if (nd > 0 && dst_st[nd - 1] == dl->stride[d] * dl->shape[d] &&
        src_st[nd - 1] == sl->stride[d] * sl->shape[d]) {
      shape[nd - 1] *= dl->shape[d];
      dst_st[nd - 1] = dl->stride[d];
      src_st[nd - 1] = sl->stride[d];
    } else {
      shape[nd] = dl->shape[d];
      dst_st[nd] = dl->stride[d];
      src_st[nd] = sl->stride[d];
      nd++;
    }
  }
  if (nd == 0) { shape[0] = 1; dst_st[0] = src_st[0] = 1; nd = 1; }
  Geo g;
  g.ndim = nd;
  g.outer_ds = dst_st[0];
  g.outer_ss = src_st[0];
  for (int32_t d = 0; d < ADA_MAX_DIMS - 1; d++) {
    const int32_t k = nd - 1 - d; /* dims 1..nd-1, innermost first */
    g.shape[d] = k >= 1 ? shape[k] : 1;
    g.ds[d] = k >= 1 ? dst_st[k] : 0;
    g.ss[d] = k >= 1 ? src_st[k] : 0;
  }

  cudaStream_t st = (cudaStream_t)stream;
  switch (sdt) {
  case ADA_F32: return dispatch_dst<ADA_F32>(ddt, dst, src, g, n, st);
  case ADA_BF16: return dispatch_dst<ADA_BF16>(ddt, dst, src, g, n, st);
  case ADA_F16: return dispatch_dst<ADA_F16>(ddt, dst, src, g, n, st);
  case ADA_I32: return dispatch_dst<ADA_I32>(ddt, dst, src, g, n, st);
  case ADA_I16: return dispatch_dst<ADA_I16>(ddt, dst, src, g, n, st);
  case ADA_U8: return dispatch_dst<ADA_U8>(ddt, dst, src, g, n, st);
  default: return (int)cudaErrorInvalidValue;
  }
}
