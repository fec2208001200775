/* lio.c: the Lua bindings of runtime/io: adaspa.safetensors (load, info, save) and adaspa.png
 * (read, write). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../io/png.h"
#include "../io/safetensors.h"
#include "lbind.h"

#define LADA_ST_FILE_MT "adaspa.SafetensorsFile"

/* Raises the runtime's message under fname, dropping the subsystem prefix ("safetensors: ",
 * "png: ") since fname names it already: "adaspa.png.read: x.png: ...". */
static void io_check(lua_State *L, ada_status s, const char *fname) {
  if (s == ADA_OK) return;
  const char *msg = ada_last_error();
  if (strncmp(msg, "safetensors: ", 13) == 0) msg += 13;
  else if (strncmp(msg, "png: ", 5) == 0) msg += 5;
  luaL_error(L, "%s: %s", fname, msg);
}

static const char *check_path(lua_State *L, int idx, const char *fname) {
  if (lua_type(L, idx) != LUA_TSTRING)
    lada_error(L, fname, "path must be a string, got %s", lada_typename(L, idx));
  return lua_tostring(L, idx);
}

/* ---- adaspa.safetensors -------------------------------------------------------------------- */

/* An open file as a userdata, so that a Lua error raised while it is open cannot leak it. */
static int file_gc(lua_State *L) {
  ada_st_file **u = luaL_checkudata(L, 1, LADA_ST_FILE_MT);
  ada_st_close(*u);
  *u = NULL;
  return 0;
}

/* Opens path; pushes the guarding userdata. */
static ada_st_file **open_file(lua_State *L, const char *path, const char *fname) {
  ada_st_file **u = lua_newuserdata(L, sizeof *u);
  *u = NULL;
  luaL_getmetatable(L, LADA_ST_FILE_MT);
  lua_setmetatable(L, -2);
  io_check(L, ada_st_open(u, path), fname);
  return u;
}

static void close_file(ada_st_file **u) {
  ada_st_close(*u);
  *u = NULL;
}

static void push_metadata(lua_State *L, const ada_st_file *f) {
  lua_createtable(L, 0, (int)ada_st_metadata_count(f));
  for (int64_t i = 0; i < ada_st_metadata_count(f); i++) {
    lua_pushstring(L, ada_st_metadata_value(f, i));
    lua_setfield(L, -2, ada_st_metadata_key(f, i));
  }
}

static void push_tensor_at(lua_State *L, const ada_st_file *f, int64_t i, const char *fname) {
  ada_tensor *t;
  io_check(L, ada_st_tensor(f, i, &t), fname);
  lada_push_tensor(L, t);
}

/* load(path [, {names = {...}}]) -> {name = tensor}, metadata */
static int st_load(lua_State *L) {
  static const char *const fname = "adaspa.safetensors.load";
  static const char *const allowed[] = {"names", NULL};
  const char *path = check_path(L, 1, fname);
  lada_check_opts(L, 2, fname, allowed);
  int names = 0;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "names");
    if (!lua_isnil(L, -1)) {
      if (!lua_istable(L, -1) || lada_test_tensor(L, -1))
        lada_error(L, fname, "option names must be a list of strings, got %s", lada_typename(L, -1));
      names = lua_gettop(L);
      for (int k = 1; k <= (int)lua_objlen(L, names); k++) {
        lua_rawgeti(L, names, k);
        if (lua_type(L, -1) != LUA_TSTRING)
          lada_error(L, fname, "option names must be a list of strings, got %s at position %d",
                     lada_typename(L, -1), k);
        lua_pop(L, 1);
      }
    }
  }
  ada_st_file **u = open_file(L, path, fname);
  ada_st_file *f = *u;
  lua_newtable(L);
  if (names) {
    for (int k = 1; k <= (int)lua_objlen(L, names); k++) {
      lua_rawgeti(L, names, k);
      const char *name = lua_tostring(L, -1);
      int64_t i = ada_st_find(f, name);
      if (i < 0)
        lada_error(L, fname, "%s: no tensor '%s' (the file has %lld tensors)", path, name,
                   (long long)ada_st_count(f));
      push_tensor_at(L, f, i, fname);
      lua_rawset(L, -3);
    }
  } else {
    for (int64_t i = 0; i < ada_st_count(f); i++) {
      push_tensor_at(L, f, i, fname);
      lua_setfield(L, -2, ada_st_name(f, i));
    }
  }
  push_metadata(L, f);
  close_file(u);
  return 2;
}

