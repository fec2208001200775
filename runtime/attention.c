/* attention.c: the attention ops of ops.h (ada_op_attention, ada_op_sparse_attention,
 * ada_op_block_mass, ada_op_attention_with_mass, ada_op_attention_plan): argument validation,
 * once, then one ada_attn_call (backend.h) to the backend of q's device: its attention plan says
 * whether it takes the call (else ADA_EUNSUPPORTED with the plan's reason) and how it runs
 * (runtime/cpu/attention.c: f32 staging and the CPU kernels; runtime/cuda/attention_cuda.c: the
 * tensor-core kernel families of kernels/). */
#include <math.h>
#include <stddef.h>
#include <stdio.h>

#include "backend.h"
#include "opcheck.h"
#include "ops.h"

/* Sizes of a validated call. */
typedef struct attn_dims {
  int64_t sq, skv, kv_valid;
  int32_t heads, dim;
  float scale;
} attn_dims;

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* q [Sq, H, D], k [Skv, H, D], v (NULL for block mass) like k; one float dtype, one device;
 * scale and kv_valid of o. */
static ada_status check_qkv(const char *op, const ada_tensor *q, const ada_tensor *k, const ada_tensor *v,
                            const ada_attn_opts *o, attn_dims *dm) {
  static const int64_t any3[3] = {-1, -1, -1};
  ada_status s;
  if ((s = ada_chk_float(op, "q", q)) || (s = ada_chk_float(op, "k", k)) || (v && (s = ada_chk_float(op, "v", v))))
    return s;
  if ((s = ada_chk_shape(op, "q", q, 3, any3))) return s;
  if (q->shape[2] > ADA_ATTN_MAX_DIM)
    return ada_fail(ADA_EINVAL, "%s: q %s has head dimension %lld; at most %d is supported", op,
                    ada_chk_shape_str(q), (long long)q->shape[2], ADA_ATTN_MAX_DIM);
  const int64_t kshape[3] = {-1, q->shape[1], q->shape[2]};
  if ((s = ada_chk_shape(op, "k", k, 3, kshape))) return s;
  if (v && (s = ada_chk_same_shape(op, "v", v, "k", k))) return s;
  if (k->dtype != q->dtype || (v && v->dtype != q->dtype)) {
    const ada_tensor *b = k->dtype != q->dtype ? k : v;
    return ada_fail(ADA_EINVAL, "%s: %s is %s %s but q is %s %s (q, k and v must share one dtype)", op,
                    b == k ? "k" : "v", ada_dtype_name(b->dtype), ada_chk_shape_str(b), ada_dtype_name(q->dtype),
                    ada_chk_shape_str(q));
  }
  if ((s = ada_chk_same_device(op, "k", k, "q", q)) || (v && (s = ada_chk_same_device(op, "v", v, "q", q))))
    return s;
  if (!isfinite(o->scale))
    return ada_fail(ADA_EINVAL, "%s: scale must be finite, got %g", op, o->scale);
  if (o->kv_valid < 0 || o->kv_valid > k->shape[0])
    return ada_fail(ADA_EINVAL, "%s: kv_valid must be in 1..%lld (the keys of k %s), got %lld", op,
                    (long long)k->shape[0], ada_chk_shape_str(k), (long long)o->kv_valid);
  dm->sq = q->shape[0];
  dm->skv = k->shape[0];
  dm->kv_valid = o->kv_valid ? o->kv_valid : k->shape[0];
  dm->heads = (int32_t)q->shape[1];
  dm->dim = (int32_t)q->shape[2];
  dm->scale = (float)(o->scale != 0 ? o->scale : 1.0 / sqrt((double)q->shape[2]));
  return ADA_OK;
}

/* An output: the given shape, contiguous, on q's device; f32 when f32_only, else any float dtype. */
static ada_status check_out(const char *op, const char *arg, const ada_tensor *t, int32_t ndim, const int64_t *shape,
                            bool f32_only, const ada_tensor *q) {
  ada_status s;
  if ((s = ada_chk_float(op, arg, t))) return s;
  if (f32_only && t->dtype != ADA_F32)
    return ada_fail(ADA_EINVAL, "%s: %s must be f32, got %s %s", op, arg, ada_dtype_name(t->dtype),
                    ada_chk_shape_str(t));
  if ((s = ada_chk_shape(op, arg, t, ndim, shape)) || (s = ada_chk_contiguous(op, arg, t)) ||
      (s = ada_chk_same_device(op, arg, t, "q", q)))
    return s;
  return ADA_OK;
}

