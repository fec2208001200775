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

/* Each adds its functions to the module table on the stack top (and registers metatables):
 *   runtime/lua/lnn.c       linear, matmul, norms, elementwise, rope3d, patchify, ...
 *   runtime/lua/lattention.c attention, sparse_attention, block_mass, attention_with_mass, attention_plan
 *   runtime/lua/llayout.c   adaspa.layout.* and the adaspa.Layout userdata
 *   runtime/lua/lio.c       adaspa.safetensors.* and adaspa.png.* */
void lada_open_nn(lua_State *L);
void lada_open_attention(lua_State *L);
void lada_open_layout(lua_State *L);
void lada_open_io(lua_State *L); /* runtime/lua/lio.c: adaspa.safetensors.*, adaspa.png.* */
void lada_open_cache(lua_State *L); /* runtime/lua/lcache.c: adaspa.Cache (new, load) and its userdata */

#define LADA_LAYOUT_MT "adaspa.Layout"
struct ada_layout;
/* Pushes a new Layout userdata owning one reference of l (takes that reference). */
void lada_push_layout(lua_State *L, struct ada_layout *l);
/* The live layout at idx, or an error naming fname and argname. */
struct ada_layout *lada_check_layout(lua_State *L, int idx, const char *fname, const char *argname);

/* Output convention of the op bindings: opts.out (a tensor) when given, else a new contiguous
 * tensor of the given shape with dtype and device of `like`. Pushes the tensor and returns it. */
ada_tensor *lada_push_out(lua_State *L, int opts_idx, const char *fname, const ada_tensor *like,
                          int32_t ndim, const int64_t *shape);
int luaopen_adaspa_core(lua_State *L);

#endif
