/* lnn.c: Lua bindings of the neural-network ops: adaspa.linear, matmul, layernorm, rmsnorm, softmax,
 * layernorm_modulate, gated_add_layernorm_modulate, modulate, gated_add, add, mul, scale, silu,
 * gelu_tanh, gelu, rope3d, rmsnorm_rope3d, patchify, unpatchify, timestep_embedding, concat and
 * split. Each takes an optional final table {out = tensor};
 * without it the result is a new tensor with the dtype and device of the first tensor input.
 * linear's table also takes act = "gelu_tanh" and accumulate = true (ada_linear_opts). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../ops.h"
#include "lbind.h"

static const char *const OUT_OPT[] = {"out", NULL};

/* The tensor at idx, or NULL for nil / none. */
static ada_tensor *opt_tensor(lua_State *L, int idx, const char *fname, const char *arg) {
  if (lua_isnoneornil(L, idx)) return NULL;
  if (!lada_test_tensor(L, idx))
    lada_error(L, fname, "%s must be a tensor or nil, got %s", arg, lada_typename(L, idx));
  return lada_check_tensor(L, idx, fname, arg);
}

static double opt_number(lua_State *L, int idx, const char *fname, const char *arg, double dflt) {
  if (lua_isnoneornil(L, idx)) return dflt;
  if (lua_type(L, idx) != LUA_TNUMBER)
    lada_error(L, fname, "%s must be a number or nil, got %s", arg, lada_typename(L, idx));
  return lua_tonumber(L, idx);
}

/* An integer in [lo, hi] at idx (dflt when nil / none and dflt >= lo). */
static int64_t check_int(lua_State *L, int idx, const char *fname, const char *arg, int64_t lo, int64_t hi,
                         int64_t dflt) {
  if (lua_isnoneornil(L, idx) && dflt >= lo) return dflt;
  const double v = lua_tonumber(L, idx);
  if (lua_type(L, idx) != LUA_TNUMBER || v != floor(v) || v < (double)lo || v > (double)hi)
    lada_error(L, fname, "%s must be an integer in [%lld, %lld], got %s", arg, (long long)lo, (long long)hi,
               lua_type(L, idx) == LUA_TNUMBER ? lua_tostring(L, idx) : lada_typename(L, idx));
  return (int64_t)v;
}

/* A table of 3 integers in [lo, 2^31) at idx. */
static void check_int3(lua_State *L, int idx, const char *fname, const char *arg, int32_t lo, int32_t v[3]) {
  if (!lua_istable(L, idx) || lada_test_tensor(L, idx) || lua_objlen(L, idx) != 3)
    lada_error(L, fname, "%s must be a table of 3 integers, got %s", arg, lada_typename(L, idx));
  for (int i = 0; i < 3; i++) {
    lua_rawgeti(L, idx, i + 1);
    char name[48];
    snprintf(name, sizeof name, "%s[%d]", arg, i + 1);
    v[i] = (int32_t)check_int(L, lua_gettop(L), fname, name, lo, INT32_MAX, -1);
    lua_pop(L, 1);
  }
}

static const char *shape_str(const ada_tensor *t, char *buf, size_t n) {
  ada_shape_format(t->ndim, t->shape, buf, n);
  return buf;
}

/* Pushes a tensor of `shape` viewing the contiguous tensor t (for ops that see x [N, C]). */
static ada_tensor *push_reshaped(lua_State *L, const ada_tensor *t, int32_t ndim, const int64_t *shape,
                                 const char *fname) {
  ada_tensor *r;
  lada_check(L, ada_tensor_reshape(&r, t, ndim, shape), fname);
  lada_push_tensor(L, r);
  return r;
}

/* ---- GEMM ----------------------------------------------------------------------------------- */

