/* llayout.c: Lua bindings of block-sparse layouts (runtime/layout.h): the adaspa.Layout
 * userdata and
 *   adaspa.layout.full(H, nqb, nkb [, block=64])
 *   adaspa.layout.from_mask(mask u8 [H, nqb, nkb] [, block=64])
 *   adaspa.layout.topk(mass, {density=, row_wise=true, force=, block=64})
 *   adaspa.layout.threshold(mass, {recall=, min_blocks=1, max_blocks=0, force=, block=64})
 *   adaspa.layout.decode(bytes)  a layout from messages (a Lua string; layout.h: checked, a corrupt
 *       message is an error)
 *   layout:heads() block() nqb() nkb() nnz() density() recall(mass) to_mask() row(h, qb) free()
 *   layout:encode([heads])  the compact message (a Lua string) of the listed heads (default all)
 *   layout:select(heads)    a new layout of the listed heads, in that order
 *   layout:walk64([ctas=132])  the order in which the sm90 kernel's ctas persistent CTAs take the
 *       work items of this block-64 layout (runtime/walk.h): a list of 1-based items
 *       k = (h - 1) * ceil(nqb / 2) + p, the pair p of 64-row blocks 2p - 1 and 2p of head h
 *   layout:order([kind="longest"])  the order in which the sparse kernels' CTAs take the rows
 *       (runtime/walk.h): "longest" (longest first over all rows, the default) or "head" (head-major,
 *       each head's rows longest first: the sm90 plan's variant "head" for blocks of 128); a list
 *       of the 1-based rows r = (h - 1) * nqb + qb
 * mass: float [H, nqb, nkb] on the CPU or a GPU (selected there). density / recall: a number in [0, 1] or a table of H of
 * them. force = {cols = {{kb_first, kb_last}, ...}, rows = {{qb_first, qb_last}, ...},
 * diagonal = bool}. Block numbers and ranges are 1-based and inclusive here; the runtime's are
 * 0-based and half-open. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../attn.h"
#include "../layout.h"
#include "../walk.h"
#include "lbind.h"

static void describe(const void *obj, char *buf, size_t n) {
  const ada_layout *l = obj;
  snprintf(buf, n, "heads %d, %d x %d blocks of %d", (int)l->heads, (int)l->nqb, (int)l->nkb, (int)l->block);
}

/* "layout #4: heads 2, 5 x 7 blocks of 64, density 0.4286" (mean density over the heads). */
static int tostring(lua_State *L, const void *obj, uint32_t id) {
  const ada_layout *l = obj;
  char desc[96], buf[192];
  describe(l, desc, sizeof desc);
  double mean = (double)l->nnz / ((double)l->heads * l->nqb * l->nkb);
  snprintf(buf, sizeof buf, "layout #%u: %s, density %.4g", (unsigned)id, desc, mean);
  lua_pushstring(L, buf);
  return 1;
}

static void release(void *l) { ada_layout_free(l); }

static const lada_class layout_class = {LADA_LAYOUT_MT, "layout", release, describe, tostring, 0};

/* A new userdata with no layout yet: the runtime call fills it (so a failing call, which
 * raises, leaks nothing). */
static lada_object *push_new(lua_State *L) { return lada_object_new(L, &layout_class, NULL); }

void lada_push_layout(lua_State *L, ada_layout *l) { lada_object_new(L, &layout_class, l); }

ada_layout *lada_check_layout(lua_State *L, int idx, const char *fname, const char *argname) {
  return lada_object_check(L, idx, &layout_class, fname, argname);
}

static const char *value_str(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TNUMBER ? lua_tostring(L, idx) : lada_typename(L, idx);
}

/* The value at idx as an integer in [lo, hi]. */
static int32_t check_int(lua_State *L, int idx, const char *fname, const char *argname, int64_t lo, int64_t hi) {
  double x = lua_tonumber(L, idx);
  if (lua_type(L, idx) != LUA_TNUMBER || x != floor(x) || x < (double)lo || x > (double)hi)
    lada_error(L, fname, "%s must be an integer in [%lld, %lld], got %s", argname, (long long)lo, (long long)hi,
               value_str(L, idx));
  return (int32_t)x;
}

