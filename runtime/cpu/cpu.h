/* cpu.h: the CPU backend (prefix ada_cpu_). Plain C11 + OpenMP. The reference for every op.
 *
 * Element kernels work on raw pointers (to the first element) and ada_strided descriptors
 * (sizes and strides in elements). They cannot fail once the runtime core has validated
 * their arguments, so they return nothing.
 */
#ifndef ADA_CPU_H
#define ADA_CPU_H

#include <stdint.h>

#include "../backend.h" /* ada_reduce_op */
#include "../scalar.h"

/* dst[idx] = convert(src[idx]) over the common shape (dl and sl: same ndim and shape). */
void ada_cpu_copy(void *dst, ada_dtype ddt, const ada_strided *dl, const void *src, ada_dtype sdt,
                  const ada_strided *sl);
void ada_cpu_fill(void *dst, ada_dtype ddt, const ada_strided *dl, double value);
/* Contiguous dst[i] = start + i * step. */
void ada_cpu_arange(void *dst, ada_dtype ddt, int64_t n, double start, double step);
/* Contiguous dst[i] = ada_randn_at(seed, i) in ddt. */
void ada_cpu_randn(void *dst, ada_dtype ddt, int64_t n, uint64_t seed);

/* Reduction of every element in double. MAX/MIN return NaN if any element is NaN. The result
 * is independent of the thread count (fixed chunking, fixed combination order). */
double ada_cpu_reduce(const void *src, ada_dtype sdt, const ada_strided *sl, ada_reduce_op op);

void ada_cpu_set_threads(int32_t n);
int32_t ada_cpu_threads(void);

#endif