/* The epilogue options act and accumulate of adaspa.linear's options table at idx (nil: none). */
static ada_linear_opts linear_opts(lua_State *L, int idx, const char *fn) {
  ada_linear_opts o = {ADA_LINEAR_ACT_NONE, false};
  if (!lua_istable(L, idx)) return o;
  lua_getfield(L, idx, "act");
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING)
      lada_error(L, fn, "option act must be a string (accepted: \"gelu_tanh\"), got %s", lada_typename(L, -1));
    if (strcmp(lua_tostring(L, -1), "gelu_tanh") != 0)
      lada_error(L, fn, "option act must be \"gelu_tanh\" (the only activation accepted), got \"%s\"",
                 lua_tostring(L, -1));
    o.act = ADA_LINEAR_ACT_GELU_TANH;
  }
  lua_pop(L, 1);
  lua_getfield(L, idx, "accumulate");
  if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
    lada_error(L, fn, "option accumulate must be a boolean, got %s", lada_typename(L, -1));
  o.accumulate = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (o.accumulate) {
    lua_getfield(L, idx, "out");
    const bool has_out = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!has_out) lada_error(L, fn, "option accumulate = true needs option out (the tensor to add onto)");
    if (o.act != ADA_LINEAR_ACT_NONE)
      lada_error(L, fn, "option act = \"gelu_tanh\" cannot be combined with accumulate = true (the activation "
                        "would apply to out's previous values too)");
  }
  return o;
}

/* adaspa.linear(x [..., in], w [out, in], b [out] or nil [, opts]) -> [..., out];
 * opts: out, act = "gelu_tanh" (the activation on the f32 result), accumulate = true (out = out +
 * x . w^T (+ b); needs out). */
