/* lcomm.c: the communicator (comm.h) in Lua:
 *   adaspa.comm.world()                     this process's communicator (from the environment, made
 *                                            once; world size 1 without one)
 *   adaspa.comm.create(path, size, slot_bytes)  a communicator file (what `adaspa launch` does)
 *   adaspa.comm.open(rank, size, path [, timeout_s])
 *                                            (create and open are refused while a recipe runs)
 *   adaspa.comm.device_built()              "nccl" when this build has the NCCL transport, else nil
 *   c:rank() c:size() c:local_rank() c:transport() c:max_bytes() c:barrier() c:abort()
 *   c:all_gather(x)                  -> [size, ...x's shape] (every rank's x, equal shapes)
 *   c:all_reduce(x [, "sum"|"max"])  -> an f32 tensor of x's shape, or a list of numbers (f64)
 *   c:all_to_all(x, send_rows, recv_rows) -> rows of x's dim 0 grouped by destination rank
 *   c:seq_to_heads(x, tokens, heads) x [tokens[me], H, D] -> [S, #heads[me], D]
 *   c:heads_to_seq(y, tokens, heads) y [S, #heads[me], D] -> [tokens[me], H, D]
 *     tokens: a list of each rank's token count; heads: per rank a list of 1-based head indices.
 *   c:move_layout(layout, old, new) -> layout of new[me]'s heads, bytes this rank sent
 *     old, new: per rank lists of 1-based heads (comm.h: ada_comm_move_layout); layout: old[me]'s.
 *   c:device_transport() -> "nccl" or nil;  c:gpu() -> the device transport's GPU index or nil
 * A tensor on the GPU of a communicator with a device transport (ADASPA_COMM_DEVICE=nccl) stays
 * there: the collective runs on device memory and the result is a tensor of that GPU. Otherwise
 * tensors go through host memory (the host transport) and a result comes back on x's device. */
#include <stdlib.h>
#include <string.h>

#include "../comm.h"
#include "../io/outdir.h"
#include "../layout.h"
#include "lbind.h"

#define LADA_COMM_MT "adaspa.Comm"

static void release(void *c) { ada_comm_free(c); }
static void describe(const void *c, char *buf, size_t n) {
  snprintf(buf, n, "rank %d of %d (%s)", ada_comm_rank(c), ada_comm_size(c), ada_comm_transport(c));
}
static const lada_class comm_class = {LADA_COMM_MT, "communicator", release, describe, NULL, 1};

#define SELF(fname) ada_comm *c = lada_object_check(L, 1, &comm_class, fname, "self")

static int l_world(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, "adaspa.comm.world");
  if (!lua_isnil(L, -1)) return 1;
  lua_pop(L, 1);
  lada_object *u = lada_object_new(L, &comm_class, NULL);
  ada_comm *c = NULL;
  lada_check(L, ada_comm_init_env(&c), "adaspa.comm.world");
  u->obj = c;
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, "adaspa.comm.world");
  return 1;
}

/* A communicator file is created or opened at any path: never while a recipe runs (io/outdir.h). */
static void not_confined(lua_State *L, const char *fname) {
  if (ada_confine_active())
    lada_error(L, fname, "not available while a recipe runs (a communicator file lies outside the run's output folder)");
}

static int l_create(lua_State *L) {
  not_confined(L, "adaspa.comm.create");
  const char *path = luaL_checkstring(L, 1);
  lua_Integer world = luaL_checkinteger(L, 2), slot = luaL_checkinteger(L, 3);
  if (slot <= 0) return lada_error(L, "adaspa.comm.create", "slot_bytes must be > 0, got %lld", (long long)slot);
  lada_check(L, ada_comm_shm_create(path, (int32_t)world, (size_t)slot), "adaspa.comm.create");
  return 0;
}

static int l_open(lua_State *L) {
  not_confined(L, "adaspa.comm.open");
  lua_Integer rank = luaL_checkinteger(L, 1), world = luaL_checkinteger(L, 2);
  const char *path = luaL_optstring(L, 3, NULL);
  double timeout = luaL_optnumber(L, 4, 600);
  lada_object *u = lada_object_new(L, &comm_class, NULL);
  ada_comm *c = NULL;
  lada_check(L, ada_comm_init(&c, (int32_t)rank, (int32_t)world, (int32_t)rank, path, timeout), "adaspa.comm.open");
  u->obj = c;
  return 1;
}

