/* lcache.c: Lua bindings of the AdaSpa cache (runtime/adaspa/cache.h): the adaspa.Cache table
 * and the cache userdata.
 *   adaspa.Cache.new(n_layers) -> cache          adaspa.Cache.load(path) -> cache
 *   cache:set(layer, {layout=, lse=, step=, recall=})   any subset; step (>= 0) is required with
 *       layout or lse and becomes the step of both; recall = {per head} belongs to the layout
 *       (a new layout without recall drops the old recall)
 *   cache:layout(layer) -> Layout | nil   (the cached layout itself, shared by reference)
 *   cache:lse(layer) -> tensor | nil      (a view of the cached lse)
 *   cache:step(layer) cache:lse_step(layer) -> integer | nil
 *   cache:density(layer) cache:recall(layer) -> {per head} | nil
 *   cache:clear(layer) cache:layers() cache:stats() cache:save(path) cache:free() tostring(cache)
 * Layers are numbered 1..n_layers here (0-based in C). The lse is kept as a view, not a copy: the
 * caller must not write to a tensor after giving it to the cache (the write would show through).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../adaspa/cache.h"
#include "../layout.h"
#include "lbind.h"

#define LADA_CACHE_MT "adaspa.Cache"

static int tostring(lua_State *L, const void *obj, uint32_t id);
static void release(void *c) { ada_cache_free(c); }
static void describe(const void *c, char *buf, size_t n) { snprintf(buf, n, "%d layers", (int)ada_cache_layers(c)); }

static const lada_class cache_class = {LADA_CACHE_MT, "cache", release, describe, tostring, 1};

static lada_object *push_new(lua_State *L) { return lada_object_new(L, &cache_class, NULL); }

/* Raises the runtime's error under fname, without the runtime's "ada_cache_xxx: " prefix. */
static void check(lua_State *L, ada_status s, const char *fname) {
  if (s == ADA_OK) return;
  const char *msg = ada_last_error();
  const char *colon = strstr(msg, ": ");
  if (strncmp(msg, "ada_cache_", 10) == 0 && colon) msg = colon + 2;
  luaL_error(L, "%s: %s", fname, msg);
}

static ada_cache *check_cache(lua_State *L, int idx, const char *fname) {
  return lada_object_check(L, idx, &cache_class, fname, "self");
}

static const char *value_str(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TNUMBER ? lua_tostring(L, idx) : lada_typename(L, idx);
}

/* The 1-based layer at idx as a 0-based index. */
static int32_t check_layer(lua_State *L, int idx, const char *fname, const ada_cache *c) {
  double x = lua_tonumber(L, idx);
  int32_t n = ada_cache_layers(c);
  if (lua_type(L, idx) != LUA_TNUMBER || x != floor(x) || x < 1 || x > n)
    lada_error(L, fname, "layer must be an integer in [1, %d], got %s", (int)n, value_str(L, idx));
  return (int32_t)x - 1;
}

static void push_doubles(lua_State *L, const double *v, int32_t n) {
  lua_createtable(L, n, 0);
  for (int32_t i = 0; i < n; i++) {
    lua_pushnumber(L, v[i]);
    lua_rawseti(L, -2, i + 1);
  }
}

/* ---- constructors ------------------------------------------------------------------------ */

static int l_new(lua_State *L) {
  const char *fname = "adaspa.Cache.new";
  double x = lua_tonumber(L, 1);
  if (lua_type(L, 1) != LUA_TNUMBER || x != floor(x) || x < 1 || x > 1000000)
    return lada_error(L, fname, "n_layers must be an integer in [1, 1000000], got %s", value_str(L, 1));
  lada_object *u = push_new(L);
  ada_cache *c = NULL;
  check(L, ada_cache_new(&c, (int32_t)x), fname);
  u->obj = c;
  return 1;
}

static int l_load(lua_State *L) {
  const char *fname = "adaspa.Cache.load";
  if (lua_type(L, 1) != LUA_TSTRING) return lada_error(L, fname, "path must be a string, got %s", lada_typename(L, 1));
  lada_object *u = push_new(L);
  ada_cache *c = NULL;
  check(L, ada_cache_load(&c, lua_tostring(L, 1)), fname);
  u->obj = c;
  return 1;
}