static int32_t check_block(lua_State *L, int idx, const char *fname, const char *argname) {
  if (lua_isnoneornil(L, idx)) return 64;
  double x = lua_tonumber(L, idx);
  if (lua_type(L, idx) != LUA_TNUMBER || !ada_attn_block_ok((int64_t)x) || x != floor(x))
    lada_error(L, fname, "%s must be 64 or 128, got %s", argname, value_str(L, idx));
  return (int32_t)x;
}

/* ---- constructors ------------------------------------------------------------------------ */

static int l_full(lua_State *L) {
  const char *fname = "adaspa.layout.full";
  int32_t h = check_int(L, 1, fname, "H", 1, INT32_MAX);
  int32_t nqb = check_int(L, 2, fname, "nqb", 1, INT32_MAX);
  int32_t nkb = check_int(L, 3, fname, "nkb", 1, INT32_MAX);
  int32_t block = check_block(L, 4, fname, "block");
  lada_object *u = push_new(L);
  ada_layout *made = NULL;
  lada_check(L, ada_layout_full(&made, h, nqb, nkb, block), fname);
  u->obj = made;
  return 1;
}

static int l_from_mask(lua_State *L) {
  const char *fname = "adaspa.layout.from_mask";
  ada_tensor *mask = lada_check_tensor(L, 1, fname, "mask");
  int32_t block = check_block(L, 2, fname, "block");
  lada_object *u = push_new(L);
  ada_layout *made = NULL;
  lada_check(L, ada_layout_from_mask(&made, mask, block), fname);
  u->obj = made;
  return 1;
}

/* The mass argument: a tensor with 3 dimensions (the runtime checks the rest). */
static ada_tensor *check_mass(lua_State *L, int idx, const char *fname) {
  ada_tensor *m = lada_check_tensor(L, idx, fname, "mass");
  if (m->ndim != 3) {
    char b[96];
    ada_shape_format(m->ndim, m->shape, b, sizeof b);
    lada_error(L, fname, "mass must have shape [H, nqb, nkb], got %s", b);
  }
  return m;
}

/* opts[key]: a number in [0, 1] for every head, or a table of exactly `heads` of them. Returns
 * an array of heads doubles owned by a userdata left on the stack. */
static const double *opt_fractions(lua_State *L, int opts, const char *fname, const char *key, int32_t heads) {
  double *f = lua_newuserdata(L, sizeof(double) * (size_t)heads);
  lua_getfield(L, opts, key);
  int v = lua_gettop(L);
  if (lua_type(L, v) == LUA_TNUMBER) {
    double x = lua_tonumber(L, v);
    if (!(x >= 0 && x <= 1)) lada_error(L, fname, "%s = %s is outside [0, 1]", key, lua_tostring(L, v));
    for (int32_t h = 0; h < heads; h++) f[h] = x;
  } else if (lua_istable(L, v) && !lada_test_tensor(L, v)) {
    if ((int32_t)lua_objlen(L, v) != heads)
      lada_error(L, fname, "%s must have %d entries (one per head), got %d", key, (int)heads, (int)lua_objlen(L, v));
    for (int32_t h = 0; h < heads; h++) {
      lua_rawgeti(L, v, h + 1);
      double x = lua_tonumber(L, -1);
      if (lua_type(L, -1) != LUA_TNUMBER)
        lada_error(L, fname, "%s[%d] must be a number, got %s", key, (int)h + 1, lada_typename(L, -1));
      if (!(x >= 0 && x <= 1)) lada_error(L, fname, "%s[%d] = %s is outside [0, 1]", key, (int)h + 1, lua_tostring(L, -1));
      f[h] = x;
      lua_pop(L, 1);
    }
  } else {
    lada_error(L, fname, "%s must be a number in [0, 1] or a table of %d of them, got %s", key, (int)heads,
               lada_typename(L, v));
  }
  lua_pop(L, 1);
  return f;
}

