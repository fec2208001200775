/* opcheck.h: argument checks shared by the op front ends (nn.c, attention.c, layout.c).
 * Internal to the core (prefix ada_chk_); backends do not include it. Every check returns
 * ADA_OK or fails with a message "op: argument ...: expected ..., got ..." naming the shapes involved. */
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
/* t's storage is on the CPU, else ADA_EUNSUPPORTED "op: ... (move the tensors to the CPU)". */
ada_status ada_chk_cpu(const char *op, const ada_tensor *t);

/* Shape as text "[2, 3]" in a static per-thread ring of buffers (valid for a few calls). */
const char *ada_chk_shape_str(const ada_tensor *t);

#endif
