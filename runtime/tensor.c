/* tensor.c: tensor handles, storage, views, copies across devices and dtypes. Memory, copies
 * and fills go to the backend of the device (backend.h); this file names none of them. */
#include "tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

/* ---- names -------------------------------------------------------------------------- */

static const char *const dtype_names[ADA_NDTYPES] = {"f32", "bf16", "f16", "i32", "i16", "u8"};

const char *ada_dtype_name(ada_dtype t) {
  return (t >= 0 && t < ADA_NDTYPES) ? dtype_names[t] : "?";
}

bool ada_dtype_parse(const char *s, ada_dtype *out) {
  static const struct { const char *name; ada_dtype t; } alias[] = {
      {"f32", ADA_F32},   {"float32", ADA_F32}, {"float", ADA_F32}, {"bf16", ADA_BF16},
      {"bfloat16", ADA_BF16}, {"f16", ADA_F16}, {"float16", ADA_F16}, {"half", ADA_F16},
      {"i32", ADA_I32},   {"int32", ADA_I32},   {"i16", ADA_I16},   {"int16", ADA_I16},
      {"u8", ADA_U8},     {"uint8", ADA_U8},
  };
  for (size_t i = 0; i < sizeof alias / sizeof alias[0]; i++)
    if (strcmp(s, alias[i].name) == 0) { *out = alias[i].t; return true; }
  return false;
}

bool ada_device_parse(const char *s, ada_device *out) {
  if (strcmp(s, "cpu") == 0) { out->type = ADA_CPU; out->index = 0; return true; }
  if (strcmp(s, "cuda") == 0 || strcmp(s, "gpu") == 0) { out->type = ADA_CUDA; out->index = 0; return true; }
  if (strncmp(s, "cuda:", 5) == 0 && s[5] >= '0' && s[5] <= '9') {
    char *end;
    long v = strtol(s + 5, &end, 10);
    if (*end != '\0' || v < 0 || v > 1024) return false;
    out->type = ADA_CUDA;
    out->index = (int32_t)v;
    return true;
  }
  return false;
}

void ada_device_format(ada_device d, char *buf, size_t n) {
  if (d.type == ADA_CPU) snprintf(buf, n, "cpu");
  else snprintf(buf, n, "cuda:%d", (int)d.index);
}

bool ada_device_equal(ada_device a, ada_device b) {
  return a.type == b.type && (a.type == ADA_CPU || a.index == b.index);
}

void ada_shape_format(int32_t ndim, const int64_t *shape, char *buf, size_t n) {
  size_t used = (size_t)snprintf(buf, n, "[");
  for (int32_t i = 0; i < ndim && used < n; i++)
    used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (used < n) snprintf(buf + used, n - used, "]");
}

/* ---- storage -------------------------------------------------------------------------- */

static ada_status storage_new(ada_storage **out, size_t nbytes, ada_device dev) {
  ada_status s = ada_backend_device_check(dev, "tensor");
  if (s) return s;
  ada_storage *st = calloc(1, sizeof *st);
  if (!st) return ada_fail(ADA_ENOMEM, "tensor: out of host memory");
  st->nbytes = nbytes;
  st->device = dev;
  st->refcount = 1;
  if ((s = ada_backend_find(dev.type)->alloc(&st->data, nbytes, dev.index))) {
    free(st);
    return s;
  }
  *out = st;
  return ADA_OK;
}

static void storage_release(ada_storage *st) {
  if (!st || --st->refcount > 0) return;
  if (st->external) {
    if (st->release) st->release(st->release_ctx);
  } else {
    ada_backend_find(st->device.type)->free(st->data, st->device.index);
  }
  free(st);
}

/* ---- handles ------------------------------------------------------------------------------ */

