/* lio.c: the Lua bindings of runtime/io: adaspa.safetensors (load, info, save), adaspa.png
 * (read, write), adaspa.outdir (output folders, and the mp4 of frames written into one through
 * ffmpeg: io/video.h) and adaspa.sandbox (the recipe confinement). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../io/outdir.h"
#include "../io/png.h"
#include "../io/safetensors.h"
#include "../io/video.h"
#include "lbind.h"

#define LADA_ST_FILE_MT "adaspa.SafetensorsFile"

/* Raises the runtime's message under fname, dropping the subsystem prefix ("safetensors: ",
 * "png: ") since fname names it already: "adaspa.png.read: x.png: ...". */
static void io_check(lua_State *L, ada_status s, const char *fname) {
  if (s == ADA_OK) return;
  const char *msg = ada_last_error();
  if (strncmp(msg, "safetensors: ", 13) == 0) msg += 13;
  else if (strncmp(msg, "png: ", 5) == 0) msg += 5;
  else if (strncmp(msg, "output folder: ", 15) == 0) msg += 15;
  luaL_error(L, "%s: %s", fname, msg);
}

/* A path argument: a string without NUL bytes (C would see only its first part), at most
 * ADA_OUTDIR_MAX_PATH bytes. */
static const char *check_path(lua_State *L, int idx, const char *fname) {
  if (lua_type(L, idx) != LUA_TSTRING)
    lada_error(L, fname, "path must be a string, got %s", lada_typename(L, idx));
  size_t n;
  const char *p = lua_tolstring(L, idx, &n);
  if (strlen(p) != n) lada_error(L, fname, "path holds a NUL byte at position %d", (int)strlen(p) + 1);
  if (n == 0 || n > ADA_OUTDIR_MAX_PATH)
    lada_error(L, fname, "path must be 1 to %d bytes, got %d", ADA_OUTDIR_MAX_PATH, (int)n);
  return p;
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

/* ---- adaspa.outdir ----------------------------------------------------------------------------- */

#define LADA_OUTDIR_MT "adaspa.Outdir"
#define LADA_CONFINE_MT "adaspa.Confinement"

static ada_outdir **check_outdir(lua_State *L, int idx, const char *fname) {
  ada_outdir **u = luaL_testudata(L, idx, LADA_OUTDIR_MT);
  if (!u) lada_error(L, fname, "expected an output folder (adaspa.outdir.open), got %s", lada_typename(L, idx));
  if (!*u) lada_error(L, fname, "the output folder is closed");
  return u;
}

static ada_outdir_mode check_mode(lua_State *L, int idx, const char *fname) {
  const char *m = luaL_optstring(L, idx, "reuse");
  if (!strcmp(m, "fresh")) return ADA_OUTDIR_FRESH;
  if (!strcmp(m, "new")) return ADA_OUTDIR_NEW_OR_EMPTY;
  if (!strcmp(m, "reuse")) return ADA_OUTDIR_REUSE;
  lada_error(L, fname, "mode must be \"fresh\", \"new\" or \"reuse\", got \"%s\"", m);
  return ADA_OUTDIR_REUSE;
}

/* Opens path (mode at idx+1); pushes the userdata and the number of files cleared. */
static int push_outdir(lua_State *L, int idx, const char *fname) {
  const char *path = check_path(L, idx, fname);
  ada_outdir_mode mode = check_mode(L, idx + 1, fname);
  ada_outdir **u = lua_newuserdata(L, sizeof *u);
  *u = NULL;
  luaL_getmetatable(L, LADA_OUTDIR_MT);
  lua_setmetatable(L, -2);
  int64_t cleared = 0;
  io_check(L, ada_outdir_open(u, path, mode, &cleared), fname);
  lua_pushnumber(L, (lua_Number)cleared);
  return 2;
}

/* adaspa.outdir.open(path [, "fresh" | "new" | "reuse"]) -> folder, files cleared. Refused while a
 * recipe runs: the runner opened its folder before. */
static int od_open(lua_State *L) {
  static const char *const fname = "adaspa.outdir.open";
  if (ada_confine_active())
    return lada_error(L, fname, "not available while a recipe runs (the runner opened its output folder)");
  return push_outdir(L, 1, fname);
}

static int od_gc(lua_State *L) {
  ada_outdir **u = luaL_checkudata(L, 1, LADA_OUTDIR_MT);
  ada_outdir_close(*u);
  *u = NULL;
  return 0;
}

static int od_path(lua_State *L) {
  lua_pushstring(L, ada_outdir_path(*check_outdir(L, 1, "outdir:path")));
  return 1;
}

static int od_realpath(lua_State *L) {
  lua_pushstring(L, ada_outdir_realpath(*check_outdir(L, 1, "outdir:realpath")));
  return 1;
}

static int od_created(lua_State *L) {
  lua_pushboolean(L, ada_outdir_created(*check_outdir(L, 1, "outdir:created")));
  return 1;
}

/* outdir:write(name, string): the file name inside the folder (replaced atomically) */
static int od_write(lua_State *L) {
  static const char *const fname = "outdir:write";
  ada_outdir *d = *check_outdir(L, 1, fname);
  const char *name = check_path(L, 2, fname);
  size_t n;
  const char *data = luaL_checklstring(L, 3, &n);
  io_check(L, ada_outdir_write(d, name, data, n, "output folder"), fname);
  return 0;
}

static int od_mkdir(lua_State *L) {
  static const char *const fname = "outdir:mkdir";
  ada_outdir *d = *check_outdir(L, 1, fname);
  io_check(L, ada_outdir_mkdir(d, check_path(L, 2, fname), "output folder"), fname);
  return 0;
}

/* outdir:count() -> entries besides the marker */
static int od_count(lua_State *L) {
  int64_t n;
  io_check(L, ada_outdir_count(*check_outdir(L, 1, "outdir:count"), &n), "outdir:count");
  lua_pushnumber(L, (lua_Number)n);
  return 1;
}

/* outdir:discard() -> true when the folder was removed (created by open, nothing written) */
static int od_discard(lua_State *L) {
  int removed;
  io_check(L, ada_outdir_discard(*check_outdir(L, 1, "outdir:discard"), &removed), "outdir:discard");
  lua_pushboolean(L, removed);
  return 1;
}

/* A number field of the options table at idx, or def when absent. */
static double opt_number(lua_State *L, int idx, const char *key, double def, const char *fname) {
  if (lua_isnoneornil(L, idx)) return def;
  lua_getfield(L, idx, key);
  double v = def;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TNUMBER) lada_error(L, fname, "%s must be a number, got %s", key, lada_typename(L, -1));
    v = lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

static int32_t opt_int(lua_State *L, int idx, const char *key, int32_t def, int32_t lo, int32_t hi, const char *fname) {
  double v = opt_number(L, idx, key, def, fname);
  if (!(v >= lo && v <= hi) || v != (double)(int32_t)v)
    lada_error(L, fname, "%s must be an integer in %d..%d, got %g", key, (int)lo, (int)hi, v);
  return (int32_t)v;
}

/* outdir:encode_video(name, frames [, {fps = 24, fps_den = 1, timeout = 600, max_bytes = 1 GiB}])
 * -> bytes written: frames (u8 [T, H, W, 3]) encoded by ffmpeg (io/video.h) into the mp4 file
 * name inside the folder. The name is checked before ffmpeg starts. A Ctrl-C stops ffmpeg and
 * returns nil and "...: interrupted" (the host's hook then raises "interrupted" at the next
 * instruction, as after any op); every other failure raises. */
static int od_encode_video(lua_State *L) {
  static const char *const fname = "outdir:encode_video";
  static const char *const allowed[] = {"fps", "fps_den", "timeout", "max_bytes", NULL};
  ada_outdir *d = *check_outdir(L, 1, fname);
  const char *name = check_path(L, 2, fname);
  ada_tensor *frames = lada_check_tensor(L, 3, fname, "frames");
  lada_check_opts(L, 4, fname, allowed);
  size_t len = strlen(name);
  if (len < 5 || strcmp(name + len - 4, ".mp4") != 0) lada_error(L, fname, "%s: the name must end in .mp4", name);
  io_check(L, ada_outdir_check_name(name, 1, "output folder"), fname);
  ada_video_opts o;
  o.fps_num = opt_int(L, 4, "fps", 24, 1, 1000, fname);
  o.fps_den = opt_int(L, 4, "fps_den", 1, 1, 1000, fname);
  o.timeout = opt_number(L, 4, "timeout", 600, fname);
  double mb = opt_number(L, 4, "max_bytes", (double)(1u << 30), fname);
  if (!(mb >= 1 && mb <= (double)ADA_VIDEO_MAX_OUTPUT) || mb != (double)(uint64_t)mb)
    lada_error(L, fname, "max_bytes must be an integer in 1..%llu, got %g", (unsigned long long)ADA_VIDEO_MAX_OUTPUT, mb);
  o.max_bytes = (uint64_t)mb;
  uint8_t *mp4 = NULL;
  size_t n = 0;
  char who[300];
  snprintf(who, sizeof who, "%.256s", name);
  ada_status s = ada_video_encode_mp4(frames, &o, &mp4, &n, who);
  if (!s) {
    s = ada_outdir_write(d, name, mp4, n, "output folder");
    free(mp4);
  } else {
    const char *m = ada_last_error();
    size_t ml = strlen(m);
    if (ml >= 11 && !strcmp(m + ml - 11, "interrupted")) { /* Ctrl-C: as after any op, the host's hook */
      lua_pushnil(L);                                      /* raises "interrupted" next */
      lua_pushfstring(L, "%s: %s", fname, m);
      return 2;
    }
  }
  io_check(L, s, fname);
  lua_pushnumber(L, (lua_Number)n);
  return 1;
}

/* adaspa.outdir.ffmpeg() -> the ffmpeg program encode_video runs, or nil and why there is none */
static int od_ffmpeg(lua_State *L) {
  char path[4096];
  if (ada_video_find_ffmpeg(path, sizeof path)) {
    lua_pushnil(L);
    lua_pushstring(L, ada_last_error());
    return 2;
  }
  lua_pushstring(L, path);
  return 1;
}

static int od_tostring(lua_State *L) {
  ada_outdir **u = luaL_checkudata(L, 1, LADA_OUTDIR_MT);
  lua_pushfstring(L, "adaspa output folder %s", *u ? ada_outdir_path(*u) : "(closed)");
  return 1;
}

/* ---- adaspa.sandbox ---------------------------------------------------------------------------- */

/* The confinement userdata: {ada_confinement *, reference of the output folder userdata}. Only the
 * recipe runner holds it; whoever holds it can widen what the recipe may do, so it is never
 * passed to recipe code. */
typedef struct lconfine {
  ada_confinement *c;
  int out_ref;
} lconfine;

static lconfine *check_confine(lua_State *L, const char *fname) {
  lconfine *u = luaL_testudata(L, 1, LADA_CONFINE_MT);
  if (!u) lada_error(L, fname, "expected a confinement (adaspa.sandbox.begin), got %s", lada_typename(L, 1));
  if (!u->c) lada_error(L, fname, "the confinement has ended");
  return u;
}

/* adaspa.sandbox.begin() -> confinement: from now on no writes and no reads until allowed. */
static int sb_begin(lua_State *L) {
  lconfine *u = lua_newuserdata(L, sizeof *u);
  u->c = NULL;
  u->out_ref = LUA_NOREF;
  luaL_getmetatable(L, LADA_CONFINE_MT);
  lua_setmetatable(L, -2);
  io_check(L, ada_confine_begin(&u->c), "adaspa.sandbox.begin");
  return 1;
}

static void confine_end(lua_State *L, lconfine *u) {
  ada_confine_end(u->c);
  u->c = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, u->out_ref);
  u->out_ref = LUA_NOREF;
}

