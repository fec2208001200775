/* none.c: cuda.h, cuda_ops.h and cuda_attn.h for builds without the CUDA backend. No device
 * exists; every function that would touch one fails with ADA_EUNSUPPORTED "<op>: this adaspa
 * was built without CUDA".
 * Includes no CUDA header.
 */
#include "cuda.h"
#include "cuda_attn.h"
#include "cuda_ops.h"

#define NO_CUDA "this adaspa was built without CUDA"
#define UNSUPPORTED(op) ada_fail(ADA_EUNSUPPORTED, "%s: " NO_CUDA, op)

bool ada_cuda_built(void) { return false; }
int32_t ada_cuda_device_count(void) { return 0; }
const char *ada_cuda_unavailable_reason(void) { return NO_CUDA; }

ada_status ada_cuda_device_info_get(int32_t dev, ada_cuda_device_info *out) {
  (void)dev, (void)out;
  return UNSUPPORTED("cuda device info");
}

ada_status ada_cuda_malloc(void **out, size_t n, int32_t dev) {
  (void)n, (void)dev;
  if (out) *out = NULL;
  return UNSUPPORTED("cuda malloc");
}

void ada_cuda_free(void *p, int32_t dev) { (void)p, (void)dev; }

ada_status ada_cuda_empty_cache(int32_t dev) {
  (void)dev;
  return UNSUPPORTED("cuda empty_cache");
}

void ada_cuda_set_oom_hook(void (*hook)(void *ud), void *ud) { (void)hook, (void)ud; }

ada_status ada_cuda_memory(int32_t dev, ada_cuda_mem_stats *out) {
  (void)dev, (void)out;
  return UNSUPPORTED("cuda memory");
}

void ada_cuda_reset_peak(int32_t dev) { (void)dev; }

ada_status ada_cuda_memcpy(void *dst, const void *src, size_t n, int32_t kind, int32_t dev) {
  (void)dst, (void)src, (void)n, (void)kind, (void)dev;
  return UNSUPPORTED("cuda memcpy");
}

ada_status ada_cuda_copy(void *dst, ada_dtype ddt, const ada_strided *dl, const void *src, ada_dtype sdt,
                         const ada_strided *sl, int32_t dev) {
  (void)dst, (void)ddt, (void)dl, (void)src, (void)sdt, (void)sl, (void)dev;
  return UNSUPPORTED("cuda copy");
}

ada_status ada_cuda_fill(void *dst, ada_dtype ddt, const ada_strided *dl, double value, int32_t dev) {
  (void)dst, (void)ddt, (void)dl, (void)value, (void)dev;
  return UNSUPPORTED("cuda fill");
}

ada_status ada_cuda_arange(void *dst, ada_dtype ddt, int64_t n, double start, double step, int32_t dev) {
  (void)dst, (void)ddt, (void)n, (void)start, (void)step, (void)dev;
  return UNSUPPORTED("cuda arange");
}

ada_status ada_cuda_randn(void *dst, ada_dtype ddt, int64_t n, uint64_t seed, int32_t dev) {
  (void)dst, (void)ddt, (void)n, (void)seed, (void)dev;
  return UNSUPPORTED("cuda randn");
}

ada_status ada_cuda_synchronize(int32_t dev) {
  (void)dev;
  return UNSUPPORTED("cuda synchronize");
}

/* ---- the ops (cuda_ops.h, cuda_attn.h): never reached, no tensor lives on a GPU here ---- */

ada_status ada_cuda_op_linear(ada_tensor *out, const ada_tensor *x, const ada_tensor *w, const ada_tensor *b) {
  (void)out, (void)x, (void)w, (void)b;
  return UNSUPPORTED("linear");
}

ada_status ada_cuda_op_matmul(ada_tensor *out, const ada_tensor *a, const ada_tensor *b) {
  (void)out, (void)a, (void)b;
  return UNSUPPORTED("matmul");
}

ada_status ada_cuda_op_layernorm(ada_tensor *out, const ada_tensor *x, double eps, const ada_tensor *weight,
                                 const ada_tensor *bias) {
  (void)out, (void)x, (void)eps, (void)weight, (void)bias;
  return UNSUPPORTED("layernorm");
}

ada_status ada_cuda_op_rmsnorm(ada_tensor *out, const ada_tensor *x, const ada_tensor *weight, double eps) {
  (void)out, (void)x, (void)weight, (void)eps;
  return UNSUPPORTED("rmsnorm");
}

ada_status ada_cuda_op_softmax(ada_tensor *out, const ada_tensor *x, double scale) {
  (void)out, (void)x, (void)scale;
  return UNSUPPORTED("softmax");
}