/* No output (the first n_out of ts) may share storage with another argument. NULL entries skip. */
static ada_status check_no_alias(const char *op, int n_out, int n, const ada_tensor *const *ts,
                                 const char *const *names) {
  for (int i = 0; i < n_out; i++)
    for (int j = 0; j < n; j++)
      if (j != i && ts[i] && ts[j] && ada_tensor_same_storage(ts[i], ts[j]))
        return ada_fail(ADA_EINVAL, "%s: %s %s shares storage with %s %s (outputs must not overlap other arguments)",
                        op, names[i], ada_chk_shape_str(ts[i]), names[j], ada_chk_shape_str(ts[j]));
  return ADA_OK;
}

/* An lse input [H, Sq] of any float dtype on q's device. */
static ada_status check_lse_in(const char *op, const char *arg, const ada_tensor *t, const attn_dims *dm,
                               const ada_tensor *q) {
  const int64_t shape[2] = {dm->heads, dm->sq};
  ada_status s;
  if ((s = ada_chk_float(op, arg, t)) || (s = ada_chk_shape(op, arg, t, 2, shape)) ||
      (s = ada_chk_same_device(op, arg, t, "q", q)))
    return s;
  return ADA_OK;
}

static const ada_attn_opts no_opts = {0};

/* The call of a validated op (tensors a mode does not use NULL). */
static ada_attn_call make_call(const char *op, ada_attn_mode mode, const attn_dims *dm, const ada_attn_opts *o,
                               int32_t block) {
  ada_attn_call c = {0};
  c.op = op;
  c.mode = mode;
  c.kv_valid = dm->kv_valid;
  c.scale = dm->scale;
  c.block = block;
  c.family = o->family;
  c.variant = o->variant;
  return c;
}

/* The backend of q's device runs the call when its plan takes it (the plan's failure says why). */
static ada_status run(const ada_attn_call *c) {
  const ada_backend *b = ada_backend_of(c->q);
  if (!b->ops.attention || !b->ops.attention_plan)
    return ada_fail(ADA_EUNSUPPORTED, "%s: the %s backend has no attention", c->op, b->name);
  ada_attn_plan plan;
  ada_status s = b->ops.attention_plan(c, &plan);
  return s ? s : b->ops.attention(c);
}

ada_status ada_op_attention(ada_tensor *out, ada_tensor *lse, const ada_tensor *q, const ada_tensor *k,
                            const ada_tensor *v, const ada_attn_opts *o) {
  static const char *op = "attention";
  static const char *const names[] = {"out", "lse", "q", "k", "v"};
  attn_dims dm;
  ada_status s;
  if ((s = check_qkv(op, q, k, v, o ? o : &no_opts, &dm))) return s;
  const int64_t oshape[3] = {dm.sq, dm.heads, dm.dim}, lshape[2] = {dm.heads, dm.sq};
  const ada_tensor *ts[] = {out, lse, q, k, v};
  if ((s = check_out(op, "out", out, 3, oshape, false, q)) || (s = check_out(op, "lse", lse, 2, lshape, true, q)) ||
      (s = check_no_alias(op, 2, 5, ts, names)))
    return s;
  ada_attn_call c = make_call(op, ADA_ATTN_DENSE, &dm, o ? o : &no_opts, 0);
  c.out = out, c.lse = lse, c.q = q, c.k = k, c.v = v;
  return run(&c);
}

ada_status ada_op_sparse_attention(ada_tensor *out, ada_tensor *lse, const ada_tensor *q, const ada_tensor *k,
                                   const ada_tensor *v, const ada_layout *layout, const ada_attn_opts *o) {
  static const char *op = "sparse_attention";
  static const char *const names[] = {"out", "lse", "q", "k", "v"};
  attn_dims dm;
  ada_status s;
  if ((s = check_qkv(op, q, k, v, o ? o : &no_opts, &dm))) return s;
  if ((s = ada_layout_check(layout, op, dm.heads, dm.sq, dm.skv))) return s;
  const int64_t oshape[3] = {dm.sq, dm.heads, dm.dim}, lshape[2] = {dm.heads, dm.sq};
  const ada_tensor *ts[] = {out, lse, q, k, v};
  if ((s = check_out(op, "out", out, 3, oshape, false, q)) || (s = check_out(op, "lse", lse, 2, lshape, true, q)) ||
      (s = check_no_alias(op, 2, 5, ts, names)))
    return s;
  ada_attn_call c = make_call(op, ADA_ATTN_SPARSE, &dm, o ? o : &no_opts, layout->block);
  c.out = out, c.lse = lse, c.q = q, c.k = k, c.v = v, c.layout = layout;
  return run(&c);
}

