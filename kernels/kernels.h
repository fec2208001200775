/* kernels.h: C-ABI launchers of the CUDA kernels (prefix ada_launch_).
 *
 * Device code only lives in the .cu files of kernels/, one op family per file with its launcher. A launcher
 * enqueues its kernel(s) on `stream` (a cudaStream_t passed as void *) and returns the
 * cudaError_t of the launch (cudaGetLastError() after it) as an int: 0 is success. Launchers
 * never allocate, synchronize or print. Pointers are device pointers to the first element.
 */
#ifndef ADA_KERNELS_H
#define ADA_KERNELS_H

#include <stdint.h>

#include "../runtime/scalar.h"

#ifdef __cplusplus
extern "C" {
#endif

/* kernels/copy.cu: strided copy with dtype conversion over the common shape of dl and sl. */
int ada_launch_copy(void *dst, ada_dtype ddt, const ada_strided *dl, const void *src,
                    ada_dtype sdt, const ada_strided *sl, void *stream);

/* kernels/fill.cu: fill a strided view with a value; contiguous arange. */
int ada_launch_fill(void *dst, ada_dtype ddt, const ada_strided *dl, double value, void *stream);
int ada_launch_arange(void *dst, ada_dtype ddt, int64_t n, double start, double step,
                      void *stream);

/* kernels/randn.cu: contiguous dst[i] = ada_randn_at(seed, i) in ddt (f32, bf16 or f16). */
int ada_launch_randn(void *dst, ada_dtype ddt, int64_t n, uint64_t seed, void *stream);

#ifdef __cplusplus
}
#endif

#endif
