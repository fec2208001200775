/* backend.h: the one interface between the runtime core and its backends (prefix ada_backend_).
 *
 * The core (tensor.c, nn.c, attention.c, layout.c) validates every op once and then calls the
 * backend of the tensors' device through the table below; it never names a backend's
 * functions. A backend lives in its own folder (runtime/cpu/, runtime/cuda/) and registers at
 * start-up (a constructor function in its backend.c calls ada_backend_register), so a build
 * without CUDA simply has no CUDA backend: its devices are reported unavailable ("this adaspa
 * was built without CUDA") and nothing else changes.
 *
 * A backend supplies:
 *   - name and device type, device queries (count, why none, properties, memory statistics);
 *   - memory: alloc/free, host transfers, strided copy with dtype conversion, fill, arange,
 *     randn, synchronize; events for timers (record on the device's stream, elapsed read lazily);
 *   - the op table (ada_backend_ops): a NULL entry means the backend does not have the op, and
 *     the op fails with ADA_EUNSUPPORTED naming the backend;
 *   - supports(op, args): whether it takes a particular call (for attention the backend's
 *     attention plan answers, with the same logic that launches);
 *   - derived_free: the destructor of the data it keeps in a derived cache (ada_derived_*), such
 *     as a layout's device mirror.
 * Every entry receives arguments the core has validated (shapes, dtypes, one device, outputs
 * contiguous and not overlapping inputs): a backend checks only what is its own (a head
 * dimension its kernels lack, a failing launch) and says so in its message.
 *
 * Core services a backend may use (and nothing else of the core): the tensor queries of
 * tensor.h (ada_tensor_data, ada_tensor_numel, ada_tensor_is_contiguous, ada_shape_format),
 * scratch tensors (ada_tensor_empty, ada_tensor_to, ada_tensor_contiguous, ada_tensor_copy,
 * ada_tensor_free: they come back through this backend's own memory functions), ada_fail, the
 * derived cache below, and for layout selection ada_layout_new (layout.h).
 */
#ifndef ADA_BACKEND_H
#define ADA_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "attn.h"
#include "layout.h"
#include "ops.h" /* ada_linear_opts */
#include "status.h"
#include "tensor.h"

/* ---- ops ---------------------------------------------------------------------------------- */

/* The ops a backend may take (supports() is asked with these). */
typedef enum ada_op {
  ADA_OP_LINEAR,
  ADA_OP_MATMUL,
  ADA_OP_LAYERNORM,
  ADA_OP_LAYERNORM_MODULATE,
  ADA_OP_GATED_ADD_LAYERNORM_MODULATE,
  ADA_OP_RMSNORM,
  ADA_OP_SOFTMAX,
  ADA_OP_ROWWISE,
  ADA_OP_UNARY,
  ADA_OP_ROPE3D,
  ADA_OP_RMSNORM_ROPE3D,
  ADA_OP_PATCHIFY,
  ADA_OP_UNPATCHIFY,
  ADA_OP_TIMESTEP_EMBEDDING,
  ADA_OP_ATTENTION, /* args: const ada_attn_call * */
  ADA_OP_LAYOUT_SELECT,
  ADA_OP_LAYOUT_RECALL,
  ADA_NOPS
} ada_op;

/* Row-wise ops on x [.., C] with one or two operands ([C] broadcast or x's shape). */
typedef enum ada_rowwise_kind {
  ADA_ROWWISE_MODULATE,  /* x * (1 + b) + a   (a = shift, b = scale) */
  ADA_ROWWISE_GATED_ADD, /* x + a * b         (a = gate, b = y) */
  ADA_ROWWISE_ADD,       /* x + a */
  ADA_ROWWISE_MUL        /* x * a */
} ada_rowwise_kind;

/* Elementwise ops of one tensor. */
typedef enum ada_unary_kind { ADA_UNARY_SCALE, ADA_UNARY_SILU, ADA_UNARY_GELU_TANH, ADA_UNARY_GELU } ada_unary_kind;