static int l_linear(lua_State *L) {
  const char *fn = "adaspa.linear";
  static const char *const keys[] = {"out", "act", "accumulate", NULL};
  ada_tensor *x = lada_check_tensor(L, 1, fn, "x"), *w = lada_check_tensor(L, 2, fn, "w");
  ada_tensor *b = opt_tensor(L, 3, fn, "b");
  lada_check_opts(L, 4, fn, keys);
  const ada_linear_opts opts = linear_opts(L, 4, fn);
  char s1[96], s2[96];
  if (x->ndim < 1) return lada_error(L, fn, "x must have at least one dimension, got []");
  const int64_t in = x->shape[x->ndim - 1], n = ada_tensor_numel(x) / in;
  if (w->ndim != 2 || w->shape[1] != in)
    return lada_error(L, fn, "w must have shape [*, %lld] (in = the last size of x %s), got %s", (long long)in,
                      shape_str(x, s1, sizeof s1), shape_str(w, s2, sizeof s2));
  int64_t shape[ADA_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  shape[x->ndim - 1] = w->shape[0];
  ada_tensor *out = lada_push_out(L, 4, fn, x, x->ndim, shape);
  const int out_idx = lua_gettop(L);
  if (x->ndim != 2) {
    if (!ada_tensor_is_contiguous(out))
      return lada_error(L, fn, "out %s must be contiguous", shape_str(out, s1, sizeof s1));
    x = push_reshaped(L, x, 2, (const int64_t[]){n, in}, fn);
    out = push_reshaped(L, out, 2, (const int64_t[]){n, w->shape[0]}, fn);
  }
  lada_check(L, ada_op_linear_ex(out, x, w, b, &opts), fn);
  lua_pushvalue(L, out_idx);
  return 1;
}

/* adaspa.matmul(a [M, K], b [K, N] [, opts]) -> [M, N] */
static int l_matmul(lua_State *L) {
  const char *fn = "adaspa.matmul";
  ada_tensor *a = lada_check_tensor(L, 1, fn, "a"), *b = lada_check_tensor(L, 2, fn, "b");
  lada_check_opts(L, 3, fn, OUT_OPT);
  char s1[96], s2[96];
  if (a->ndim != 2 || b->ndim != 2 || a->shape[1] != b->shape[0])
    return lada_error(L, fn, "a [M, K] and b [K, N] must be matrices with matching K, got a %s and b %s",
                      shape_str(a, s1, sizeof s1), shape_str(b, s2, sizeof s2));
  ada_tensor *out = lada_push_out(L, 3, fn, a, 2, (const int64_t[]){a->shape[0], b->shape[1]});
  lada_check(L, ada_op_matmul(out, a, b), fn);
  return 1;
}

/* ---- normalization and elementwise (out has the shape of the first input) ---------------------- */

/* adaspa.layernorm(x, eps [, weight, bias] [, opts]); eps nil: 1e-6 */
static int l_layernorm(lua_State *L) {
  const char *fn = "adaspa.layernorm";
  ada_tensor *x = lada_check_tensor(L, 1, fn, "x");
  const double eps = opt_number(L, 2, fn, "eps", 1e-6);
  ada_tensor *w = opt_tensor(L, 3, fn, "weight"), *b = opt_tensor(L, 4, fn, "bias");
  lada_check_opts(L, 5, fn, OUT_OPT);
  ada_tensor *out = lada_push_out(L, 5, fn, x, x->ndim, x->shape);
  lada_check(L, ada_op_layernorm(out, x, eps, w, b), fn);
  return 1;
}

/* adaspa.layernorm_modulate(x, eps, weight, bias, shift, scale [, opts]) =
 * layernorm(x, eps, weight, bias) * (1 + scale) + shift; eps nil: 1e-6; weight, bias may be nil */
static int l_layernorm_modulate(lua_State *L) {
  const char *fn = "adaspa.layernorm_modulate";
  ada_tensor *x = lada_check_tensor(L, 1, fn, "x");
  const double eps = opt_number(L, 2, fn, "eps", 1e-6);
  ada_tensor *w = opt_tensor(L, 3, fn, "weight"), *b = opt_tensor(L, 4, fn, "bias");
  ada_tensor *sh = lada_check_tensor(L, 5, fn, "shift"), *sc = lada_check_tensor(L, 6, fn, "scale");
  lada_check_opts(L, 7, fn, OUT_OPT);
  ada_tensor *out = lada_push_out(L, 7, fn, x, x->ndim, x->shape);
  lada_check(L, ada_op_layernorm_modulate(out, x, eps, w, b, sh, sc), fn);
  return 1;
}

/* adaspa.gated_add_layernorm_modulate(x, gate, y, eps, weight, bias, shift, scale [, opts]) -> out, x_out:
 * x_out = x + gate * y (gated_add), out = layernorm_modulate(x_out, eps, weight, bias, shift, scale),
 * in one pass; eps nil: 1e-6; weight, bias may be nil. opts: out, and x_out (x itself: in place;
 * default a new tensor like x). */
static int l_gated_add_layernorm_modulate(lua_State *L) {
  const char *fn = "adaspa.gated_add_layernorm_modulate";
  static const char *const keys[] = {"out", "x_out", NULL};
  ada_tensor *x = lada_check_tensor(L, 1, fn, "x");
  ada_tensor *g = lada_check_tensor(L, 2, fn, "gate"), *y = lada_check_tensor(L, 3, fn, "y");
  const double eps = opt_number(L, 4, fn, "eps", 1e-6);
  ada_tensor *w = opt_tensor(L, 5, fn, "weight"), *b = opt_tensor(L, 6, fn, "bias");
  ada_tensor *sh = lada_check_tensor(L, 7, fn, "shift"), *sc = lada_check_tensor(L, 8, fn, "scale");
  lada_check_opts(L, 9, fn, keys);
  ada_tensor *out = lada_push_out(L, 9, fn, x, x->ndim, x->shape);
  ada_tensor *x_out = NULL;
  if (lua_istable(L, 9)) {
    lua_getfield(L, 9, "x_out");
    if (!lua_isnil(L, -1)) {
      x_out = lada_check_tensor(L, lua_gettop(L), fn, "option x_out");
      if (x_out->ndim != x->ndim || memcmp(x_out->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim)) {
        char s1[96], s2[96];
        return lada_error(L, fn, "option x_out has shape %s, expected %s (the shape of x)",
                          shape_str(x_out, s1, sizeof s1), shape_str(x, s2, sizeof s2));
      }
    } else {
      lua_pop(L, 1);
    }
  }
  if (!x_out) {
    lada_check(L, ada_tensor_empty(&x_out, x->ndim, x->shape, x->dtype, x->storage->device), fn);
    lada_push_tensor(L, x_out);
  }
  lada_check(L, ada_op_gated_add_layernorm_modulate(x_out, out, x, g, y, eps, w, b, sh, sc), fn);
  return 2; /* out, x_out: the top two values of the stack */
}

/* adaspa.rmsnorm(x, weight, eps [, opts]); weight may be nil; eps nil: 1e-6 */
static int l_rmsnorm(lua_State *L) {
  const char *fn = "adaspa.rmsnorm";
  ada_tensor *x = lada_check_tensor(L, 1, fn, "x");
  ada_tensor *w = opt_tensor(L, 2, fn, "weight");
  const double eps = opt_number(L, 3, fn, "eps", 1e-6);
  lada_check_opts(L, 4, fn, OUT_OPT);
  ada_tensor *out = lada_push_out(L, 4, fn, x, x->ndim, x->shape);
  lada_check(L, ada_op_rmsnorm(out, x, w, eps), fn);
  return 1;
}

/* adaspa.softmax(x [, opts]): softmax over the last dimension of scale * x; opts {scale = s (1),
 * out = tensor} */
static int l_softmax(lua_State *L) {
  const char *fn = "adaspa.softmax";
  static const char *const keys[] = {"scale", "out", NULL};
  ada_tensor *x = lada_check_tensor(L, 1, fn, "x");
  lada_check_opts(L, 2, fn, keys);
  double scale = 1.0;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "scale");
    if (!lua_isnil(L, -1)) {
      if (lua_type(L, -1) != LUA_TNUMBER)
        return lada_error(L, fn, "option scale must be a number, got %s", lada_typename(L, -1));
      scale = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
  }
  ada_tensor *out = lada_push_out(L, 2, fn, x, x->ndim, x->shape);
  lada_check(L, ada_op_softmax(out, x, scale), fn);
  return 1;
}

