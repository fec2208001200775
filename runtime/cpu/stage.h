/* stage.h: f32 staging of the CPU backend (prefix ada_cpu_). The CPU kernels compute in f32 on
 * host memory; these turn a validated op argument of any float dtype and any strides into the
 * f32 view a kernel reads, and give it an f32 buffer to write an output into. */
#ifndef ADA_CPU_STAGE_H
#define ADA_CPU_STAGE_H

#include <stdbool.h>

#include "../tensor.h"

/* A read view of t as f32 on the CPU whose last dimension is contiguous (and fully contiguous
 * when `contiguous`). *use is t itself when it already qualifies (then *tmp is NULL), else a
 * converted copy owned by *tmp (free it with ada_tensor_free). */
ada_status ada_cpu_f32_in(const ada_tensor *t, bool contiguous, const ada_tensor **use, ada_tensor **tmp);
/* An f32 contiguous buffer to compute an output into: out itself when it is f32 (then *tmp is
 * NULL), else a scratch tensor of its shape; ada_cpu_f32_out_done copies the scratch into out
 * (rounding) and frees it. */
ada_status ada_cpu_f32_out(ada_tensor *out, ada_tensor **buf, ada_tensor **tmp);
ada_status ada_cpu_f32_out_done(ada_tensor *out, ada_tensor *tmp);

/* The data of an f32 tensor (NULL for NULL). */
static inline const float *ada_cpu_f32(const ada_tensor *t) { return t ? (const float *)ada_tensor_data(t) : NULL; }

#endif