/* One validated attention call (runtime/attention.c builds it). Tensors a mode does not use
 * are NULL: DENSE and SPARSE write out and lse, FUSED out, lse and mass under lse_in, MASS only
 * mass under lse_in. kv_valid is resolved (1..Skv), scale is the effective one (finite,
 * nonzero), block is the layout's block (SPARSE), the mass block (FUSED, MASS) or 0 (DENSE).
 * family and variant (NULL: the plan chooses) are the kernel options of ada_attn_opts. */
typedef struct ada_attn_call {
  const char *op;
  ada_attn_mode mode;
  ada_tensor *out, *lse, *mass;
  const ada_tensor *q, *k, *v, *lse_in;
  const ada_layout *layout;
  int64_t kv_valid;
  float scale;
  int32_t block;
  const char *family, *variant;
} ada_attn_call;

typedef struct ada_backend_ops {
  /* nn ops (runtime/nn.c validates; signatures as the ada_op_ functions of ops.h) */
  /* opts: never NULL here (nn.c passes the defaults), act and accumulate already checked */
  ada_status (*linear)(ada_tensor *out, const ada_tensor *x, const ada_tensor *w, const ada_tensor *b,
                       const ada_linear_opts *opts);
  ada_status (*matmul)(ada_tensor *out, const ada_tensor *a, const ada_tensor *b);
  ada_status (*layernorm)(ada_tensor *out, const ada_tensor *x, double eps, const ada_tensor *weight,
                          const ada_tensor *bias);
  /* One pass with [C] shift and scale; NULL: the core runs layernorm, then modulate. */
  ada_status (*layernorm_modulate)(ada_tensor *out, const ada_tensor *x, double eps, const ada_tensor *weight,
                                   const ada_tensor *bias, const ada_tensor *shift, const ada_tensor *scale);
  /* One pass of gated_add then layernorm_modulate (ops.h), shift and scale [C] vectors (gate and
   * y [C] or x's shape); NULL: the core runs ada_op_gated_add, then ada_op_layernorm_modulate. */
  ada_status (*gated_add_layernorm_modulate)(ada_tensor *x_out, ada_tensor *out, const ada_tensor *x,
                                             const ada_tensor *gate, const ada_tensor *y, double eps,
                                             const ada_tensor *weight, const ada_tensor *bias,
                                             const ada_tensor *shift, const ada_tensor *scale);
  ada_status (*rmsnorm)(ada_tensor *out, const ada_tensor *x, const ada_tensor *weight, double eps);
  ada_status (*softmax)(ada_tensor *out, const ada_tensor *x, double scale);
  /* b is NULL for ADD and MUL. */
  ada_status (*rowwise)(ada_rowwise_kind kind, ada_tensor *out, const ada_tensor *x, const ada_tensor *a,
                        const ada_tensor *b);
  /* s: the factor of SCALE. */
  ada_status (*unary)(ada_unary_kind kind, ada_tensor *out, const ada_tensor *x, double s);
  ada_status (*rope3d)(ada_tensor *out, const ada_tensor *x, const int32_t grid[3], const int32_t axes[3],
                       double theta, int64_t n_tokens);
  ada_status (*rmsnorm_rope3d)(ada_tensor *out, const ada_tensor *x, const ada_tensor *weight, double eps,
                               const int32_t grid[3], const int32_t axes[3], double theta, int64_t n_tokens);
  ada_status (*patchify)(ada_tensor *out, const ada_tensor *x);
  ada_status (*unpatchify)(ada_tensor *out, const ada_tensor *x, int32_t t, int32_t h, int32_t w);
  ada_status (*timestep_embedding)(ada_tensor *out, const ada_tensor *t, int32_t dim, double max_period);
  /* attention (runtime/attention.c validates): the plan of a call, and the call itself, which
   * plans the same way before it launches. */
  ada_status (*attention_plan)(const ada_attn_call *call, ada_attn_plan *out);
  ada_status (*attention)(const ada_attn_call *call);
  /* Layout selection from a mass on this backend's device (runtime/layout.c validates): mode 0
   * row-wise top-k (frac = density per head), 1 cumulative threshold (frac = recall per head).
   * ADA_OK with *out NULL: not taken here, the core selects on a host copy. */
  ada_status (*layout_select)(ada_layout **out, const char *op, const ada_tensor *mass, int32_t mode,
                              const double *frac, int32_t min_blocks, int32_t max_blocks,
                              const ada_layout_force *force, int32_t block);
  ada_status (*layout_recall)(const ada_layout *l, const ada_tensor *mass, double *recall);
} ada_backend_ops;