typedef ada_status (*ternary_op)(ada_tensor *, const ada_tensor *, const ada_tensor *, const ada_tensor *);
typedef ada_status (*binary_op)(ada_tensor *, const ada_tensor *, const ada_tensor *);

static int ternary(lua_State *L, const char *fn, const char *n1, const char *n2, const char *n3, ternary_op f) {
  ada_tensor *x = lada_check_tensor(L, 1, fn, n1), *a = lada_check_tensor(L, 2, fn, n2);
  ada_tensor *b = lada_check_tensor(L, 3, fn, n3);
  lada_check_opts(L, 4, fn, OUT_OPT);
  ada_tensor *out = lada_push_out(L, 4, fn, x, x->ndim, x->shape);
  lada_check(L, f(out, x, a, b), fn);
  return 1;
}

static int binary(lua_State *L, const char *fn, binary_op f) {
  ada_tensor *a = lada_check_tensor(L, 1, fn, "a"), *b = lada_check_tensor(L, 2, fn, "b");
  lada_check_opts(L, 3, fn, OUT_OPT);
  ada_tensor *out = lada_push_out(L, 3, fn, a, a->ndim, a->shape);
  lada_check(L, f(out, a, b), fn);
  return 1;
}

/* adaspa.modulate(x, shift, scale [, opts]) = x * (1 + scale) + shift */
static int l_modulate(lua_State *L) { return ternary(L, "adaspa.modulate", "x", "shift", "scale", ada_op_modulate); }
/* adaspa.gated_add(x, gate, y [, opts]) = x + gate * y; {out = x} runs in place */
static int l_gated_add(lua_State *L) { return ternary(L, "adaspa.gated_add", "x", "gate", "y", ada_op_gated_add); }
static int l_add(lua_State *L) { return binary(L, "adaspa.add", ada_op_add); }
static int l_mul(lua_State *L) { return binary(L, "adaspa.mul", ada_op_mul); }

