/* stage.c: f32 staging of the CPU backend (stage.h). */
#include "stage.h"

ada_status ada_cpu_f32_in(const ada_tensor *t, bool contiguous, const ada_tensor **use, ada_tensor **tmp) {
  *tmp = NULL;
  bool inner = t->ndim == 0 || t->shape[t->ndim - 1] == 1 || t->stride[t->ndim - 1] == 1;
  if (t->dtype == ADA_F32 && t->storage->device.type == ADA_CPU && (contiguous ? ada_tensor_is_contiguous(t) : inner)) {
    *use = t;
    return ADA_OK;
  }
  ada_device cpu = {ADA_CPU, 0};
  ada_status s = ada_tensor_to(tmp, t, ADA_F32, cpu);
  if (s) return s;
  *use = *tmp;
  return ADA_OK;
}

ada_status ada_cpu_f32_out(ada_tensor *out, ada_tensor **buf, ada_tensor **tmp) {
  *tmp = NULL;
  if (out->dtype == ADA_F32 && out->storage->device.type == ADA_CPU && ada_tensor_is_contiguous(out)) {
    *buf = out;
    return ADA_OK;
  }
  ada_device cpu = {ADA_CPU, 0};
  ada_status s = ada_tensor_empty(tmp, out->ndim, out->shape, ADA_F32, cpu);
  if (s) return s;
  *buf = *tmp;
  return ADA_OK;
}

ada_status ada_cpu_f32_out_done(ada_tensor *out, ada_tensor *tmp) {
  if (!tmp) return ADA_OK;
  ada_status s = ada_tensor_copy(out, tmp);
  ada_tensor_free(tmp);
  return s;
}