static int sb_gc(lua_State *L) {
  lconfine *u = luaL_checkudata(L, 1, LADA_CONFINE_MT);
  if (u->c) confine_end(L, u);
  return 0;
}

/* confinement:finish() */
static int sb_finish(lua_State *L) {
  confine_end(L, check_confine(L, "confinement:finish"));
  return 0;
}

/* confinement:open_output(path [, mode]) -> folder, files cleared: opens the run's folder (allowed
 * while confined) and makes it the folder writes go to. */
static int sb_open_output(lua_State *L) {
  static const char *const fname = "confinement:open_output";
  lconfine *u = check_confine(L, fname);
  push_outdir(L, 2, fname);
  ada_confine_set_outdir(u->c, *(ada_outdir **)lua_touserdata(L, -2));
  luaL_unref(L, LUA_REGISTRYINDEX, u->out_ref);
  lua_pushvalue(L, -2);
  u->out_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* keeps the folder open while confined */
  return 2;
}

/* confinement:allow_read(path [, tree]): the file path, or (tree) .safetensors/.png files
 * directly in the folder path */
static int sb_allow_read(lua_State *L) {
  static const char *const fname = "confinement:allow_read";
  lconfine *u = check_confine(L, fname);
  io_check(L, ada_confine_allow_read(u->c, check_path(L, 2, fname), lua_toboolean(L, 3)), fname);
  return 0;
}