/* info(path) -> {{name=, dtype=, shape=, bytes=}, ...} sorted by name, metadata */
static int st_info(lua_State *L) {
  static const char *const fname = "adaspa.safetensors.info";
  const char *path = check_path(L, 1, fname);
  ada_st_file **u = open_file(L, path, fname);
  ada_st_file *f = *u;
  lua_createtable(L, (int)ada_st_count(f), 0);
  for (int64_t i = 0; i < ada_st_count(f); i++) {
    ada_st_entry e;
    ada_st_info(f, i, &e);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, ada_st_name(f, i));
    lua_setfield(L, -2, "name");
    lua_pushstring(L, ada_dtype_name(e.dtype));
    lua_setfield(L, -2, "dtype");
    lua_createtable(L, e.ndim, 0);
    for (int32_t d = 0; d < e.ndim; d++) {
      lua_pushnumber(L, (lua_Number)e.shape[d]);
      lua_rawseti(L, -2, d + 1);
    }
    lua_setfield(L, -2, "shape");
    lua_pushnumber(L, (lua_Number)e.nbytes);
    lua_setfield(L, -2, "bytes");
    lua_rawseti(L, -2, (int)i + 1);
  }
  push_metadata(L, f);
  close_file(u);
  return 2;
}

typedef struct named {
  const char *name;
  const ada_tensor *t;
} named;

static int named_cmp(const void *a, const void *b) {
  return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

typedef struct meta_kv {
  const char *key, *value;
} meta_kv;

static int kv_cmp(const void *a, const void *b) {
  return strcmp(((const meta_kv *)a)->key, ((const meta_kv *)b)->key);
}

/* Number of entries of the table at idx (any keys). */
static int table_size(lua_State *L, int idx) {
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) { lua_pop(L, 1); n++; }
  return n;
}

/* The tensors argument at idx as n named tensors in a GC-owned array: a list of {name, tensor}
 * in its order, or a table name -> tensor sorted by name. */
static named *read_tensors(lua_State *L, int idx, const char *fname, int *n_out) {
  if (!lua_istable(L, idx) || lada_test_tensor(L, idx))
    lada_error(L, fname, "tensors must be a table (name -> tensor, or a list of {name, tensor}), got %s",
               lada_typename(L, idx));
  int n = table_size(L, idx), len = (int)lua_objlen(L, idx);
  named *v = lua_newuserdata(L, sizeof *v * (size_t)(n ? n : 1));
  if (len > 0) {
    if (len != n) lada_error(L, fname, "tensors mixes a list of {name, tensor} with named entries");
    for (int k = 1; k <= n; k++) {
      lua_rawgeti(L, idx, k);
      int item = lua_gettop(L);
      if (!lua_istable(L, item) || lada_test_tensor(L, item))
        lada_error(L, fname, "tensors[%d] must be {name, tensor}, got %s", k, lada_typename(L, item));
      lua_rawgeti(L, item, 1);
      lua_rawgeti(L, item, 2);
      if (lua_type(L, -2) != LUA_TSTRING)
        lada_error(L, fname, "tensors[%d] must be {name, tensor}: its name is %s, not a string", k,
                   lada_typename(L, -2));
      char arg[48];
      snprintf(arg, sizeof arg, "tensors[%d][2]", k);
      v[k - 1].name = lua_tostring(L, -2);
      v[k - 1].t = lada_check_tensor(L, -1, fname, arg);
      lua_pop(L, 3);
    }
  } else {
    int k = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      if (lua_type(L, -2) != LUA_TSTRING)
        lada_error(L, fname, "tensors has a %s key; keys must be tensor names (or use a list of {name, tensor})",
                   lada_typename(L, -2));
      char arg[160];
      snprintf(arg, sizeof arg, "tensors['%.120s']", lua_tostring(L, -2));
      v[k].name = lua_tostring(L, -2);
      v[k].t = lada_check_tensor(L, -1, fname, arg);
      k++;
      lua_pop(L, 1);
    }
    qsort(v, (size_t)n, sizeof *v, named_cmp);
  }
  *n_out = n;
  return v;
}