ada_status ada_cuda_op_layernorm_modulate(ada_tensor *out, const ada_tensor *x, double eps, const ada_tensor *weight,
                                          const ada_tensor *bias, const ada_tensor *shift, const ada_tensor *scale) {
  (void)out, (void)x, (void)eps, (void)weight, (void)bias, (void)shift, (void)scale;
  return UNSUPPORTED("layernorm_modulate");
}

ada_status ada_cuda_op_modulate(ada_tensor *out, const ada_tensor *x, const ada_tensor *shift,
                                const ada_tensor *scale) {
  (void)out, (void)x, (void)shift, (void)scale;
  return UNSUPPORTED("modulate");
}

ada_status ada_cuda_op_gated_add(ada_tensor *out, const ada_tensor *x, const ada_tensor *gate, const ada_tensor *y) {
  (void)out, (void)x, (void)gate, (void)y;
  return UNSUPPORTED("gated_add");
}

ada_status ada_cuda_op_add(ada_tensor *out, const ada_tensor *a, const ada_tensor *b) {
  (void)out, (void)a, (void)b;
  return UNSUPPORTED("add");
}

ada_status ada_cuda_op_mul(ada_tensor *out, const ada_tensor *a, const ada_tensor *b) {
  (void)out, (void)a, (void)b;
  return UNSUPPORTED("mul");
}

ada_status ada_cuda_op_scale(ada_tensor *out, const ada_tensor *x, double s) {
  (void)out, (void)x, (void)s;
  return UNSUPPORTED("scale");
}

ada_status ada_cuda_op_silu(ada_tensor *out, const ada_tensor *x) {
  (void)out, (void)x;
  return UNSUPPORTED("silu");
}

ada_status ada_cuda_op_gelu_tanh(ada_tensor *out, const ada_tensor *x) {
  (void)out, (void)x;
  return UNSUPPORTED("gelu_tanh");
}

ada_status ada_cuda_op_rope3d(ada_tensor *out, const ada_tensor *x, const int32_t grid[3], const int32_t axes[3],
                              double theta, int64_t n_tokens) {
  (void)out, (void)x, (void)grid, (void)axes, (void)theta, (void)n_tokens;
  return UNSUPPORTED("rope3d");
}

ada_status ada_cuda_op_rmsnorm_rope3d(ada_tensor *out, const ada_tensor *x, const ada_tensor *weight, double eps,
                                      const int32_t grid[3], const int32_t axes[3], double theta, int64_t n_tokens) {
  (void)out, (void)x, (void)weight, (void)eps, (void)grid, (void)axes, (void)theta, (void)n_tokens;
  return UNSUPPORTED("rmsnorm_rope3d");
}

ada_status ada_cuda_op_patchify(ada_tensor *out, const ada_tensor *x) {
  (void)out, (void)x;
  return UNSUPPORTED("patchify");
}

ada_status ada_cuda_op_unpatchify(ada_tensor *out, const ada_tensor *x, int32_t t, int32_t h, int32_t w) {
  (void)out, (void)x, (void)t, (void)h, (void)w;
  return UNSUPPORTED("unpatchify");
}

ada_status ada_cuda_op_timestep_embedding(ada_tensor *out, const ada_tensor *t, int32_t dim, double max_period) {
  (void)out, (void)t, (void)dim, (void)max_period;
  return UNSUPPORTED("timestep_embedding");
}

ada_status ada_cuda_attn(const char *op, ada_cuda_attn_mode mode, ada_tensor *out, ada_tensor *lse, ada_tensor *mass,
                         const ada_tensor *q, const ada_tensor *k, const ada_tensor *v, const ada_tensor *lse_in,
                         const ada_layout *layout, int64_t kv_valid, double scale, int32_t block) {
  (void)mode, (void)out, (void)lse, (void)mass, (void)q, (void)k, (void)v, (void)lse_in, (void)layout, (void)kv_valid,
      (void)scale, (void)block;
  return UNSUPPORTED(op);
}

ada_status ada_cuda_layout_select(ada_layout **out, const char *op, const ada_tensor *mass, int32_t mode,
                                  const double *frac, int32_t min_blocks, int32_t max_blocks,
                                  const ada_layout_force *force, int32_t block) {
  (void)mass, (void)mode, (void)frac, (void)min_blocks, (void)max_blocks, (void)force, (void)block;
  if (out) *out = NULL;
  return UNSUPPORTED(op);
}

ada_status ada_cuda_layout_recall(const ada_layout *l, const ada_tensor *mass, double *recall) {
  (void)l, (void)mass, (void)recall;
  return UNSUPPORTED("recall");
}