/* ---- methods ------------------------------------------------------------------------------- */

static int m_set(lua_State *L) {
  const char *fname = "cache:set";
  static const char *const keys[] = {"layout", "lse", "step", "recall", NULL};
  ada_cache *c = check_cache(L, 1, fname);
  int32_t layer = check_layer(L, 2, fname, c);
  if (!lua_istable(L, 3) || lada_test_tensor(L, 3))
    return lada_error(L, fname, "fields must be a table {layout=, lse=, step=, recall=}, got %s", lada_typename(L, 3));
  lada_check_opts(L, 3, fname, keys);
  lua_getfield(L, 3, "layout");
  lua_getfield(L, 3, "lse");
  lua_getfield(L, 3, "step");
  lua_getfield(L, 3, "recall"); /* layout 4, lse 5, step 6, recall 7 */
  ada_layout *layout = lua_isnil(L, 4) ? NULL : lada_check_layout(L, 4, fname, "fields.layout");
  ada_tensor *lse = lua_isnil(L, 5) ? NULL : lada_check_tensor(L, 5, fname, "fields.lse");
  if (!layout && !lse && lua_isnil(L, 7))
    return lada_error(L, fname, "fields must give at least one of layout, lse and recall");
  int64_t step = -1;
  if (layout || lse) {
    double s = lua_tonumber(L, 6);
    if (lua_type(L, 6) != LUA_TNUMBER || s != floor(s) || s < 0 || s > 9.0e15)
      return lada_error(L, fname, "fields.step must be an integer >= 0 (the step of the layout and lse), got %s",
                        lua_isnil(L, 6) ? "nothing" : value_str(L, 6));
    step = (int64_t)s;
  } else if (!lua_isnil(L, 6)) {
    return lada_error(L, fname, "fields.step is the step of layout and lse, but neither is given");
  }
  const double *recall = NULL;
  if (!lua_isnil(L, 7)) {
    const ada_layout *l = layout ? layout : ada_cache_layout(c, layer);
    if (!l)
      return lada_error(L, fname, "fields.recall needs a layout (none given and layer %d has none)", (int)layer + 1);
    if (!lua_istable(L, 7) || lada_test_tensor(L, 7) || (int32_t)lua_objlen(L, 7) != l->heads)
      return lada_error(L, fname, "fields.recall must be a table of %d numbers (one per head), got %s%s", (int)l->heads,
                        lada_typename(L, 7),
                        lua_istable(L, 7) && !lada_test_tensor(L, 7) ? lua_pushfstring(L, " of %d", (int)lua_objlen(L, 7)) : "");
    double *r = lua_newuserdata(L, sizeof(double) * (size_t)l->heads);
    for (int32_t h = 0; h < l->heads; h++) {
      lua_rawgeti(L, 7, h + 1);
      if (lua_type(L, -1) != LUA_TNUMBER)
        return lada_error(L, fname, "fields.recall[%d] must be a number, got %s", (int)h + 1, lada_typename(L, -1));
      r[h] = lua_tonumber(L, -1);
      if (!(r[h] >= 0 && r[h] <= 1))
        return lada_error(L, fname, "fields.recall[%d] = %s is outside [0, 1]", (int)h + 1, lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    recall = r;
  }
  check(L, ada_cache_set(c, layer, layout, lse, step, recall), fname);
  return 0;
}

static int m_layout(lua_State *L) {
  ada_cache *c = check_cache(L, 1, "cache:layout");
  ada_layout *l = ada_cache_layout(c, check_layer(L, 2, "cache:layout", c));
  if (!l) lua_pushnil(L);
  else lada_push_layout(L, ada_layout_retain(l));
  return 1;
}

static int m_lse(lua_State *L) {
  ada_cache *c = check_cache(L, 1, "cache:lse");
  const ada_tensor *t = ada_cache_lse(c, check_layer(L, 2, "cache:lse", c));
  if (!t) {
    lua_pushnil(L);
    return 1;
  }
  ada_tensor *v;
  check(L, ada_tensor_view(&v, t), "cache:lse");
  lada_push_tensor(L, v);
  return 1;
}

static int push_step(lua_State *L, int64_t s) {
  if (s < 0) lua_pushnil(L);
  else lua_pushnumber(L, (lua_Number)s);
  return 1;
}

static int m_step(lua_State *L) {
  ada_cache *c = check_cache(L, 1, "cache:step");
  return push_step(L, ada_cache_layout_step(c, check_layer(L, 2, "cache:step", c)));
}

static int m_lse_step(lua_State *L) {
  ada_cache *c = check_cache(L, 1, "cache:lse_step");
  return push_step(L, ada_cache_lse_step(c, check_layer(L, 2, "cache:lse_step", c)));
}

static int push_per_head(lua_State *L, const char *fname, bool recall) {
  ada_cache *c = check_cache(L, 1, fname);
  int32_t layer = check_layer(L, 2, fname, c);
  const double *v = recall ? ada_cache_recall(c, layer) : ada_cache_density(c, layer);
  if (!v) lua_pushnil(L);
  else push_doubles(L, v, ada_cache_layout(c, layer)->heads);
  return 1;
}

static int m_density(lua_State *L) { return push_per_head(L, "cache:density", false); }
static int m_recall(lua_State *L) { return push_per_head(L, "cache:recall", true); }

static int m_clear(lua_State *L) {
  ada_cache *c = check_cache(L, 1, "cache:clear");
  check(L, ada_cache_clear(c, check_layer(L, 2, "cache:clear", c)), "cache:clear");
  return 0;
}

static int m_layers(lua_State *L) {
  lua_pushinteger(L, ada_cache_layers(check_cache(L, 1, "cache:layers")));
  return 1;
}

typedef struct summary {
  double mean, min, max;
} summary;

static summary summarize(const double *v, int32_t n) {
  summary s = {0, INFINITY, -INFINITY};
  for (int32_t i = 0; i < n; i++) {
    s.mean += v[i] / n;
    s.min = v[i] < s.min ? v[i] : s.min;
    s.max = v[i] > s.max ? v[i] : s.max;
  }
  return s;
}

static void push_summary(lua_State *L, summary s) {
  lua_createtable(L, 0, 3);
  lua_pushnumber(L, s.mean);
  lua_setfield(L, -2, "mean");
  lua_pushnumber(L, s.min);
  lua_setfield(L, -2, "min");
  lua_pushnumber(L, s.max);
  lua_setfield(L, -2, "max");
}

/* {n_layers=, memory = {host=, device=}, layers = {[i] = {step=, lse_step=, heads=,
 *  density = {mean=, min=, max=}, recall = {...}}}} (only filled layers; fields absent when
 *  the layer lacks what they describe). */
static int m_stats(lua_State *L) {
  ada_cache *c = check_cache(L, 1, "cache:stats");
  int64_t host, dev;
  ada_cache_memory(c, &host, &dev);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, ada_cache_layers(c));
  lua_setfield(L, -2, "n_layers");
  lua_createtable(L, 0, 2);
  lua_pushnumber(L, (lua_Number)host);
  lua_setfield(L, -2, "host");
  lua_pushnumber(L, (lua_Number)dev);
  lua_setfield(L, -2, "device");
  lua_setfield(L, -2, "memory");
  lua_newtable(L);
  for (int32_t i = 0; i < ada_cache_layers(c); i++) {
    const ada_layout *l = ada_cache_layout(c, i);
    const ada_tensor *t = ada_cache_lse(c, i);
    if (!l && !t) continue;
    lua_createtable(L, 0, 5);
    if (l) {
      push_step(L, ada_cache_layout_step(c, i));
      lua_setfield(L, -2, "step");
      push_summary(L, summarize(ada_cache_density(c, i), l->heads));
      lua_setfield(L, -2, "density");
      if (ada_cache_recall(c, i)) {
        push_summary(L, summarize(ada_cache_recall(c, i), l->heads));
        lua_setfield(L, -2, "recall");
      }
    }
    if (t) {
      push_step(L, ada_cache_lse_step(c, i));
      lua_setfield(L, -2, "lse_step");
    }
    lua_pushinteger(L, l ? l->heads : (lua_Integer)t->shape[0]);
    lua_setfield(L, -2, "heads");
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "layers");
  return 1;
}

static int m_save(lua_State *L) {
  ada_cache *c = check_cache(L, 1, "cache:save");
  if (lua_type(L, 2) != LUA_TSTRING)
    return lada_error(L, "cache:save", "path must be a string, got %s", lada_typename(L, 2));
  check(L, ada_cache_save(c, lua_tostring(L, 2)), "cache:save");
  return 0;
}

static void fmt_bytes(char *buf, size_t n, int64_t b) {
  if (b < 1024) snprintf(buf, n, "%lld B", (long long)b);
  else if (b < (1 << 20)) snprintf(buf, n, "%.1f KiB", (double)b / 1024);
  else if (b < (1 << 30)) snprintf(buf, n, "%.1f MiB", (double)b / (1 << 20));
  else snprintf(buf, n, "%.2f GiB", (double)b / (1 << 30));
}

#define SHOWN_LAYERS 10

/* A multi-line summary: a header (layers filled, memory), then one line per layer for the first
 * SHOWN_LAYERS layers and "..." for the rest. */
static int tostring(lua_State *L, const void *obj, uint32_t id) {
  const ada_cache *c = obj;
  int32_t n = ada_cache_layers(c), with_layout = 0, with_lse = 0;
  for (int32_t i = 0; i < n; i++) {
    with_layout += ada_cache_layout(c, i) != NULL;
    with_lse += ada_cache_lse(c, i) != NULL;
  }
  int64_t host, dev;
  ada_cache_memory(c, &host, &dev);
  char hb[32], db[32], line[512];
  fmt_bytes(hb, sizeof hb, host);
  fmt_bytes(db, sizeof db, dev);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  snprintf(line, sizeof line, "cache #%u: %d layers, %d with a layout, %d with an lse; memory: host %s, device %s",
           (unsigned)id, (int)n, (int)with_layout, (int)with_lse, hb, db);
  luaL_addstring(&b, line);
  for (int32_t i = 0; i < n && i < SHOWN_LAYERS; i++) {
    const ada_layout *l = ada_cache_layout(c, i);
    const ada_tensor *t = ada_cache_lse(c, i);
    size_t o = (size_t)snprintf(line, sizeof line, "\n  layer %d:", (int)i + 1);
    if (!l && !t) snprintf(line + o, sizeof line - o, " empty");
    if (l) {
      summary d = summarize(ada_cache_density(c, i), l->heads);
      o += (size_t)snprintf(line + o, sizeof line - o,
                            " layout step %lld, %d heads, %d x %d blocks of %d, density %.4g (%.4g..%.4g)",
                            (long long)ada_cache_layout_step(c, i), (int)l->heads, (int)l->nqb, (int)l->nkb,
                            (int)l->block, d.mean, d.min, d.max);
      if (ada_cache_recall(c, i)) {
        summary r = summarize(ada_cache_recall(c, i), l->heads);
        o += (size_t)snprintf(line + o, sizeof line - o, ", recall %.4g (%.4g..%.4g)", r.mean, r.min, r.max);
      }
    }
    if (t && o < sizeof line) {
      char dv[16];
      ada_device_format(t->storage->device, dv, sizeof dv);
      snprintf(line + o, sizeof line - o, "%s lse step %lld [%lld, %lld] %s", l ? ";" : "",
               (long long)ada_cache_lse_step(c, i), (long long)t->shape[0], (long long)t->shape[1], dv);
    }
    luaL_addstring(&b, line);
  }
  if (n > SHOWN_LAYERS) {
    snprintf(line, sizeof line, "\n  ... (%d more layers)", (int)(n - SHOWN_LAYERS));
    luaL_addstring(&b, line);
  }
  luaL_pushresult(&b);
  return 1;
}

static const luaL_Reg methods[] = {
    {"set", m_set},         {"layout", m_layout},   {"lse", m_lse},       {"step", m_step},
    {"lse_step", m_lse_step}, {"density", m_density}, {"recall", m_recall}, {"clear", m_clear},
    {"layers", m_layers},   {"stats", m_stats},     {"save", m_save},     {NULL, NULL}};

static const luaL_Reg funcs[] = {{"new", l_new}, {"load", l_load}, {NULL, NULL}};

void lada_open_cache(lua_State *L) {
  lada_class_register(L, &cache_class, methods);
  lua_pop(L, 1);
  lua_newtable(L);
  luaL_setfuncs(L, funcs, 0);
  lua_setfield(L, -2, "Cache");
}
