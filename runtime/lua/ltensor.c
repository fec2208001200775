/* ltensor.c: the adaspa.Tensor userdata and its methods. Lua indices and dimensions are 1-based. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lbind.h"

int lada_error(lua_State *L, const char *fname, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return luaL_error(L, "%s: %s", fname, msg);
}

void lada_check(lua_State *L, ada_status s, const char *fname) {
  if (s == ADA_OK) return;
  const char *msg = ada_last_error();
  /* the runtime prefixes its own op name ("narrow: ..."); drop it when fname already ends
   * with that name, so messages read "t:narrow: ..." rather than "t:narrow: narrow: ..." */
  const char *colon = strstr(msg, ": ");
  if (colon) {
    size_t n = (size_t)(colon - msg), fl = strlen(fname);
    if (n < fl && strncmp(fname + fl - n, msg, n) == 0 && (fname[fl - n - 1] == ':' || fname[fl - n - 1] == '.'))
      msg = colon + 2;
  }
  luaL_error(L, "%s: %s", fname, msg);
}

const char *lada_typename(lua_State *L, int idx) {
  if (lada_test_tensor(L, idx)) return "tensor";
  return luaL_typename(L, idx);
}

lada_tensor *lada_test_tensor(lua_State *L, int idx) { return lada_object_test(L, idx, &lada_tensor_class); }

static void describe(const ada_tensor *t, char *buf, size_t n) {
  char shp[96], dev[16];
  ada_shape_format(t->ndim, t->shape, shp, sizeof shp);
  ada_device_format(t->storage->device, dev, sizeof dev);
  snprintf(buf, n, "%s %s %s", ada_dtype_name(t->dtype), shp, dev);
}

void lada_push_tensor(lua_State *L, ada_tensor *t) { lada_object_new(L, &lada_tensor_class, t); }

ada_tensor *lada_check_tensor(lua_State *L, int idx, const char *fname, const char *argname) {
  return lada_object_check(L, idx, &lada_tensor_class, fname, argname);
}

int32_t lada_check_shape(lua_State *L, int idx, const char *fname, const char *argname,
                         int64_t *shape) {
  if (!lua_istable(L, idx) || lada_test_tensor(L, idx))
    lada_error(L, fname, "%s must be a table of positive integers, got %s", argname, lada_typename(L, idx));
  int32_t n = (int32_t)lua_objlen(L, idx);
  if (n > ADA_MAX_DIMS)
    lada_error(L, fname, "%s has %d dimensions (at most %d)", argname, (int)n, ADA_MAX_DIMS);
  for (int32_t i = 0; i < n; i++) {
    lua_rawgeti(L, idx, i + 1);
    double v = lua_tonumber(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || v < 1 || v != floor(v) || v > 9.0e15)
      lada_error(L, fname, "%s must be a table of positive integers, got %s at position %d", argname,
                 lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : lada_typename(L, -1), (int)i + 1);
    shape[i] = (int64_t)v;
    lua_pop(L, 1);
  }
  return n;
}

void lada_check_opts(lua_State *L, int idx, const char *fname, const char *const *allowed) {
  if (lua_isnoneornil(L, idx)) return;
  if (!lua_istable(L, idx) || lada_test_tensor(L, idx))
    lada_error(L, fname, "options must be a table, got %s", lada_typename(L, idx));
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    int ok = 0;
    if (lua_type(L, -1) == LUA_TSTRING)
      for (const char *const *a = allowed; *a && !ok; a++) ok = strcmp(*a, lua_tostring(L, -1)) == 0;
    if (!ok) {
      char list[256] = "";
      for (const char *const *a = allowed; *a; a++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", a == allowed ? "" : ", ", *a);
      lada_error(L, fname, "unknown option %s%s%s (known: %s)", lua_type(L, -1) == LUA_TSTRING ? "'" : "",
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : lada_typename(L, -1),
                 lua_type(L, -1) == LUA_TSTRING ? "'" : "", list);
    }
  }
}

/* ---- methods ------------------------------------------------------------------------------ */

#define SELF(fname) ada_tensor *t = lada_check_tensor(L, 1, fname, "self")

