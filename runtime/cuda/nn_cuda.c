/* nn_cuda.c: host side of the CUDA non-GEMM neural-network ops (cuda_ops.h): stages the
 * validated arguments for the launchers of kernels/nn.cu and enqueues them on the device's
 * stream.
 *
 * Staging: an input viewed as rows [rows, C] is read in place when its last dimension is
 * contiguous and its leading dimensions fold into at most two strides (a narrowed column block,
 * the q of a [S, 3, H, D] QKV view); otherwise ada_tensor_contiguous copies it on the device
 * first. [C] vector operands (weights, shift, scale, gate) are read in place when contiguous and
 * 16-byte aligned, else copied (they are small). Dtypes are never converted here: the kernels
 * read each tensor in its own dtype. Temporaries go back to the caching allocator right after
 * the launch (their reuse is ordered after it on the same stream).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../../kernels/kernels.h"
#include "cuda_ops.h"
#include "internal.h"

/* ---- shared helpers ------------------------------------------------------------------------ */

static int32_t dev_of(const ada_tensor *t) { return t->storage->device.index; }

static ada_status begin(const ada_tensor *out, const char *op, cudaStream_t *st) {
  const int32_t dev = dev_of(out);
  ada_status s = ada_cuda_enter(dev, op);
  return s ? s : ada_cuda_stream(dev, op, st);
}

