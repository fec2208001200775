/* none.c: cuda.h for builds without the CUDA backend. No device exists; every function that
 * would touch one fails with ADA_EUNSUPPORTED "<op>: this adaspa was built without CUDA".
 * Includes no CUDA header.
 */
#include "cuda.h"

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

ada_status ada_cuda_copy(void *dst, ada_dtype ddt, const ada_strided *dl, const void *src,
                         ada_dtype sdt, const ada_strided *sl, int32_t dev) {
  (void)dst, (void)ddt, (void)dl, (void)src, (void)sdt, (void)sl, (void)dev;
  return UNSUPPORTED("cuda copy");
}

ada_status ada_cuda_fill(void *dst, ada_dtype ddt, const ada_strided *dl, double value,
                         int32_t dev) {
  (void)dst, (void)ddt, (void)dl, (void)value, (void)dev;
  return UNSUPPORTED("cuda fill");
}

ada_status ada_cuda_arange(void *dst, ada_dtype ddt, int64_t n, double start, double step,
                           int32_t dev) {
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