ada_status ada_op_block_mass(ada_tensor *mass, const ada_tensor *q, const ada_tensor *k, const ada_tensor *lse,
                             const ada_attn_opts *o) {
  static const char *op = "block_mass";
  static const char *const names[] = {"mass", "q", "k", "lse"};
  if (!o) o = &no_opts;
  attn_dims dm;
  ada_status s;
  if ((s = check_qkv(op, q, k, NULL, o, &dm)) || (s = ada_layout_check_block(op, "block", o->block)) ||
      (s = check_lse_in(op, "lse", lse, &dm, q)))
    return s;
  const int64_t mshape[3] = {dm.heads, cdiv(dm.sq, o->block), cdiv(dm.skv, o->block)};
  const ada_tensor *ts[] = {mass, q, k, lse};
  if ((s = check_out(op, "mass", mass, 3, mshape, true, q)) || (s = check_no_alias(op, 1, 4, ts, names))) return s;
  ada_attn_call c = make_call(op, ADA_ATTN_MASS, &dm, o, o->block);
  c.mass = mass, c.q = q, c.k = k, c.lse_in = lse;
  return run(&c);
}

ada_status ada_op_attention_with_mass(ada_tensor *out, ada_tensor *lse, ada_tensor *mass, const ada_tensor *q,
                                      const ada_tensor *k, const ada_tensor *v, const ada_tensor *lse_cached,
                                      const ada_attn_opts *o) {
  static const char *op = "attention_with_mass";
  static const char *const names[] = {"out", "lse", "mass", "q", "k", "v", "lse_cached"};
  if (!o) o = &no_opts;
  attn_dims dm;
  ada_status s;
  if ((s = check_qkv(op, q, k, v, o, &dm)) || (s = ada_layout_check_block(op, "block", o->block)) ||
      (s = check_lse_in(op, "lse_cached", lse_cached, &dm, q)))
    return s;
  const int64_t oshape[3] = {dm.sq, dm.heads, dm.dim}, lshape[2] = {dm.heads, dm.sq};
  const int64_t mshape[3] = {dm.heads, cdiv(dm.sq, o->block), cdiv(dm.skv, o->block)};
  const ada_tensor *ts[] = {out, lse, mass, q, k, v, lse_cached};
  if ((s = check_out(op, "out", out, 3, oshape, false, q)) || (s = check_out(op, "lse", lse, 2, lshape, true, q)) ||
      (s = check_out(op, "mass", mass, 3, mshape, true, q)) || (s = check_no_alias(op, 3, 7, ts, names)))
    return s;
  ada_attn_call c = make_call(op, ADA_ATTN_FUSED, &dm, o, o->block);
  c.out = out, c.lse = lse, c.mass = mass, c.q = q, c.k = k, c.v = v, c.lse_in = lse_cached;
  return run(&c);
}

ada_status ada_op_attention_plan(ada_attn_plan *plan, ada_attn_mode mode, const ada_tensor *q, const ada_tensor *k,
                                 const ada_layout *layout, const ada_attn_opts *o) {
  static const char *op = "attention_plan";
  if (!o) o = &no_opts;
  attn_dims dm;
  ada_status s;
  if ((unsigned)mode >= ADA_ATTN_NMODES) return ada_fail(ADA_EINVAL, "%s: unknown mode %d", op, (int)mode);
  if ((s = check_qkv(op, q, k, NULL, o, &dm))) return s;
  int32_t block = 0;
  if (mode == ADA_ATTN_SPARSE) {
    if ((s = ada_layout_check(layout, op, dm.heads, dm.sq, dm.skv))) return s;
    block = layout->block;
  } else if (mode != ADA_ATTN_DENSE) {
    if ((s = ada_layout_check_block(op, "block", o->block))) return s;
    block = o->block;
  }
  ada_attn_call c = make_call(op, mode, &dm, o, block);
  c.q = q, c.k = k, c.v = mode == ADA_ATTN_MASS ? NULL : k, c.layout = mode == ADA_ATTN_SPARSE ? layout : NULL;
  const ada_backend *b = ada_backend_of(q);
  if (!b->ops.attention_plan) return ada_fail(ADA_EUNSUPPORTED, "%s: the %s backend has no attention", op, b->name);
  return b->ops.attention_plan(&c, plan);
}
