/* lattention.c: Lua bindings of the attention ops (runtime/ops.h):
 *   adaspa.attention(q, k, v [, {kv_valid=, scale=, out=, lse_out=}]) -> out, lse
 *   adaspa.sparse_attention(q, k, v, layout [, {kv_valid=, scale=, out=, lse_out=}]) -> out, lse
 *   adaspa.block_mass(q, k, lse [, {block=, kv_valid=, scale=, out=}]) -> mass
 *   adaspa.attention_with_mass(q, k, v, lse_cached [, {block=, kv_valid=, scale=, out=, lse_out=,
 *     mass_out=}]) -> out, lse, mass
 *   adaspa.attention_plan(q, k [, {mode=, layout=, block=, kv_valid=, scale=}]) -> {family=,
 *     variant=, tile_rows=, tile_keys=, dim=, schedule=}
 * q [S, H, D], k and v [Skv, H, D]; out [S, H, D] has q's dtype unless given; lse [H, S] and
 * mass [H, ceil(S / block), ceil(Skv / block)] are f32. block: 64 (default) or 128. Every op
 * also takes family= and variant= (strings): the kernel choice of ada_attn_opts, for specs and
 * benches. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../ops.h"
#include "lbind.h"

static ada_tensor *check_3d(lua_State *L, int idx, const char *fname, const char *arg) {
  ada_tensor *t = lada_check_tensor(L, idx, fname, arg);
  if (t->ndim != 3) {
    char b[96];
    ada_shape_format(t->ndim, t->shape, b, sizeof b);
    lada_error(L, fname, "%s must have shape [S, H, D], got %s", arg, b);
  }
  return t;
}

static const char *value_str(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TNUMBER ? lua_tostring(L, idx) : lada_typename(L, idx);
}

/* opts[key] as an integer >= lo, or dflt when absent. */
static int64_t opt_int(lua_State *L, int idx, const char *fname, const char *key, int64_t lo, int64_t dflt) {
  int64_t r = dflt;
  lua_getfield(L, idx, key);
  if (!lua_isnil(L, -1)) {
    double x = lua_tonumber(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || x != floor(x) || x < (double)lo || x > 9.0e15)
      lada_error(L, fname, "option %s must be an integer >= %lld, got %s", key, (long long)lo, value_str(L, -1));
    r = (int64_t)x;
  }
  lua_pop(L, 1);
  return r;
}

/* opts[key] as a string (kept alive by the options table), or NULL when absent. */
static const char *opt_name(lua_State *L, int idx, const char *fname, const char *key) {
  lua_getfield(L, idx, key);
  const char *r = NULL;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING) lada_error(L, fname, "option %s must be a string, got %s", key, value_str(L, -1));
    r = lua_tostring(L, -1);
  }
  lua_pop(L, 1);
  return r;
}

/* The options table at idx (may be absent) with only the given keys. */
static ada_attn_opts read_opts(lua_State *L, int idx, const char *fname, const char *const *keys) {
  lada_check_opts(L, idx, fname, keys);
  ada_attn_opts o = {.block = 64};
  if (lua_isnoneornil(L, idx)) return o;
  o.family = opt_name(L, idx, fname, "family");
  o.variant = opt_name(L, idx, fname, "variant");
  lua_getfield(L, idx, "scale");
  if (!lua_isnil(L, -1)) {
    double s = lua_tonumber(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || !isfinite(s) || s == 0)
      lada_error(L, fname, "option scale must be a finite non-zero number, got %s", value_str(L, -1));
    o.scale = s;
  }
  lua_pop(L, 1);
  o.kv_valid = opt_int(L, idx, fname, "kv_valid", 1, 0);
  o.block = (int32_t)opt_int(L, idx, fname, "block", 1, 64);
  if (!ada_attn_block_ok(o.block)) lada_error(L, fname, "option block must be 64 or 128, got %d", (int)o.block);
  return o;
}