/* adaspa.sandbox.active() -> bool, the output folder's path or nil */
static int sb_active(lua_State *L) {
  lua_pushboolean(L, ada_confine_active());
  ada_outdir *d = ada_confine_outdir();
  if (d) lua_pushstring(L, ada_outdir_path(d));
  else lua_pushnil(L);
  return 2;
}

/* The Lua memory cap of a recipe file's chunk (recipe.load_limits): while it is set, an allocation of
 * the Lua state that grows a block by more than CAP_SMALL bytes fails when it would take the state's
 * memory past the cap, and Lua raises "not enough memory". A string.rep or table.concat of
 * gigabytes fails before it is made; small allocations are bounded by recipe.load's count hook. */
#define CAP_SMALL 65536

typedef struct lua_cap {
  lua_Alloc f; /* the state's own allocator */
  void *ud;
  size_t used, limit; /* bytes, as lua_gc(LUA_GCCOUNT) counts them */
} lua_cap;

static lua_cap g_cap;
static int g_capped;

static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  lua_cap *c = ud;
  if (nsize > osize && nsize - osize > CAP_SMALL && (c->used + (nsize - osize) > c->limit || c->used > c->limit))
    return NULL;
  void *p = c->f(c->ud, ptr, osize, nsize);
  if (p != NULL || nsize == 0) c->used = c->used + nsize >= osize ? c->used + nsize - osize : 0;
  return p;
}

