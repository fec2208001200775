/* nn.c: the neural-network ops of ops.h (linear, matmul, norms, elementwise, rope3d, patchify,
 * unpatchify, timestep_embedding, concat): argument validation, once, then dispatch through the
 * op table of the tensors' backend (backend.h): the CPU backend stages to f32 for its kernels
 * (runtime/cpu/nn.c), the CUDA backend launches kernels/nn.cu (runtime/cuda/nn_cuda.c). Every
 * check runs before anything is written. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "opcheck.h"
#include "ops.h"

/* ---- shared checks ------------------------------------------------------------------------- */

/* An input: a float tensor (chk_devices checks where it lives). */
static ada_status chk_in(const char *op, const char *arg, const ada_tensor *t) { return ada_chk_float(op, arg, t); }

/* The output: a contiguous float tensor. */
static ada_status chk_out(const char *op, const ada_tensor *out) {
  ada_status s = chk_in(op, "out", out);
  return s ? s : ada_chk_contiguous(op, "out", out);
}

static bool same_view(const ada_tensor *a, const ada_tensor *b) {
  if (a->storage != b->storage || a->offset != b->offset || a->dtype != b->dtype || a->ndim != b->ndim) return false;
  for (int32_t d = 0; d < a->ndim; d++)
    if (a->shape[d] != b->shape[d] || a->stride[d] != b->stride[d]) return false;
  return true;
}

/* Fails when output out (named outn) shares memory with input t (t may be NULL). With may_alias, t
 * may be exactly out's view: the op then runs in place (each element is read before it is written). */
static ada_status chk_overlap_named(const char *op, const char *outn, const ada_tensor *out, const char *arg,
                                   const ada_tensor *t, bool may_alias) {
  if (!t || !ada_tensor_same_storage(out, t) || (may_alias && same_view(out, t))) return ADA_OK;
  const ada_tensor *v[2] = {out, t};
  uintptr_t lo[2], hi[2];
  for (int i = 0; i < 2; i++) {
    int64_t span = 0;
    for (int32_t d = 0; d < v[i]->ndim; d++) span += (v[i]->shape[d] - 1) * v[i]->stride[d];
    lo[i] = (uintptr_t)ada_tensor_data(v[i]);
    hi[i] = lo[i] + (uintptr_t)((span + 1) * ada_dtype_size(v[i]->dtype));
  }
  if (lo[0] >= hi[1] || lo[1] >= hi[0]) return ADA_OK;
  if (may_alias)
    return ada_fail(ADA_EINVAL, "%s: %s %s overlaps %s %s in memory (%s may be that very tensor, not another view of it)",
                    op, outn, ada_chk_shape_str(out), arg, ada_chk_shape_str(t), outn);
  return ada_fail(ADA_EINVAL, "%s: %s %s overlaps %s %s in memory", op, outn, ada_chk_shape_str(out), arg,
                  ada_chk_shape_str(t));
}

/* chk_overlap_named for the output called out. */
static ada_status chk_overlap(const char *op, const ada_tensor *out, const char *arg, const ada_tensor *t,
                              bool may_alias) {
  return chk_overlap_named(op, "out", out, arg, t, may_alias);
}

/* The n tensors ts (NULL entries skipped) on one device: each on the device of the first, the
 * message naming both arguments. */
static ada_status chk_devices(const char *op, int n, const char *const *names, const ada_tensor *const *ts) {
  int first = -1;
  for (int i = 0; i < n; i++) {
    if (!ts[i]) continue;
    if (first < 0) {
      first = i;
      continue;
    }
    ada_status s = ada_chk_same_device(op, names[i], ts[i], names[first], ts[first]);
    if (s) return s;
  }
  return ADA_OK;
}

/* Up to four tensors (NULL: absent) on one device. */
static ada_status devices(const char *op, const char *n0, const ada_tensor *t0, const char *n1, const ada_tensor *t1,
                          const char *n2, const ada_tensor *t2, const char *n3, const ada_tensor *t3) {
  return chk_devices(op, 4, (const char *const[]){n0, n1, n2, n3}, (const ada_tensor *const[]){t0, t1, t2, t3});
}

static ada_status unsupported(const char *op, const ada_backend *b) {
  return ada_fail(ADA_EUNSUPPORTED, "%s: the %s backend does not have this op (move the tensors to the CPU)", op,
                  b->name);
}