/* adaspa.scale(x, s [, opts]) = x * s */
static int l_scale(lua_State *L) {
  const char *fn = "adaspa.scale";
  ada_tensor *x = lada_check_tensor(L, 1, fn, "x");
  if (lua_type(L, 2) != LUA_TNUMBER) return lada_error(L, fn, "s must be a number, got %s", lada_typename(L, 2));
  lada_check_opts(L, 3, fn, OUT_OPT);
  ada_tensor *out = lada_push_out(L, 3, fn, x, x->ndim, x->shape);
  lada_check(L, ada_op_scale(out, x, lua_tonumber(L, 2)), fn);
  return 1;
}

static int unary(lua_State *L, const char *fn, ada_status (*f)(ada_tensor *, const ada_tensor *)) {
  ada_tensor *x = lada_check_tensor(L, 1, fn, "x");
  lada_check_opts(L, 2, fn, OUT_OPT);
  ada_tensor *out = lada_push_out(L, 2, fn, x, x->ndim, x->shape);
  lada_check(L, f(out, x), fn);
  return 1;
}

static int l_silu(lua_State *L) { return unary(L, "adaspa.silu", ada_op_silu); }
static int l_gelu_tanh(lua_State *L) { return unary(L, "adaspa.gelu_tanh", ada_op_gelu_tanh); }
static int l_gelu(lua_State *L) { return unary(L, "adaspa.gelu", ada_op_gelu); }

/* ---- video DiT pieces ----------------------------------------------------------------------------- */

/* The RoPE arguments from stack index i: {T, H, W}, axes (nil: {16, 56, 56}), theta (nil: 256),
 * n_tokens (nil: T * H * W). */
typedef struct rope_args {
  int32_t grid[3], axes[3];
  double theta;
  int64_t n_tokens;
} rope_args;

static rope_args check_rope_args(lua_State *L, int i, const char *fn) {
  rope_args r = {.axes = {16, 56, 56}};
  check_int3(L, i, fn, "grid", 1, r.grid);
  if (!lua_isnoneornil(L, i + 1)) check_int3(L, i + 1, fn, "axes", 0, r.axes);
  r.theta = opt_number(L, i + 2, fn, "theta", 256.0);
  const double cells = (double)r.grid[0] * r.grid[1] * r.grid[2];
  r.n_tokens = check_int(L, i + 3, fn, "n_tokens", 1, INT64_C(1) << 53, cells < 9.0e15 ? (int64_t)cells : INT64_MAX);
  return r;
}

/* adaspa.rope3d(x [S, H, D], {T, H, W}, axes, theta, n_tokens [, opts]) */
static int l_rope3d(lua_State *L) {
  const char *fn = "adaspa.rope3d";
  ada_tensor *x = lada_check_tensor(L, 1, fn, "x");
  const rope_args r = check_rope_args(L, 2, fn);
  lada_check_opts(L, 6, fn, OUT_OPT);
  ada_tensor *out = lada_push_out(L, 6, fn, x, x->ndim, x->shape);
  lada_check(L, ada_op_rope3d(out, x, r.grid, r.axes, r.theta, r.n_tokens), fn);
  return 1;
}

/* adaspa.rmsnorm_rope3d(x [S, H, D], weight [D] or nil, eps, {T, H, W}, axes, theta, n_tokens [, opts]):
 * rope3d(rmsnorm(x, weight, eps), ...) in one pass; eps nil: 1e-6 */
static int l_rmsnorm_rope3d(lua_State *L) {
  const char *fn = "adaspa.rmsnorm_rope3d";
  ada_tensor *x = lada_check_tensor(L, 1, fn, "x");
  ada_tensor *w = opt_tensor(L, 2, fn, "weight");
  const double eps = opt_number(L, 3, fn, "eps", 1e-6);
  const rope_args r = check_rope_args(L, 4, fn);
  lada_check_opts(L, 8, fn, OUT_OPT);
  ada_tensor *out = lada_push_out(L, 8, fn, x, x->ndim, x->shape);
  lada_check(L, ada_op_rmsnorm_rope3d(out, x, w, eps, r.grid, r.axes, r.theta, r.n_tokens), fn);
  return 1;
}

