/* lcore.c: the adaspa.core module: tensor creation, device queries (adaspa.cuda through the
 * backend registry of backend.h: a build without CUDA has no such backend), timers, threads. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>
#include <time.h>

#include "../backend.h"
#include "../io/outdir.h"
#include "lbind.h"

#ifndef ADA_VERSION
#define ADA_VERSION "0.1.0"
#endif

typedef struct create_opts {
  ada_dtype dtype;
  ada_device device;
  uint64_t seed;
  int has_seed;
} create_opts;

static uint64_t default_seed_counter = 0;

/* Reads {dtype=, device=, seed=} at idx (may be nil). */
static create_opts read_opts(lua_State *L, int idx, const char *fname, int allow_seed) {
  static const char *const with_seed[] = {"dtype", "device", "seed", NULL};
  static const char *const without_seed[] = {"dtype", "device", NULL};
  lada_check_opts(L, idx, fname, allow_seed ? with_seed : without_seed);
  create_opts o = {ADA_F32, {ADA_CPU, 0}, 0, 0};
  if (lua_isnoneornil(L, idx)) return o;
  lua_getfield(L, idx, "dtype");
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING)
      lada_error(L, fname, "option dtype must be a string, got %s", lada_typename(L, -1));
    if (!ada_dtype_parse(lua_tostring(L, -1), &o.dtype))
      lada_error(L, fname, "unknown dtype '%s' (f32, bf16, f16, i32, i16, u8)", lua_tostring(L, -1));
  }
  lua_pop(L, 1);
  lua_getfield(L, idx, "device");
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING)
      lada_error(L, fname, "option device must be a string, got %s", lada_typename(L, -1));
    if (!ada_device_parse(lua_tostring(L, -1), &o.device))
      lada_error(L, fname, "unknown device '%s' (cpu, cuda, cuda:N)", lua_tostring(L, -1));
  }
  lua_pop(L, 1);
  if (allow_seed) {
    lua_getfield(L, idx, "seed");
    if (!lua_isnil(L, -1)) {
      double s = lua_tonumber(L, -1);
      if (lua_type(L, -1) != LUA_TNUMBER || s < 0 || s != floor(s) || s > 9007199254740992.0)
        lada_error(L, fname, "option seed must be a non-negative integer, got %s",
                   lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : lada_typename(L, -1));
      o.seed = (uint64_t)s;
      o.has_seed = 1;
    }
    lua_pop(L, 1);
  }
  return o;
}

static int l_empty(lua_State *L) {
  int64_t shape[ADA_MAX_DIMS];
  int32_t nd = lada_check_shape(L, 1, "adaspa.empty", "shape", shape);
  create_opts o = read_opts(L, 2, "adaspa.empty", 0);
  ada_tensor *t;
  lada_check(L, ada_tensor_empty(&t, nd, shape, o.dtype, o.device), "adaspa.empty");
  lada_push_tensor(L, t);
  return 1;
}

static int l_full(lua_State *L) {
  int64_t shape[ADA_MAX_DIMS];
  int32_t nd = lada_check_shape(L, 1, "adaspa.full", "shape", shape);
  if (lua_type(L, 2) != LUA_TNUMBER)
    return lada_error(L, "adaspa.full", "value must be a number, got %s", lada_typename(L, 2));
  create_opts o = read_opts(L, 3, "adaspa.full", 0);
  ada_tensor *t;
  lada_check(L, ada_tensor_full(&t, nd, shape, lua_tonumber(L, 2), o.dtype, o.device), "adaspa.full");
  lada_push_tensor(L, t);
  return 1;
}

/* adaspa.zeros / adaspa.ones: a tensor of shape (argument 1) filled with value */
static int push_constant(lua_State *L, const char *op, double value) {
  int64_t shape[ADA_MAX_DIMS];
  int32_t nd = lada_check_shape(L, 1, op, "shape", shape);
  create_opts o = read_opts(L, 2, op, 0);
  ada_tensor *t;
  lada_check(L, ada_tensor_full(&t, nd, shape, value, o.dtype, o.device), op);
  lada_push_tensor(L, t);
  return 1;
}

