/* opcheck.c: shared argument checks of the op front ends. */
#include "opcheck.h"

#include <stdio.h>
#include <string.h>

const char *ada_chk_shape_str(const ada_tensor *t) {
  static _Thread_local char ring[8][96];
  static _Thread_local int next;
  char *b = ring[next++ & 7];
  ada_shape_format(t->ndim, t->shape, b, 96);
  return b;
}

ada_status ada_chk_float(const char *op, const char *arg, const ada_tensor *t) {
  if (!t) return ada_fail(ADA_EINVAL, "%s: %s is missing", op, arg);
  if (!ada_dtype_is_float(t->dtype))
    return ada_fail(ADA_EINVAL, "%s: %s must be f32, bf16 or f16, got %s %s", op, arg, ada_dtype_name(t->dtype),
                    ada_chk_shape_str(t));
  return ADA_OK;
}

ada_status ada_chk_shape(const char *op, const char *arg, const ada_tensor *t, int32_t ndim, const int64_t *want) {
  bool ok = t->ndim == ndim;
  for (int32_t i = 0; ok && i < ndim; i++) ok = want[i] < 0 || want[i] == t->shape[i];
  if (ok) return ADA_OK;
  char w[128];
  size_t n = (size_t)snprintf(w, sizeof w, "[");
  for (int32_t i = 0; i < ndim && n < sizeof w; i++)
    n += (size_t)(want[i] < 0 ? snprintf(w + n, sizeof w - n, "%s*", i ? ", " : "")
                              : snprintf(w + n, sizeof w - n, "%s%lld", i ? ", " : "", (long long)want[i]));
  if (n < sizeof w) snprintf(w + n, sizeof w - n, "]");
  return ada_fail(ADA_EINVAL, "%s: %s must have shape %s, got %s", op, arg, w, ada_chk_shape_str(t));
}

ada_status ada_chk_same_shape(const char *op, const char *arg, const ada_tensor *t, const char *ref_arg,
                              const ada_tensor *ref) {
  if (t->ndim == ref->ndim && !memcmp(t->shape, ref->shape, sizeof(int64_t) * (size_t)t->ndim)) return ADA_OK;
  return ada_fail(ADA_EINVAL, "%s: %s has shape %s but %s has shape %s", op, arg, ada_chk_shape_str(t), ref_arg,
                  ada_chk_shape_str(ref));
}

ada_status ada_chk_same_device(const char *op, const char *arg_a, const ada_tensor *a, const char *arg_b,
                               const ada_tensor *b) {
  if (ada_device_equal(a->storage->device, b->storage->device)) return ADA_OK;
  char da[16], db[16];
  ada_device_format(a->storage->device, da, sizeof da);
  ada_device_format(b->storage->device, db, sizeof db);
  return ada_fail(ADA_EINVAL, "%s: %s is on %s but %s is on %s", op, arg_a, da, arg_b, db);
}

ada_status ada_chk_contiguous(const char *op, const char *arg, const ada_tensor *t) {
  if (ada_tensor_is_contiguous(t)) return ADA_OK;
  return ada_fail(ADA_EINVAL, "%s: %s %s must be contiguous", op, arg, ada_chk_shape_str(t));
}

ada_status ada_chk_cpu(const char *op, const ada_tensor *t) {
  if (t->storage->device.type == ADA_CPU) return ADA_OK;
  return ada_fail(ADA_EUNSUPPORTED, "%s: the CUDA backend of this op is not built yet (move the tensors to the CPU)",
                  op);
}