/* force.<key>: a list of {first, last} (1-based, inclusive, within [1, n]) converted to 0-based
 * half-open pairs in a userdata left on the stack; *count gets the list's length. */
static const int32_t (*opt_ranges(lua_State *L, int force, const char *fname, const char *key, int32_t n,
                                  int32_t *count))[2] {
  lua_getfield(L, force, key);
  int v = lua_gettop(L);
  *count = 0;
  if (lua_isnil(L, v)) {
    lua_pop(L, 1);
    return NULL;
  }
  if (!lua_istable(L, v) || lada_test_tensor(L, v))
    lada_error(L, fname, "force.%s must be a list of {first, last} ranges, got %s", key, lada_typename(L, v));
  int32_t len = (int32_t)lua_objlen(L, v);
  int32_t(*r)[2] = lua_newuserdata(L, sizeof(int32_t[2]) * (size_t)(len > 0 ? len : 1));
  for (int32_t i = 0; i < len; i++) {
    lua_rawgeti(L, v, i + 1);
    int e = lua_gettop(L);
    bool ok = lua_istable(L, e) && !lada_test_tensor(L, e) && lua_objlen(L, e) == 2;
    double ab[2] = {0, 0};
    for (int j = 0; ok && j < 2; j++) {
      lua_rawgeti(L, e, j + 1);
      ab[j] = lua_tonumber(L, -1);
      ok = lua_type(L, -1) == LUA_TNUMBER && ab[j] == floor(ab[j]) && fabs(ab[j]) < 2.0e9;
      lua_pop(L, 1);
    }
    if (!ok)
      lada_error(L, fname, "force.%s[%d] must be {first, last} (two integers), got %s", key, (int)i + 1,
                 lada_typename(L, e));
    if (ab[0] < 1 || ab[0] > ab[1] || ab[1] > n)
      lada_error(L, fname, "force.%s[%d] = {%d, %d} is not a range within [1, %d]", key, (int)i + 1, (int)ab[0],
                 (int)ab[1], (int)n);
    r[i][0] = (int32_t)ab[0] - 1;
    r[i][1] = (int32_t)ab[1];
    lua_pop(L, 1);
  }
  lua_remove(L, v); /* keep the userdata */
  *count = len;
  return (const int32_t(*)[2])r;
}

/* opts.force into *f (range arrays stay on the stack); returns f, or NULL when absent. */
static const ada_layout_force *opt_force(lua_State *L, int opts, const char *fname, int32_t nqb, int32_t nkb,
                                         ada_layout_force *f) {
  static const char *const keys[] = {"cols", "rows", "diagonal", NULL};
  lua_getfield(L, opts, "force");
  int v = lua_gettop(L);
  if (lua_isnil(L, v)) {
    lua_pop(L, 1);
    return NULL;
  }
  char where[96];
  snprintf(where, sizeof where, "%s: force", fname);
  lada_check_opts(L, v, where, keys);
  memset(f, 0, sizeof *f);
  f->cols = opt_ranges(L, v, fname, "cols", nkb, &f->n_cols);
  f->rows = opt_ranges(L, v, fname, "rows", nqb, &f->n_rows);
  lua_getfield(L, v, "diagonal");
  if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
    lada_error(L, fname, "force.diagonal must be a boolean, got %s", lada_typename(L, -1));
  f->diagonal = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return f;
}

static int32_t opt_block(lua_State *L, int opts, const char *fname) {
  lua_getfield(L, opts, "block");
  int32_t b = check_block(L, lua_gettop(L), fname, "option block");
  lua_pop(L, 1);
  return b;
}