/* Returns the entry `fn` of the op table of t's backend called with the arguments, or
 * ADA_EUNSUPPORTED when that backend lacks it. */
#define DISPATCH(op, t, fn, ...)                                                                   \
  do {                                                                                             \
    const ada_backend *be_ = ada_backend_of(t);                                                    \
    return be_->ops.fn ? be_->ops.fn(__VA_ARGS__) : unsupported(op, be_);                          \
  } while (0)

static ada_status chk_dims(const char *op, const char *arg, const ada_tensor *t) {
  if (t->ndim >= 1) return ADA_OK;
  return ada_fail(ADA_EINVAL, "%s: %s must have at least one dimension, got []", op, arg);
}

/* ---- GEMM ------------------------------------------------------------------------------------- */

ada_status ada_op_linear(ada_tensor *out, const ada_tensor *x, const ada_tensor *w, const ada_tensor *b) {
  return ada_op_linear_ex(out, x, w, b, NULL);
}

ada_status ada_op_linear_ex(ada_tensor *out, const ada_tensor *x, const ada_tensor *w, const ada_tensor *b,
                            const ada_linear_opts *opts) {
  const char *op = "linear";
  const ada_linear_opts o = opts ? *opts : (ada_linear_opts){ADA_LINEAR_ACT_NONE, false};
  if (o.act != ADA_LINEAR_ACT_NONE && o.act != ADA_LINEAR_ACT_GELU_TANH)
    return ada_fail(ADA_EINVAL, "%s: unknown act %d (known: %d none, %d gelu_tanh)", op, (int)o.act,
                    (int)ADA_LINEAR_ACT_NONE, (int)ADA_LINEAR_ACT_GELU_TANH);
  if (o.act != ADA_LINEAR_ACT_NONE && o.accumulate)
    return ada_fail(ADA_EINVAL, "%s: act and accumulate cannot be combined (the activation would apply to out's "
                                "previous values too); run the activation as its own op",
                    op);
  ada_status s;
  if ((s = chk_in(op, "x", x)) || (s = chk_in(op, "w", w)) || (b && (s = chk_in(op, "b", b))) ||
      (s = chk_out(op, out)) || (s = devices(op, "x", x, "w", w, "b", b, "out", out)) ||
      (s = ada_chk_shape(op, "x", x, 2, (const int64_t[]){-1, -1})) ||
      (s = ada_chk_shape(op, "w", w, 2, (const int64_t[]){-1, x->shape[1]})) ||
      (b && (s = ada_chk_shape(op, "b", b, 1, (const int64_t[]){w->shape[0]}))) ||
      (s = ada_chk_shape(op, "out", out, 2, (const int64_t[]){x->shape[0], w->shape[0]})) ||
      (s = chk_overlap(op, out, "x", x, false)) || (s = chk_overlap(op, out, "w", w, false)) ||
      (s = chk_overlap(op, out, "b", b, false)))
    return s;
  DISPATCH(op, x, linear, out, x, w, b, &o);
}

ada_status ada_op_matmul(ada_tensor *out, const ada_tensor *a, const ada_tensor *b) {
  const char *op = "matmul";
  ada_status s;
  if ((s = chk_in(op, "a", a)) || (s = chk_in(op, "b", b)) || (s = chk_out(op, out)) ||
      (s = devices(op, "a", a, "b", b, "out", out, NULL, NULL)) ||
      (s = ada_chk_shape(op, "a", a, 2, (const int64_t[]){-1, -1})) ||
      (s = ada_chk_shape(op, "b", b, 2, (const int64_t[]){a->shape[1], -1})) ||
      (s = ada_chk_shape(op, "out", out, 2, (const int64_t[]){a->shape[0], b->shape[1]})) ||
      (s = chk_overlap(op, out, "a", a, false)) || (s = chk_overlap(op, out, "b", b, false)))
    return s;
  DISPATCH(op, a, matmul, out, a, b);
}

/* ---- normalization ------------------------------------------------------------------------------ */

static ada_status chk_eps(const char *op, double eps) {
  if (eps >= 0 && isfinite(eps)) return ADA_OK;
  return ada_fail(ADA_EINVAL, "%s: eps must be a finite number >= 0, got %g", op, eps);
}