/* adaspa.patchify(x [C, T, H, W] [, opts]) -> [T * H/2 * W/2, C * 4] */
static int l_patchify(lua_State *L) {
  const char *fn = "adaspa.patchify";
  ada_tensor *x = lada_check_tensor(L, 1, fn, "x");
  lada_check_opts(L, 2, fn, OUT_OPT);
  char s1[96];
  if (x->ndim != 4 || x->shape[2] % 2 || x->shape[3] % 2)
    return lada_error(L, fn, "x must have shape [C, T, H, W] with H and W even, got %s", shape_str(x, s1, sizeof s1));
  const int64_t shape[2] = {x->shape[1] * (x->shape[2] / 2) * (x->shape[3] / 2), x->shape[0] * 4};
  ada_tensor *out = lada_push_out(L, 2, fn, x, 2, shape);
  lada_check(L, ada_op_patchify(out, x), fn);
  return 1;
}

/* adaspa.unpatchify(x [T * H/2 * W/2, C * 4], {T, H, W} [, opts]) -> [C, T, H, W] */
static int l_unpatchify(lua_State *L) {
  const char *fn = "adaspa.unpatchify";
  ada_tensor *x = lada_check_tensor(L, 1, fn, "x");
  int32_t size[3];
  check_int3(L, 2, fn, "size", 1, size);
  lada_check_opts(L, 3, fn, OUT_OPT);
  char s1[96];
  if (x->ndim != 2 || x->shape[1] % 4)
    return lada_error(L, fn, "x must have shape [T*H/2*W/2, C*4], got %s", shape_str(x, s1, sizeof s1));
  const int64_t shape[4] = {x->shape[1] / 4, size[0], size[1], size[2]};
  ada_tensor *out = lada_push_out(L, 3, fn, x, 4, shape);
  lada_check(L, ada_op_unpatchify(out, x, size[0], size[1], size[2]), fn);
  return 1;
}

/* adaspa.timestep_embedding(t [N] or a number, dim, max_period [, opts]) -> [N, dim]; dim nil: 256,
 * max_period nil: 10000. A number t gives [1, dim] (f32). */
static int l_timestep_embedding(lua_State *L) {
  const char *fn = "adaspa.timestep_embedding";
  ada_tensor *t;
  if (lua_type(L, 1) == LUA_TNUMBER) {
    ada_device cpu = {ADA_CPU, 0};
    lada_check(L, ada_tensor_full(&t, 1, (const int64_t[]){1}, lua_tonumber(L, 1), ADA_F32, cpu), fn);
    lada_push_tensor(L, t);
    lua_replace(L, 1);
  } else if (!lada_test_tensor(L, 1)) {
    return lada_error(L, fn, "t must be a tensor [N] or a number, got %s", lada_typename(L, 1));
  }
  t = lada_check_tensor(L, 1, fn, "t");
  const int64_t dim = check_int(L, 2, fn, "dim", 2, INT32_MAX, 256);
  const double max_period = opt_number(L, 3, fn, "max_period", 10000.0);
  lada_check_opts(L, 4, fn, OUT_OPT);
  char s1[96];
  if (t->ndim != 1) return lada_error(L, fn, "t must have shape [N], got %s", shape_str(t, s1, sizeof s1));
  ada_tensor *out = lada_push_out(L, 4, fn, t, 2, (const int64_t[]){t->shape[0], dim});
  lada_check(L, ada_op_timestep_embedding(out, t, (int32_t)dim, max_period), fn);
  return 1;
}

/* The list of tensors at idx (a table of n >= 1 tensors) into a Lua-owned array. */
static const ada_tensor **check_list(lua_State *L, int idx, const char *fname, int32_t *n) {
  if (!lua_istable(L, idx) || lada_test_tensor(L, idx))
    lada_error(L, fname, "tensors must be a table of tensors, got %s", lada_typename(L, idx));
  const size_t len = lua_objlen(L, idx);
  if (len < 1 || len > INT32_MAX) lada_error(L, fname, "tensors must be a non-empty table of tensors");
  const ada_tensor **xs = lua_newuserdata(L, sizeof(ada_tensor *) * len);
  for (size_t i = 0; i < len; i++) {
    char arg[32];
    snprintf(arg, sizeof arg, "tensor %d", (int)i + 1);
    lua_rawgeti(L, idx, (int)i + 1);
    xs[i] = lada_check_tensor(L, lua_gettop(L), fname, arg);
    lua_pop(L, 1);
  }
  *n = (int32_t)len;
  return xs;
}

