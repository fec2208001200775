/* attention.c: the attention ops of ops.h (ada_op_attention, ada_op_sparse_attention,
 * ada_op_block_mass, ada_op_attention_with_mass): argument validation, then dispatch: tensors on
 * the CPU go through f32 staging of strided or low-precision inputs and outputs to the CPU kernels
 * (runtime/cpu/attention.c); tensors on one CUDA device go to the CUDA backend
 * (runtime/cuda/cuda_attn.h), which stages them on the device. */
#include <math.h>
#include <stddef.h>

#include "cpu/cpu_attn.h"
#include "opcheck.h"
#include "ops.h"
#include "cuda/cuda_attn.h"

/* Dense attention runs query tiles of 128 rows against key blocks of 64: the same row results as
 * sparse attention over a full layout of blocks of 64, with half the key and value traffic. */
enum { MAX_DIM = 256, DENSE_QTILE = 128, DENSE_BLOCK = 64 };

/* Sizes of a validated call. */
typedef struct attn_dims {
  int64_t sq, skv, kv_valid;
  int32_t heads, dim, qtile, block; /* query tile rows, key block (and mass block) */
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
  if (q->shape[2] > MAX_DIM)
    return ada_fail(ADA_EINVAL, "%s: q %s has head dimension %lld; at most %d is supported", op,
                    ada_chk_shape_str(q), (long long)q->shape[2], MAX_DIM);
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
  dm->qtile = DENSE_QTILE;
  dm->block = DENSE_BLOCK;
  return ADA_OK;
}

static ada_status check_block(const char *op, int32_t block, attn_dims *dm) {
  if (block != 64 && block != 128) return ada_fail(ADA_EINVAL, "%s: block must be 64 or 128, got %d", op, (int)block);
  dm->qtile = dm->block = block;
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

static ada_status check_finite(const char *op, const char *arg, const ada_tensor *orig, const ada_tensor *f32) {
  const float *x = ada_tensor_data(f32);
  const int64_t n = ada_tensor_numel(f32);
  int64_t bad = 0;
  float first = 0;
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(x[i]) && !bad++) first = x[i];
  if (!bad) return ADA_OK;
  return ada_fail(ADA_EINVAL, "%s: %s %s must be finite, got %lld non-finite values (the first is %g)", op, arg,
                  ada_chk_shape_str(orig), (long long)bad, (double)first);
}

/* f32 views of the inputs (q, k, v, lse; NULL entries skip) with a contiguous last dimension;
 * lse fully contiguous. Temporaries go to tmp[] (free with release()). */
typedef struct staged {
  const ada_tensor *t[4];
  ada_tensor *tmp[4];
} staged;

static void release(staged *st) {
  for (int i = 0; i < 4; i++) ada_tensor_free(st->tmp[i]);
}

static ada_status stage(staged *st, const ada_tensor *q, const ada_tensor *k, const ada_tensor *v,
                        const ada_tensor *lse) {
  const ada_tensor *in[4] = {q, k, v, lse};
  for (int i = 0; i < 4; i++) {
    st->t[i] = NULL;
    st->tmp[i] = NULL;
  }
  for (int i = 0; i < 4; i++) {
    if (!in[i]) continue;
    ada_status s = ada_chk_f32_in(in[i], i == 3, &st->t[i], &st->tmp[i]);
    if (s) {
      release(st);
      return s;
    }
  }
  return ADA_OK;
}

static ada_cpu_qkv kernel_args(const staged *st, const attn_dims *dm) {
  const ada_tensor *q = st->t[0], *k = st->t[1], *v = st->t[2];
  ada_cpu_qkv a;
  a.q = ada_tensor_data(q);
  a.k = ada_tensor_data(k);
  a.v = v ? ada_tensor_data(v) : NULL;
  a.q_rs = q->stride[0];
  a.q_hs = q->stride[1];
  a.k_rs = k->stride[0];
  a.k_hs = k->stride[1];
  a.v_rs = v ? v->stride[0] : 0;
  a.v_hs = v ? v->stride[1] : 0;
  a.sq = dm->sq;
  a.skv = dm->skv;
  a.kv_valid = dm->kv_valid;
  a.heads = dm->heads;
  a.dim = dm->dim;
  a.scale = dm->scale;
  return a;
}