static ada_status chk_operand(const char *op, const char *arg, const ada_tensor *v, const char *xn,
                              const ada_tensor *x, int64_t *ld);

/* Shared by layernorm (layer) and rmsnorm: x [.., C], weight and bias [C] or NULL. With shift
 * and scale (layernorm_modulate, layer only) the result is then modulated (see there); the
 * caller checks that their shapes fit x and that they do not overlap out. */
static ada_status norm(const char *op, bool layer, ada_tensor *out, const ada_tensor *x, double eps,
                       const ada_tensor *weight, const ada_tensor *bias, const ada_tensor *shift,
                       const ada_tensor *scale) {
  ada_status s;
  if ((s = chk_in(op, "x", x)) || (weight && (s = chk_in(op, "weight", weight))) ||
      (bias && (s = chk_in(op, "bias", bias))) || (s = chk_out(op, out)) ||
      (s = devices(op, "x", x, "weight", weight, "bias", bias, "out", out)) || (s = chk_dims(op, "x", x)))
    return s;
  const int64_t c = x->shape[x->ndim - 1];
  if ((weight && (s = ada_chk_shape(op, "weight", weight, 1, &c))) ||
      (bias && (s = ada_chk_shape(op, "bias", bias, 1, &c))) || (s = ada_chk_same_shape(op, "out", out, "x", x)) ||
      (s = chk_eps(op, eps)) || (s = chk_overlap(op, out, "x", x, true)) ||
      (s = chk_overlap(op, out, "weight", weight, true)) || (s = chk_overlap(op, out, "bias", bias, true)))
    return s;
  if (shift) {
    /* one pass where the backend has it and shift and scale are [C] vectors; else layernorm,
     * then modulate */
    const ada_backend *b = ada_backend_of(x);
    if (b->ops.layernorm_modulate && ada_tensor_numel(shift) == c && ada_tensor_numel(scale) == c)
      return b->ops.layernorm_modulate(out, x, eps, weight, bias, shift, scale);
    s = norm("layernorm", true, out, x, eps, weight, bias, NULL, NULL);
    return s ? s : ada_op_modulate(out, out, shift, scale);
  }
  if (layer) DISPATCH(op, x, layernorm, out, x, eps, weight, bias);
  DISPATCH(op, x, rmsnorm, out, x, weight, eps);
}

ada_status ada_op_layernorm(ada_tensor *out, const ada_tensor *x, double eps, const ada_tensor *weight,
                            const ada_tensor *bias) {
  return norm("layernorm", true, out, x, eps, weight, bias, NULL, NULL);
}

ada_status ada_op_rmsnorm(ada_tensor *out, const ada_tensor *x, const ada_tensor *weight, double eps) {
  return norm("rmsnorm", false, out, x, eps, weight, NULL, NULL, NULL);
}

ada_status ada_op_softmax(ada_tensor *out, const ada_tensor *x, double scale) {
  const char *op = "softmax";
  ada_status s;
  if ((s = chk_in(op, "x", x)) || (s = chk_out(op, out)) || (s = devices(op, "x", x, "out", out, NULL, NULL, NULL, NULL)) ||
      (s = chk_dims(op, "x", x)) || (s = ada_chk_same_shape(op, "out", out, "x", x)) ||
      (s = chk_overlap(op, out, "x", x, true)))
    return s;
  if (!(scale > 0) || !isfinite(scale))
    return ada_fail(ADA_EINVAL, "softmax: scale must be a finite number > 0, got %g", scale);
  DISPATCH(op, x, softmax, out, x, scale);
}

/* ---- elementwise ----------------------------------------------------------------------------------- */

/* Operand v of x [.., C] (named xn): x's shape (*ld = C) or C elements in the last dimension
 * with every other size 1 (*ld = 0: broadcast over the rows). */