static ada_status launched(int e, const char *op) {
  if (e == 0) return ADA_OK;
  (void)cudaGetLastError();
  return ada_fail(ADA_EDEVICE, "%s: kernel launch failed: %s (%s)", op, cudaGetErrorString((cudaError_t)e),
                  cudaGetErrorName((cudaError_t)e));
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* Rows of t seen as [numel / c, c] (c = its last size): true with the geometry when the last
 * dimension is contiguous and the leading ones fold into one or two strides. */
static bool rows_of(const ada_tensor *t, ada_nn_rows *g) {
  const int32_t nd = t->ndim;
  if (nd >= 1 && t->shape[nd - 1] > 1 && t->stride[nd - 1] != 1) return false;
  int64_t sh[ADA_MAX_DIMS], st[ADA_MAX_DIMS], rows = 1;
  int n = 0;
  for (int32_t d = 0; d + 1 < nd; d++) {
    if (t->shape[d] == 1) continue;
    rows *= t->shape[d];
    if (n > 0 && st[n - 1] == t->stride[d] * t->shape[d]) {
      sh[n - 1] *= t->shape[d];
      st[n - 1] = t->stride[d];
    } else {
      sh[n] = t->shape[d];
      st[n] = t->stride[d];
      n++;
    }
  }
  const int64_t c = nd >= 1 ? t->shape[nd - 1] : 1;
  if (n == 0) *g = (ada_nn_rows){1, 0, c};
  else if (n == 1) *g = (ada_nn_rows){1, 0, st[0]};
  else if (n == 2 && rows < ((int64_t)1 << 32)) *g = (ada_nn_rows){sh[1], st[1], st[0]};
  else return false;
  return true;
}

/* Whether rows of geometry g (with rows > 1 of them) all start at a multiple of 8 elements. */
static bool rows_vec(const ada_nn_rows *g, int64_t rows) {
  return rows == 1 || (g->s0 % 8 == 0 && (g->n1 == 1 || g->s1 % 8 == 0));
}

/* An input read as rows: t itself when rows_of() accepts it, else a contiguous copy (*tmp). */
static ada_status stage_rows(const ada_tensor *t, ada_nn_operand *o, ada_tensor **tmp) {
  *tmp = NULL;
  const ada_tensor *u = t;
  if (!rows_of(t, &o->rows)) {
    ada_status s = ada_tensor_contiguous(tmp, t);
    if (s) return s;
    u = *tmp;
    rows_of(u, &o->rows);
  }
  o->p = ada_tensor_data(u);
  o->dt = u->dtype;
  o->bcast = 0;
  return ADA_OK;
}

/* A [C] vector (C elements, last dimension C): itself when contiguous and 16-byte aligned, else
 * a contiguous copy (fresh blocks are 256-byte aligned). */
static ada_status stage_vec(const ada_tensor *v, const void **p, ada_dtype *dt, ada_tensor **tmp) {
  *tmp = NULL;
  const ada_tensor *u = v;
  const int64_t c = v->shape[v->ndim - 1];
  if ((c > 1 && v->stride[v->ndim - 1] != 1) || !aligned16(ada_tensor_data(v))) {
    ada_status s = ada_tensor_contiguous(tmp, v);
    if (s) return s;
    u = *tmp;
  }
  *p = ada_tensor_data(u);
  *dt = u->dtype;
  return ADA_OK;
}

static ada_status stage_operand(const ada_tensor *v, int64_t c, ada_nn_operand *o, ada_tensor **tmp) {
  if (ada_tensor_numel(v) == c && v->ndim >= 1 && v->shape[v->ndim - 1] == c) {
    /* a [C] vector (also a [1, .., C] tensor: the op's x then has one row) */
    o->bcast = 1;
    o->rows = (ada_nn_rows){1, 0, 0};
    return stage_vec(v, &o->p, &o->dt, tmp);
  }
  return stage_rows(v, o, tmp);
}

static void free_all(ada_tensor **ts, int n) {
  for (int i = 0; i < n; i++) ada_tensor_free(ts[i]);
}

/* ---- row-wise elementwise ops ---------------------------------------------------------------- */

/* out [.., C] = kind(x, v1, v2) with out contiguous of x's shape; v1, v2 NULL when unused. */
static ada_status rowwise(const char *op, int32_t kind, ada_tensor *out, const ada_tensor *x, const ada_tensor *v1,
                          const ada_tensor *v2, float sc) {
  cudaStream_t st;
  ada_status s = begin(out, op, &st);
  if (s) return s;
  const int64_t numel = ada_tensor_numel(x);
  int64_t c = x->ndim >= 1 ? x->shape[x->ndim - 1] : 1, rows = numel / c;
  ada_nn_operand ox, o1 = {0}, o2 = {0};
  ada_tensor *tmp[3] = {NULL, NULL, NULL};
  /* one long row when nothing broadcasts and every input is contiguous (unary ops, add of
   * equal shapes): the kernel then spreads the elements over the whole grid */
  const bool b1 = v1 && ada_tensor_numel(v1) == c && rows > 1, b2 = v2 && ada_tensor_numel(v2) == c && rows > 1;
  if (!b1 && !b2 && ada_tensor_is_contiguous(x) && (!v1 || ada_tensor_is_contiguous(v1)) &&
      (!v2 || ada_tensor_is_contiguous(v2))) {
    c = numel;
    rows = 1;
  }
  const ada_nn_rows one = {1, 0, c};
  if (rows == 1) {
    ox = (ada_nn_operand){ada_tensor_data(x), x->dtype, 0, one};
    if (v1) o1 = (ada_nn_operand){ada_tensor_data(v1), v1->dtype, 0, one};
    if (v2) o2 = (ada_nn_operand){ada_tensor_data(v2), v2->dtype, 0, one};
    /* a vector operand of a single-row x that is not contiguous (a strided [1, C] view) */
    if (v1 && !ada_tensor_is_contiguous(v1)) s = stage_operand(v1, c, &o1, &tmp[1]);
    if (!s && v2 && !ada_tensor_is_contiguous(v2)) s = stage_operand(v2, c, &o2, &tmp[2]);
    if (!s && !ada_tensor_is_contiguous(x)) s = stage_rows(x, &ox, &tmp[0]);
  } else {
    s = stage_rows(x, &ox, &tmp[0]);
    if (!s && v1) s = stage_operand(v1, c, &o1, &tmp[1]);
    if (!s && v2) s = stage_operand(v2, c, &o2, &tmp[2]);
  }
  if (s) {
    free_all(tmp, 3);
    return s;
  }
  bool vec = aligned16(ada_tensor_data(out)) && (rows == 1 || c % 8 == 0) && aligned16(ox.p) &&
             rows_vec(&ox.rows, rows);
  if (v1) vec = vec && aligned16(o1.p) && (o1.bcast || rows_vec(&o1.rows, rows));
  if (v2) vec = vec && aligned16(o2.p) && (o2.bcast || rows_vec(&o2.rows, rows));
  s = launched(ada_launch_rowwise(kind, ada_tensor_data(out), out->dtype, rows, c, &ox, v1 ? &o1 : NULL,
                                  v2 ? &o2 : NULL, sc, vec, (void *)st),
               op);
  free_all(tmp, 3);
  return s;
}

ada_status ada_cuda_op_rowwise(ada_rowwise_kind kind, ada_tensor *out, const ada_tensor *x, const ada_tensor *a,
                              const ada_tensor *b) {
  switch (kind) {
  case ADA_ROWWISE_MODULATE: return rowwise("modulate", ADA_NN_MODULATE, out, x, a, b, 0.0f);
  case ADA_ROWWISE_GATED_ADD: return rowwise("gated_add", ADA_NN_GATED_ADD, out, x, a, b, 0.0f);
  case ADA_ROWWISE_ADD: return rowwise("add", ADA_NN_ADD, out, x, a, NULL, 0.0f);
  case ADA_ROWWISE_MUL: return rowwise("mul", ADA_NN_MUL, out, x, a, NULL, 0.0f);
  }
  return ada_fail(ADA_EINVAL, "cuda rowwise: unknown kind %d", (int)kind);
}

ada_status ada_cuda_op_unary(ada_unary_kind kind, ada_tensor *out, const ada_tensor *x, double s) {
  switch (kind) {
  case ADA_UNARY_SCALE: return rowwise("scale", ADA_NN_SCALE, out, x, NULL, NULL, (float)s);
  case ADA_UNARY_SILU: return rowwise("silu", ADA_NN_SILU, out, x, NULL, NULL, 0.0f);
  case ADA_UNARY_GELU_TANH: return rowwise("gelu_tanh", ADA_NN_GELU_TANH, out, x, NULL, NULL, 0.0f);
  case ADA_UNARY_GELU: return rowwise("gelu", ADA_NN_GELU, out, x, NULL, NULL, 0.0f);
  }
  return ada_fail(ADA_EINVAL, "cuda unary: unknown kind %d", (int)kind);
}

/* ---- norms ------------------------------------------------------------------------------------- */

/* layernorm / rmsnorm (rms), modulated with shift and scale when given; with x_out (and gate, y)
 * the row normalized is x + gate * y, stored in x_out first (gated_add_layernorm_modulate). */
static ada_status norm_ex(const char *op, bool rms, ada_tensor *out, const ada_tensor *x, double eps,
                          const ada_tensor *weight, const ada_tensor *bias, const ada_tensor *shift,
                          const ada_tensor *scale, ada_tensor *x_out, const ada_tensor *gate, const ada_tensor *y) {
  cudaStream_t st;
  ada_status s = begin(out, op, &st);
  if (s) return s;
  const int64_t c = x->shape[x->ndim - 1];
  ada_nn_norm_args a;
  memset(&a, 0, sizeof a);
  ada_tensor *tmp[7] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL};
  s = stage_rows(x, &a.x, &tmp[0]);
  if (!s && weight) s = stage_vec(weight, &a.w, &a.wdt, &tmp[1]);
  if (!s && bias) s = stage_vec(bias, &a.bias, &a.bdt, &tmp[2]);
  if (!s && shift) s = stage_vec(shift, &a.shift, &a.shdt, &tmp[3]);
  if (!s && scale) s = stage_vec(scale, &a.scale, &a.scdt, &tmp[4]);
  if (!s && x_out) s = stage_operand(gate, c, &a.gate, &tmp[5]);
  if (!s && x_out) s = stage_operand(y, c, &a.y, &tmp[6]);
  if (s) {
    free_all(tmp, 7);
    return s;
  }
  a.out = ada_tensor_data(out);
  a.odt = out->dtype;
  a.rows = ada_tensor_numel(x) / c;
  a.c = c;
  a.eps = eps;
  a.rms = rms;
  bool vec = aligned16(a.out) && (a.rows == 1 || c % 8 == 0) && aligned16(a.x.p) && rows_vec(&a.x.rows, a.rows);
  if (x_out) {
    a.x_out = ada_tensor_data(x_out);
    a.xodt = x_out->dtype;
    vec = vec && aligned16(a.x_out) && aligned16(a.gate.p) && (a.gate.bcast || rows_vec(&a.gate.rows, a.rows)) &&
          aligned16(a.y.p) && (a.y.bcast || rows_vec(&a.y.rows, a.rows));
  }
  a.vec = vec;
  s = launched(ada_launch_norm(&a, (void *)st), op);
  free_all(tmp, 7);
  return s;
}