/* Shared by attention, sparse_attention and attention_with_mass once everything is validated. */
static ada_status run_attention(const char *op, ada_tensor *out, ada_tensor *lse, ada_tensor *mass,
                                const ada_tensor *q, const ada_tensor *k, const ada_tensor *v,
                                const ada_tensor *lse_cached, const ada_layout *layout, const attn_dims *dm) {
  staged st;
  ada_status s = stage(&st, q, k, v, lse_cached);
  if (s) return s;
  if (lse_cached && (s = check_finite(op, "lse_cached", lse_cached, st.t[3]))) {
    release(&st);
    return s;
  }
  ada_tensor *obuf, *otmp;
  if ((s = ada_chk_f32_out(out, &obuf, &otmp))) {
    release(&st);
    return s;
  }
  const ada_cpu_qkv a = kernel_args(&st, dm);
  s = ada_cpu_attention(&a, dm->qtile, dm->block, layout ? layout->offsets : NULL, layout ? layout->indices : NULL,
                        lse_cached ? ada_tensor_data(st.t[3]) : NULL, ada_tensor_data(obuf), ada_tensor_data(lse),
                        mass ? ada_tensor_data(mass) : NULL);
  release(&st);
  if (s) {
    ada_tensor_free(otmp);
    return s;
  }
  return ada_chk_f32_out_done(out, otmp);
}

static const ada_attn_opts no_opts = {0, 0, 0};

static bool on_cuda(const ada_tensor *t) { return t->storage->device.type == ADA_CUDA; }

/* The CUDA backend once everything is validated (all tensors on q's device). */
static ada_status run_cuda(const char *op, ada_cuda_attn_mode mode, ada_tensor *out, ada_tensor *lse, ada_tensor *mass,
                           const ada_tensor *q, const ada_tensor *k, const ada_tensor *v, const ada_tensor *lse_in,
                           const ada_layout *layout, const attn_dims *dm) {
  return ada_cuda_attn(op, mode, out, lse, mass, q, k, v, lse_in, layout, dm->kv_valid, dm->scale, dm->block);
}

/* ada_layout_check, or only its size checks for a layout whose device mirror exists on q's
 * device: the mirror is uploaded only after a full check passed, and layouts are immutable, so
 * the O(nnz) structure scan runs once per layout and device, not once per call. */
static ada_status check_layout(const ada_layout *l, const char *op, const ada_tensor *q, const attn_dims *dm) {
  if (!l || !on_cuda(q) || !l->dev_offsets || l->dev_index != q->storage->device.index)
    return ada_layout_check(l, op, dm->heads, dm->sq, dm->skv);
  if (l->heads != dm->heads)
    return ada_fail(ADA_EINVAL, "%s: layout has %d heads, the attention has %d", op, l->heads, dm->heads);
  if (l->nqb != cdiv(dm->sq, l->block) || l->nkb != cdiv(dm->skv, l->block))
    return ada_fail(ADA_EINVAL,
                    "%s: layout has %d x %d blocks of %d, attention over %lld queries and %lld keys needs %lld x %lld",
                    op, l->nqb, l->nkb, l->block, (long long)dm->sq, (long long)dm->skv,
                    (long long)cdiv(dm->sq, l->block), (long long)cdiv(dm->skv, l->block));
  return ADA_OK;
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
  if (on_cuda(q)) return run_cuda(op, ADA_CUDA_ATTN_DENSE, out, lse, NULL, q, k, v, NULL, NULL, &dm);
  return run_attention(op, out, lse, NULL, q, k, v, NULL, NULL, &dm);
}