static ada_status check_shape(int32_t ndim, const int64_t *shape, const char *op) {
  if (ndim < 0 || ndim > ADA_MAX_DIMS)
    return ada_fail(ADA_EINVAL, "%s: %d dimensions (at most %d)", op, (int)ndim, ADA_MAX_DIMS);
  int64_t n = 1;
  for (int32_t i = 0; i < ndim; i++) {
    if (shape[i] < 1)
      return ada_fail(ADA_EINVAL, "%s: size %lld of dimension %d must be >= 1", op,
                      (long long)shape[i], (int)i + 1);
    if (n > INT64_MAX / 8 / shape[i]) return ada_fail(ADA_EINVAL, "%s: shape too large", op);
    n *= shape[i];
  }
  return ADA_OK;
}

static void set_contiguous_strides(ada_tensor *t) {
  int64_t s = 1;
  for (int32_t i = t->ndim - 1; i >= 0; i--) { t->stride[i] = s; s *= t->shape[i]; }
}

static ada_status handle_new(ada_tensor **out, ada_storage *st, const ada_tensor *like) {
  ada_tensor *t = malloc(sizeof *t);
  if (!t) return ada_fail(ADA_ENOMEM, "tensor: out of host memory");
  if (like) *t = *like;
  t->storage = st;
  st->refcount++;
  *out = t;
  return ADA_OK;
}