/* The metadata argument at idx (nil or string -> string) in a GC-owned array sorted by key. */
static meta_kv *read_metadata(lua_State *L, int idx, const char *fname, int *n_out) {
  *n_out = 0;
  if (lua_isnoneornil(L, idx)) return NULL;
  if (!lua_istable(L, idx) || lada_test_tensor(L, idx))
    lada_error(L, fname, "metadata must be a table of string -> string, got %s", lada_typename(L, idx));
  int n = table_size(L, idx), k = 0;
  meta_kv *m = lua_newuserdata(L, sizeof *m * (size_t)(n ? n : 1));
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      lada_error(L, fname, "metadata keys must be strings, got %s", lada_typename(L, -2));
    if (lua_type(L, -1) != LUA_TSTRING)
      lada_error(L, fname, "metadata['%.120s'] must be a string, got %s", lua_tostring(L, -2),
                 lada_typename(L, -1));
    m[k].key = lua_tostring(L, -2);
    m[k].value = lua_tostring(L, -1);
    k++;
    lua_pop(L, 1);
  }
  qsort(m, (size_t)n, sizeof *m, kv_cmp);
  *n_out = n;
  return m;
}

/* save(path, tensors [, metadata]) */
static int st_save(lua_State *L) {
  static const char *const fname = "adaspa.safetensors.save";
  const char *path = check_path(L, 1, fname);
  lua_settop(L, 3); /* the scratch blocks below go above the arguments */
  int n, n_meta;
  named *v = read_tensors(L, 2, fname, &n);
  meta_kv *m = read_metadata(L, 3, fname, &n_meta);
  /* pointer arrays in one more GC-owned block: names, tensors, keys, values */
  const void **p = lua_newuserdata(L, sizeof *p * (size_t)(2 * n + 2 * n_meta + 1));
  const char **names = (const char **)p, **keys = names + 2 * n, **values = keys + n_meta;
  const ada_tensor **tensors = (const ada_tensor **)(p + n);
  for (int i = 0; i < n; i++) { names[i] = v[i].name; tensors[i] = v[i].t; }
  for (int i = 0; i < n_meta; i++) { keys[i] = m[i].key; values[i] = m[i].value; }
  io_check(L, ada_st_write(path, n, names, tensors, n_meta, keys, values), fname);
  return 0;
}

/* ---- adaspa.png ------------------------------------------------------------------------------ */

/* write(path, image): u8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] */
static int png_write(lua_State *L) {
  static const char *const fname = "adaspa.png.write";
  const char *path = check_path(L, 1, fname);
  ada_tensor *img = lada_check_tensor(L, 2, fname, "image");
  io_check(L, ada_png_write(path, img), fname);
  return 0;
}

/* read(path) -> u8 [H, W, C] */
static int png_read(lua_State *L) {
  static const char *const fname = "adaspa.png.read";
  const char *path = check_path(L, 1, fname);
  ada_tensor *img;
  io_check(L, ada_png_read(path, &img), fname);
  lada_push_tensor(L, img);
  return 1;
}

static const luaL_Reg st_funcs[] = {{"load", st_load}, {"info", st_info}, {"save", st_save}, {NULL, NULL}};
static const luaL_Reg png_funcs[] = {{"read", png_read}, {"write", png_write}, {NULL, NULL}};

void lada_open_io(lua_State *L) {
  luaL_newmetatable(L, LADA_ST_FILE_MT);
  lua_pushcfunction(L, file_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_newtable(L);
  luaL_setfuncs(L, st_funcs, 0);
  lua_setfield(L, -2, "safetensors");
  lua_newtable(L);
  luaL_setfuncs(L, png_funcs, 0);
  lua_setfield(L, -2, "png");
}
