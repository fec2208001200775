/* stage.c: device buffers for inputs the CUDA kernels cannot read in place (cuda_attn.h): a
 * contiguous copy in the dtype the kernel reads, optionally widened in the last dimension with
 * zeros, made with the backend's own allocator and copy kernels (no detour through the core). */
#include <string.h>

#include "cuda_attn.h"
#include "internal.h"

ada_strided ada_cuda_strided(const ada_tensor *t) {
  ada_strided l;
  l.ndim = t->ndim;
  for (int32_t i = 0; i < t->ndim; i++) {
    l.shape[i] = t->shape[i];
    l.stride[i] = t->stride[i];
  }
  if (t->ndim == 0) {
    l.ndim = 1;
    l.shape[0] = 1;
    l.stride[0] = 1;
  }
  return l;
}

void ada_cuda_buf_free(ada_cuda_buf *b) {
  if (b->p) ada_cuda_free(b->p, b->dev);
  b->p = NULL;
}

ada_status ada_cuda_stage(const ada_tensor *t, ada_dtype ddt, int64_t last_dim, ada_cuda_buf *dst) {
  const char *op = "cuda stage";
  const int32_t dev = t->storage->device.index;
  ada_strided src = ada_cuda_strided(t), wide = src, view;
  const int32_t nd = src.ndim;
  if (last_dim < src.shape[nd - 1]) last_dim = src.shape[nd - 1];
  wide.shape[nd - 1] = last_dim;
  int64_t n = 1;
  for (int32_t d = nd - 1; d >= 0; d--) {
    wide.stride[d] = n;
    n *= wide.shape[d];
  }
  view = wide; /* the widened buffer's strides, the source's shape */
  view.shape[nd - 1] = src.shape[nd - 1];
  dst->p = NULL;
  dst->dev = dev;
  cudaStream_t st;
  ada_status s = ada_cuda_enter(dev, op);
  if (s || (s = ada_cuda_stream(dev, op, &st))) return s;
  if ((s = ada_cuda_malloc(&dst->p, (size_t)n * (size_t)ada_dtype_size(ddt), dev))) return s;
  int e = 0;
  if (last_dim > src.shape[nd - 1]) e = ada_launch_fill(dst->p, ddt, &wide, 0.0, (void *)st);
  if (!e) e = ada_launch_copy(dst->p, ddt, &view, ada_tensor_data(t), t->dtype, &src, (void *)st);
  if (e) {
    ada_cuda_buf_free(dst);
    return ada_cuda_error((cudaError_t)e, op, "ada_launch_copy(...)");
  }
  return ADA_OK;
}