static ada_status norm(const char *op, bool rms, ada_tensor *out, const ada_tensor *x, double eps,
                       const ada_tensor *weight, const ada_tensor *bias, const ada_tensor *shift,
                       const ada_tensor *scale) {
  return norm_ex(op, rms, out, x, eps, weight, bias, shift, scale, NULL, NULL, NULL);
}

ada_status ada_cuda_op_layernorm(ada_tensor *out, const ada_tensor *x, double eps, const ada_tensor *weight,
                                 const ada_tensor *bias) {
  return norm("layernorm", false, out, x, eps, weight, bias, NULL, NULL);
}

ada_status ada_cuda_op_rmsnorm(ada_tensor *out, const ada_tensor *x, const ada_tensor *weight, double eps) {
  return norm("rmsnorm", true, out, x, eps, weight, NULL, NULL, NULL);
}

ada_status ada_cuda_op_layernorm_modulate(ada_tensor *out, const ada_tensor *x, double eps, const ada_tensor *weight,
                                          const ada_tensor *bias, const ada_tensor *shift, const ada_tensor *scale) {
  return norm("layernorm_modulate", false, out, x, eps, weight, bias, shift, scale);
}

ada_status ada_cuda_op_gated_add_layernorm_modulate(ada_tensor *x_out, ada_tensor *out, const ada_tensor *x,
                                                    const ada_tensor *gate, const ada_tensor *y, double eps,
                                                    const ada_tensor *weight, const ada_tensor *bias,
                                                    const ada_tensor *shift, const ada_tensor *scale) {
  return norm_ex("gated_add_layernorm_modulate", false, out, x, eps, weight, bias, shift, scale, x_out, gate, y);
}