static int m_shape(lua_State *L) {
  SELF("t:shape");
  lua_createtable(L, t->ndim, 0);
  for (int32_t i = 0; i < t->ndim; i++) {
    lua_pushnumber(L, (lua_Number)t->shape[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int m_stride(lua_State *L) {
  SELF("t:stride");
  lua_createtable(L, t->ndim, 0);
  for (int32_t i = 0; i < t->ndim; i++) {
    lua_pushnumber(L, (lua_Number)t->stride[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int m_dim(lua_State *L) { SELF("t:dim"); lua_pushinteger(L, t->ndim); return 1; }
static int m_numel(lua_State *L) { SELF("t:numel"); lua_pushnumber(L, (lua_Number)ada_tensor_numel(t)); return 1; }
static int m_dtype(lua_State *L) { SELF("t:dtype"); lua_pushstring(L, ada_dtype_name(t->dtype)); return 1; }

static int m_device(lua_State *L) {
  SELF("t:device");
  char buf[16];
  ada_device_format(t->storage->device, buf, sizeof buf);
  lua_pushstring(L, buf);
  return 1;
}

static int m_is_contiguous(lua_State *L) { SELF("t:is_contiguous"); lua_pushboolean(L, ada_tensor_is_contiguous(t)); return 1; }

static int m_shares_storage(lua_State *L) {
  SELF("t:shares_storage");
  ada_tensor *u = lada_check_tensor(L, 2, "t:shares_storage", "other");
  lua_pushboolean(L, ada_tensor_same_storage(t, u));
  return 1;
}

/* t:to(spec, ...): each spec is a dtype ("bf16") or a device ("cpu", "cuda", "cuda:1").
 * Returns t itself when nothing changes. */
static int m_to(lua_State *L) {
  SELF("t:to");
  ada_dtype dt = t->dtype;
  ada_device dev = t->storage->device;
  int n = lua_gettop(L);
  if (n < 2) return lada_error(L, "t:to", "expected a dtype or a device, got nothing");
  for (int i = 2; i <= n; i++) {
    if (lua_type(L, i) != LUA_TSTRING)
      return lada_error(L, "t:to", "argument %d must be a dtype or device name, got %s", i - 1, lada_typename(L, i));
    const char *s = lua_tostring(L, i);
    if (!ada_dtype_parse(s, &dt) && !ada_device_parse(s, &dev))
      return lada_error(L, "t:to", "unknown dtype or device '%s' (dtypes: f32, bf16, f16, i32, i16, u8; devices: cpu, cuda, cuda:N)", s);
  }
  if (dt == t->dtype && ada_device_equal(dev, t->storage->device)) {
    lua_pushvalue(L, 1);
    return 1;
  }
  ada_tensor *r;
  lada_check(L, ada_tensor_to(&r, t, dt, dev), "t:to");
  lada_push_tensor(L, r);
  return 1;
}

/* One entry of t:reshape's shape (at stack index idx): an integer (-1 infers that size; the op
   checks the rest), else the error names its position. */
static int64_t reshape_entry(lua_State *L, int idx, int32_t pos) {
  double v = lua_tonumber(L, idx);
  if (lua_type(L, idx) != LUA_TNUMBER || v != floor(v) || fabs(v) > 9.0e15)
    lada_error(L, "t:reshape", "shape must hold integers (-1 for one inferred size), got %s at position %d",
               lua_type(L, idx) == LUA_TNUMBER ? lua_tostring(L, idx) : lada_typename(L, idx), (int)pos);
  return (int64_t)v;
}

static int m_reshape(lua_State *L) {
  SELF("t:reshape");
  int64_t shape[ADA_MAX_DIMS];
  int32_t nd;
  if (lua_istable(L, 2)) {
    nd = (int32_t)lua_objlen(L, 2);
    if (nd > ADA_MAX_DIMS) return lada_error(L, "t:reshape", "shape has %d dimensions (at most %d)", (int)nd, ADA_MAX_DIMS);
    for (int32_t i = 0; i < nd; i++) {
      lua_rawgeti(L, 2, i + 1);
      shape[i] = reshape_entry(L, -1, i + 1);
      lua_pop(L, 1);
    }
  } else {
    nd = lua_gettop(L) - 1;
    if (nd > ADA_MAX_DIMS) return lada_error(L, "t:reshape", "shape has %d dimensions (at most %d)", (int)nd, ADA_MAX_DIMS);
    for (int32_t i = 0; i < nd; i++) shape[i] = reshape_entry(L, i + 2, i + 1);
  }
  ada_tensor *r;
  lada_check(L, ada_tensor_reshape(&r, t, nd, shape), "t:reshape");
  lada_push_tensor(L, r);
  return 1;
}

static int64_t check_int(lua_State *L, int idx, const char *fname, const char *argname) {
  if (lua_type(L, idx) != LUA_TNUMBER)
    lada_error(L, fname, "%s must be an integer, got %s", argname, lada_typename(L, idx));
  double v = lua_tonumber(L, idx);
  if (v != floor(v) || fabs(v) > 9.0e15) lada_error(L, fname, "%s must be an integer, got %s", argname, lua_tostring(L, idx));
  return (int64_t)v;
}

static int32_t check_dim(lua_State *L, int idx, const ada_tensor *t, const char *fname, const char *argname) {
  int64_t d = check_int(L, idx, fname, argname);
  if (d < 0) d += t->ndim + 1; /* -1 is the last dimension */
  if (d < 1 || d > t->ndim)
    lada_error(L, fname, "%s %d out of range for a tensor with %d dimensions", argname, (int)d, (int)t->ndim);
  return (int32_t)d - 1;
}

static int m_expand(lua_State *L) {
  SELF("t:expand");
  int64_t shape[ADA_MAX_DIMS];
  int32_t nd = lada_check_shape(L, 2, "t:expand", "shape", shape);
  ada_tensor *r;
  lada_check(L, ada_tensor_expand(&r, t, nd, shape), "t:expand");
  lada_push_tensor(L, r);
  return 1;
}

static int m_narrow(lua_State *L) {
  SELF("t:narrow");
  int32_t d = check_dim(L, 2, t, "t:narrow", "dim");
  int64_t start = check_int(L, 3, "t:narrow", "start");
  int64_t len = check_int(L, 4, "t:narrow", "length");
  ada_tensor *r;
  lada_check(L, ada_tensor_narrow(&r, t, d, start - 1, len), "t:narrow");
  lada_push_tensor(L, r);
  return 1;
}

static int m_transpose(lua_State *L) {
  SELF("t:transpose");
  int32_t a = check_dim(L, 2, t, "t:transpose", "dim a");
  int32_t b = check_dim(L, 3, t, "t:transpose", "dim b");
  ada_tensor *r;
  lada_check(L, ada_tensor_transpose(&r, t, a, b), "t:transpose");
  lada_push_tensor(L, r);
  return 1;
}

static int m_permute(lua_State *L) {
  SELF("t:permute");
  int32_t perm[ADA_MAX_DIMS];
  int tbl = lua_istable(L, 2);
  int32_t n = tbl ? (int32_t)lua_objlen(L, 2) : lua_gettop(L) - 1;
  if (n != t->ndim) return lada_error(L, "t:permute", "expected %d dimensions, got %d", (int)t->ndim, (int)n);
  for (int32_t i = 0; i < n; i++) {
    if (tbl) lua_rawgeti(L, 2, i + 1); else lua_pushvalue(L, i + 2);
    perm[i] = check_dim(L, lua_gettop(L), t, "t:permute", "dimension");
    lua_pop(L, 1);
  }
  ada_tensor *r;
  lada_check(L, ada_tensor_permute(&r, t, perm), "t:permute");
  lada_push_tensor(L, r);
  return 1;
}

static int m_contiguous(lua_State *L) {
  SELF("t:contiguous");
  if (ada_tensor_is_contiguous(t)) { lua_pushvalue(L, 1); return 1; }
  ada_tensor *r;
  lada_check(L, ada_tensor_contiguous(&r, t), "t:contiguous");
  lada_push_tensor(L, r);
  return 1;
}

static int m_clone(lua_State *L) {
  SELF("t:clone");
  ada_tensor *r;
  lada_check(L, ada_tensor_contiguous(&r, t), "t:clone");
  lada_push_tensor(L, r);
  return 1;
}

static int m_copy(lua_State *L) {
  SELF("t:copy");
  ada_tensor *src = lada_check_tensor(L, 2, "t:copy", "source");
  lada_check(L, ada_tensor_copy(t, src), "t:copy");
  lua_pushvalue(L, 1);
  return 1;
}

static int m_fill(lua_State *L) {
  SELF("t:fill");
  if (lua_type(L, 2) != LUA_TNUMBER) return lada_error(L, "t:fill", "value must be a number, got %s", lada_typename(L, 2));
  lada_check(L, ada_tensor_fill(t, lua_tonumber(L, 2)), "t:fill");
  lua_pushvalue(L, 1);
  return 1;
}

#define REDUCTION(name, fn)                                              \
  static int m_##name(lua_State *L) {                                    \
    SELF("t:" #name);                                                    \
    double v;                                                            \
    lada_check(L, fn(t, &v), "t:" #name);                                \
    lua_pushnumber(L, v);                                                \
    return 1;                                                            \
  }
REDUCTION(sum, ada_tensor_sum)
REDUCTION(max, ada_tensor_max)
REDUCTION(min, ada_tensor_min)
REDUCTION(norm, ada_tensor_norm)

static void read_index(lua_State *L, const ada_tensor *t, int first, const char *fname, int64_t *index) {
  int n = lua_gettop(L) - first + 1;
  if (n < t->ndim) lada_error(L, fname, "expected %d indices, got %d", (int)t->ndim, n < 0 ? 0 : n);
  for (int32_t i = 0; i < t->ndim; i++) {
    char arg[32];
    snprintf(arg, sizeof arg, "index %d", (int)i + 1);
    index[i] = check_int(L, first + i, fname, arg) - 1;
  }
}

static int m_get(lua_State *L) {
  SELF("t:get");
  int64_t index[ADA_MAX_DIMS];
  if (lua_gettop(L) - 1 != t->ndim)
    return lada_error(L, "t:get", "expected %d indices, got %d", (int)t->ndim, lua_gettop(L) - 1);
  read_index(L, t, 2, "t:get", index);
  double v;
  lada_check(L, ada_tensor_get(t, index, &v), "t:get");
  lua_pushnumber(L, v);
  return 1;
}

static int m_set(lua_State *L) {
  SELF("t:set");
  if (lua_type(L, 2) != LUA_TNUMBER) return lada_error(L, "t:set", "value must be a number, got %s", lada_typename(L, 2));
  if (lua_gettop(L) - 2 != t->ndim)
    return lada_error(L, "t:set", "expected %d indices after the value, got %d", (int)t->ndim, lua_gettop(L) - 2);
  int64_t index[ADA_MAX_DIMS];
  read_index(L, t, 3, "t:set", index);
  lada_check(L, ada_tensor_set(t, index, lua_tonumber(L, 2)), "t:set");
  lua_pushvalue(L, 1);
  return 1;
}

/* Host copy of the whole tensor as contiguous f64-readable data (caller frees). */
static ada_tensor *host_copy(lua_State *L, ada_tensor *t, const char *fname) {
  ada_tensor *h;
  ada_device cpu = {ADA_CPU, 0};
  lada_check(L, ada_tensor_to(&h, t, t->dtype, cpu), fname);
  return h;
}

static void push_nested(lua_State *L, const ada_tensor *h, int32_t d, int64_t off) {
  const char *base = (const char *)ada_tensor_data(h);
  int32_t es = ada_dtype_size(h->dtype);
  if (d == h->ndim) { lua_pushnumber(L, ada_load(base + off * es, h->dtype)); return; }
  lua_createtable(L, (int)h->shape[d], 0);
  for (int64_t i = 0; i < h->shape[d]; i++) {
    push_nested(L, h, d + 1, off + i * h->stride[d]);
    lua_rawseti(L, -2, (int)i + 1);
  }
}

static int m_totable(lua_State *L) {
  SELF("t:totable");
  if (ada_tensor_numel(t) > 100000000)
    return lada_error(L, "t:totable", "tensor has %lld elements; too many for a Lua table", (long long)ada_tensor_numel(t));
  ada_tensor *h = host_copy(L, t, "t:totable");
  lua_checkstack(L, ADA_MAX_DIMS + 4);
  push_nested(L, h, 0, 0);
  ada_tensor_free(h);
  return 1;
}

static void format_value(char *buf, size_t n, double v, ada_dtype dt) {
  if (!ada_dtype_is_float(dt)) snprintf(buf, n, "%.0f", v);
  else if (v != v) snprintf(buf, n, "nan");
  else if (isinf(v)) snprintf(buf, n, v > 0 ? "inf" : "-inf");
  else snprintf(buf, n, "%.6g", v);
}

/* "tensor #3 f32 [2, 3] cpu: 0.1 0.2 ..." with the first (up to 8) values in row-major order. */
static int tostring(lua_State *L, const void *obj, uint32_t id) {
  const ada_tensor *t = obj;
  char desc[128];
  describe(t, desc, sizeof desc);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  char head[192];
  snprintf(head, sizeof head, "tensor #%u %s", (unsigned)id, desc);
  luaL_addstring(&b, head);
  /* the first row of the innermost dimension, at most 8 values, copied to the host */
  ada_tensor *v = NULL, *tmp;
  ada_status s = ada_tensor_view(&v, t);
  for (int32_t d = 0; !s && d < t->ndim; d++) {
    int64_t len = d == t->ndim - 1 ? (t->shape[d] < 8 ? t->shape[d] : 8) : 1;
    s = ada_tensor_narrow(&tmp, v, d, 0, len);
    if (!s) { ada_tensor_free(v); v = tmp; }
  }
  ada_device cpu = {ADA_CPU, 0};
  if (!s) { s = ada_tensor_to(&tmp, v, t->dtype, cpu); if (!s) { ada_tensor_free(v); v = tmp; } }
  if (!s) {
    int64_t n = ada_tensor_numel(v);
    luaL_addstring(&b, ":");
    for (int64_t i = 0; i < n; i++) {
      char num[48];
      format_value(num, sizeof num, ada_load((char *)ada_tensor_data(v) + i * ada_dtype_size(v->dtype), v->dtype), v->dtype);
      luaL_addchar(&b, ' ');
      luaL_addstring(&b, num);
    }
    if (n < ada_tensor_numel(t)) luaL_addstring(&b, " ...");
  } else {
    luaL_addstring(&b, " (values unreadable: ");
    luaL_addstring(&b, ada_last_error());
    luaL_addstring(&b, ")");
  }
  ada_tensor_free(v);
  luaL_pushresult(&b);
  return 1;
}

static int m_len(lua_State *L) {
  SELF("#t");
  lua_pushnumber(L, t->ndim ? (lua_Number)t->shape[0] : 0);
  return 1;
}

static const luaL_Reg methods[] = {
    {"shape", m_shape},       {"stride", m_stride},     {"dim", m_dim},
    {"numel", m_numel},       {"dtype", m_dtype},       {"device", m_device},
    {"is_contiguous", m_is_contiguous}, {"shares_storage", m_shares_storage},
    {"to", m_to},             {"reshape", m_reshape},   {"narrow", m_narrow},
    {"transpose", m_transpose}, {"permute", m_permute}, {"expand", m_expand}, {"contiguous", m_contiguous},
    {"clone", m_clone},       {"copy", m_copy},         {"fill", m_fill},
    {"sum", m_sum},           {"max", m_max},           {"min", m_min},
    {"norm", m_norm},         {"get", m_get},           {"set", m_set},
    {"totable", m_totable},   {NULL, NULL}};

static void release(void *t) { ada_tensor_free(t); }
static void describe_obj(const void *t, char *buf, size_t n) { describe(t, buf, n); }

const lada_class lada_tensor_class = {LADA_TENSOR_MT, "tensor", release, describe_obj, tostring, 0};

int lada_open_tensor(lua_State *L) {
  lada_class_register(L, &lada_tensor_class, methods);
  lua_pushcfunction(L, m_len);
  lua_setfield(L, -2, "__len");
  lua_pop(L, 1);
  return 0;
}
