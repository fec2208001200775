/* lclass.c: the one userdata class helper of the bindings (lbind.h): every runtime object Lua
 * holds (tensor, layout, cache, timer) is a lada_object with an id for messages, free(), is_freed(),
 * __gc, __tostring and __name, and the same use-after-free errors. */
#include <stdio.h>
#include <string.h>

#include "lbind.h"

static uint32_t next_id = 1;

lada_object *lada_object_new(lua_State *L, const lada_class *c, void *obj) {
  lada_object *u = lua_newuserdata(L, sizeof *u);
  u->obj = obj;
  u->id = next_id++;
  u->freed_desc[0] = '\0';
  luaL_getmetatable(L, c->mt);
  lua_setmetatable(L, -2);
  return u;
}

lada_object *lada_object_test(lua_State *L, int idx, const lada_class *c) { return luaL_testudata(L, idx, c->mt); }

void *lada_object_check(lua_State *L, int idx, const lada_class *c, const char *fname, const char *argname) {
  lada_object *u = lada_object_test(L, idx, c);
  const bool self = strcmp(argname, "self") == 0;
  if (!u)
    lada_error(L, fname, "%s must be a %s, got %s%s", argname, c->kind, lada_typename(L, idx),
               self && c->self_hint ? " (call methods with ':')" : "");
  if (!u->obj)
    lada_error(L, fname, "%s is %s #%u (%s), which was freed; it cannot be used after free()", argname, c->kind,
               (unsigned)u->id, u->freed_desc[0] ? u->freed_desc : "never built");
  return u->obj;
}

/* The class of a method call: upvalue 1. */
static const lada_class *class_of(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

static void release(const lada_class *c, lada_object *u, bool keep_desc) {
  if (!u->obj) return;
  if (keep_desc && c->describe) c->describe(u->obj, u->freed_desc, sizeof u->freed_desc);
  c->release(u->obj);
  u->obj = NULL;
}

static int m_free(lua_State *L) {
  const lada_class *c = class_of(L);
  release(c, luaL_checkudata(L, 1, c->mt), true);
  return 0;
}

static int m_gc(lua_State *L) {
  const lada_class *c = class_of(L);
  release(c, luaL_checkudata(L, 1, c->mt), false);
  return 0;
}

static int m_is_freed(lua_State *L) {
  const lada_class *c = class_of(L);
  lua_pushboolean(L, ((lada_object *)luaL_checkudata(L, 1, c->mt))->obj == NULL);
  return 1;
}

static int m_id(lua_State *L) {
  const lada_class *c = class_of(L);
  lua_pushinteger(L, (lua_Integer)((lada_object *)luaL_checkudata(L, 1, c->mt))->id);
  return 1;
}

static int m_tostring(lua_State *L) {
  const lada_class *c = class_of(L);
  lada_object *u = luaL_checkudata(L, 1, c->mt);
  if (!u->obj) {
    lua_pushfstring(L, "%s #%d (freed; was %s)", c->kind, (int)u->id, u->freed_desc);
    return 1;
  }
  if (c->tostring) return c->tostring(L, u->obj, u->id);
  char desc[160] = "";
  if (c->describe) c->describe(u->obj, desc, sizeof desc);
  lua_pushfstring(L, "%s #%d: %s", c->kind, (int)u->id, desc);
  return 1;
}

static void set_closure(lua_State *L, const lada_class *c, lua_CFunction f, const char *name) {
  lua_pushlightuserdata(L, (void *)c);
  lua_pushcclosure(L, f, 1);
  lua_setfield(L, -2, name);
}

void lada_class_register(lua_State *L, const lada_class *c, const luaL_Reg *methods) {
  if (luaL_newmetatable(L, c->mt)) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    set_closure(L, c, m_free, "free");
    set_closure(L, c, m_is_freed, "is_freed");
    set_closure(L, c, m_id, "id");
    lua_setfield(L, -2, "__index");
    set_closure(L, c, m_gc, "__gc");
    set_closure(L, c, m_tostring, "__tostring");
    lua_pushstring(L, c->mt);
    lua_setfield(L, -2, "__name");
  }
}
