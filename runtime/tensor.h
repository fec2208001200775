/* tensor.h: tensors of the adaspa runtime (prefix ada_tensor_, ada_storage_, ada_device_).
 *
 * A tensor is a view (dtype, shape, strides in elements, offset in elements) over a
 * refcounted storage that lives on one device. Views share storage; every tensor handle owns
 * one reference to its storage and is released with ada_tensor_free(). Shapes have 0 to
 * ADA_MAX_DIMS dimensions; every size is >= 1 (no empty tensors). Dimensions are 0-based here
 * (the Lua surface is 1-based).
 *
 * Every function returning ada_status leaves a message in ada_last_error() on failure.
 */
#ifndef ADA_TENSOR_H
#define ADA_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scalar.h"
#include "status.h"

typedef enum ada_devtype { ADA_CPU = 0, ADA_CUDA = 1 } ada_devtype;

typedef struct ada_device {
  ada_devtype type;
  int32_t index; /* GPU ordinal; 0 for the CPU */
} ada_device;

typedef struct ada_storage {
  void *data;
  size_t nbytes;
  ada_device device;
  int32_t refcount;
  /* Memory not allocated by adaspa (a memory-mapped file): external is set, and release(ctx)
   * (if not NULL) runs when the last reference goes, instead of freeing data. */
  bool external;
  void (*release)(void *ctx);
  void *release_ctx;
} ada_storage;

typedef struct ada_tensor {
  ada_storage *storage;
  ada_dtype dtype;
  int32_t ndim;
  int64_t shape[ADA_MAX_DIMS];
  int64_t stride[ADA_MAX_DIMS]; /* elements */
  int64_t offset;               /* elements from storage->data */
} ada_tensor;

/* ---- names ------------------------------------------------------------------------ */
const char *ada_dtype_name(ada_dtype t);
/* Parses "f32", "float32", "bf16", ... ; returns false if unknown. */
bool ada_dtype_parse(const char *s, ada_dtype *out);
/* Parses "cpu", "cuda", "cuda:N", "gpu"; returns false if malformed. */
bool ada_device_parse(const char *s, ada_device *out);
/* Writes "cpu" or "cuda:N" into buf. */
void ada_device_format(ada_device d, char *buf, size_t n);
bool ada_device_equal(ada_device a, ada_device b);
/* Writes "[2, 3, 4]" into buf. */
void ada_shape_format(int32_t ndim, const int64_t *shape, char *buf, size_t n);

/* ---- creation ----------------------------------------------------------------------- */
/* Uninitialized contiguous tensor. shape: ndim sizes, each >= 1. */
ada_status ada_tensor_empty(ada_tensor **out, int32_t ndim, const int64_t *shape, ada_dtype dt,
                            ada_device dev);
ada_status ada_tensor_full(ada_tensor **out, int32_t ndim, const int64_t *shape, double value,
                           ada_dtype dt, ada_device dev);
/* 1-D tensor start, start+step, ... (n elements). */
ada_status ada_tensor_arange(ada_tensor **out, double start, double step, int64_t n, ada_dtype dt,
                             ada_device dev);
/* Standard normals; element i (row-major) is ada_randn_at(seed, i) rounded to dt. Identical on
 * every device and thread count. dt must be a float dtype. */
ada_status ada_tensor_randn(ada_tensor **out, int32_t ndim, const int64_t *shape, uint64_t seed,
                            ada_dtype dt, ada_device dev);
/* A tensor over host memory owned elsewhere (for example a memory-mapped safetensors file):
 * contiguous, dtype dt, shape given; release(ctx) is called once when the last view of it is
 * freed (release may be NULL). The memory must stay valid until then. On failure release is
 * not called. */
ada_status ada_tensor_from_host_memory(ada_tensor **out, void *data, int32_t ndim, const int64_t *shape,
                                       ada_dtype dt, void (*release)(void *ctx), void *ctx);
/* Releases the handle (and the storage when it was the last reference). NULL is ignored. */
void ada_tensor_free(ada_tensor *t);

/* ---- views (share storage) ------------------------------------------------------------ */
/* New handle on the same view. */
ada_status ada_tensor_view(ada_tensor **out, const ada_tensor *t);
/* Reshape: a view when the strides allow it, else a contiguous copy. One size may be -1. */
ada_status ada_tensor_reshape(ada_tensor **out, const ada_tensor *t, int32_t ndim,
                              const int64_t *shape);
/* Elements [start, start+len) of dimension dim. */
ada_status ada_tensor_narrow(ada_tensor **out, const ada_tensor *t, int32_t dim, int64_t start,
                             int64_t len);
ada_status ada_tensor_transpose(ada_tensor **out, const ada_tensor *t, int32_t a, int32_t b);
/* A view where dimensions of size 1 are repeated to shape[i] (stride 0, as broadcasting); other
 * sizes must match. Writes through such a view alias; use it as a source. */
ada_status ada_tensor_expand(ada_tensor **out, const ada_tensor *t, int32_t ndim, const int64_t *shape);
/* perm: a permutation of 0..ndim-1; out dim i is input dim perm[i]. */
ada_status ada_tensor_permute(ada_tensor **out, const ada_tensor *t, const int32_t *perm);

/* ---- copies --------------------------------------------------------------------------- */
/* A contiguous copy on device dev with dtype dt (any dtype and device pair). */
ada_status ada_tensor_to(ada_tensor **out, const ada_tensor *t, ada_dtype dt, ada_device dev);
/* A contiguous copy (same dtype and device). */
ada_status ada_tensor_contiguous(ada_tensor **out, const ada_tensor *t);
/* dst <- src, elementwise with conversion; same shape; any devices. dst may be strided. */
ada_status ada_tensor_copy(ada_tensor *dst, const ada_tensor *src);
/* Every element of t (a view, maybe strided) set to value. */
ada_status ada_tensor_fill(ada_tensor *t, double value);

/* ---- queries ---------------------------------------------------------------------------- */
int64_t ada_tensor_numel(const ada_tensor *t);
bool ada_tensor_is_contiguous(const ada_tensor *t);
/* Address of the first element (storage data + offset). */
void *ada_tensor_data(const ada_tensor *t);
bool ada_tensor_same_storage(const ada_tensor *a, const ada_tensor *b);
/* Element at a 0-based index (ndim entries), read as double / written with conversion. */
ada_status ada_tensor_get(const ada_tensor *t, const int64_t *index, double *out);
ada_status ada_tensor_set(ada_tensor *t, const int64_t *index, double value);

/* ---- reductions (computed in double; results as double) ---------------------------------- */
ada_status ada_tensor_sum(const ada_tensor *t, double *out);
/* Maximum; NaN if any element is NaN. */
ada_status ada_tensor_max(const ada_tensor *t, double *out);
ada_status ada_tensor_min(const ada_tensor *t, double *out);
/* Euclidean norm (sqrt of the sum of squares). */
ada_status ada_tensor_norm(const ada_tensor *t, double *out);

/* ---- CPU threads -------------------------------------------------------------------------- */
/* Number of threads CPU kernels use (OpenMP); n <= 0 restores the default. */
void ada_set_num_threads(int32_t n);
int32_t ada_get_num_threads(void);

#endif
