/* cuda.h: host side of the CUDA backend (prefix ada_cuda_). Plain C.
 *
 * Built from the .c files of runtime/cuda/ when the CUDA backend is compiled in; otherwise
 * runtime/cuda/none.c provides the same functions, which report that the build has no CUDA.
 * The runtime core (tensor.c, ops.c) calls only these; these call the kernel launchers in
 * kernels/ (kernels/kernels.h).
 *
 * One stream per device (created lazily); every function below is ordered on it. Functions
 * that copy to host memory synchronize before returning. Every CUDA call and every launch is
 * checked; failures return ADA_EDEVICE (or ADA_ENOMEM) with a message naming the call.
 * Nothing prints to stdout or stderr, including on machines with no GPU or no driver.
 */
#ifndef ADA_CUDA_H
#define ADA_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../scalar.h"
#include "../status.h"

/* True when this binary was built with the CUDA backend. */
bool ada_cuda_built(void);
/* Number of usable GPUs: 0 without the backend, a driver or a device. Never fails loudly. */
int32_t ada_cuda_device_count(void);
/* Why there is no GPU ("built without CUDA", "no CUDA driver", ...), or "" when there is one. */
const char *ada_cuda_unavailable_reason(void);

typedef struct ada_cuda_device_info {
  int32_t index;
  char name[256];
  size_t total_bytes;
  size_t free_bytes;
  int32_t cc_major, cc_minor;
  int32_t sm_count;
} ada_cuda_device_info;

ada_status ada_cuda_device_info_get(int32_t dev, ada_cuda_device_info *out);

/* ---- caching allocator ---------------------------------------------------------------- */
/* Device memory of at least n bytes (n > 0), 256-byte aligned, from the cache when a freed
 * block of a fitting size class exists. On cudaMalloc failure: empties the cache, calls the
 * out-of-memory hook once (the Lua binding runs a full garbage collection there), retries,
 * and then fails with ADA_ENOMEM naming the size asked and the memory free. The same hook runs
 * after an allocation when the allocated bytes grew by 1/16 of the device's memory
 * (ADASPA_GC_STEP_MB) since the last collection: garbage tensors cannot pile up. */
ada_status ada_cuda_malloc(void **out, size_t n, int32_t dev);
/* Returns a block from ada_cuda_malloc to the cache. NULL is ignored. */
void ada_cuda_free(void *p, int32_t dev);
/* Releases every cached (unused) block to the driver. */
ada_status ada_cuda_empty_cache(int32_t dev);
void ada_cuda_set_oom_hook(void (*hook)(void *ud), void *ud);

typedef struct ada_cuda_mem_stats {
  size_t allocated;      /* bytes in blocks handed out now (block sizes, after rounding) */
  size_t cached;         /* bytes in freed blocks kept for reuse */
  size_t peak;           /* highest value of allocated so far */
  size_t reserved;       /* allocated + cached: what cudaMalloc holds for us */
  uint64_t n_malloc;     /* calls to cudaMalloc */
  uint64_t n_reuse;      /* requests served from the cache */
} ada_cuda_mem_stats;

ada_status ada_cuda_memory(int32_t dev, ada_cuda_mem_stats *out);
/* Resets peak to the current allocated. */
void ada_cuda_reset_peak(int32_t dev);

/* ---- copies and simple kernels (all on the device's stream) ------------------------------ */
/* n bytes between host memory and device dev memory, or within device dev.
 * kind: 0 host->device, 1 device->host (synchronizes), 2 device->device. */
ada_status ada_cuda_memcpy(void *dst, const void *src, size_t n, int32_t kind, int32_t dev);
/* dst[idx] = convert(src[idx]) for every logical index of the common shape (dl and sl have the
 * same ndim and shape; strides in elements; both pointers on device dev). */
ada_status ada_cuda_copy(void *dst, ada_dtype ddt, const ada_strided *dl, const void *src,
                         ada_dtype sdt, const ada_strided *sl, int32_t dev);
/* dst[idx] = value (converted to ddt) for every logical index of dl. */
ada_status ada_cuda_fill(void *dst, ada_dtype ddt, const ada_strided *dl, double value,
                         int32_t dev);
/* Contiguous dst[i] = start + i * step, i < n. */
ada_status ada_cuda_arange(void *dst, ada_dtype ddt, int64_t n, double start, double step,
                           int32_t dev);
/* Contiguous dst[i] = ada_randn_at(seed, i) rounded to ddt (a float dtype), i < n. */
ada_status ada_cuda_randn(void *dst, ada_dtype ddt, int64_t n, uint64_t seed, int32_t dev);
ada_status ada_cuda_synchronize(int32_t dev);

#endif