static int32_t opt_count(lua_State *L, int opts, const char *fname, const char *key, int32_t dflt) {
  lua_getfield(L, opts, key);
  int32_t r = lua_isnil(L, -1) ? dflt : check_int(L, lua_gettop(L), fname, key, 0, INT32_MAX);
  lua_pop(L, 1);
  return r;
}

/* Checks the options table at 2 (required: `required` must be present). */
static void check_select_opts(lua_State *L, const char *fname, const char *const *keys, const char *required) {
  lada_check_opts(L, 2, fname, keys);
  if (!lua_istable(L, 2)) lada_error(L, fname, "options must be a table with %s, got %s", required, lada_typename(L, 2));
  lua_getfield(L, 2, required);
  if (lua_isnil(L, -1))
    lada_error(L, fname, "option %s is required (a number in [0, 1] or a table of one per head)", required);
  lua_pop(L, 1);
}

static int l_topk(lua_State *L) {
  const char *fname = "adaspa.layout.topk";
  static const char *const keys[] = {"density", "row_wise", "force", "block", NULL};
  ada_tensor *mass = check_mass(L, 1, fname);
  check_select_opts(L, fname, keys, "density");
  const double *density = opt_fractions(L, 2, fname, "density", (int32_t)mass->shape[0]);
  lua_getfield(L, 2, "row_wise");
  if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
    lada_error(L, fname, "row_wise must be a boolean, got %s", lada_typename(L, -1));
  bool row_wise = lua_isnil(L, -1) || lua_toboolean(L, -1);
  lua_pop(L, 1);
  ada_layout_force fb;
  const ada_layout_force *force = opt_force(L, 2, fname, (int32_t)mass->shape[1], (int32_t)mass->shape[2], &fb);
  int32_t block = opt_block(L, 2, fname);
  lada_object *u = push_new(L);
  ada_layout *made = NULL;
  lada_check(L, ada_layout_topk(&made, mass, density, row_wise, force, block), fname);
  u->obj = made;
  return 1;
}

static int l_threshold(lua_State *L) {
  const char *fname = "adaspa.layout.threshold";
  static const char *const keys[] = {"recall", "min_blocks", "max_blocks", "force", "block", NULL};
  ada_tensor *mass = check_mass(L, 1, fname);
  check_select_opts(L, fname, keys, "recall");
  const double *recall = opt_fractions(L, 2, fname, "recall", (int32_t)mass->shape[0]);
  int32_t min_blocks = opt_count(L, 2, fname, "min_blocks", 1);
  int32_t max_blocks = opt_count(L, 2, fname, "max_blocks", 0);
  if (max_blocks > 0 && max_blocks < min_blocks)
    lada_error(L, fname, "max_blocks = %d is below min_blocks = %d", (int)max_blocks, (int)min_blocks);
  ada_layout_force fb;
  const ada_layout_force *force = opt_force(L, 2, fname, (int32_t)mass->shape[1], (int32_t)mass->shape[2], &fb);
  int32_t block = opt_block(L, 2, fname);
  lada_object *u = push_new(L);
  ada_layout *made = NULL;
  lada_check(L, ada_layout_threshold(&made, mass, recall, min_blocks, max_blocks, force, block), fname);
  u->obj = made;
  return 1;
}

/* ---- methods ------------------------------------------------------------------------------- */

#define SELF(fname) ada_layout *l = lada_check_layout(L, 1, fname, "self")

static int m_heads(lua_State *L) { SELF("layout:heads"); lua_pushinteger(L, l->heads); return 1; }
static int m_block(lua_State *L) { SELF("layout:block"); lua_pushinteger(L, l->block); return 1; }
static int m_nqb(lua_State *L) { SELF("layout:nqb"); lua_pushinteger(L, l->nqb); return 1; }
static int m_nkb(lua_State *L) { SELF("layout:nkb"); lua_pushinteger(L, l->nkb); return 1; }
static int m_nnz(lua_State *L) { SELF("layout:nnz"); lua_pushnumber(L, (lua_Number)l->nnz); return 1; }