static ada_status chk_operand(const char *op, const char *arg, const ada_tensor *v, const char *xn,
                              const ada_tensor *x, int64_t *ld) {
  ada_status s = chk_in(op, arg, v);
  if (s) return s;
  const int64_t c = x->shape[x->ndim - 1];
  if (v->ndim == x->ndim && !memcmp(v->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim)) {
    *ld = c;
    return ADA_OK;
  }
  if (v->ndim >= 1 && v->shape[v->ndim - 1] == c && ada_tensor_numel(v) == c) {
    *ld = 0;
    return ADA_OK;
  }
  return ada_fail(ADA_EINVAL, "%s: %s must have shape [%lld] or the shape of %s %s, got %s", op, arg, (long long)c,
                  xn, ada_chk_shape_str(x), ada_chk_shape_str(v));
}

/* out = f(x, v1[, v2]) row by row; the operands are named n1 and n2 (n2 NULL: no second one). */
static ada_status rowwise(const char *op, ada_rowwise_kind kind, ada_tensor *out, const char *xn, const ada_tensor *x,
                          const char *n1, const ada_tensor *v1, const char *n2, const ada_tensor *v2) {
  ada_status s;
  int64_t ld1 = 0, ld2 = 0;
  if ((s = chk_in(op, xn, x)) || (s = chk_dims(op, xn, x)) || (s = chk_operand(op, n1, v1, xn, x, &ld1)) ||
      (n2 && (s = chk_operand(op, n2, v2, xn, x, &ld2))) || (s = chk_out(op, out)) ||
      (s = devices(op, xn, x, n1, v1, n2, v2, "out", out)) || (s = ada_chk_same_shape(op, "out", out, xn, x)) ||
      (s = chk_overlap(op, out, xn, x, true)) || (s = chk_overlap(op, out, n1, v1, true)) ||
      (s = chk_overlap(op, out, n2, v2, true)))
    return s;
  DISPATCH(op, x, rowwise, kind, out, x, v1, v2);
}

ada_status ada_op_modulate(ada_tensor *out, const ada_tensor *x, const ada_tensor *shift, const ada_tensor *scale) {
  return rowwise("modulate", ADA_ROWWISE_MODULATE, out, "x", x, "shift", shift, "scale", scale);
}

ada_status ada_op_gated_add(ada_tensor *out, const ada_tensor *x, const ada_tensor *gate, const ada_tensor *y) {
  return rowwise("gated_add", ADA_ROWWISE_GATED_ADD, out, "x", x, "gate", gate, "y", y);
}

ada_status ada_op_add(ada_tensor *out, const ada_tensor *a, const ada_tensor *b) {
  return rowwise("add", ADA_ROWWISE_ADD, out, "a", a, "b", b, NULL, NULL);
}

ada_status ada_op_mul(ada_tensor *out, const ada_tensor *a, const ada_tensor *b) {
  return rowwise("mul", ADA_ROWWISE_MUL, out, "a", a, "b", b, NULL, NULL);
}

/* out = layernorm(x, eps, weight, bias) * (1 + scale) + shift; shift and scale [C] or x's shape.
 * The input of attention and MLP in every DiT block: on a GPU with [C] shift and scale it is one
 * pass over x (kernels/nn.cu), which also skips rounding the layernorm to out's dtype in between;
 * otherwise layernorm into out, then modulate in place. out may be x. */
ada_status ada_op_layernorm_modulate(ada_tensor *out, const ada_tensor *x, double eps, const ada_tensor *weight,
                                     const ada_tensor *bias, const ada_tensor *shift, const ada_tensor *scale) {
  const char *op = "layernorm_modulate";
  ada_status s;
  int64_t l1, l2;
  if ((s = chk_in(op, "x", x)) || (s = chk_dims(op, "x", x)) || (s = chk_operand(op, "shift", shift, "x", x, &l1)) ||
      (s = chk_operand(op, "scale", scale, "x", x, &l2)) || (s = chk_out(op, out)) ||
      (s = devices(op, "x", x, "shift", shift, "scale", scale, "out", out)) ||
      (s = chk_overlap(op, out, "shift", shift, false)) || (s = chk_overlap(op, out, "scale", scale, false)))
    return s;
  return norm(op, true, out, x, eps, weight, bias, shift, scale);
}