/* opts[key] when given (an f32 tensor of the given shape), else a new f32 tensor on like's
 * device. Pushes the tensor and returns it. */
static ada_tensor *push_f32_out(lua_State *L, int opts, const char *fname, const char *key, const ada_tensor *like,
                                int32_t ndim, const int64_t *shape) {
  if (lua_istable(L, opts)) {
    lua_getfield(L, opts, key);
    if (!lua_isnil(L, -1)) {
      char arg[32], a[96], b[96];
      snprintf(arg, sizeof arg, "option %s", key);
      ada_tensor *t = lada_check_tensor(L, lua_gettop(L), fname, arg);
      ada_shape_format(t->ndim, t->shape, a, sizeof a);
      ada_shape_format(ndim, shape, b, sizeof b);
      if (t->ndim != ndim || memcmp(t->shape, shape, sizeof(int64_t) * (size_t)ndim))
        lada_error(L, fname, "option %s has shape %s, expected %s", key, a, b);
      if (t->dtype != ADA_F32) lada_error(L, fname, "option %s must be f32, got %s %s", key, ada_dtype_name(t->dtype), a);
      return t;
    }
    lua_pop(L, 1);
  }
  ada_tensor *t;
  lada_check(L, ada_tensor_empty(&t, ndim, shape, ADA_F32, like->storage->device), fname);
  lada_push_tensor(L, t);
  return t;
}

static int l_attention(lua_State *L) {
  static const char *const fname = "adaspa.attention";
  static const char *const keys[] = {"kv_valid", "scale", "out", "lse_out", "family", "variant", NULL};
  ada_tensor *q = check_3d(L, 1, fname, "q");
  ada_tensor *k = lada_check_tensor(L, 2, fname, "k"), *v = lada_check_tensor(L, 3, fname, "v");
  ada_attn_opts o = read_opts(L, 4, fname, keys);
  const int64_t lshape[2] = {q->shape[1], q->shape[0]};
  ada_tensor *out = lada_push_out(L, 4, fname, q, 3, q->shape);
  ada_tensor *lse = push_f32_out(L, 4, fname, "lse_out", q, 2, lshape);
  lada_check(L, ada_op_attention(out, lse, q, k, v, &o), fname);
  return 2;
}

static int l_sparse_attention(lua_State *L) {
  static const char *const fname = "adaspa.sparse_attention";
  static const char *const keys[] = {"kv_valid", "scale", "out", "lse_out", "family", "variant", NULL};
  ada_tensor *q = check_3d(L, 1, fname, "q");
  ada_tensor *k = lada_check_tensor(L, 2, fname, "k"), *v = lada_check_tensor(L, 3, fname, "v");
  ada_layout *layout = lada_check_layout(L, 4, fname, "layout");
  ada_attn_opts o = read_opts(L, 5, fname, keys);
  const int64_t lshape[2] = {q->shape[1], q->shape[0]};
  ada_tensor *out = lada_push_out(L, 5, fname, q, 3, q->shape);
  ada_tensor *lse = push_f32_out(L, 5, fname, "lse_out", q, 2, lshape);
  lada_check(L, ada_op_sparse_attention(out, lse, q, k, v, layout, &o), fname);
  return 2;
}

static int l_block_mass(lua_State *L) {
  static const char *const fname = "adaspa.block_mass";
  static const char *const keys[] = {"block", "kv_valid", "scale", "out", "family", "variant", NULL};
  ada_tensor *q = check_3d(L, 1, fname, "q"), *k = check_3d(L, 2, fname, "k");
  ada_tensor *lse = lada_check_tensor(L, 3, fname, "lse");
  ada_attn_opts o = read_opts(L, 4, fname, keys);
  const int64_t mshape[3] = {q->shape[1], (q->shape[0] + o.block - 1) / o.block, (k->shape[0] + o.block - 1) / o.block};
  ada_tensor *mass = push_f32_out(L, 4, fname, "out", q, 3, mshape);
  lada_check(L, ada_op_block_mass(mass, q, k, lse, &o), fname);
  return 1;
}