static int l_device_built(lua_State *L) {
  const char *t = ada_comm_dev_built();
  if (t) lua_pushstring(L, t);
  else lua_pushnil(L);
  return 1;
}

static int m_rank(lua_State *L) { SELF("comm:rank"); lua_pushinteger(L, ada_comm_rank(c)); return 1; }
static int m_size(lua_State *L) { SELF("comm:size"); lua_pushinteger(L, ada_comm_size(c)); return 1; }
static int m_local(lua_State *L) { SELF("comm:local_rank"); lua_pushinteger(L, ada_comm_local_rank(c)); return 1; }
static int m_transport(lua_State *L) { SELF("comm:transport"); lua_pushstring(L, ada_comm_transport(c)); return 1; }
static int m_max_bytes(lua_State *L) { SELF("comm:max_bytes"); lua_pushnumber(L, (double)ada_comm_max_bytes(c)); return 1; }
static int m_barrier(lua_State *L) { SELF("comm:barrier"); lada_check(L, ada_comm_barrier(c), "comm:barrier"); return 0; }
static int m_abort(lua_State *L) { SELF("comm:abort"); ada_comm_abort(c); return 0; }

/* A contiguous host copy of the tensor at idx (or the tensor itself, not to be freed: *own 0). */
static ada_tensor *host(lua_State *L, int idx, const char *fname, const char *arg, int *own) {
  ada_tensor *x = lada_check_tensor(L, idx, fname, arg);
  if (x->storage->device.type == ADA_CPU && ada_tensor_is_contiguous(x)) {
    *own = 0;
    return x;
  }
  ada_tensor *h = NULL, *hc = NULL;
  ada_device cpu = {ADA_CPU, 0};
  lada_check(L, ada_tensor_to(&h, x, x->dtype, cpu), fname);
  ada_status s = ada_tensor_contiguous(&hc, h);
  ada_tensor_free(h);
  lada_check(L, s, fname);
  *own = 1;
  return hc;
}

/* Whether the tensor x goes by the device transport: one is open and x is on its GPU. */
static int by_device(ada_comm *c, const ada_tensor *x) {
  return ada_comm_dev_transport(c) && x->storage->device.type == ADA_CUDA && x->storage->device.index == ada_comm_gpu(c);
}

/* The tensor at idx ready for a collective: contiguous, on the communicator's GPU when the device
 * transport takes it (*dev 1), else in host memory; *own: a copy to free. */
static ada_tensor *stage(lua_State *L, ada_comm *c, int idx, const char *fname, const char *arg, int *own, int *dev) {
  ada_tensor *x = lada_check_tensor(L, idx, fname, arg);
  *dev = by_device(c, x);
  if (!*dev) return host(L, idx, fname, arg, own);
  if (ada_tensor_is_contiguous(x)) {
    *own = 0;
    return x;
  }
  ada_tensor *xc = NULL;
  lada_check(L, ada_tensor_contiguous(&xc, x), fname);
  *own = 1;
  return xc;
}

/* Pushes out, moved to dev (takes out). */
static void push_on(lua_State *L, ada_tensor *out, ada_device dev, const char *fname) {
  if (dev.type != ADA_CPU) {
    ada_tensor *d = NULL;
    ada_status s = ada_tensor_to(&d, out, out->dtype, dev);
    ada_tensor_free(out);
    lada_check(L, s, fname);
    out = d;
  }
  lada_push_tensor(L, out);
}