ada_status ada_op_sparse_attention(ada_tensor *out, ada_tensor *lse, const ada_tensor *q, const ada_tensor *k,
                                   const ada_tensor *v, const ada_layout *layout, const ada_attn_opts *o) {
  static const char *op = "sparse_attention";
  static const char *const names[] = {"out", "lse", "q", "k", "v"};
  attn_dims dm;
  ada_status s;
  if ((s = check_qkv(op, q, k, v, o ? o : &no_opts, &dm))) return s;
  if ((s = check_layout(layout, op, q, &dm))) return s;
  dm.qtile = dm.block = layout->block;
  const int64_t oshape[3] = {dm.sq, dm.heads, dm.dim}, lshape[2] = {dm.heads, dm.sq};
  const ada_tensor *ts[] = {out, lse, q, k, v};
  if ((s = check_out(op, "out", out, 3, oshape, false, q)) || (s = check_out(op, "lse", lse, 2, lshape, true, q)) ||
      (s = check_no_alias(op, 2, 5, ts, names)))
    return s;
  if (on_cuda(q)) return run_cuda(op, ADA_CUDA_ATTN_SPARSE, out, lse, NULL, q, k, v, NULL, layout, &dm);
  return run_attention(op, out, lse, NULL, q, k, v, NULL, layout, &dm);
}

ada_status ada_op_block_mass(ada_tensor *mass, const ada_tensor *q, const ada_tensor *k, const ada_tensor *lse,
                             const ada_attn_opts *o) {
  static const char *op = "block_mass";
  static const char *const names[] = {"mass", "q", "k", "lse"};
  if (!o) o = &no_opts;
  attn_dims dm;
  ada_status s;
  if ((s = check_qkv(op, q, k, NULL, o, &dm)) || (s = check_block(op, o->block, &dm)) ||
      (s = check_lse_in(op, "lse", lse, &dm, q)))
    return s;
  const int64_t mshape[3] = {dm.heads, cdiv(dm.sq, dm.block), cdiv(dm.skv, dm.block)};
  const ada_tensor *ts[] = {mass, q, k, lse};
  if ((s = check_out(op, "mass", mass, 3, mshape, true, q)) || (s = check_no_alias(op, 1, 4, ts, names))) return s;
  if (on_cuda(q)) return run_cuda(op, ADA_CUDA_ATTN_MASS, NULL, NULL, mass, q, k, NULL, lse, NULL, &dm);
  staged st;
  if ((s = stage(&st, q, k, NULL, lse))) return s;
  if (!(s = check_finite(op, "lse", lse, st.t[3]))) {
    const ada_cpu_qkv a = kernel_args(&st, &dm);
    s = ada_cpu_block_mass(&a, dm.block, ada_tensor_data(st.t[3]), ada_tensor_data(mass));
  }
  release(&st);
  return s;
}

ada_status ada_op_attention_with_mass(ada_tensor *out, ada_tensor *lse, ada_tensor *mass, const ada_tensor *q,
                                      const ada_tensor *k, const ada_tensor *v, const ada_tensor *lse_cached,
                                      const ada_attn_opts *o) {
  static const char *op = "attention_with_mass";
  static const char *const names[] = {"out", "lse", "mass", "q", "k", "v", "lse_cached"};
  if (!o) o = &no_opts;
  attn_dims dm;
  ada_status s;
  if ((s = check_qkv(op, q, k, v, o, &dm)) || (s = check_block(op, o->block, &dm)) ||
      (s = check_lse_in(op, "lse_cached", lse_cached, &dm, q)))
    return s;
  const int64_t oshape[3] = {dm.sq, dm.heads, dm.dim}, lshape[2] = {dm.heads, dm.sq};
  const int64_t mshape[3] = {dm.heads, cdiv(dm.sq, dm.block), cdiv(dm.skv, dm.block)};
  const ada_tensor *ts[] = {out, lse, mass, q, k, v, lse_cached};
  if ((s = check_out(op, "out", out, 3, oshape, false, q)) || (s = check_out(op, "lse", lse, 2, lshape, true, q)) ||
      (s = check_out(op, "mass", mass, 3, mshape, true, q)) || (s = check_no_alias(op, 3, 7, ts, names)))
    return s;
  if (on_cuda(q)) return run_cuda(op, ADA_CUDA_ATTN_FUSED, out, lse, mass, q, k, v, lse_cached, NULL, &dm);
  return run_attention(op, out, lse, mass, q, k, v, lse_cached, NULL, &dm);
}