static int l_zeros(lua_State *L) { return push_constant(L, "adaspa.zeros", 0.0); }
static int l_ones(lua_State *L) { return push_constant(L, "adaspa.ones", 1.0); }

static int l_randn(lua_State *L) {
  int64_t shape[ADA_MAX_DIMS];
  int32_t nd = lada_check_shape(L, 1, "adaspa.randn", "shape", shape);
  create_opts o = read_opts(L, 2, "adaspa.randn", 1);
  /* without a seed: a fixed sequence of seeds, so a script gives the same numbers every run */
  uint64_t seed = o.has_seed ? o.seed : 0x5eed0000ull + default_seed_counter++;
  ada_tensor *t;
  lada_check(L, ada_tensor_randn(&t, nd, shape, seed, o.dtype, o.device), "adaspa.randn");
  lada_push_tensor(L, t);
  return 1;
}

/* adaspa.arange(n) | arange(start, stop [, step]) [, opts]: like Python's range, stop excluded. */
static int l_arange(lua_State *L) {
  int nnum = 0;
  double a[3];
  while (nnum < 3 && lua_type(L, nnum + 1) == LUA_TNUMBER) { a[nnum] = lua_tonumber(L, nnum + 1); nnum++; }
  if (nnum == 0) return lada_error(L, "adaspa.arange", "expected arange(n) or arange(start, stop [, step]), got %s", lada_typename(L, 1));
  double start = nnum == 1 ? 0 : a[0], stop = nnum == 1 ? a[0] : a[1], step = nnum == 3 ? a[2] : 1;
  if (step == 0 || step != step) return lada_error(L, "adaspa.arange", "step must be non-zero");
  double cnt = ceil((stop - start) / step);
  if (!(cnt >= 1)) return lada_error(L, "adaspa.arange", "empty range [%g, %g) with step %g", start, stop, step);
  if (cnt > 9.0e15) return lada_error(L, "adaspa.arange", "range too long");
  create_opts o = read_opts(L, nnum + 1, "adaspa.arange", 0);
  ada_tensor *t;
  lada_check(L, ada_tensor_arange(&t, start, step, (int64_t)cnt, o.dtype, o.device), "adaspa.arange");
  lada_push_tensor(L, t);
  return 1;
}

/* Shape of a nested table of numbers; errors on ragged input. */
static int32_t nested_shape(lua_State *L, int idx, int64_t *shape) {
  int32_t nd = 0;
  lua_pushvalue(L, idx);
  while (lua_type(L, -1) == LUA_TTABLE) {
    if (nd == ADA_MAX_DIMS) lada_error(L, "adaspa.tensor", "data nests deeper than %d levels", ADA_MAX_DIMS);
    int64_t n = (int64_t)lua_objlen(L, -1);
    if (n < 1) lada_error(L, "adaspa.tensor", "data has an empty table at depth %d", (int)nd + 1);
    shape[nd++] = n;
    lua_rawgeti(L, -1, 1);
    lua_remove(L, -2);
  }
  lua_pop(L, 1);
  return nd;
}

static void fill_nested(lua_State *L, int idx, const int64_t *shape, int32_t nd, int32_t d,
                        ada_tensor *t, int64_t *pos) {
  if (d == nd) {
    if (lua_type(L, idx) != LUA_TNUMBER && lua_type(L, idx) != LUA_TBOOLEAN)
      lada_error(L, "adaspa.tensor", "data must hold numbers, got %s at element %lld", lada_typename(L, idx), (long long)*pos + 1);
    double v = lua_type(L, idx) == LUA_TBOOLEAN ? lua_toboolean(L, idx) : lua_tonumber(L, idx);
    ada_store((char *)ada_tensor_data(t) + *pos * ada_dtype_size(t->dtype), t->dtype, v);
    (*pos)++;
    return;
  }
  if (lua_type(L, idx) != LUA_TTABLE || (int64_t)lua_objlen(L, idx) != shape[d])
    lada_error(L, "adaspa.tensor", "data is ragged: expected a table of %lld at depth %d, got %s",
               (long long)shape[d], (int)d + 1, lada_typename(L, idx));
  for (int64_t i = 0; i < shape[d]; i++) {
    lua_rawgeti(L, idx, (int)i + 1);
    fill_nested(L, lua_gettop(L), shape, nd, d + 1, t, pos);
    lua_pop(L, 1);
  }
}

