/* attention_cuda.c: the CUDA backend's attention op (cuda_attn.h): the plan (attention_plan.c)
 * says which kernel family runs and how; this stages what the kernels cannot read in place,
 * checks a given lse, finds the layout's device mirror and launches on the device's stream.
 *
 * - q, k, v are read in place when they are bf16 with a contiguous last dimension equal to the
 *   plan's head dimension (64 or 128), a 16-byte aligned first element and row and head strides
 *   that are multiples of 8 elements (the [S, 3, H, D] QKV projection's views are); anything
 *   else is copied on the device into a contiguous bf16 [S, H, dim] buffer, zero-padded past D
 *   (zeros change no dot product, and the padded output columns are not written). f32 inputs
 *   are computed from their bf16 rounding and carry bf16 accuracy. Outputs may be f32, bf16 or
 *   f16.
 * - lse_in is read as contiguous f32 (copied otherwise) and must be finite, as on the CPU: a count
 *   of its non-finite values (and the first index) comes back to the host (a synchronizing copy
 *   of 16 bytes; the search steps that use it are rare).
 * - A sparse layout is read through its device mirror (mirror.c), uploaded once per layout and
 *   device; the CTAs run in the mirror's CTA order.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_attn.h"
#include "internal.h"

/* A bf16 view the kernels read: first element, row and head strides in elements. */
typedef struct kview {
  const void *p;
  int64_t rs, hs;
  ada_cuda_buf buf; /* the staged copy, or none */
} kview;

static bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

static ada_status prep_qkv(const ada_tensor *t, int32_t dp, kview *o) {
  const int64_t S = t->shape[0], H = t->shape[1], D = t->shape[2];
  const int64_t rs = S > 1 ? t->stride[0] : 0, hs = H > 1 ? t->stride[1] : 0;
  o->buf.p = NULL;
  if (t->dtype == ADA_BF16 && D == dp && (D == 1 || t->stride[2] == 1) && rs % 8 == 0 && hs % 8 == 0 &&
      aligned16(ada_tensor_data(t))) {
    o->p = ada_tensor_data(t);
    o->rs = rs;
    o->hs = hs;
    return ADA_OK;
  }
  ada_status s = ada_cuda_stage(t, ADA_BF16, dp, &o->buf);
  if (s) return s;
  o->p = o->buf.p;
  o->rs = H * dp;
  o->hs = dp;
  return ADA_OK;
}

/* lse_in as contiguous f32 (*tmp owns a copy), checked finite. */
static ada_status prep_lse(const char *op, const char *arg, const ada_tensor *t, int32_t dev, cudaStream_t st,
                           const float **out, ada_cuda_buf *tmp) {
  tmp->p = NULL;
  ada_status s;
  const float *x = ada_tensor_data(t);
  if (t->dtype != ADA_F32 || !ada_tensor_is_contiguous(t)) {
    if ((s = ada_cuda_stage(t, ADA_F32, 0, tmp))) return s;
    x = tmp->p;
  }
  const int64_t n = ada_tensor_numel(t);
  unsigned long long *res = NULL, host[2] = {0, 0};
  if ((s = ada_cuda_malloc((void **)&res, sizeof host, dev))) goto fail;
  int e = ada_launch_count_nonfinite(x, n, res, st);
  if (e) {
    s = ada_cuda_error((cudaError_t)e, op, "ada_launch_count_nonfinite(...)");
    goto fail;
  }
  s = ada_cuda_memcpy(host, res, sizeof host, 1, dev);
  ada_cuda_free(res, dev);
  res = NULL;
  if (s) goto fail;
  if (host[0]) {
    float first = 0;
    char shape[96];
    if ((s = ada_cuda_memcpy(&first, x + host[1], sizeof first, 1, dev))) goto fail;
    ada_shape_format(t->ndim, t->shape, shape, sizeof shape);
    s = ada_fail(ADA_EINVAL, "%s: %s %s must be finite, got %lld non-finite values (the first is %g)", op, arg, shape,
                 (long long)host[0], (double)first);
    goto fail;
  }
  *out = x;
  return ADA_OK;
fail:
  ada_cuda_free(res, dev);
  ada_cuda_buf_free(tmp);
  return s;
}

ada_status ada_cuda_attention(const ada_attn_call *c) {
  const char *op = c->op;
  ada_cuda_attn_plan plan;
  ada_status s = ada_cuda_attention_plan_full(c, &plan);
  if (s) return s;
  const int32_t dev = c->q->storage->device.index, dp = plan.p.dim;
  if ((s = ada_cuda_enter(dev, op))) return s;
  cudaStream_t st;
  if ((s = ada_cuda_stream(dev, op, &st))) return s;
  const ada_attn_mode mode = c->mode;
  const bool has_v = mode != ADA_ATTN_MASS, has_lse_in = mode == ADA_ATTN_FUSED || mode == ADA_ATTN_MASS;
  kview qv = {0}, kv = {0}, vv = {0};
  ada_cuda_buf lse_tmp = {0};
  const float *lse_in_p = NULL;
  const ada_cuda_mirror *mir = NULL;
  if ((s = prep_qkv(c->q, dp, &qv)) || (s = prep_qkv(c->k, dp, &kv)) || (has_v && (s = prep_qkv(c->v, dp, &vv))) ||
      (has_lse_in && (s = prep_lse(op, mode == ADA_ATTN_MASS ? "lse" : "lse_cached", c->lse_in, dev, st, &lse_in_p,
                                   &lse_tmp))) ||
      (mode == ADA_ATTN_SPARSE && (s = ada_cuda_mirror_get(c->layout, dev, op, &mir))))
    goto done;

  ada_attn_params p = plan.p;
  p.q = qv.p;
  p.q_rs = qv.rs;
  p.q_hs = qv.hs;
  p.k = kv.p;
  p.k_rs = kv.rs;
  p.k_hs = kv.hs;
  if (has_v) {
    p.v = vv.p;
    p.v_rs = vv.rs;
    p.v_hs = vv.hs;
    p.out = ada_tensor_data(c->out);
    p.lse = ada_tensor_data(c->lse);
  }
  if (has_lse_in) {
    p.lse_in = lse_in_p;
    p.mass = ada_tensor_data(c->mass);
  }
  if (mir) {
    p.offsets = mir->offsets;
    p.indices = mir->indices;
    p.order = plan.p.head_order && mir->order_head ? mir->order_head : mir->order;
    if (plan.p.tail_walk) p.walk = mir->walk64; /* NULL for layouts of 128 */
    p.split_flags = mir->flags64;                /* block 64 in passes (plan.p.kv_split) */
  }
  int e = ada_cuda_attention_launch(&plan, &p, st);
  if (e) s = ada_cuda_error((cudaError_t)e, op, "ada_launch_attention(...)");
done:
  /* staged copies go back to the allocator's cache; the stream orders their reuse after the kernel */
  ada_cuda_buf_free(&qv.buf);
  ada_cuda_buf_free(&kv.buf);
  ada_cuda_buf_free(&vv.buf);
  ada_cuda_buf_free(&lse_tmp);
  return s;
}