static void push_doubles(lua_State *L, const double *v, int32_t n) {
  lua_createtable(L, n, 0);
  for (int32_t i = 0; i < n; i++) {
    lua_pushnumber(L, v[i]);
    lua_rawseti(L, -2, i + 1);
  }
}

static int m_density(lua_State *L) {
  SELF("layout:density");
  double *d = lua_newuserdata(L, sizeof(double) * (size_t)l->heads);
  ada_layout_density(l, d);
  push_doubles(L, d, l->heads);
  return 1;
}

static int m_recall(lua_State *L) {
  SELF("layout:recall");
  ada_tensor *mass = lada_check_tensor(L, 2, "layout:recall", "mass");
  double *r = lua_newuserdata(L, sizeof(double) * (size_t)l->heads);
  lada_check(L, ada_layout_recall(l, mass, r), "layout:recall");
  push_doubles(L, r, l->heads);
  return 1;
}

static int m_to_mask(lua_State *L) {
  SELF("layout:to_mask");
  ada_tensor *m;
  lada_check(L, ada_layout_to_mask(&m, l), "layout:to_mask");
  lada_push_tensor(L, m);
  return 1;
}

static int m_row(lua_State *L) {
  SELF("layout:row");
  int32_t h = check_int(L, 2, "layout:row", "h", 1, l->heads) - 1;
  int32_t qb = check_int(L, 3, "layout:row", "qb", 1, l->nqb) - 1;
  const int64_t *o = l->offsets + (int64_t)h * (l->nqb + 1) + qb;
  lua_createtable(L, (int)(o[1] - o[0]), 0);
  for (int64_t i = o[0]; i < o[1]; i++) {
    lua_pushinteger(L, l->indices[i] + 1);
    lua_rawseti(L, -2, (int)(i - o[0]) + 1);
  }
  return 1;
}

/* The list of 1-based heads at idx (default: every head) as 0-based, in a userdata left on the
 * stack; *n its length. */
static int32_t *head_list(lua_State *L, int idx, const ada_layout *l, const char *fname, int32_t *n) {
  if (lua_isnoneornil(L, idx)) {
    int32_t *h = lua_newuserdata(L, sizeof(int32_t) * (size_t)l->heads);
    for (int32_t i = 0; i < l->heads; i++) h[i] = i;
    *n = l->heads;
    return h;
  }
  if (!lua_istable(L, idx) || lua_objlen(L, idx) < 1)
    lada_error(L, fname, "heads must be a non-empty list of head numbers, got %s", lada_typename(L, idx));
  int32_t k = (int32_t)lua_objlen(L, idx);
  int32_t *h = lua_newuserdata(L, sizeof(int32_t) * (size_t)k);
  for (int32_t i = 0; i < k; i++) {
    lua_rawgeti(L, idx, i + 1);
    char arg[32];
    snprintf(arg, sizeof arg, "heads[%d]", (int)i + 1);
    h[i] = check_int(L, lua_gettop(L), fname, arg, 1, l->heads) - 1;
    lua_pop(L, 1);
  }
  *n = k;
  return h;
}

static int m_encode(lua_State *L) {
  const char *fname = "layout:encode";
  SELF(fname);
  int32_t n;
  int32_t *h = head_list(L, 2, l, fname, &n);
  size_t size = ada_layout_msg_size(l, h, n), got = 0;
  void *buf = lua_newuserdata(L, size);
  lada_check(L, ada_layout_encode(l, h, n, buf, size, &got), fname);
  lua_pushlstring(L, buf, got);
  return 1;
}

static int m_select(lua_State *L) {
  const char *fname = "layout:select";
  SELF(fname);
  int32_t n;
  int32_t *h = head_list(L, 2, l, fname, &n);
  int32_t *part = lua_newuserdata(L, sizeof(int32_t) * (size_t)n);
  for (int32_t i = 0; i < n; i++) part[i] = 0;
  const ada_layout *parts[1] = {l};
  lada_object *u = push_new(L);
  ada_layout *made = NULL;
  lada_check(L, ada_layout_pick(&made, parts, 1, part, h, n, fname), fname);
  u->obj = made;
  return 1;
}