static int l_tensor(lua_State *L) {
  if (lua_type(L, 1) != LUA_TTABLE && lua_type(L, 1) != LUA_TNUMBER)
    return lada_error(L, "adaspa.tensor", "data must be a (nested) table of numbers or a number, got %s", lada_typename(L, 1));
  create_opts o = read_opts(L, 2, "adaspa.tensor", 0);
  int64_t shape[ADA_MAX_DIMS];
  int32_t nd = nested_shape(L, 1, shape);
  ada_tensor *t;
  ada_device cpu = {ADA_CPU, 0};
  lada_check(L, ada_tensor_empty(&t, nd, shape, o.dtype, cpu), "adaspa.tensor");
  lada_push_tensor(L, t); /* owned by Lua from here, so an error below leaks nothing */
  int64_t pos = 0;
  fill_nested(L, 1, shape, nd, 0, t, &pos);
  if (o.device.type != ADA_CPU) {
    ada_tensor *g;
    lada_check(L, ada_tensor_to(&g, t, o.dtype, o.device), "adaspa.tensor");
    lada_push_tensor(L, g);
  }
  return 1;
}

ada_tensor *lada_push_out(lua_State *L, int opts_idx, const char *fname, const ada_tensor *like,
                          int32_t ndim, const int64_t *shape) {
  if (lua_istable(L, opts_idx) && !lada_test_tensor(L, opts_idx)) {
    lua_getfield(L, opts_idx, "out");
    if (!lua_isnil(L, -1)) {
      ada_tensor *o = lada_check_tensor(L, lua_gettop(L), fname, "option out");
      if (o->ndim != ndim || memcmp(o->shape, shape, sizeof(int64_t) * (size_t)ndim)) {
        char a[96], b[96];
        ada_shape_format(o->ndim, o->shape, a, sizeof a);
        ada_shape_format(ndim, shape, b, sizeof b);
        lada_error(L, fname, "option out has shape %s, expected %s", a, b);
      }
      return o;
    }
    lua_pop(L, 1);
  }
  ada_tensor *t;
  lada_check(L, ada_tensor_empty(&t, ndim, shape, like->dtype, like->storage->device), fname);
  lada_push_tensor(L, t);
  return t;
}

static int l_is_tensor(lua_State *L) {
  lua_pushboolean(L, lada_test_tensor(L, 1) != NULL);
  return 1;
}

static int l_threads(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) {
    double n = lua_tonumber(L, 1);
    if (lua_type(L, 1) != LUA_TNUMBER || n != floor(n) || n < 0 || n > 4096)
      return lada_error(L, "adaspa.threads", "n must be a non-negative integer (0 restores the default), got %s",
                        lua_type(L, 1) == LUA_TNUMBER ? lua_tostring(L, 1) : lada_typename(L, 1));
    ada_set_num_threads((int32_t)n);
  }
  lua_pushinteger(L, ada_get_num_threads());
  return 1;
}

/* Wall-clock seconds from a monotonic clock (for timings; os.clock counts CPU time of all threads). */
static int l_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
  return 1;
}

/* adaspa.mkdir(path): creates the folder and its parents (like mkdir -p); true, or an error
 * naming the path. */