int64_t ada_tensor_numel(const ada_tensor *t) {
  int64_t n = 1;
  for (int32_t i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

ada_status ada_tensor_empty(ada_tensor **out, int32_t ndim, const int64_t *shape, ada_dtype dt,
                            ada_device dev) {
  ada_status s = check_shape(ndim, shape, "tensor");
  if (s) return s;
  if (dt < 0 || dt >= ADA_NDTYPES) return ada_fail(ADA_EINVAL, "tensor: unknown dtype %d", (int)dt);
  ada_tensor tmp = {0};
  tmp.dtype = dt;
  tmp.ndim = ndim;
  memcpy(tmp.shape, shape, sizeof(int64_t) * (size_t)ndim);
  set_contiguous_strides(&tmp);
  ada_storage *st = NULL;
  s = storage_new(&st, (size_t)ada_tensor_numel(&tmp) * (size_t)ada_dtype_size(dt), dev);
  if (s) return s;
  s = handle_new(out, st, &tmp);
  storage_release(st); /* the handle holds the only reference now (or none on failure) */
  return s;
}

ada_status ada_tensor_from_host_memory(ada_tensor **out, void *data, int32_t ndim, const int64_t *shape,
                                       ada_dtype dt, void (*release)(void *ctx), void *ctx) {
  ada_status s = check_shape(ndim, shape, "tensor");
  if (s) return s;
  if (dt < 0 || dt >= ADA_NDTYPES) return ada_fail(ADA_EINVAL, "tensor: unknown dtype %d", (int)dt);
  if (!data) return ada_fail(ADA_EINVAL, "tensor: external memory is NULL");
  ada_tensor tmp = {0};
  tmp.dtype = dt;
  tmp.ndim = ndim;
  memcpy(tmp.shape, shape, sizeof(int64_t) * (size_t)ndim);
  set_contiguous_strides(&tmp);
  ada_storage *st = calloc(1, sizeof *st);
  if (!st) return ada_fail(ADA_ENOMEM, "tensor: out of host memory");
  st->data = data;
  st->nbytes = (size_t)ada_tensor_numel(&tmp) * (size_t)ada_dtype_size(dt);
  st->device.type = ADA_CPU;
  st->refcount = 1;
  st->external = true;
  st->release = release;
  st->release_ctx = ctx;
  s = handle_new(out, st, &tmp);
  if (s) st->release = NULL; /* on failure the caller keeps its memory */
  storage_release(st);
  return s;
}

void ada_tensor_free(ada_tensor *t) {
  if (!t) return;
  storage_release(t->storage);
  free(t);
}

static ada_strided strided_of(const ada_tensor *t) {
  ada_strided l;
  l.ndim = t->ndim;
  for (int32_t i = 0; i < t->ndim; i++) { l.shape[i] = t->shape[i]; l.stride[i] = t->stride[i]; }
  if (t->ndim == 0) { l.ndim = 1; l.shape[0] = 1; l.stride[0] = 1; }
  return l;
}

void *ada_tensor_data(const ada_tensor *t) {
  return (char *)t->storage->data + t->offset * ada_dtype_size(t->dtype);
}

ada_status ada_tensor_fill(ada_tensor *t, double value) {
  ada_strided l = strided_of(t);
  return ada_backend_of(t)->fill(ada_tensor_data(t), t->dtype, &l, value, t->storage->device.index);
}

ada_status ada_tensor_full(ada_tensor **out, int32_t ndim, const int64_t *shape, double value,
                           ada_dtype dt, ada_device dev) {
  ada_tensor *t;
  ada_status s = ada_tensor_empty(&t, ndim, shape, dt, dev);
  if (s) return s;
  if ((s = ada_tensor_fill(t, value))) { ada_tensor_free(t); return s; }
  *out = t;
  return ADA_OK;
}

ada_status ada_tensor_arange(ada_tensor **out, double start, double step, int64_t n, ada_dtype dt,
                             ada_device dev) {
  if (n < 1) return ada_fail(ADA_EINVAL, "arange: %lld elements (must be >= 1)", (long long)n);
  ada_tensor *t;
  ada_status s = ada_tensor_empty(&t, 1, &n, dt, dev);
  if (s) return s;
  if ((s = ada_backend_of(t)->arange(t->storage->data, dt, n, start, step, dev.index))) {
    ada_tensor_free(t);
    return s;
  }
  *out = t;
  return ADA_OK;
}

ada_status ada_tensor_randn(ada_tensor **out, int32_t ndim, const int64_t *shape, uint64_t seed,
                            ada_dtype dt, ada_device dev) {
  if (!ada_dtype_is_float(dt))
    return ada_fail(ADA_EINVAL, "randn: dtype %s is not a float dtype (f32, bf16, f16)", ada_dtype_name(dt));
  ada_tensor *t;
  ada_status s = ada_tensor_empty(&t, ndim, shape, dt, dev);
  if (s) return s;
  int64_t n = ada_tensor_numel(t);
  if ((s = ada_backend_of(t)->randn(t->storage->data, dt, n, seed, dev.index))) {
    ada_tensor_free(t);
    return s;
  }
  *out = t;
  return ADA_OK;
}

/* ---- views ---------------------------------------------------------------------------------- */

ada_status ada_tensor_view(ada_tensor **out, const ada_tensor *t) {
  return handle_new(out, t->storage, t);
}

bool ada_tensor_is_contiguous(const ada_tensor *t) {
  int64_t s = 1;
  for (int32_t i = t->ndim - 1; i >= 0; i--) {
    if (t->shape[i] != 1 && t->stride[i] != s) return false;
    s *= t->shape[i];
  }
  return true;
}

bool ada_tensor_same_storage(const ada_tensor *a, const ada_tensor *b) {
  return a->storage == b->storage;
}

/* Strides for viewing t with a new shape without copying, when possible: old dimensions are
 * grouped into runs that are contiguous with each other, and each run must map onto a run of
 * new dimensions with the same element count. */
static bool view_strides(const ada_tensor *t, int32_t nd, const int64_t *shape, int64_t *stride) {
  int32_t od = t->ndim;
  if (od == 0) {
    for (int32_t j = 0; j < nd; j++) stride[j] = 1;
    return true;
  }
  int32_t vd = nd - 1;
  int64_t base = t->stride[od - 1], tn = 1, vn = 1;
  for (int32_t d = od - 1; d >= 0; d--) {
    tn *= t->shape[d];
    if (d == 0 || (t->shape[d - 1] != 1 && t->stride[d - 1] != tn * base)) {
      while (vd >= 0 && (vn < tn || shape[vd] == 1)) {
        stride[vd] = vn * base;
        vn *= shape[vd];
        vd--;
      }
      if (vn != tn) return false;
      if (d > 0) { base = t->stride[d - 1]; tn = 1; vn = 1; }
    }
  }
  return vd == -1;
}

ada_status ada_tensor_reshape(ada_tensor **out, const ada_tensor *t, int32_t ndim,
                              const int64_t *shape_in) {
  if (ndim < 0 || ndim > ADA_MAX_DIMS)
    return ada_fail(ADA_EINVAL, "reshape: %d dimensions (at most %d)", (int)ndim, ADA_MAX_DIMS);
  int64_t shape[ADA_MAX_DIMS];
  int32_t infer = -1;
  int64_t known = 1, n = ada_tensor_numel(t);
  for (int32_t i = 0; i < ndim; i++) {
    shape[i] = shape_in[i];
    if (shape[i] == -1) {
      if (infer >= 0) return ada_fail(ADA_EINVAL, "reshape: more than one size is -1");
      infer = i;
    } else if (shape[i] < 1) {
      return ada_fail(ADA_EINVAL, "reshape: size %lld of dimension %d must be >= 1 or -1",
                      (long long)shape[i], (int)i + 1);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    if (n % known) goto mismatch;
    shape[infer] = n / known;
  }
  {
    int64_t m = 1;
    for (int32_t i = 0; i < ndim; i++) m *= shape[i];
    if (m != n) goto mismatch;
  }
  int64_t stride[ADA_MAX_DIMS];
  if (view_strides(t, ndim, shape, stride)) {
    ada_status s = handle_new(out, t->storage, t);
    if (s) return s;
    (*out)->ndim = ndim;
    for (int32_t i = 0; i < ndim; i++) { (*out)->shape[i] = shape[i]; (*out)->stride[i] = stride[i]; }
    return ADA_OK;
  }
  {
    ada_tensor *c;
    ada_status s = ada_tensor_contiguous(&c, t);
    if (s) return s;
    c->ndim = ndim;
    memcpy(c->shape, shape, sizeof(int64_t) * (size_t)ndim);
    set_contiguous_strides(c);
    *out = c;
    return ADA_OK;
  }
mismatch : {
  char a[96], b[96];
  ada_shape_format(t->ndim, t->shape, a, sizeof a);
  ada_shape_format(ndim, shape_in, b, sizeof b);
  return ada_fail(ADA_EINVAL, "reshape: cannot view %s (%lld elements) as %s", a, (long long)n, b);
}
}

ada_status ada_tensor_narrow(ada_tensor **out, const ada_tensor *t, int32_t dim, int64_t start,
                             int64_t len) {
  if (dim < 0 || dim >= t->ndim)
    return ada_fail(ADA_EINVAL, "narrow: dimension %d out of range (tensor has %d)", (int)dim + 1, (int)t->ndim);
  if (start < 0 || len < 1 || start + len > t->shape[dim])
    return ada_fail(ADA_EINVAL, "narrow: elements [%lld, %lld) of dimension %d out of range (size %lld)",
                    (long long)start + 1, (long long)(start + len) + 1, (int)dim + 1, (long long)t->shape[dim]);
  ada_status s = handle_new(out, t->storage, t);
  if (s) return s;
  (*out)->offset += start * t->stride[dim];
  (*out)->shape[dim] = len;
  return ADA_OK;
}

ada_status ada_tensor_permute(ada_tensor **out, const ada_tensor *t, const int32_t *perm) {
  bool seen[ADA_MAX_DIMS] = {false};
  for (int32_t i = 0; i < t->ndim; i++) {
    if (perm[i] < 0 || perm[i] >= t->ndim || seen[perm[i]])
      return ada_fail(ADA_EINVAL, "permute: not a permutation of the %d dimensions", (int)t->ndim);
    seen[perm[i]] = true;
  }
  ada_status s = handle_new(out, t->storage, t);
  if (s) return s;
  for (int32_t i = 0; i < t->ndim; i++) {
    (*out)->shape[i] = t->shape[perm[i]];
    (*out)->stride[i] = t->stride[perm[i]];
  }
  return ADA_OK;
}

ada_status ada_tensor_expand(ada_tensor **out, const ada_tensor *t, int32_t ndim, const int64_t *shape) {
  ada_status s = check_shape(ndim, shape, "expand");
  if (s) return s;
  bool ok = ndim == t->ndim;
  for (int32_t i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i] || t->shape[i] == 1;
  if (!ok) {
    char a[96], b[96];
    ada_shape_format(t->ndim, t->shape, a, sizeof a);
    ada_shape_format(ndim, shape, b, sizeof b);
    return ada_fail(ADA_EINVAL, "expand: cannot expand %s to %s (only size-1 dimensions repeat)", a, b);
  }
  if ((s = handle_new(out, t->storage, t))) return s;
  for (int32_t i = 0; i < ndim; i++) {
    if (t->shape[i] != shape[i]) (*out)->stride[i] = 0;
    (*out)->shape[i] = shape[i];
  }
  return ADA_OK;
}

ada_status ada_tensor_transpose(ada_tensor **out, const ada_tensor *t, int32_t a, int32_t b) {
  if (a < 0 || a >= t->ndim || b < 0 || b >= t->ndim)
    return ada_fail(ADA_EINVAL, "transpose: dimensions %d and %d out of range (tensor has %d)",
                    (int)a + 1, (int)b + 1, (int)t->ndim);
  int32_t perm[ADA_MAX_DIMS];
  for (int32_t i = 0; i < t->ndim; i++) perm[i] = i;
  perm[a] = b;
  perm[b] = a;
  return ada_tensor_permute(out, t, perm);
}

/* ---- copies --------------------------------------------------------------------------------- */

ada_status ada_tensor_copy(ada_tensor *dst, const ada_tensor *src) {
  if (dst->ndim != src->ndim || memcmp(dst->shape, src->shape, sizeof(int64_t) * (size_t)dst->ndim)) {
    char a[96], b[96];
    ada_shape_format(dst->ndim, dst->shape, a, sizeof a);
    ada_shape_format(src->ndim, src->shape, b, sizeof b);
    return ada_fail(ADA_EINVAL, "copy: destination shape %s differs from source shape %s", a, b);
  }
  ada_device dd = dst->storage->device, sd = src->storage->device;
  ada_strided dl = strided_of(dst), sl = strided_of(src);
  if (ada_device_equal(dd, sd))
    return ada_backend_of(dst)->copy(ada_tensor_data(dst), dst->dtype, &dl, ada_tensor_data(src), src->dtype, &sl,
                                     dd.index);
  /* across devices: bring the source to a contiguous tensor of the destination dtype on its own
   * device, move the bytes, then copy into the (maybe strided) destination there */
  ada_status s;
  ada_tensor *a = NULL, *b = NULL;
  if ((s = ada_tensor_to(&a, src, dst->dtype, sd))) return s;
  if (ada_tensor_is_contiguous(dst)) {
    b = dst;
  } else if ((s = ada_tensor_empty(&b, dst->ndim, dst->shape, dst->dtype, dd))) {
    ada_tensor_free(a);
    return s;
  }
  size_t nbytes = (size_t)ada_tensor_numel(a) * (size_t)ada_dtype_size(a->dtype);
  if (dd.type == ADA_CPU && sd.type != ADA_CPU)
    s = ada_backend_of(a)->to_host(ada_tensor_data(b), ada_tensor_data(a), nbytes, sd.index);
  else if (dd.type != ADA_CPU && sd.type == ADA_CPU)
    s = ada_backend_of(b)->from_host(ada_tensor_data(b), ada_tensor_data(a), nbytes, dd.index);
  else
    s = ada_fail(ADA_EUNSUPPORTED, "copy: between cuda:%d and cuda:%d is not supported",
                 (int)sd.index, (int)dd.index);
  if (!s && b != dst) s = ada_tensor_copy(dst, b);
  ada_tensor_free(a);
  if (b != dst) ada_tensor_free(b);
  return s;
}

ada_status ada_tensor_to(ada_tensor **out, const ada_tensor *t, ada_dtype dt, ada_device dev) {
  ada_tensor *r;
  ada_status s = ada_tensor_empty(&r, t->ndim, t->shape, dt, dev);
  if (s) return s;
  if ((s = ada_tensor_copy(r, t))) { ada_tensor_free(r); return s; }
  *out = r;
  return ADA_OK;
}

ada_status ada_tensor_contiguous(ada_tensor **out, const ada_tensor *t) {
  return ada_tensor_to(out, t, t->dtype, t->storage->device);
}

/* ---- elements and reductions ----------------------------------------------------------------- */

static ada_status element_ptr(const ada_tensor *t, const int64_t *index, const char *op, int64_t *off) {
  int64_t o = t->offset;
  for (int32_t i = 0; i < t->ndim; i++) {
    if (index[i] < 0 || index[i] >= t->shape[i]) {
      char a[96];
      ada_shape_format(t->ndim, t->shape, a, sizeof a);
      return ada_fail(ADA_EINVAL, "%s: index %lld of dimension %d out of range for shape %s", op,
                      (long long)index[i] + 1, (int)i + 1, a);
    }
    o += index[i] * t->stride[i];
  }
  *off = o;
  return ADA_OK;
}

ada_status ada_tensor_get(const ada_tensor *t, const int64_t *index, double *out) {
  int64_t off;
  ada_status s = element_ptr(t, index, "get", &off);
  if (s) return s;
  int32_t es = ada_dtype_size(t->dtype);
  const char *p = (const char *)t->storage->data + off * es;
  if (t->storage->device.type == ADA_CPU) { *out = ada_load(p, t->dtype); return ADA_OK; }
  unsigned char buf[8];
  if ((s = ada_backend_of(t)->to_host(buf, p, (size_t)es, t->storage->device.index))) return s;
  *out = ada_load(buf, t->dtype);
  return ADA_OK;
}

ada_status ada_tensor_set(ada_tensor *t, const int64_t *index, double value) {
  int64_t off;
  ada_status s = element_ptr(t, index, "set", &off);
  if (s) return s;
  int32_t es = ada_dtype_size(t->dtype);
  char *p = (char *)t->storage->data + off * es;
  if (t->storage->device.type == ADA_CPU) { ada_store(p, t->dtype, value); return ADA_OK; }
  unsigned char buf[8];
  ada_store(buf, t->dtype, value);
  const ada_backend *b = ada_backend_of(t);
  if ((s = b->from_host(p, buf, (size_t)es, t->storage->device.index))) return s;
  return b->synchronize(t->storage->device.index); /* buf is on this stack frame */
}

static ada_status reduce(const ada_tensor *t, ada_reduce_op op, double *out) {
  const ada_backend *b = ada_backend_of(t);
  if (b->reduce) {
    ada_strided l = strided_of(t);
    return b->reduce(ada_tensor_data(t), t->dtype, &l, op, t->storage->device.index, out);
  }
  /* others are reduced on the host: these reductions serve tests and reports */
  ada_tensor *h;
  ada_device cpu = {ADA_CPU, 0};
  ada_status s = ada_tensor_to(&h, t, t->dtype, cpu);
  if (s) return s;
  s = reduce(h, op, out);
  ada_tensor_free(h);
  return s;
}

ada_status ada_tensor_sum(const ada_tensor *t, double *out) { return reduce(t, ADA_REDUCE_SUM, out); }
ada_status ada_tensor_max(const ada_tensor *t, double *out) { return reduce(t, ADA_REDUCE_MAX, out); }
ada_status ada_tensor_min(const ada_tensor *t, double *out) { return reduce(t, ADA_REDUCE_MIN, out); }

ada_status ada_tensor_norm(const ada_tensor *t, double *out) {
  ada_status s = reduce(t, ADA_REDUCE_SUMSQ, out);
  if (!s) *out = sqrt(*out);
  return s;
}

void ada_set_num_threads(int32_t n) { ada_backend_find(ADA_CPU)->set_threads(n); }
int32_t ada_get_num_threads(void) { return ada_backend_find(ADA_CPU)->threads(); }
