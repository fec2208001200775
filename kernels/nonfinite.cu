/* nonfinite.cu: ada_launch_count_nonfinite, the finiteness check of a given lse on the device
 * (kernels.h). */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "kernels.h"

namespace {

__global__ void nonfinite_init(unsigned long long *r) {
  r[0] = 0;
  r[1] = ~0ull;
}

__global__ void nonfinite_count(const float *__restrict__ x, int64_t n, unsigned long long *r) {
  unsigned long long c = 0, first = ~0ull;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    if (!isfinite(x[i])) {
      c++;
      if ((unsigned long long)i < first) first = (unsigned long long)i;
    }
  if (c) {
    atomicAdd(&r[0], c);
    atomicMin(&r[1], first);
  }
}

} // namespace

extern "C" int ada_launch_count_nonfinite(const float *x, int64_t n, unsigned long long *result, void *stream) {
  if (!x || !result || n < 1) return (int)cudaErrorInvalidValue;
  cudaStream_t st = (cudaStream_t)stream;
  nonfinite_init<<<1, 1, 0, st>>>(result);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return (int)e;
  int64_t blocks = (n + 255) / 256;
  if (blocks > 1024) blocks = 1024;
  nonfinite_count<<<(unsigned)blocks, 256, 0, st>>>(x, n, result);
  return (int)cudaGetLastError();
}
