/* lbind.h: shared helpers of the Lua bindings (prefix lada_). Only runtime/lua/ includes lua.h. */
#ifndef LADA_BIND_H
#define LADA_BIND_H

#include <lauxlib.h>
#include <lua.h>

#include "../tensor.h"

#define LADA_TENSOR_MT "adaspa.Tensor"

typedef struct lada_tensor {
  ada_tensor *t;      /* NULL after free() */
  uint32_t id;        /* shown in messages: "tensor #12" */
  char freed_desc[96]; /* what it was, kept for use-after-free messages */
} lada_tensor;

/* Raises "fname: <fmt...>" at the caller's location. Never returns. */
int lada_error(lua_State *L, const char *fname, const char *fmt, ...);
/* Raises the runtime's last error, prefixed with fname, when s != ADA_OK. */
void lada_check(lua_State *L, ada_status s, const char *fname);

/* Pushes a new userdata owning t (takes the handle). */
void lada_push_tensor(lua_State *L, ada_tensor *t);
/* The live tensor at idx, or an error naming fname and the argument (argname) or a freed
 * tensor's identity. */
ada_tensor *lada_check_tensor(lua_State *L, int idx, const char *fname, const char *argname);
lada_tensor *lada_test_tensor(lua_State *L, int idx);

/* Reads a shape (table of positive integers, at most ADA_MAX_DIMS) into shape; returns ndim. */
int32_t lada_check_shape(lua_State *L, int idx, const char *fname, const char *argname,
                         int64_t *shape);
/* Lua type name of the value at idx, "tensor" for tensors. */
const char *lada_typename(lua_State *L, int idx);
/* Checks that the options table at idx (may be nil/none) has only the allowed keys (NULL-ended). */
void lada_check_opts(lua_State *L, int idx, const char *fname, const char *const *allowed);

int lada_open_tensor(lua_State *L); /* registers the metatable; pushes nothing */
int luaopen_adaspa_core(lua_State *L);

#endif
