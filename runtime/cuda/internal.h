/* internal.h: private helpers shared by the .c files of runtime/cuda/ (device.c, alloc.c,
 * gemm_cuda.c, ...). Not for the runtime core, which reaches the backend through backend.h only.
 * Plain C11 over the CUDA runtime C API.
 *
 * Conventions: a function taking `dev` first calls ada_cuda_enter(dev, op), which validates the
 * index and makes dev current on the calling thread; work is then enqueued on the device's one
 * stream from ada_cuda_stream(). Every CUDA call goes through ADA_CUDA_CHECK, whose failure
 * message reads "<op>: <cudaCall>: <error string> (<error name>)".
 */
#ifndef ADA_CUDA_INTERNAL_H
#define ADA_CUDA_INTERNAL_H

#include <cuda_runtime_api.h>

#include "cuda.h"

/* Devices beyond this many are not used (ada_cuda_device_count() is capped to it). */
#define ADA_CUDA_MAX_DEVICES 64

/* Checks 0 <= dev < ada_cuda_device_count() and calls cudaSetDevice(dev). On failure returns
 * ADA_EDEVICE with a message starting with op. */
ada_status ada_cuda_enter(int32_t dev, const char *op);

/* The stream of dev (non-blocking, created on first use). Call after ada_cuda_enter(dev). */
ada_status ada_cuda_stream(int32_t dev, const char *op, cudaStream_t *out);

/* Records "op: call: error" (call is cut at its first '(') as ADA_EDEVICE, after clearing the
 * runtime's last error so that a later launch check does not see it again. */
ada_status ada_cuda_error(cudaError_t e, const char *op, const char *call);

/* Evaluates a CUDA runtime call; on failure returns ada_cuda_error() from the enclosing
 * function (which must return ada_status). */
#define ADA_CUDA_CHECK(op, call)                                                               \
  do {                                                                                         \
    cudaError_t ada_cuda_e_ = (call);                                                          \
    if (ada_cuda_e_ != cudaSuccess) return ada_cuda_error(ada_cuda_e_, (op), #call);           \
  } while (0)

#endif