/* adaspa.concat({t1, t2, ...} [, opts]) -> the tensors stacked along dimension 1 */
static int l_concat(lua_State *L) {
  const char *fn = "adaspa.concat";
  int32_t n;
  lua_settop(L, 2);
  lada_check_opts(L, 2, fn, OUT_OPT);
  const ada_tensor **xs = check_list(L, 1, fn, &n);
  char s1[96], s2[96];
  int64_t shape[ADA_MAX_DIMS];
  memcpy(shape, xs[0]->shape, sizeof shape);
  if (xs[0]->ndim < 1)
    return lada_error(L, fn, "tensor 1 must have at least one dimension, got %s", shape_str(xs[0], s1, sizeof s1));
  for (int32_t i = 1; i < n; i++) {
    if (xs[i]->ndim != xs[0]->ndim)
      return lada_error(L, fn, "tensor %d %s must have %d dimensions like tensor 1 %s", (int)i + 1,
                        shape_str(xs[i], s1, sizeof s1), (int)xs[0]->ndim, shape_str(xs[0], s2, sizeof s2));
    shape[0] += xs[i]->shape[0];
  }
  ada_tensor *out = lada_push_out(L, 2, fn, xs[0], xs[0]->ndim, shape);
  lada_check(L, ada_op_concat(out, xs, n), fn);
  return 1;
}

/* adaspa.split(x, {n1, n2, ...}) -> {views of x along dimension 1 of sizes n1, n2, ...} */
static int l_split(lua_State *L) {
  const char *fn = "adaspa.split";
  ada_tensor *x = lada_check_tensor(L, 1, fn, "x");
  char s1[96];
  if (x->ndim < 1) return lada_error(L, fn, "x must have at least one dimension, got []");
  if (!lua_istable(L, 2) || lada_test_tensor(L, 2) || lua_objlen(L, 2) < 1)
    return lada_error(L, fn, "sizes must be a non-empty table of positive integers, got %s", lada_typename(L, 2));
  const int n = (int)lua_objlen(L, 2);
  int64_t total = 0;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    char arg[32];
    snprintf(arg, sizeof arg, "sizes[%d]", i);
    total += check_int(L, lua_gettop(L), fn, arg, 1, x->shape[0], -1);
    lua_pop(L, 1);
  }
  if (total != x->shape[0])
    return lada_error(L, fn, "sizes sum to %lld but dimension 1 of x %s has %lld", (long long)total,
                      shape_str(x, s1, sizeof s1), (long long)x->shape[0]);
  lua_createtable(L, n, 0);
  int64_t start = 0;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    const int64_t len = (int64_t)lua_tonumber(L, -1);
    lua_pop(L, 1);
    ada_tensor *v;
    lada_check(L, ada_tensor_narrow(&v, x, 0, start, len), fn);
    lada_push_tensor(L, v);
    lua_rawseti(L, -2, i);
    start += len;
  }
  return 1;
}

void lada_open_nn(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"linear", l_linear},       {"matmul", l_matmul},       {"layernorm", l_layernorm},
      {"rmsnorm", l_rmsnorm},     {"softmax", l_softmax},     {"layernorm_modulate", l_layernorm_modulate},
      {"gated_add_layernorm_modulate", l_gated_add_layernorm_modulate},
      {"modulate", l_modulate},   {"gated_add", l_gated_add},
      {"add", l_add},             {"mul", l_mul},             {"scale", l_scale},
      {"silu", l_silu},           {"gelu_tanh", l_gelu_tanh}, {"gelu", l_gelu}, {"rope3d", l_rope3d},  {"rmsnorm_rope3d", l_rmsnorm_rope3d},
      {"patchify", l_patchify},   {"unpatchify", l_unpatchify}, {"timestep_embedding", l_timestep_embedding},
      {"concat", l_concat},       {"split", l_split},         {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