/* ---- softmax ----------------------------------------------------------------------------------- */

ada_status ada_cuda_op_softmax(ada_tensor *out, const ada_tensor *x, double scale) {
  const char *op = "softmax";
  cudaStream_t st;
  ada_status s = begin(out, op, &st);
  if (s) return s;
  ada_nn_operand xo;
  ada_tensor *tmp = NULL;
  if ((s = stage_rows(x, &xo, &tmp))) return s;
  const int64_t c = x->shape[x->ndim - 1];
  s = launched(ada_launch_softmax(ada_tensor_data(out), out->dtype, &xo, ada_tensor_numel(x) / c, c, (float)scale,
                                  (void *)st),
               op);
  ada_tensor_free(tmp);
  return s;
}

/* ---- video DiT pieces ----------------------------------------------------------------------------- */

/* rope3d (weight and eps unused) or, with norm, rmsnorm_rope3d; D > 256 (one warp per head row
 * no longer fits) runs rmsnorm, then rope3d in place. */
static ada_status rope(const char *op, bool norm, ada_tensor *out, const ada_tensor *x, const ada_tensor *weight,
                       double eps, const int32_t grid[3], const int32_t axes[3], double theta, int64_t n_tokens) {
  cudaStream_t st;
  ada_status s = begin(out, op, &st);
  if (s) return s;
  const int64_t sl = x->shape[0], h = x->shape[1], d = x->shape[2];
  if (norm && d > 256) {
    s = ada_cuda_op_rmsnorm(out, x, weight, eps);
    return s ? s : rope("rope3d", false, out, out, NULL, 0.0, grid, axes, theta, n_tokens);
  }
  ada_tensor *tx = NULL, *tw = NULL;
  const ada_tensor *ux = x;
  const void *w = NULL;
  ada_dtype wdt = ADA_F32;
  if (x->stride[2] != 1 || sl * h >= ((int64_t)1 << 32)) {
    if ((s = ada_tensor_contiguous(&tx, x))) return s;
    ux = tx;
  }
  if (norm && weight && (s = stage_vec(weight, &w, &wdt, &tw))) {
    ada_tensor_free(tx);
    return s;
  }
  const int64_t len = ada_rope3d_table_len(grid, axes);
  void *table = NULL;
  if (len > 0 && (s = ada_cuda_malloc(&table, sizeof(float) * (size_t)len, dev_of(out)))) {
    ada_tensor_free(tx);
    ada_tensor_free(tw);
    return s;
  }
  void *o = ada_tensor_data(out);
  const void *xp = ada_tensor_data(ux);
  s = launched(norm ? ada_launch_rmsnorm_rope3d(o, out->dtype, xp, ux->dtype, ux->stride[0], ux->stride[1], sl, h, d, w,
                                                wdt, eps, grid, axes, theta, n_tokens, table, (void *)st)
                    : ada_launch_rope3d(o, out->dtype, xp, ux->dtype, ux->stride[0], ux->stride[1], sl, h, d, grid,
                                        axes, theta, n_tokens, table, (void *)st),
               op);
  ada_cuda_free(table, dev_of(out));
  ada_tensor_free(tx);
  ada_tensor_free(tw);
  return s;
}

