/* randn.cu: ada_launch_randn, contiguous dst[i] = ada_randn_at(seed, i) in f32, bf16 or f16.
 *
 * Bit-identical to the CPU (ada_cpu_randn): the sampler is scalar.h's, which on the device
 * uses __dadd_rn/__dmul_rn/__ddiv_rn/__dsqrt_rn (no FMA contraction), and the f32 result is
 * rounded with ada_f32_to_bf16 / ada_f32_to_f16 exactly as on the CPU. Each element is
 * independent (counter-based), so any grid gives the same numbers.
 * Grid-stride loop, 256 threads, grid capped at 65535*4 blocks.
 */
#include <cuda_runtime.h>

#include "kernels.h"

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535 * 4;

template <ada_dtype D, typename T>
__global__ void __launch_bounds__(kThreads) randn_k(T *__restrict__ dst, int64_t n, uint64_t seed) {
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
    const float v = ada_randn_at(seed, (uint64_t)i);
    if constexpr (D == ADA_BF16) dst[i] = ada_f32_to_bf16(v);
    else if constexpr (D == ADA_F16) dst[i] = ada_f32_to_f16(v);
    else dst[i] = v;
  }
}

template <ada_dtype D, typename T>
int launch(void *dst, int64_t n, uint64_t seed, cudaStream_t st) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  randn_k<D, T><<<(unsigned)(b < kMaxBlocks ? b : kMaxBlocks), kThreads, 0, st>>>((T *)dst, n, seed);
  return (int)cudaGetLastError();
}

} // namespace

extern "C" int ada_launch_randn(void *dst, ada_dtype ddt, int64_t n, uint64_t seed, void *stream) {
  if (n < 0) return (int)cudaErrorInvalidValue;
  if (n == 0) return 0;
  if (!dst) return (int)cudaErrorInvalidValue;
  cudaStream_t st = (cudaStream_t)stream;
  switch (ddt) {
  case ADA_F32: return launch<ADA_F32, float>(dst, n, seed, st);
  case ADA_BF16: return launch<ADA_BF16, uint16_t>(dst, n, seed, st);
  case ADA_F16: return launch<ADA_F16, uint16_t>(dst, n, seed, st);
  default: return (int)cudaErrorInvalidValue; /* not a float dtype */
  }
}