ada_status ada_op_gated_add_layernorm_modulate(ada_tensor *x_out, ada_tensor *out, const ada_tensor *x,
                                               const ada_tensor *gate, const ada_tensor *y, double eps,
                                               const ada_tensor *weight, const ada_tensor *bias,
                                               const ada_tensor *shift, const ada_tensor *scale) {
  const char *op = "gated_add_layernorm_modulate";
  ada_status s;
  int64_t ld;
  if ((s = chk_in(op, "x", x)) || (s = chk_dims(op, "x", x)) || (s = chk_operand(op, "gate", gate, "x", x, &ld)) ||
      (s = chk_operand(op, "y", y, "x", x, &ld)) || (s = chk_operand(op, "shift", shift, "x", x, &ld)) ||
      (s = chk_operand(op, "scale", scale, "x", x, &ld)) || (weight && (s = chk_in(op, "weight", weight))) ||
      (bias && (s = chk_in(op, "bias", bias))) || (s = chk_in(op, "x_out", x_out)) ||
      (s = ada_chk_contiguous(op, "x_out", x_out)) || (s = chk_out(op, out)))
    return s;
  const char *const names[] = {"x", "gate", "y", "weight", "bias", "shift", "scale", "x_out", "out"};
  const ada_tensor *const ts[] = {x, gate, y, weight, bias, shift, scale, x_out, out};
  const int64_t c = x->shape[x->ndim - 1];
  if ((s = chk_devices(op, 9, names, ts)) || (weight && (s = ada_chk_shape(op, "weight", weight, 1, &c))) ||
      (bias && (s = ada_chk_shape(op, "bias", bias, 1, &c))) ||
      (s = ada_chk_same_shape(op, "x_out", x_out, "x", x)) || (s = ada_chk_same_shape(op, "out", out, "x", x)) ||
      (s = chk_eps(op, eps)))
    return s;
  /* x_out: x itself or apart from every input; out: apart from everything */
  for (int i = 0; i < 7; i++)
    if ((s = chk_overlap_named(op, "x_out", x_out, names[i], ts[i], i == 0))) return s;
  for (int i = 0; i < 8; i++)
    if ((s = chk_overlap(op, out, names[i], ts[i], false))) return s;
  const ada_backend *b = ada_backend_of(x);
  if (b->ops.gated_add_layernorm_modulate && ada_tensor_numel(shift) == c && ada_tensor_numel(scale) == c)
    return b->ops.gated_add_layernorm_modulate(x_out, out, x, gate, y, eps, weight, bias, shift, scale);
  s = ada_op_gated_add(x_out, x, gate, y);
  return s ? s : ada_op_layernorm_modulate(out, x_out, eps, weight, bias, shift, scale);
}

static ada_status unary(const char *op, ada_unary_kind kind, ada_tensor *out, const ada_tensor *x, double sc) {
  ada_status s;
  if ((s = chk_in(op, "x", x)) || (s = chk_out(op, out)) || (s = devices(op, "x", x, "out", out, NULL, NULL, NULL, NULL)) ||
      (s = ada_chk_same_shape(op, "out", out, "x", x)) || (s = chk_overlap(op, out, "x", x, true)))
    return s;
  DISPATCH(op, x, unary, kind, out, x, sc);
}

ada_status ada_op_scale(ada_tensor *out, const ada_tensor *x, double s) {
  if (isnan(s)) return ada_fail(ADA_EINVAL, "scale: s must be a number, got nan");
  return unary("scale", ADA_UNARY_SCALE, out, x, s);
}

ada_status ada_op_silu(ada_tensor *out, const ada_tensor *x) { return unary("silu", ADA_UNARY_SILU, out, x, 0); }

ada_status ada_op_gelu_tanh(ada_tensor *out, const ada_tensor *x) {
  return unary("gelu_tanh", ADA_UNARY_GELU_TANH, out, x, 0);
}

ada_status ada_op_gelu(ada_tensor *out, const ada_tensor *x) { return unary("gelu", ADA_UNARY_GELU, out, x, 0); }

/* ---- video DiT pieces -------------------------------------------------------------------------------- */

/* Checks shared by rope3d and rmsnorm_rope3d: x [S, H, D], out x's shape, the grid, axes, theta
 * and n_tokens (see ada_op_rope3d). */