static int l_decode(lua_State *L) {
  const char *fname = "adaspa.layout.decode";
  if (lua_type(L, 1) != LUA_TSTRING) return lada_error(L, fname, "bytes must be a string, got %s", lada_typename(L, 1));
  size_t n;
  const char *p = lua_tolstring(L, 1, &n);
  lada_object *u = push_new(L);
  ada_layout *made = NULL;
  lada_check(L, ada_layout_decode(&made, p, n, fname), fname);
  u->obj = made;
  return 1;
}

/* a new Lua list of the n values a[i] + 1 (1-based rows or items) */
static int push_list1(lua_State *L, const int32_t *a, int64_t n) {
  lua_createtable(L, (int)n, 0);
  for (int64_t i = 0; i < n; i++) {
    lua_pushinteger(L, a[i] + 1);
    lua_rawseti(L, -2, (int)i + 1);
  }
  return 1;
}

static int m_walk64(lua_State *L) {
  const char *fname = "layout:walk64";
  SELF(fname);
  const int32_t ctas = lua_isnoneornil(L, 2) ? 132 : check_int(L, 2, fname, "ctas", 1, 1 << 20);
  if (l->block != 64)
    return lada_error(L, fname, "the layout (heads %d, %d x %d blocks) has blocks of %d; the walk pairs 64-row blocks",
                      (int)l->heads, (int)l->nqb, (int)l->nkb, (int)l->block);
  const int64_t n = (int64_t)l->heads * (((int64_t)l->nqb + 1) / 2);
  int32_t *walk = lua_newuserdata(L, sizeof(int32_t) * (size_t)n);
  const int e = ada_walk64(l->heads, l->nqb, l->offsets, ctas, walk);
  if (e) return lada_error(L, fname, "%s for %lld items", e == -2 ? "out of memory" : "bad sizes", (long long)n);
  return push_list1(L, walk, n);
}

static int m_order(lua_State *L) {
  const char *fname = "layout:order";
  SELF(fname);
  const char *kind = luaL_optstring(L, 2, "longest");
  const bool head = strcmp(kind, "head") == 0;
  if (!head && strcmp(kind, "longest") != 0)
    return lada_error(L, fname, "kind must be \"longest\" or \"head\", got \"%s\"", kind);
  const int64_t n = (int64_t)l->heads * l->nqb;
  int32_t *order = lua_newuserdata(L, sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
  const int e = head ? ada_order_head(l->heads, l->nqb, l->nkb, l->offsets, order)
                     : ada_order_longest(l->heads, l->nqb, l->nkb, l->offsets, order);
  if (e) return lada_error(L, fname, "%s for %lld rows", e == -2 ? "out of memory" : "bad sizes", (long long)n);
  return push_list1(L, order, n);
}

static const luaL_Reg methods[] = {
    {"heads", m_heads},     {"block", m_block},   {"nqb", m_nqb},         {"nkb", m_nkb},
    {"nnz", m_nnz},         {"density", m_density}, {"recall", m_recall}, {"to_mask", m_to_mask},
    {"row", m_row},         {"encode", m_encode},   {"select", m_select},
    {"walk64", m_walk64},   {"order", m_order},     {NULL, NULL}};

static const luaL_Reg funcs[] = {
    {"full", l_full}, {"from_mask", l_from_mask}, {"topk", l_topk}, {"threshold", l_threshold}, {"decode", l_decode}, {NULL, NULL}};

void lada_open_layout(lua_State *L) {
  lada_class_register(L, &layout_class, methods);
  lua_setfield(L, -2, "Layout");
  lua_newtable(L);
  luaL_setfuncs(L, funcs, 0);
  lua_setfield(L, -2, "layout");
}