static int m_all_gather(lua_State *L) {
  const char *fname = "comm:all_gather";
  SELF(fname);
  int own, bydev;
  ada_tensor *x = stage(L, c, 2, fname, "x", &own, &bydev);
  ada_device dev = lada_check_tensor(L, 2, fname, "x")->storage->device;
  int64_t shape[ADA_MAX_DIMS];
  if (x->ndim >= ADA_MAX_DIMS) {
    if (own) ada_tensor_free(x);
    return lada_error(L, fname, "x has %d dimensions (at most %d)", x->ndim, ADA_MAX_DIMS - 1);
  }
  shape[0] = ada_comm_size(c);
  memcpy(shape + 1, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  ada_tensor *out = NULL;
  ada_status s = ada_tensor_empty(&out, x->ndim + 1, shape, x->dtype, bydev ? dev : (ada_device){ADA_CPU, 0});
  size_t n = (size_t)ada_tensor_numel(x) * (size_t)ada_dtype_size(x->dtype);
  if (s == ADA_OK)
    s = bydev ? ada_comm_dev_all_gather(c, ada_tensor_data(x), n, ada_tensor_data(out))
              : ada_comm_all_gather(c, ada_tensor_data(x), n, ada_tensor_data(out));
  if (own) ada_tensor_free(x);
  if (s != ADA_OK) ada_tensor_free(out);
  lada_check(L, s, fname);
  push_on(L, out, bydev ? (ada_device){ADA_CPU, 0} : dev, fname);
  return 1;
}

static int m_all_reduce(lua_State *L) {
  const char *fname = "comm:all_reduce";
  SELF(fname);
  const char *ops = luaL_optstring(L, 3, "sum");
  ada_comm_op op;
  if (!strcmp(ops, "sum")) op = ADA_COMM_SUM;
  else if (!strcmp(ops, "max")) op = ADA_COMM_MAX;
  else return lada_error(L, fname, "op must be \"sum\" or \"max\", got \"%s\"", ops);
  if (lua_istable(L, 2)) {
    int64_t n = (int64_t)lua_objlen(L, 2);
    double *buf = malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!buf) return lada_error(L, fname, "out of memory");
    for (int64_t i = 0; i < n; i++) {
      lua_rawgeti(L, 2, (int)(i + 1));
      buf[i] = lua_tonumber(L, -1);
      int ok = lua_isnumber(L, -1);
      lua_pop(L, 1);
      if (!ok) {
        free(buf);
        return lada_error(L, fname, "list entry %lld is not a number", (long long)(i + 1));
      }
    }
    ada_status s = ada_comm_all_reduce(c, buf, n, ADA_COMM_F64, op);
    if (s != ADA_OK) free(buf);
    lada_check(L, s, fname);
    lua_createtable(L, (int)n, 0);
    for (int64_t i = 0; i < n; i++) {
      lua_pushnumber(L, buf[i]);
      lua_rawseti(L, -2, (int)(i + 1));
    }
    free(buf);
    return 1;
  }
  ada_tensor *x0 = lada_check_tensor(L, 2, fname, "x");
  if (x0->dtype != ADA_F32) return lada_error(L, fname, "x must be f32 (or a list of numbers), got %s", ada_dtype_name(x0->dtype));
  int own, bydev;
  ada_tensor *x = stage(L, c, 2, fname, "x", &own, &bydev);
  ada_tensor *out = NULL;
  ada_status s;
  if (bydev) {
    s = own ? (out = x, own = 0, ADA_OK) : ada_tensor_contiguous(&out, x); /* a copy to reduce in place */
    if (s == ADA_OK) s = ada_comm_dev_all_reduce(c, ada_tensor_data(out), ada_tensor_numel(x0), ADA_COMM_F32, op);
  } else {
    s = ada_tensor_empty(&out, x->ndim, x->shape, ADA_F32, (ada_device){ADA_CPU, 0});
    if (s == ADA_OK) {
      memcpy(ada_tensor_data(out), ada_tensor_data(x), sizeof(float) * (size_t)ada_tensor_numel(x));
      s = ada_comm_all_reduce(c, ada_tensor_data(out), ada_tensor_numel(x), ADA_COMM_F32, op);
    }
  }
  if (own) ada_tensor_free(x);
  if (s != ADA_OK) ada_tensor_free(out);
  lada_check(L, s, fname);
  push_on(L, out, bydev ? (ada_device){ADA_CPU, 0} : x0->storage->device, fname);
  return 1;
}

/* A list of world integers at idx (each >= 0) into v. */
static void int_list(lua_State *L, int idx, int32_t world, int64_t *v, const char *fname, const char *arg) {
  if (!lua_istable(L, idx) || (int32_t)lua_objlen(L, idx) != world)
    lada_error(L, fname, "%s must be a list of %d counts (one per rank), got %s", arg, world, lada_typename(L, idx));
  for (int32_t r = 0; r < world; r++) {
    lua_rawgeti(L, idx, r + 1);
    lua_Integer n = lua_tointeger(L, -1);
    int ok = lua_isnumber(L, -1) && n >= 0 && (lua_Number)n == lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!ok) lada_error(L, fname, "%s[%d] must be an integer >= 0", arg, r + 1);
    v[r] = n;
  }
}