static ada_status rope_check(const char *op, ada_tensor *out, const ada_tensor *x, const int32_t grid[3],
                             const int32_t axes[3], double theta, int64_t n_tokens) {
  ada_status s;
  if ((s = chk_in(op, "x", x)) || (s = chk_out(op, out)) || (s = devices(op, "x", x, "out", out, NULL, NULL, NULL, NULL)) ||
      (s = ada_chk_shape(op, "x", x, 3, (const int64_t[]){-1, -1, -1})) ||
      (s = ada_chk_same_shape(op, "out", out, "x", x)) || (s = chk_overlap(op, out, "x", x, true)))
    return s;
  const int64_t sl = x->shape[0], d = x->shape[2];
  for (int a = 0; a < 3; a++)
    if (grid[a] < 1)
      return ada_fail(ADA_EINVAL, "%s: grid must be 3 positive sizes {T, H, W}, got {%d, %d, %d}", op, (int)grid[0],
                      (int)grid[1], (int)grid[2]);
  if (axes[0] < 0 || axes[1] < 0 || axes[2] < 0 || axes[0] % 2 || axes[1] % 2 || axes[2] % 2 ||
      (int64_t)axes[0] + axes[1] + axes[2] != d)
    return ada_fail(ADA_EINVAL, "%s: axes must be 3 even sizes summing to the head dim %lld of x %s, got {%d, %d, %d}",
                    op, (long long)d, ada_chk_shape_str(x), (int)axes[0], (int)axes[1], (int)axes[2]);
  if (!(theta > 0) || !isfinite(theta)) return ada_fail(ADA_EINVAL, "%s: theta must be a positive number, got %g", op, theta);
  const double cells = (double)grid[0] * grid[1] * grid[2];
  if (n_tokens < 1 || n_tokens > sl || (double)n_tokens != cells)
    return ada_fail(ADA_EINVAL,
                    "%s: n_tokens must equal T*H*W = %.0f of grid {%d, %d, %d} and be at most the %lld tokens of x %s, "
                    "got %lld",
                    op, cells, (int)grid[0], (int)grid[1], (int)grid[2], (long long)sl, ada_chk_shape_str(x),
                    (long long)n_tokens);
  return ADA_OK;
}

ada_status ada_op_rope3d(ada_tensor *out, const ada_tensor *x, const int32_t grid[3], const int32_t axes[3],
                         double theta, int64_t n_tokens) {
  ada_status s = rope_check("rope3d", out, x, grid, axes, theta, n_tokens);
  if (s) return s;
  DISPATCH("rope3d", x, rope3d, out, x, grid, axes, theta, n_tokens);
}

ada_status ada_op_rmsnorm_rope3d(ada_tensor *out, const ada_tensor *x, const ada_tensor *weight, double eps,
                                 const int32_t grid[3], const int32_t axes[3], double theta, int64_t n_tokens) {
  const char *op = "rmsnorm_rope3d";
  ada_status s = rope_check(op, out, x, grid, axes, theta, n_tokens);
  if (s) return s;
  const int64_t d = x->shape[2];
  if (weight && ((s = chk_in(op, "weight", weight)) ||
                 (s = devices(op, "x", x, "weight", weight, NULL, NULL, NULL, NULL)) ||
                 (s = ada_chk_shape(op, "weight", weight, 1, &d)) || (s = chk_overlap(op, out, "weight", weight, true))))
    return s;
  if ((s = chk_eps(op, eps))) return s;
  DISPATCH(op, x, rmsnorm_rope3d, out, x, weight, eps, grid, axes, theta, n_tokens);
}

ada_status ada_op_patchify(ada_tensor *out, const ada_tensor *x) {
  const char *op = "patchify";
  ada_status s;
  if ((s = chk_in(op, "x", x)) || (s = chk_out(op, out)) || (s = devices(op, "x", x, "out", out, NULL, NULL, NULL, NULL)))
    return s;
  if (x->ndim != 4 || x->shape[2] % 2 || x->shape[3] % 2)
    return ada_fail(ADA_EINVAL, "patchify: x must have shape [C, T, H, W] with H and W even, got %s", ada_chk_shape_str(x));
  const int64_t c = x->shape[0], t = x->shape[1], h = x->shape[2], w = x->shape[3];
  if ((s = ada_chk_shape(op, "out", out, 2, (const int64_t[]){t * (h / 2) * (w / 2), c * 4})) ||
      (s = chk_overlap(op, out, "x", x, false)))
    return s;
  DISPATCH(op, x, patchify, out, x);
}

