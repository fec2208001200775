/* lbind.h: shared helpers of the Lua bindings (prefix lada_). Only runtime/lua/ includes lua.h. */
#ifndef LADA_BIND_H
#define LADA_BIND_H

#include <lauxlib.h>
#include <lua.h>

#include "../tensor.h"

/* ---- userdata classes (lclass.c) ----------------------------------------------------------------
 * Every runtime object Lua holds is a lada_object of a lada_class: methods plus free(),
 * is_freed(), id(), __gc, __tostring and __name, one use-after-free error. */
typedef struct lada_class {
  const char *mt;   /* metatable name: "adaspa.Tensor" */
  const char *kind; /* in messages: "tensor #12" */
  void (*release)(void *obj);
  /* What the object is ("f32 [2, 3] cpu"), kept at free() for later messages; may be NULL. */
  void (*describe)(const void *obj, char *buf, size_t n);
  /* Pushes tostring of a live object; NULL: "<kind> #<id>: <describe>". Returns 1. */
  int (*tostring)(lua_State *L, const void *obj, uint32_t id);
  int self_hint; /* "self must be a cache, got ... (call methods with ':')" */
} lada_class;

typedef struct lada_object {
  void *obj;           /* NULL after free() (or while being built) */
  uint32_t id;         /* shown in messages */
  char freed_desc[96]; /* what it was, kept for use-after-free messages */
} lada_object;

/* Pushes a new userdata of class c owning obj (may be NULL: filled in later by the caller). */
lada_object *lada_object_new(lua_State *L, const lada_class *c, void *obj);
lada_object *lada_object_test(lua_State *L, int idx, const lada_class *c);
/* The live object at idx, or an error naming fname and argname (or a freed object's identity). */
void *lada_object_check(lua_State *L, int idx, const lada_class *c, const char *fname, const char *argname);
/* Registers c's metatable (if new) with methods and the shared ones; leaves it on the stack. */
void lada_class_register(lua_State *L, const lada_class *c, const luaL_Reg *methods);

#define LADA_TENSOR_MT "adaspa.Tensor"
extern const lada_class lada_tensor_class;
typedef lada_object lada_tensor;

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
void lada_open_timer(lua_State *L); /* runtime/lua/ltimer.c: adaspa.timer(device) and its userdata */

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
void lada_open_comm(lua_State *L);  /* runtime/lua/lcomm.c: adaspa.comm (world, create, open) and its userdata */

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
