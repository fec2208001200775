/* opcheck.h: argument checks and f32 staging shared by the op front ends (ops.c, attention.c,
 * layout.c). Internal to runtime/ (prefix ada_chk_). Every check returns ADA_OK or fails with a
 * message "op: argument ...: expected ..., got ..." naming the shapes involved. */
#ifndef ADA_OPCHECK_H
#define ADA_OPCHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "tensor.h"

/* t non-NULL with a float dtype (f32, bf16, f16). */
ada_status ada_chk_float(const char *op, const char *arg, const ada_tensor *t);
/* t has ndim dimensions and, where want[i] >= 0, size want[i] in dimension i. */
ada_status ada_chk_shape(const char *op, const char *arg, const ada_tensor *t, int32_t ndim, const int64_t *want);
/* a and b on the same device (names both). */
ada_status ada_chk_same_device(const char *op, const char *arg_a, const ada_tensor *a, const char *arg_b,
                               const ada_tensor *b);
/* t contiguous (outputs). */
ada_status ada_chk_contiguous(const char *op, const char *arg, const ada_tensor *t);
/* Same shape as ref. */
ada_status ada_chk_same_shape(const char *op, const char *arg, const ada_tensor *t, const char *ref_arg,
                              const ada_tensor *ref);
/* t's storage is on the CPU, else ADA_EUNSUPPORTED "op: the CUDA backend of this op is not
 * built yet" (the CUDA issue adds them). */
ada_status ada_chk_cpu(const char *op, const ada_tensor *t);

/* A read view of t as f32 on the CPU whose last dimension is contiguous (and fully contiguous
 * when `contiguous`). *use is t itself when it already qualifies (then *tmp is NULL), else a
 * converted copy owned by *tmp (free it with ada_tensor_free). */
ada_status ada_chk_f32_in(const ada_tensor *t, bool contiguous, const ada_tensor **use, ada_tensor **tmp);
/* An f32 contiguous buffer to compute an output into: out itself when it is f32 (then *tmp is
 * NULL), else a scratch tensor of its shape; ada_chk_f32_out_done copies the scratch into out
 * (rounding) and frees it. */
ada_status ada_chk_f32_out(ada_tensor *out, ada_tensor **buf, ada_tensor **tmp);
ada_status ada_chk_f32_out_done(ada_tensor *out, ada_tensor *tmp);

/* Shape as text "[2, 3]" in a static per-thread ring of buffers (valid for a few calls). */
const char *ada_chk_shape_str(const ada_tensor *t);

#endif