ada_status ada_cuda_op_rope3d(ada_tensor *out, const ada_tensor *x, const int32_t grid[3], const int32_t axes[3],
                              double theta, int64_t n_tokens) {
  return rope("rope3d", false, out, x, NULL, 0.0, grid, axes, theta, n_tokens);
}

ada_status ada_cuda_op_rmsnorm_rope3d(ada_tensor *out, const ada_tensor *x, const ada_tensor *weight, double eps,
                                      const int32_t grid[3], const int32_t axes[3], double theta, int64_t n_tokens) {
  return rope("rmsnorm_rope3d", true, out, x, weight, eps, grid, axes, theta, n_tokens);
}

ada_status ada_cuda_op_patchify(ada_tensor *out, const ada_tensor *x) {
  const char *op = "patchify";
  cudaStream_t st;
  ada_status s = begin(out, op, &st);
  if (s) return s;
  ada_tensor *tx = NULL;
  const ada_tensor *ux = x;
  if (x->stride[3] != 1) {
    if ((s = ada_tensor_contiguous(&tx, x))) return s;
    ux = tx;
  }
  s = launched(ada_launch_patchify(ada_tensor_data(out), out->dtype, ada_tensor_data(ux), ux->dtype, ux->stride,
                                   ux->shape[0], ux->shape[1], ux->shape[2], ux->shape[3], (void *)st),
               op);
  ada_tensor_free(tx);
  return s;
}

ada_status ada_cuda_op_unpatchify(ada_tensor *out, const ada_tensor *x, int32_t t, int32_t h, int32_t w) {
  const char *op = "unpatchify";
  cudaStream_t st;
  ada_status s = begin(out, op, &st);
  if (s) return s;
  ada_tensor *tx = NULL;
  const ada_tensor *ux = x;
  if (x->stride[1] != 1 && x->shape[1] > 1) {
    if ((s = ada_tensor_contiguous(&tx, x))) return s;
    ux = tx;
  }
  s = launched(ada_launch_unpatchify(ada_tensor_data(out), out->dtype, ada_tensor_data(ux), ux->dtype, ux->stride[0],
                                     ux->shape[1] / 4, t, h, w, (void *)st),
               op);
  ada_tensor_free(tx);
  return s;
}

ada_status ada_cuda_op_timestep_embedding(ada_tensor *out, const ada_tensor *t, int32_t dim, double max_period) {
  const char *op = "timestep_embedding";
  cudaStream_t st;
  ada_status s = begin(out, op, &st);
  if (s) return s;
  return launched(ada_launch_timestep_embedding(ada_tensor_data(out), out->dtype, ada_tensor_data(t), t->dtype,
                                                t->stride[0], t->shape[0], dim, log(max_period), (void *)st),
                  op);
}