ada_status ada_op_unpatchify(ada_tensor *out, const ada_tensor *x, int32_t t, int32_t h, int32_t w) {
  const char *op = "unpatchify";
  ada_status s;
  if ((s = chk_in(op, "x", x)) || (s = chk_out(op, out)) || (s = devices(op, "x", x, "out", out, NULL, NULL, NULL, NULL)))
    return s;
  if (t < 1 || h < 2 || w < 2 || h % 2 || w % 2)
    return ada_fail(ADA_EINVAL, "unpatchify: size must be {T, H, W} with T >= 1 and H, W even and >= 2, got {%d, %d, %d}",
                    (int)t, (int)h, (int)w);
  const int64_t ntok = (int64_t)t * (h / 2) * (w / 2);
  if (x->ndim != 2 || x->shape[0] != ntok || x->shape[1] % 4)
    return ada_fail(ADA_EINVAL, "unpatchify: x must have shape [T*H/2*W/2 = %lld, C*4] for size {%d, %d, %d}, got %s",
                    (long long)ntok, (int)t, (int)h, (int)w, ada_chk_shape_str(x));
  const int64_t c = x->shape[1] / 4;
  if ((s = ada_chk_shape(op, "out", out, 4, (const int64_t[]){c, t, h, w})) || (s = chk_overlap(op, out, "x", x, false)))
    return s;
  DISPATCH(op, x, unpatchify, out, x, t, h, w);
}

ada_status ada_op_timestep_embedding(ada_tensor *out, const ada_tensor *t, int32_t dim, double max_period) {
  const char *op = "timestep_embedding";
  ada_status s;
  if ((s = chk_in(op, "t", t)) || (s = chk_out(op, out)) || (s = devices(op, "t", t, "out", out, NULL, NULL, NULL, NULL)) ||
      (s = ada_chk_shape(op, "t", t, 1, (const int64_t[]){-1})))
    return s;
  if (dim < 2 || dim % 2) return ada_fail(ADA_EINVAL, "timestep_embedding: dim must be even and >= 2, got %d", (int)dim);
  if (!(max_period > 0) || !isfinite(max_period))
    return ada_fail(ADA_EINVAL, "timestep_embedding: max_period must be a positive number, got %g", max_period);
  if ((s = ada_chk_shape(op, "out", out, 2, (const int64_t[]){t->shape[0], dim})) ||
      (s = chk_overlap(op, out, "t", t, false)))
    return s;
  DISPATCH(op, t, timestep_embedding, out, t, dim, max_period);
}

ada_status ada_op_concat(ada_tensor *out, const ada_tensor *const *xs, int32_t n) {
  const char *op = "concat";
  ada_status s;
  if (n < 1 || !xs) return ada_fail(ADA_EINVAL, "concat: needs at least one tensor, got %d", (int)n);
  if ((s = chk_out(op, out)) || (s = chk_dims(op, "out", out))) return s;
  int64_t rows = 0, want[ADA_MAX_DIMS];
  memcpy(want, out->shape, sizeof want);
  want[0] = -1;
  for (int32_t i = 0; i < n; i++) {
    char arg[32];
    snprintf(arg, sizeof arg, "tensor %d", (int)i + 1);
    if ((s = chk_in(op, arg, xs[i])) ||
        (s = i == 0 ? ada_chk_same_device(op, "out", out, arg, xs[0]) : ada_chk_same_device(op, arg, xs[i], "tensor 1", xs[0])) ||
        (s = ada_chk_shape(op, arg, xs[i], out->ndim, want)) ||
        (s = chk_overlap(op, out, arg, xs[i], false)))
      return s;
    rows += xs[i]->shape[0];
  }
  if (rows != out->shape[0])
    return ada_fail(ADA_EINVAL, "concat: out %s must have %lld rows in dimension 1 (the sum over the inputs)",
                    ada_chk_shape_str(out), (long long)rows);
  /* each input goes to a narrowed view of out, built in place (it holds no reference) */
  int64_t row0 = 0;
  for (int32_t i = 0; i < n && !s; i++) {
    ada_tensor dst = *out;
    dst.offset += row0 * out->stride[0];
    dst.shape[0] = xs[i]->shape[0];
    s = ada_tensor_copy(&dst, xs[i]);
    row0 += xs[i]->shape[0];
  }
  return s;
}