static int m_all_to_all(lua_State *L) {
  const char *fname = "comm:all_to_all";
  SELF(fname);
  int32_t W = ada_comm_size(c);
  int64_t sr[64], rr[64];
  ada_tensor *x0 = lada_check_tensor(L, 2, fname, "x");
  int_list(L, 3, W, sr, fname, "send_rows");
  int_list(L, 4, W, rr, fname, "recv_rows");
  int64_t ssum = 0, rsum = 0;
  for (int32_t r = 0; r < W; r++) ssum += sr[r], rsum += rr[r];
  if (ssum != x0->shape[0]) return lada_error(L, fname, "send_rows sum to %lld, x has %lld rows", (long long)ssum, (long long)x0->shape[0]);
  if (rsum < 1) return lada_error(L, fname, "recv_rows sum to 0 (no empty tensors)");
  int own, bydev;
  ada_tensor *x = stage(L, c, 2, fname, "x", &own, &bydev);
  size_t rowb = (size_t)(ada_tensor_numel(x) / x->shape[0]) * (size_t)ada_dtype_size(x->dtype);
  size_t sc[64], sd[64], rc[64], rd[64], so = 0, ro = 0;
  for (int32_t r = 0; r < W; r++) {
    sc[r] = (size_t)sr[r] * rowb, sd[r] = so, so += sc[r];
    rc[r] = (size_t)rr[r] * rowb, rd[r] = ro, ro += rc[r];
  }
  int64_t shape[ADA_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  shape[0] = rsum;
  ada_tensor *out = NULL;
  ada_status s = ada_tensor_empty(&out, x->ndim, shape, x->dtype, bydev ? x0->storage->device : (ada_device){ADA_CPU, 0});
  if (s == ADA_OK)
    s = bydev ? ada_comm_dev_all_to_all(c, ada_tensor_data(x), sc, sd, ada_tensor_data(out), rc, rd)
              : ada_comm_all_to_all(c, ada_tensor_data(x), sc, sd, ada_tensor_data(out), rc, rd);
  if (own) ada_tensor_free(x);
  if (s != ADA_OK) ada_tensor_free(out);
  lada_check(L, s, fname);
  push_on(L, out, bydev ? (ada_device){ADA_CPU, 0} : x0->storage->device, fname);
  return 1;
}

/* Per rank lists of 1-based heads at idx -> n[r] and the 0-based heads of all ranks in a userdata
 * left on the stack. */
static int32_t *head_lists(lua_State *L, int idx, int32_t W, int32_t *n, const char *fname, const char *arg) {
  if (!lua_istable(L, idx) || (int32_t)lua_objlen(L, idx) != W)
    lada_error(L, fname, "%s must be a list of %d head lists (one per rank)", arg, W);
  int32_t total = 0;
  for (int32_t r = 0; r < W; r++) {
    lua_rawgeti(L, idx, r + 1);
    if (!lua_istable(L, -1)) lada_error(L, fname, "%s[%d] must be a list of head indices", arg, r + 1);
    n[r] = (int32_t)lua_objlen(L, -1);
    total += n[r];
    lua_pop(L, 1);
  }
  int32_t *hv = lua_newuserdata(L, sizeof(int32_t) * (size_t)(total ? total : 1));
  int32_t k = 0;
  for (int32_t r = 0; r < W; r++) {
    lua_rawgeti(L, idx, r + 1);
    for (int32_t j = 0; j < n[r]; j++) {
      lua_rawgeti(L, -1, j + 1);
      if (!lua_isnumber(L, -1)) lada_error(L, fname, "%s[%d][%d] must be a head number", arg, r + 1, j + 1);
      hv[k++] = (int32_t)lua_tointeger(L, -1) - 1;
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  return hv;
}

static int m_move_layout(lua_State *L) {
  const char *fname = "comm:move_layout";
  SELF(fname);
  int32_t W = ada_comm_size(c), n_old[64], n_new[64];
  ada_layout *l = lada_check_layout(L, 2, fname, "layout");
  int32_t *old = head_lists(L, 3, W, n_old, fname, "old");
  int32_t *nw = head_lists(L, 4, W, n_new, fname, "new");
  int32_t H = 0;
  for (int32_t r = 0; r < W; r++) H += n_old[r];
  ada_layout *out = NULL;
  uint64_t sent = 0;
  lada_check(L, ada_comm_move_layout(c, l, n_old, old, n_new, nw, H, &out, &sent), fname);
  lada_push_layout(L, out);
  lua_pushnumber(L, (lua_Number)sent);
  return 2;
}

static int exchange(lua_State *L, int to_heads) {
  const char *fname = to_heads ? "comm:seq_to_heads" : "comm:heads_to_seq";
  SELF(fname);
  int32_t W = ada_comm_size(c), me = ada_comm_rank(c), nheads[64];
  int64_t tokens[64];
  ada_tensor *x0 = lada_check_tensor(L, 2, fname, "x");
  int_list(L, 3, W, tokens, fname, "tokens");
  int32_t *heads = head_lists(L, 4, W, nheads, fname, "heads"), H = 0;
  for (int32_t r = 0; r < W; r++) H += nheads[r];
  int64_t S = 0;
  for (int32_t r = 0; r < W; r++) S += tokens[r];
  char sh[64];
  ada_shape_format(x0->ndim, x0->shape, sh, sizeof sh);
  int bad = x0->ndim != 3 || (to_heads ? (x0->shape[0] != tokens[me] || x0->shape[1] != H)
                                       : (x0->shape[0] != S || x0->shape[1] != nheads[me]));
  if (bad || (to_heads ? nheads[me] : tokens[me]) < 1)
    return lada_error(L, fname, "x is %s; rank %d expects [%lld, %d, D] (tokens %lld of %lld, heads %d of %d)", sh, me,
                      (long long)(to_heads ? tokens[me] : S), to_heads ? H : nheads[me], (long long)tokens[me],
                      (long long)S, nheads[me], H);
  int own, bydev;
  ada_tensor *x = stage(L, c, 2, fname, "x", &own, &bydev);
  int64_t D = x->shape[2];
  int64_t shape[3] = {to_heads ? S : tokens[me], to_heads ? nheads[me] : H, D};
  ada_tensor *out = NULL;
  size_t row = (size_t)D * (size_t)ada_dtype_size(x->dtype);
  ada_status s = ada_tensor_empty(&out, 3, shape, x->dtype, bydev ? x0->storage->device : (ada_device){ADA_CPU, 0});
  if (s == ADA_OK) {
    void *in = ada_tensor_data(x), *o = ada_tensor_data(out);
    if (bydev)
      s = to_heads ? ada_comm_dev_seq_to_heads(c, in, o, tokens, nheads, heads, H, row)
                   : ada_comm_dev_heads_to_seq(c, in, o, tokens, nheads, heads, H, row);
    else
      s = to_heads ? ada_comm_seq_to_heads(c, in, o, tokens, nheads, heads, H, row)
                   : ada_comm_heads_to_seq(c, in, o, tokens, nheads, heads, H, row);
  }
  if (own) ada_tensor_free(x);
  if (s != ADA_OK) ada_tensor_free(out);
  lada_check(L, s, fname);
  push_on(L, out, bydev ? (ada_device){ADA_CPU, 0} : x0->storage->device, fname);
  return 1;
}

static int m_device_transport(lua_State *L) {
  SELF("comm:device_transport");
  const char *t = ada_comm_dev_transport(c);
  if (t) lua_pushstring(L, t);
  else lua_pushnil(L);
  return 1;
}

static int m_gpu(lua_State *L) {
  SELF("comm:gpu");
  if (ada_comm_gpu(c) >= 0) lua_pushinteger(L, ada_comm_gpu(c));
  else lua_pushnil(L);
  return 1;
}

static int m_seq_to_heads(lua_State *L) { return exchange(L, 1); }
static int m_heads_to_seq(lua_State *L) { return exchange(L, 0); }

void lada_open_comm(lua_State *L) {
  static const luaL_Reg methods[] = {{"rank", m_rank},           {"size", m_size},
                                     {"local_rank", m_local},    {"transport", m_transport},
                                     {"max_bytes", m_max_bytes}, {"barrier", m_barrier},
                                     {"abort", m_abort},         {"all_gather", m_all_gather},
                                     {"all_reduce", m_all_reduce}, {"all_to_all", m_all_to_all},
                                     {"seq_to_heads", m_seq_to_heads}, {"heads_to_seq", m_heads_to_seq},
                                     {"move_layout", m_move_layout}, {"device_transport", m_device_transport},
                                     {"gpu", m_gpu},
                                     {NULL, NULL}};
  lada_class_register(L, &comm_class, methods);
  lua_pop(L, 1);
  static const luaL_Reg funcs[] = {{"world", l_world}, {"create", l_create}, {"open", l_open}, {"device_built", l_device_built}, {NULL, NULL}};
  lua_newtable(L);
  luaL_setfuncs(L, funcs, 0);
  lua_setfield(L, -2, "comm");
}