static int l_attention_with_mass(lua_State *L) {
  static const char *const fname = "adaspa.attention_with_mass";
  static const char *const keys[] = {"block", "kv_valid", "scale", "out", "lse_out", "mass_out", "family", "variant", NULL};
  ada_tensor *q = check_3d(L, 1, fname, "q"), *k = check_3d(L, 2, fname, "k");
  ada_tensor *v = lada_check_tensor(L, 3, fname, "v"), *lse_cached = lada_check_tensor(L, 4, fname, "lse_cached");
  ada_attn_opts o = read_opts(L, 5, fname, keys);
  const int64_t lshape[2] = {q->shape[1], q->shape[0]};
  const int64_t mshape[3] = {q->shape[1], (q->shape[0] + o.block - 1) / o.block, (k->shape[0] + o.block - 1) / o.block};
  ada_tensor *out = lada_push_out(L, 5, fname, q, 3, q->shape);
  ada_tensor *lse = push_f32_out(L, 5, fname, "lse_out", q, 2, lshape);
  ada_tensor *mass = push_f32_out(L, 5, fname, "mass_out", q, 3, mshape);
  lada_check(L, ada_op_attention_with_mass(out, lse, mass, q, k, v, lse_cached, &o), fname);
  return 3;
}

static int l_attention_plan(lua_State *L) {
  static const char *const fname = "adaspa.attention_plan";
  static const char *const keys[] = {"mode", "layout", "block", "kv_valid", "scale", "family", "variant", NULL};
  static const char *const modes[] = {"dense", "sparse", "fused", "mass"};
  ada_tensor *q = check_3d(L, 1, fname, "q"), *k = check_3d(L, 2, fname, "k");
  ada_attn_opts o = read_opts(L, 3, fname, keys);
  ada_attn_mode mode = ADA_ATTN_DENSE;
  const ada_layout *layout = NULL;
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "mode");
    if (!lua_isnil(L, -1)) {
      const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
      int i = 0;
      while (i < 4 && strcmp(m, modes[i]) != 0) i++;
      if (i == 4) lada_error(L, fname, "option mode must be dense, sparse, fused or mass, got %s", value_str(L, -1));
      mode = (ada_attn_mode)i;
    }
    lua_pop(L, 1);
    lua_getfield(L, 3, "layout");
    if (!lua_isnil(L, -1)) layout = lada_check_layout(L, lua_gettop(L), fname, "option layout");
    lua_pop(L, 1);
  }
  if (mode == ADA_ATTN_SPARSE && !layout) lada_error(L, fname, "mode sparse needs option layout");
  ada_attn_plan p;
  lada_check(L, ada_op_attention_plan(&p, mode, q, k, layout, &o), fname);
  lua_newtable(L);
  const char *const sk[] = {"family", "variant", "schedule"}, *const sv[] = {p.family, p.variant, p.schedule};
  const char *const ik[] = {"tile_rows", "tile_keys", "dim"};
  const int32_t iv[] = {p.tile_rows, p.tile_keys, p.dim};
  for (int i = 0; i < 3; i++) {
    lua_pushstring(L, sv[i]);
    lua_setfield(L, -2, sk[i]);
    lua_pushinteger(L, iv[i]);
    lua_setfield(L, -2, ik[i]);
  }
  return 1;
}

void lada_open_attention(lua_State *L) {
  static const luaL_Reg fns[] = {{"attention", l_attention},
                                 {"sparse_attention", l_sparse_attention},
                                 {"block_mass", l_block_mass},
                                 {"attention_with_mass", l_attention_with_mass},
                                 {"attention_plan", l_attention_plan},
                                 {NULL, NULL}};
  for (const luaL_Reg *f = fns; f->name; f++) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -2, f->name);
  }
}