static int l_mkdir(lua_State *L) {
  size_t n;
  const char *p = luaL_checklstring(L, 1, &n);
  if (n == 0 || n >= 4096) return lada_error(L, "adaspa.mkdir", "path must be 1 to 4095 characters");
  if (ada_confine_active()) { /* while a recipe runs: only inside its output folder (io/outdir.h) */
    if (strlen(p) != n) return lada_error(L, "adaspa.mkdir", "path holds a NUL byte");
    lada_check(L, ada_confine_mkdir(p, "mkdir"), "adaspa.mkdir");
    lua_pushboolean(L, 1);
    return 1;
  }
  char buf[4096];
  memcpy(buf, p, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] != '/' && buf[i] != '\0') continue;
    char c = buf[i];
    buf[i] = '\0';
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
      return lada_error(L, "adaspa.mkdir", "cannot create %s: %s", buf, strerror(errno));
    buf[i] = c;
  }
  struct stat st;
  if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) return lada_error(L, "adaspa.mkdir", "%s exists and is not a folder", p);
  lua_pushboolean(L, 1);
  return 1;
}

/* The registered backends' names, the CPU first. */
static int l_backends(lua_State *L) {
  lua_newtable(L);
  int n = 0;
  for (int32_t i = 0; i < ada_backend_count(); i++)
    if (ada_backend_at(i)->type == ADA_CPU) {
      lua_pushstring(L, ada_backend_at(i)->name);
      lua_rawseti(L, -2, ++n);
    }
  for (int32_t i = 0; i < ada_backend_count(); i++)
    if (ada_backend_at(i)->type != ADA_CPU) {
      lua_pushstring(L, ada_backend_at(i)->name);
      lua_rawseti(L, -2, ++n);
    }
  return 1;
}

/* ---- adaspa.cuda ---------------------------------------------------------------------------- */

/* The CUDA backend, or NULL in a build without it. */
static const ada_backend *cuda(void) { return ada_backend_find(ADA_CUDA); }

static int l_cuda_available(lua_State *L) {
  lua_pushboolean(L, cuda() && cuda()->device_count() > 0);
  return 1;
}

static int l_cuda_built(lua_State *L) {
  lua_pushboolean(L, cuda() != NULL);
  return 1;
}

static int l_cuda_reason(lua_State *L) {
  lua_pushstring(L, ada_backend_unavailable_reason(ADA_CUDA));
  return 1;
}

/* The CUDA backend for fname, or an error saying that this build has none. */
static const ada_backend *check_cuda(lua_State *L, const char *fname) {
  if (!cuda()) lada_error(L, fname, "%s", ada_backend_unavailable_reason(ADA_CUDA));
  return cuda();
}