/* ---- devices and memory ------------------------------------------------------------------ */

/* Reductions of every element of a tensor, in double. */
typedef enum ada_reduce_op { ADA_REDUCE_SUM, ADA_REDUCE_MAX, ADA_REDUCE_MIN, ADA_REDUCE_SUMSQ } ada_reduce_op;

typedef struct ada_device_info {
  int32_t index;
  char name[256];
  size_t total_bytes, free_bytes;
  int32_t cc_major, cc_minor; /* compute capability (0 on the CPU) */
  int32_t sm_count;           /* multiprocessors (CPU: threads) */
} ada_device_info;

typedef struct ada_mem_stats {
  size_t allocated;  /* bytes in blocks handed out now (block sizes, after rounding) */
  size_t cached;     /* bytes in freed blocks kept for reuse */
  size_t peak;       /* highest value of allocated so far */
  size_t reserved;   /* allocated + cached */
  uint64_t n_malloc; /* allocations from the system */
  uint64_t n_reuse;  /* requests served from the cache */
} ada_mem_stats;

typedef struct ada_backend {
  const char *name; /* "cpu", "cuda" */
  ada_devtype type;

  int32_t (*device_count)(void);
  const char *(*unavailable_reason)(void); /* "" when a device exists */
  ada_status (*device_info)(int32_t dev, ada_device_info *out);
  /* NULL where the backend has no such thing. */
  ada_status (*memory)(int32_t dev, ada_mem_stats *out);
  ada_status (*empty_cache)(int32_t dev);
  void (*reset_peak)(int32_t dev);
  /* Called when an allocation fails (the Lua binding collects garbage there). */
  void (*set_oom_hook)(void (*hook)(void *ud), void *ud);
  void (*set_threads)(int32_t n);
  int32_t (*threads)(void);

  /* Memory. n > 0 bytes, 64-byte aligned at least. */
  ada_status (*alloc)(void **out, size_t n, int32_t dev);
  void (*free)(void *p, int32_t dev);
  /* n bytes from device memory to host memory; returns when the bytes are there. */
  ada_status (*to_host)(void *dst, const void *src, size_t n, int32_t dev);
  /* n bytes from host memory into device memory, ordered on the device's stream (src may be
   * reused when it returns). */
  ada_status (*from_host)(void *dst, const void *src, size_t n, int32_t dev);
  /* dst[idx] = convert(src[idx]) over the common shape; fill, arange and randn as tensor.h. */
  ada_status (*copy)(void *dst, ada_dtype ddt, const ada_strided *dl, const void *src, ada_dtype sdt,
                     const ada_strided *sl, int32_t dev);
  ada_status (*fill)(void *dst, ada_dtype ddt, const ada_strided *dl, double value, int32_t dev);
  ada_status (*arange)(void *dst, ada_dtype ddt, int64_t n, double start, double step, int32_t dev);
  ada_status (*randn)(void *dst, ada_dtype ddt, int64_t n, uint64_t seed, int32_t dev);
  /* NULL: the core reduces a host copy with the CPU backend's. */
  ada_status (*reduce)(const void *src, ada_dtype sdt, const ada_strided *sl, ada_reduce_op op, int32_t dev,
                       double *out);
  ada_status (*synchronize)(int32_t dev);

  /* Events: recorded on the device's stream in order with its work; elapsed waits for stop
   * only (not for the device) and gives the seconds between the two records. */
  ada_status (*event_new)(void **out, int32_t dev);
  ada_status (*event_record)(void *ev, int32_t dev);
  ada_status (*event_elapsed)(void *start, void *stop, int32_t dev, double *seconds);
  void (*event_free)(void *ev, int32_t dev);

  /* Whether the backend takes this call (args: see ada_op); on false, why (a short sentence).
   * NULL: it takes every op whose table entry is set. */
  bool (*supports)(ada_op op, const void *args, char *why, size_t n);
  /* Destructor of the data this backend keeps in a derived cache (see below). */
  void (*derived_free)(void *data, int32_t dev);

  ada_backend_ops ops;
} ada_backend;