/* adaspa.sandbox.lua_memory_cap(bytes | nil): caps the Lua memory at bytes more than it is now, or
 * (nil) lifts the cap. */
static int sb_lua_memory_cap(lua_State *L) {
  static const char *const fname = "adaspa.sandbox.lua_memory_cap";
  if (lua_isnoneornil(L, 1)) {
    if (g_capped) lua_setallocf(L, g_cap.f, g_cap.ud);
    g_capped = 0;
    return 0;
  }
  lua_Number n = luaL_checknumber(L, 1);
  if (!(n >= 0 && n <= 1e15)) return lada_error(L, fname, "bytes must be in [0, 1e15], got %f", (double)n);
  if (!g_capped) g_cap.f = lua_getallocf(L, &g_cap.ud);
  g_cap.used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
  g_cap.limit = g_cap.used + (size_t)n;
  if (!g_capped) lua_setallocf(L, capped_alloc, &g_cap);
  g_capped = 1;
  return 0;
}

static const luaL_Reg od_funcs[] = {{"open", od_open}, {"ffmpeg", od_ffmpeg}, {NULL, NULL}};
static const luaL_Reg od_methods[] = {{"path", od_path},     {"realpath", od_realpath}, {"created", od_created},
                                      {"write", od_write},   {"mkdir", od_mkdir},       {"count", od_count},
                                      {"discard", od_discard}, {"encode_video", od_encode_video}, {NULL, NULL}};
static const luaL_Reg sb_funcs[] = {{"begin", sb_begin}, {"active", sb_active}, {"lua_memory_cap", sb_lua_memory_cap},
                                    {NULL, NULL}};
static const luaL_Reg sb_methods[] = {{"finish", sb_finish}, {"open_output", sb_open_output},
                                      {"allow_read", sb_allow_read}, {NULL, NULL}};

static const luaL_Reg st_funcs[] = {{"load", st_load}, {"info", st_info}, {"save", st_save}, {NULL, NULL}};
static const luaL_Reg png_funcs[] = {{"read", png_read}, {"write", png_write}, {NULL, NULL}};

void lada_open_io(lua_State *L) {
  luaL_newmetatable(L, LADA_ST_FILE_MT);
  lua_pushcfunction(L, file_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, LADA_OUTDIR_MT);
  lua_pushcfunction(L, od_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, od_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "adaspa.Outdir");
  lua_setfield(L, -2, "__metatable");
  lua_newtable(L);
  luaL_setfuncs(L, od_methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newmetatable(L, LADA_CONFINE_MT);
  lua_pushcfunction(L, sb_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushliteral(L, "adaspa.Confinement");
  lua_setfield(L, -2, "__metatable");
  lua_newtable(L);
  luaL_setfuncs(L, sb_methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_newtable(L);
  luaL_setfuncs(L, od_funcs, 0);
  lua_setfield(L, -2, "outdir");
  lua_newtable(L);
  luaL_setfuncs(L, sb_funcs, 0);
  lua_setfield(L, -2, "sandbox");
  lua_newtable(L);
  luaL_setfuncs(L, st_funcs, 0);
  lua_setfield(L, -2, "safetensors");
  lua_newtable(L);
  luaL_setfuncs(L, png_funcs, 0);
  lua_setfield(L, -2, "png");
}
