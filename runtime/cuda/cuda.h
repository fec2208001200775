/* cuda.h: host side of the CUDA backend (prefix ada_cuda_). Plain C. Internal to runtime/cuda/:
 * the core reaches these only through the backend's table (runtime/cuda/backend.c, backend.h).
 * Built from the .c files of runtime/cuda/ when the CUDA backend is compiled in; these call the
 * kernel launchers in kernels/ (kernels/kernels.h).
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

#include "../backend.h"
#include "../scalar.h"
#include "../status.h"

/* Number of usable GPUs: 0 without the backend, a driver or a device. Never fails loudly. */
int32_t ada_cuda_device_count(void);
/* Why there is no GPU ("built without CUDA", "no CUDA driver", ...), or "" when there is one. */
const char *ada_cuda_unavailable_reason(void);

ada_status ada_cuda_device_info_get(int32_t dev, ada_device_info *out);
/* Compute capability and SM count of dev, asked once per device (for the attention plan). */
ada_status ada_cuda_props(int32_t dev, int32_t *cc_major, int32_t *cc_minor, int32_t *sm_count);

/* ---- caching allocator ---------------------------------------------------------------- */
/* Device memory of at least n bytes (n > 0), 256-byte aligned, from the cache when a freed
 * block of a fitting size class exists. On cudaMalloc failure: empties the cache, calls the
 * out-of-memory hook once (the Lua binding runs a full garbage collection there), retries,
 * and then fails with ADA_ENOMEM naming the size asked and the memory free. The same hook runs
 * after an allocation when the allocated bytes grew by 1/16 of the device's memory
 * (ADASPA_GC_STEP_MB) since the last collection: garbage tensors cannot pile up. */
ada_status ada_cuda_malloc(void **out, size_t n, int32_t dev);
/* Returns a block from ada_cuda_malloc to the cache. NULL is ignored. A block is reused at once by
 * work on the stream it was allocated on (stream order makes that safe); when it was also used
 * on other streams (ada_cuda_record_stream), an event is recorded on each of them at free, and
 * the block is reused only once those events have completed. */
void ada_cuda_free(void *p, int32_t dev);
/* Marks block p (from ada_cuda_malloc) as used by work on `stream` (a cudaStream_t) besides the
 * stream it was allocated on. Unknown pointers are ignored. */
ada_status ada_cuda_record_stream(void *p, void *stream);
/* Releases every cached (unused) block to the driver. */
ada_status ada_cuda_empty_cache(int32_t dev);
void ada_cuda_set_oom_hook(void (*hook)(void *ud), void *ud);

/* allocated, cached (freed blocks kept for reuse, including those waiting for another
 * stream's events), peak, reserved (what cudaMalloc holds for us), cudaMalloc calls, reuses. */
ada_status ada_cuda_memory(int32_t dev, ada_mem_stats *out);
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

/* ---- events (timers) -------------------------------------------------------------------------- */
ada_status ada_cuda_event_new(void **out, int32_t dev);
/* Records the event on dev's stream. */
ada_status ada_cuda_event_record(void *ev, int32_t dev);
/* Seconds between two recorded events; waits for stop only. */
ada_status ada_cuda_event_elapsed(void *start, void *stop, int32_t dev, double *seconds);
void ada_cuda_event_free(void *ev, int32_t dev);

#endif