/* Registers a backend (at start-up, from a constructor). One per device type; fails when the
 * type already has one. */
ada_status ada_backend_register(const ada_backend *b);
/* The backend of a device type, or NULL when this build has none. */
const ada_backend *ada_backend_find(ada_devtype type);
/* The backend of the device a tensor lives on. */
const ada_backend *ada_backend_of(const ada_tensor *t);
/* Registered backends, in registration order. */
int32_t ada_backend_count(void);
const ada_backend *ada_backend_at(int32_t i);
/* Why a device type has no device: the backend's reason, or "this adaspa was built without X". */
const char *ada_backend_unavailable_reason(ada_devtype type);
/* ADA_OK when dev exists; else ADA_EDEVICE naming op, the device and why. */
ada_status ada_backend_device_check(ada_device dev, const char *op);
/* Whether b takes the call: for attention (args: the call) its attention plan answers; else
 * supports(), or for a backend without one whether the op's table entry is set. */
bool ada_backend_supports(const ada_backend *b, ada_op op, const void *args, char *why, size_t n);

/* ---- derived cache --------------------------------------------------------------------------
 * Data a backend derives from an immutable core object and keeps with it, one entry per
 * (backend, device): a layout's device mirror (CSR and CTA order on a GPU), later a TMA
 * descriptor. The object owns the cache and frees it with the object; each entry is freed by
 * its backend's derived_free. A const object's cache is still writable (the pointer is const,
 * the cache is not): deriving data does not change the object. */
typedef struct ada_derived ada_derived;

ada_derived *ada_derived_new(void);
/* Frees every entry (through its backend's derived_free), then the cache. NULL is ignored. */
void ada_derived_free(ada_derived *c);
/* The entry of (b, dev), or NULL. */
void *ada_derived_get(const ada_derived *c, const ada_backend *b, int32_t dev);
/* Stores data as the entry of (b, dev) (freeing an older one); bytes: the memory it holds on
 * that device, for reports. On failure data is not kept (the caller frees it). */
ada_status ada_derived_put(ada_derived *c, const ada_backend *b, int32_t dev, void *data, size_t bytes);
/* Bytes the entries hold on devices other than the CPU. */
int64_t ada_derived_device_bytes(const ada_derived *c);

/* ---- timers ---------------------------------------------------------------------------------
 * A timer measures the device time between start and stop, recorded in order with the work of
 * the device's stream (CUDA events; the wall clock on the CPU): no synchronization at start or
 * stop, and reading the seconds waits only for the stop record. */
typedef struct ada_timer ada_timer;

ada_status ada_timer_new(ada_timer **out, ada_device dev);
ada_status ada_timer_start(ada_timer *t);
ada_status ada_timer_stop(ada_timer *t);
/* Seconds between the last start and stop (waits for the stop record). */
ada_status ada_timer_seconds(ada_timer *t, double *out);
ada_device ada_timer_device(const ada_timer *t);
void ada_timer_free(ada_timer *t);

#endif