static void setnum(lua_State *L, const char *k, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

static int l_cuda_devices(lua_State *L) {
  int32_t n = cuda() ? cuda()->device_count() : 0;
  lua_createtable(L, n, 0);
  for (int32_t i = 0; i < n; i++) {
    ada_device_info info;
    lada_check(L, cuda()->device_info(i, &info), "adaspa.cuda.devices");
    lua_newtable(L);
    setnum(L, "index", info.index);
    lua_pushstring(L, info.name);
    lua_setfield(L, -2, "name");
    setnum(L, "memory", (double)info.total_bytes);
    setnum(L, "free", (double)info.free_bytes);
    char cc[16];
    snprintf(cc, sizeof cc, "%d.%d", (int)info.cc_major, (int)info.cc_minor);
    lua_pushstring(L, cc);
    lua_setfield(L, -2, "capability");
    setnum(L, "sms", info.sm_count);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int32_t opt_device_index(lua_State *L, int idx, const char *fname) {
  if (lua_isnoneornil(L, idx)) return 0;
  if (lua_type(L, idx) == LUA_TNUMBER) return (int32_t)lua_tointeger(L, idx);
  ada_device d;
  if (lua_type(L, idx) == LUA_TSTRING && ada_device_parse(lua_tostring(L, idx), &d) && d.type == ADA_CUDA)
    return d.index;
  lada_error(L, fname, "device must be a GPU index or \"cuda:N\", got %s", lada_typename(L, idx));
  return 0;
}

static int l_cuda_memory(lua_State *L) {
  int32_t dev = opt_device_index(L, 1, "adaspa.cuda.memory");
  ada_mem_stats st;
  lada_check(L, check_cuda(L, "adaspa.cuda.memory")->memory(dev, &st), "adaspa.cuda.memory");
  lua_newtable(L);
  setnum(L, "allocated", (double)st.allocated);
  setnum(L, "cached", (double)st.cached);
  setnum(L, "peak", (double)st.peak);
  setnum(L, "reserved", (double)st.reserved);
  setnum(L, "mallocs", (double)st.n_malloc);
  setnum(L, "reuses", (double)st.n_reuse);
  return 1;
}

static int l_cuda_synchronize(lua_State *L) {
  int32_t dev = opt_device_index(L, 1, "adaspa.cuda.synchronize");
  lada_check(L, check_cuda(L, "adaspa.cuda.synchronize")->synchronize(dev), "adaspa.cuda.synchronize");
  return 0;
}

static int l_cuda_empty_cache(lua_State *L) {
  int32_t dev = opt_device_index(L, 1, "adaspa.cuda.empty_cache");
  lada_check(L, check_cuda(L, "adaspa.cuda.empty_cache")->empty_cache(dev), "adaspa.cuda.empty_cache");
  return 0;
}

static int l_cuda_reset_peak(lua_State *L) {
  const int32_t dev = opt_device_index(L, 1, "adaspa.cuda.reset_peak");
  if (cuda()) cuda()->reset_peak(dev);
  return 0;
}

/* Out of GPU memory: collect Lua garbage (dropping unreachable tensors), then the allocator
 * retries. */
static void oom_hook(void *ud) {
  lua_State *L = ud;
  lua_gc(L, LUA_GCCOLLECT, 0);
}

static const luaL_Reg core_funcs[] = {
    {"empty", l_empty},   {"zeros", l_zeros},         {"ones", l_ones},
    {"full", l_full},     {"randn", l_randn},         {"arange", l_arange},
    {"tensor", l_tensor}, {"is_tensor", l_is_tensor}, {"threads", l_threads},
    {"backends", l_backends}, {"now", l_now}, {"mkdir", l_mkdir}, {NULL, NULL}};

static const luaL_Reg cuda_funcs[] = {
    {"available", l_cuda_available}, {"built", l_cuda_built},
    {"reason", l_cuda_reason},       {"devices", l_cuda_devices},
    {"memory", l_cuda_memory},       {"synchronize", l_cuda_synchronize},
    {"empty_cache", l_cuda_empty_cache}, {"reset_peak", l_cuda_reset_peak},
    {NULL, NULL}};

int luaopen_adaspa_core(lua_State *L) {
  lada_open_tensor(L);
  lua_newtable(L);
  luaL_setfuncs(L, core_funcs, 0);
  lua_pushstring(L, ADA_VERSION);
  lua_setfield(L, -2, "version");
  lua_newtable(L);
  luaL_setfuncs(L, cuda_funcs, 0);
  lua_setfield(L, -2, "cuda");
  luaL_getmetatable(L, LADA_TENSOR_MT);
  lua_setfield(L, -2, "Tensor");
  lada_open_nn(L);
  lada_open_attention(L);
  lada_open_layout(L);
  lada_open_io(L);
  lada_open_cache(L);
  lada_open_comm(L);
  lada_open_timer(L);
  lua_State *main_L = L;
  lua_pushthread(L);
  main_L = lua_tothread(L, -1);
  lua_pop(L, 1);
  for (int32_t i = 0; i < ada_backend_count(); i++)
    if (ada_backend_at(i)->set_oom_hook) ada_backend_at(i)->set_oom_hook(oom_hook, main_L);
  return 1;
}
