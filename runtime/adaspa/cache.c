/* cache.c: the AdaSpa cache (cache.h): per layer a shared layout, a view of the cached LSE, the
 * steps they come from, per-head density and recall; memory accounting; saving to and loading
 * from a safetensors file with full validation. */
#include "cache.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../attn.h"
#include "../backend.h"
#include "../io/safetensors.h"

typedef struct cache_layer {
  ada_layout *layout; /* one reference, or NULL */
  ada_tensor *lse;    /* own view, or NULL */
  int64_t layout_step, lse_step;
  double *density; /* [heads] with the layout */
  double *recall;  /* [heads] or NULL */
} cache_layer;

struct ada_cache {
  int32_t n;
  cache_layer *layers;
};

#define MAX_LAYERS 1000000

ada_status ada_cache_new(ada_cache **out, int32_t n_layers) {
  if (n_layers < 1 || n_layers > MAX_LAYERS)
    return ada_fail(ADA_EINVAL, "ada_cache_new: n_layers must be in [1, %d], got %d", MAX_LAYERS, (int)n_layers);
  ada_cache *c = calloc(1, sizeof *c);
  if (c) c->layers = calloc((size_t)n_layers, sizeof *c->layers);
  if (!c || !c->layers) {
    free(c);
    return ada_fail(ADA_ENOMEM, "ada_cache_new: out of memory for %d layers", (int)n_layers);
  }
  c->n = n_layers;
  for (int32_t i = 0; i < n_layers; i++) c->layers[i].layout_step = c->layers[i].lse_step = -1;
  *out = c;
  return ADA_OK;
}

static void clear_layer(cache_layer *e) {
  ada_layout_free(e->layout);
  ada_tensor_free(e->lse);
  free(e->density);
  free(e->recall);
  memset(e, 0, sizeof *e);
  e->layout_step = e->lse_step = -1;
}

void ada_cache_free(ada_cache *c) {
  if (!c) return;
  for (int32_t i = 0; i < c->n; i++) clear_layer(&c->layers[i]);
  free(c->layers);
  free(c);
}

int32_t ada_cache_layers(const ada_cache *c) { return c->n; }

static ada_status check_layer(const char *op, const ada_cache *c, int32_t layer) {
  if (!c) return ada_fail(ADA_EINVAL, "%s: cache is NULL", op);
  if (layer < 0 || layer >= c->n)
    return ada_fail(ADA_EINVAL, "%s: layer %d is out of range [0, %d)", op, (int)layer, (int)c->n);
  return ADA_OK;
}

/* Does lse [H, S] fit layout l? Fails naming op, the 1-based layer and what was kept. */
static ada_status check_fit(const char *op, int32_t layer, const ada_layout *l, const ada_tensor *lse,
                            bool layout_kept, bool lse_kept) {
  int64_t h = lse->shape[0], s = lse->shape[1];
  if (h == l->heads && (s + l->block - 1) / l->block == l->nqb) return ADA_OK;
  char shp[64];
  ada_shape_format(lse->ndim, lse->shape, shp, sizeof shp);
  return ada_fail(ADA_EINVAL,
                  "%s: layer %d: lse%s has shape %s, the layout%s (heads %d, %d query blocks of %d) needs [%d, S] with "
                  "%lld <= S <= %lld%s",
                  op, (int)layer + 1, lse_kept ? " (cached)" : "", shp, layout_kept ? " (cached)" : "", (int)l->heads,
                  (int)l->nqb, (int)l->block, (int)l->heads, (long long)(l->nqb - 1) * l->block + 1,
                  (long long)l->nqb * l->block,
                  layout_kept || lse_kept ? "; set layout and lse together, or clear the layer first" : "");
}

ada_status ada_cache_set(ada_cache *c, int32_t layer, ada_layout *layout, const ada_tensor *lse, int64_t step,
                         const double *recall) {
  const char *op = "ada_cache_set";
  ada_status s = check_layer(op, c, layer);
  if (s) return s;
  cache_layer *e = &c->layers[layer];
  if ((layout || lse) && step < 0) return ada_fail(ADA_EINVAL, "%s: step must be >= 0, got %lld", op, (long long)step);
  if (lse) {
    char shp[64];
    ada_shape_format(lse->ndim, lse->shape, shp, sizeof shp);
    if (lse->dtype != ADA_F32 || lse->ndim != 2 || !ada_tensor_is_contiguous(lse))
      return ada_fail(ADA_EINVAL, "%s: layer %d: lse must be a contiguous f32 tensor [H, S], got %s%s %s", op,
                      (int)layer + 1, ada_tensor_is_contiguous(lse) ? "" : "non-contiguous ",
                      ada_dtype_name(lse->dtype), shp);
  }
  const ada_layout *nl = layout ? layout : e->layout;
  const ada_tensor *nt = lse ? lse : e->lse;
  if (nl && nt && (s = check_fit(op, layer, nl, nt, !layout, !lse))) return s;
  if (recall && !nl)
    return ada_fail(ADA_EINVAL, "%s: layer %d: recall needs a layout (none given and the layer has none)", op,
                    (int)layer + 1);
  if (recall)
    for (int32_t h = 0; h < nl->heads; h++)
      if (!(recall[h] >= 0 && recall[h] <= 1))
        return ada_fail(ADA_EINVAL, "%s: layer %d: recall of head %d is %g, outside [0, 1]", op, (int)layer + 1,
                        (int)h + 1, recall[h]);
  /* allocate everything, then commit */
  double *density = NULL, *rec = NULL;
  ada_tensor *view = NULL;
  size_t hb = nl ? sizeof(double) * (size_t)nl->heads : 0;
  if (layout && !(density = malloc(hb))) goto nomem;
  if (recall && !(rec = malloc(hb))) goto nomem;
  if (lse && (s = ada_tensor_view(&view, lse))) {
    free(density);
    free(rec);
    return s;
  }
  if (layout) {
    ada_layout_density(layout, density);
    ada_layout_retain(layout);
    ada_layout_free(e->layout);
    free(e->density);
    free(e->recall);
    e->layout = layout;
    e->density = density;
    e->recall = NULL;
    e->layout_step = step;
  }
  if (recall) {
    for (int32_t h = 0; h < nl->heads; h++) rec[h] = (double)(float)recall[h];
    free(e->recall);
    e->recall = rec;
  }
  if (lse) {
    ada_tensor_free(e->lse);
    e->lse = view;
    e->lse_step = step;
  }
  return ADA_OK;
nomem:
  free(density);
  free(rec);
  return ada_fail(ADA_ENOMEM, "%s: out of memory", op);
}

ada_status ada_cache_set_layout(ada_cache *c, int32_t layer, ada_layout *layout, int64_t step, const double *recall) {
  if (!layout) return ada_fail(ADA_EINVAL, "ada_cache_set_layout: layout is NULL");
  return ada_cache_set(c, layer, layout, NULL, step, recall);
}

ada_status ada_cache_set_lse(ada_cache *c, int32_t layer, const ada_tensor *lse, int64_t step) {
  if (!lse) return ada_fail(ADA_EINVAL, "ada_cache_set_lse: lse is NULL");
  return ada_cache_set(c, layer, NULL, lse, step, NULL);
}

ada_status ada_cache_clear(ada_cache *c, int32_t layer) {
  ada_status s = check_layer("ada_cache_clear", c, layer);
  if (s) return s;
  clear_layer(&c->layers[layer]);
  return ADA_OK;
}

#define GET(layer) ((c && (layer) >= 0 && (layer) < c->n) ? &c->layers[layer] : NULL)

ada_layout *ada_cache_layout(const ada_cache *c, int32_t layer) {
  const cache_layer *e = GET(layer);
  return e ? e->layout : NULL;
}
const ada_tensor *ada_cache_lse(const ada_cache *c, int32_t layer) {
  const cache_layer *e = GET(layer);
  return e ? e->lse : NULL;
}
int64_t ada_cache_layout_step(const ada_cache *c, int32_t layer) {
  const cache_layer *e = GET(layer);
  return e ? e->layout_step : -1;
}
int64_t ada_cache_lse_step(const ada_cache *c, int32_t layer) {
  const cache_layer *e = GET(layer);
  return e ? e->lse_step : -1;
}
const double *ada_cache_density(const ada_cache *c, int32_t layer) {
  const cache_layer *e = GET(layer);
  return e ? e->density : NULL;
}
const double *ada_cache_recall(const ada_cache *c, int32_t layer) {
  const cache_layer *e = GET(layer);
  return e ? e->recall : NULL;
}

static bool same_view(const ada_tensor *a, const ada_tensor *b) {
  return a->storage == b->storage && a->offset == b->offset && ada_tensor_numel(a) == ada_tensor_numel(b);
}

void ada_cache_memory(const ada_cache *c, int64_t *host_bytes, int64_t *device_bytes) {
  int64_t host = 0, dev = 0;
  for (int32_t i = 0; i < c->n; i++) {
    const cache_layer *e = &c->layers[i];
    bool seen_l = !e->layout, seen_t = !e->lse;
    for (int32_t j = 0; j < i && !(seen_l && seen_t); j++) {
      if (!seen_l && c->layers[j].layout == e->layout) seen_l = true;
      if (!seen_t && c->layers[j].lse && same_view(c->layers[j].lse, e->lse)) seen_t = true;
    }
    if (!seen_l) {
      const ada_layout *l = e->layout;
      const int64_t csr = (int64_t)l->heads * (l->nqb + 1) * 8 + l->nnz * 4;
      host += csr;
      dev += ada_derived_device_bytes(l->derived); /* a device mirror and its CTA order */
    }
    if (!seen_t) {
      int64_t b = ada_tensor_numel(e->lse) * 4;
      if (e->lse->storage->device.type == ADA_CPU) host += b;
      else dev += b;
    }
  }
  if (host_bytes) *host_bytes = host;
  if (device_bytes) *device_bytes = dev;
}

/* ---- saving -------------------------------------------------------------------------------- */

#define FORMAT_NAME "adaspa.cache"
#define FORMAT_VERSION "1"
#define KEY_LEN 48
#define VAL_LEN 24

/* Everything one save allocates, released together. */
typedef struct save_buf {
  int64_t n, n_meta;
  char (*names)[KEY_LEN];
  const char **name_ptrs;
  const ada_tensor **tensors;
  ada_tensor **owned; /* tensors made here (freed after writing); NULL entries for borrowed */
  char (*keys)[KEY_LEN];
  char (*vals)[VAL_LEN];
  const char **key_ptrs, **val_ptrs;
} save_buf;

static void save_buf_free(save_buf *b) {
  for (int64_t i = 0; b->owned && i < b->n; i++) ada_tensor_free(b->owned[i]);
  free(b->names);
  free(b->name_ptrs);
  free(b->tensors);
  free(b->owned);
  free(b->keys);
  free(b->vals);
  free(b->key_ptrs);
  free(b->val_ptrs);
}

static void add_meta(save_buf *b, const char *key, const char *value) {
  snprintf(b->keys[b->n_meta], KEY_LEN, "%s", key);
  snprintf(b->vals[b->n_meta], VAL_LEN, "%s", value);
  b->n_meta++;
}

static void add_layer_meta(save_buf *b, int32_t layer, const char *field, long long v) {
  char k[KEY_LEN], val[VAL_LEN];
  snprintf(k, sizeof k, "layer.%d.%s", (int)layer + 1, field);
  snprintf(val, sizeof val, "%lld", v);
  add_meta(b, k, val);
}

/* Adds tensor t under "layer.N.field"; owned = true hands t to the buffer. */
static void add_tensor(save_buf *b, int32_t layer, const char *field, const ada_tensor *t, ada_tensor *owned) {
  snprintf(b->names[b->n], KEY_LEN, "layer.%d.%s", (int)layer + 1, field);
  b->tensors[b->n] = t;
  b->owned[b->n] = owned;
  b->n++;
}

/* Release callback of the borrowed indices tensor: the layout keeps owning the memory. (With a
 * NULL release, tensor.c would free() memory it does not own.) */
static void borrowed(void *ctx) { (void)ctx; }

/* A new f32 [n] CPU tensor holding v (rounded). */
static ada_status f32_vector(ada_tensor **out, const double *v, int32_t n) {
  int64_t shape[1] = {n};
  ada_status s = ada_tensor_empty(out, 1, shape, ADA_F32, (ada_device){ADA_CPU, 0});
  if (s) return s;
  float *p = ada_tensor_data(*out);
  for (int32_t i = 0; i < n; i++) p[i] = (float)v[i];
  return ADA_OK;
}

ada_status ada_cache_save(const ada_cache *c, const char *path) {
  const char *op = "ada_cache_save";
  if (!c || !path) return ada_fail(ADA_EINVAL, "%s: cache and path must not be NULL", op);
  for (int32_t i = 0; i < c->n; i++) {
    const ada_layout *l = c->layers[i].layout;
    if (l && l->nnz > INT32_MAX)
      return ada_fail(ADA_EINVAL, "%s: %s: layer %d: the layout has %lld entries; offsets are stored as i32 (at most %d)",
                      op, path, (int)i + 1, (long long)l->nnz, INT32_MAX);
  }
  save_buf b = {0};
  size_t nt = (size_t)c->n * 5, nm = 3 + (size_t)c->n * 7;
  b.names = malloc(nt * KEY_LEN);
  b.name_ptrs = malloc(nt * sizeof(char *));
  b.tensors = malloc(nt * sizeof(ada_tensor *));
  b.owned = calloc(nt, sizeof(ada_tensor *));
  b.keys = malloc(nm * KEY_LEN);
  b.vals = malloc(nm * VAL_LEN);
  b.key_ptrs = malloc(nm * sizeof(char *));
  b.val_ptrs = malloc(nm * sizeof(char *));
  ada_status s = ADA_OK;
  if (!b.names || !b.name_ptrs || !b.tensors || !b.owned || !b.keys || !b.vals || !b.key_ptrs || !b.val_ptrs) {
    s = ada_fail(ADA_ENOMEM, "%s: %s: out of memory", op, path);
    goto done;
  }
  char nl[VAL_LEN];
  snprintf(nl, sizeof nl, "%d", (int)c->n);
  add_meta(&b, "format", FORMAT_NAME);
  add_meta(&b, "version", FORMAT_VERSION);
  add_meta(&b, "n_layers", nl);
  for (int32_t i = 0; i < c->n && !s; i++) {
    const cache_layer *e = &c->layers[i];
    const ada_layout *l = e->layout;
    if (l) {
      int64_t oshape[2] = {l->heads, (int64_t)l->nqb + 1};
      ada_tensor *off = NULL, *idx = NULL, *den = NULL, *rec = NULL;
      if (!(s = ada_tensor_empty(&off, 2, oshape, ADA_I32, (ada_device){ADA_CPU, 0}))) {
        int32_t *p = ada_tensor_data(off);
        for (int64_t k = 0; k < oshape[0] * oshape[1]; k++) p[k] = (int32_t)l->offsets[k];
        add_tensor(&b, i, "offsets", off, off);
      }
      if (!s && l->nnz > 0) {
        int64_t ishape[1] = {l->nnz};
        if (!(s = ada_tensor_from_host_memory(&idx, l->indices, 1, ishape, ADA_I32, borrowed, NULL)))
          add_tensor(&b, i, "indices", idx, idx);
      }
      if (!s && !(s = f32_vector(&den, e->density, l->heads))) add_tensor(&b, i, "density", den, den);
      if (!s && e->recall && !(s = f32_vector(&rec, e->recall, l->heads))) add_tensor(&b, i, "recall", rec, rec);
      add_layer_meta(&b, i, "step", (long long)e->layout_step);
      add_layer_meta(&b, i, "heads", l->heads);
      add_layer_meta(&b, i, "nqb", l->nqb);
      add_layer_meta(&b, i, "nkb", l->nkb);
      add_layer_meta(&b, i, "block", l->block);
      add_layer_meta(&b, i, "nnz", (long long)l->nnz);
    }
    if (e->lse) {
      add_tensor(&b, i, "lse", e->lse, NULL);
      add_layer_meta(&b, i, "lse_step", (long long)e->lse_step);
    }
  }
  if (s) goto done;
  for (int64_t i = 0; i < b.n; i++) b.name_ptrs[i] = b.names[i];
  for (int64_t i = 0; i < b.n_meta; i++) {
    b.key_ptrs[i] = b.keys[i];
    b.val_ptrs[i] = b.vals[i];
  }
  s = ada_st_write(path, b.n, b.name_ptrs, b.tensors, b.n_meta, b.key_ptrs, b.val_ptrs);
  if (s) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", ada_last_error());
    s = ada_fail(s, "%s: %s", op, msg);
  }
done:
  save_buf_free(&b);
  return s;
}

/* ---- loading ------------------------------------------------------------------------------- */

typedef struct loader {
  const char *op, *path;
  ada_st_file *f;
} loader;

#define LFAIL(ld, ...) load_fail(ld, __VA_ARGS__)

static ada_status load_fail(const loader *ld, const char *fmt, ...) ADA_PRINTF(2, 3);
static ada_status load_fail(const loader *ld, const char *fmt, ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return ada_fail(ADA_EINVAL, "%s: %s: %s", ld->op, ld->path, msg);
}

static const char *meta_get(const loader *ld, const char *key) {
  for (int64_t i = 0; i < ada_st_metadata_count(ld->f); i++)
    if (strcmp(ada_st_metadata_key(ld->f, i), key) == 0) return ada_st_metadata_value(ld->f, i);
  return NULL;
}

/* Metadata key as an integer in [lo, hi]; *present (may be NULL: then required) says if found. */
static ada_status meta_int(const loader *ld, const char *key, int64_t lo, int64_t hi, int64_t *out, bool *present) {
  const char *v = meta_get(ld, key);
  if (present) *present = v != NULL;
  if (!v) return present ? ADA_OK : LFAIL(ld, "metadata %s is missing", key);
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (!*v || *end || errno || x < lo || x > hi)
    return LFAIL(ld, "metadata %s must be an integer in [%lld, %lld], got '%.40s'", key, (long long)lo, (long long)hi, v);
  *out = x;
  return ADA_OK;
}

static const char *dims(const ada_st_entry *e, char *buf, size_t n) {
  char shp[64];
  ada_shape_format(e->ndim, e->shape, shp, sizeof shp);
  snprintf(buf, n, "%s %s", ada_dtype_name(e->dtype), shp);
  return buf;
}

/* Tensor "layer.N.field" as a CPU tensor of dtype dt with ndim dimensions of the given sizes
 * (shape NULL: any sizes). Missing: an error saying why it is needed when required, else
 * *out = NULL. */
static ada_status load_tensor(const loader *ld, int32_t layer, const char *field, ada_dtype dt, int32_t ndim,
                              const int64_t *shape, bool required, const char *why, ada_tensor **out) {
  char name[KEY_LEN], a[96], b[96];
  snprintf(name, sizeof name, "layer.%d.%s", (int)layer + 1, field);
  *out = NULL;
  int64_t i = ada_st_find(ld->f, name);
  if (i < 0) return required ? LFAIL(ld, "%s is missing (%s)", name, why) : ADA_OK;
  ada_st_entry e;
  ada_st_info(ld->f, i, &e);
  bool ok = e.dtype == dt && e.ndim == ndim;
  for (int32_t d = 0; ok && shape && d < ndim; d++) ok = e.shape[d] == shape[d];
  if (!ok) {
    if (shape) {
      ada_st_entry want = {.dtype = dt, .ndim = ndim};
      for (int32_t d = 0; d < ndim; d++) want.shape[d] = shape[d];
      dims(&want, a, sizeof a);
    } else {
      snprintf(a, sizeof a, "%s with %d dimensions", ada_dtype_name(dt), (int)ndim);
    }
    return LFAIL(ld, "%s: expected %s, found %s", name, a, dims(&e, b, sizeof b));
  }
  ada_status s = ada_st_tensor(ld->f, i, out);
  if (s) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", ada_last_error());
    return LFAIL(ld, "%s: %s", name, msg);
  }
  return ADA_OK;
}

/* Builds and validates the layout of layer from the file. */
static ada_status load_layout(const loader *ld, int32_t layer, cache_layer *e) {
  char k[KEY_LEN];
  int64_t heads, nqb, nkb, block, nnz, step;
  ada_status s;
  int N = (int)layer + 1;
#define META(field, lo, hi, var)                                                  \
  do {                                                                            \
    snprintf(k, sizeof k, "layer.%d.%s", N, field);                               \
    if ((s = meta_int(ld, k, lo, hi, &var, NULL))) return s;                      \
  } while (0)
  META("step", 0, INT64_MAX, step);
  META("heads", 1, INT32_MAX, heads);
  META("nqb", 1, INT32_MAX, nqb);
  META("nkb", 1, INT32_MAX, nkb);
  META("block", 64, 128, block);
  if (!ada_attn_block_ok(block)) return LFAIL(ld, "metadata layer.%d.block must be 64 or 128, got %lld", N, (long long)block);
  if (nqb * nkb > (int64_t)UINT32_MAX)
    return LFAIL(ld, "metadata layer.%d: %lld x %lld blocks per head is too many", N, (long long)nqb, (long long)nkb);
  if (heads * nqb > (INT64_MAX / 8) / nkb)
    return LFAIL(ld, "metadata layer.%d: %lld heads of %lld x %lld blocks is too many", N, (long long)heads,
                 (long long)nqb, (long long)nkb);
  META("nnz", 0, (heads * nqb * nkb < INT32_MAX ? heads * nqb * nkb : INT32_MAX), nnz);
#undef META
  int64_t oshape[2] = {heads, nqb + 1}, ishape[1] = {nnz}, hshape[1] = {heads};
  ada_tensor *off = NULL, *idx = NULL, *den = NULL, *rec = NULL;
  ada_layout *l = NULL;
  double *density = NULL, *recall = NULL;
  const char *why = "metadata says the layer holds a layout";
  if ((s = load_tensor(ld, layer, "offsets", ADA_I32, 2, oshape, true, why, &off))) goto fail;
  if (nnz > 0 && (s = load_tensor(ld, layer, "indices", ADA_I32, 1, ishape, true, why, &idx))) goto fail;
  if (nnz == 0 && ada_st_find(ld->f, (snprintf(k, sizeof k, "layer.%d.indices", N), k)) >= 0) {
    s = LFAIL(ld, "%s is present, but metadata layer.%d.nnz is 0", k, N);
    goto fail;
  }
  if ((s = load_tensor(ld, layer, "density", ADA_F32, 1, hshape, true, why, &den))) goto fail;
  if ((s = load_tensor(ld, layer, "recall", ADA_F32, 1, hshape, false, why, &rec))) goto fail;
  /* offsets: each head starts where the previous ended, rows non-decreasing, the last is nnz */
  const int32_t *o = ada_tensor_data(off);
  const int32_t *ix = idx ? ada_tensor_data(idx) : NULL;
  for (int64_t h = 0; h < heads; h++) {
    const int32_t *oh = o + h * (nqb + 1);
    int64_t start = h ? o[h * (nqb + 1) - 1] : 0;
    if (oh[0] != start) {
      s = LFAIL(ld, "layer.%d.offsets: head %lld starts at %d, expected %lld (%s)", N, (long long)h + 1, oh[0],
                (long long)start, h ? "where the previous head ends" : "the first head starts at 0");
      goto fail;
    }
    for (int64_t r = 0; r < nqb; r++) {
      if (oh[r + 1] < oh[r] || oh[r + 1] > nnz) {
        s = LFAIL(ld, "layer.%d.offsets: row %lld of head %lld %s (from %d to %d); offsets must be non-decreasing "
                  "within [0, nnz = %lld]", N, (long long)r + 1, (long long)h + 1,
                  oh[r + 1] < oh[r] ? "decreases" : "ends past nnz", oh[r], oh[r + 1], (long long)nnz);
        goto fail;
      }
      for (int64_t i = oh[r]; i < oh[r + 1]; i++) {
        if (ix[i] < 0 || ix[i] >= nkb) {
          s = LFAIL(ld, "layer.%d.indices: entry %lld (0-based; head %lld, row %lld) is key block %d, outside [0, %lld)", N,
                    (long long)i, (long long)h + 1, (long long)r + 1, ix[i], (long long)nkb);
          goto fail;
        }
        if (i > oh[r] && ix[i] <= ix[i - 1]) {
          s = LFAIL(ld, "layer.%d.indices: entry %lld (0-based; head %lld, row %lld) is key block %d after %d; key blocks "
                    "must be strictly increasing within a row", N, (long long)i, (long long)h + 1, (long long)r + 1,
                    ix[i], ix[i - 1]);
          goto fail;
        }
      }
    }
  }
  if (o[heads * (nqb + 1) - 1] != nnz) {
    s = LFAIL(ld, "layer.%d.offsets: the last offset is %d, but metadata layer.%d.nnz is %lld", N,
              o[heads * (nqb + 1) - 1], N, (long long)nnz);
    goto fail;
  }
  /* the layout itself, then density (checked against the file) and recall */
  if ((s = ada_layout_new(&l, ld->op, (int32_t)heads, (int32_t)nqb, (int32_t)nkb, (int32_t)block))) goto fail;
  l->indices = malloc(sizeof(int32_t) * (size_t)(nnz > 0 ? nnz : 1));
  density = malloc(sizeof(double) * (size_t)heads);
  if (rec) recall = malloc(sizeof(double) * (size_t)heads);
  if (!l->indices || !density || (rec && !recall)) {
    s = ada_fail(ADA_ENOMEM, "%s: %s: layer %d: out of memory", ld->op, ld->path, N);
    goto fail;
  }
  l->nnz = nnz;
  for (int64_t i = 0; i < heads * (nqb + 1); i++) l->offsets[i] = o[i];
  if (nnz > 0) memcpy(l->indices, ix, sizeof(int32_t) * (size_t)nnz);
  if ((s = ada_layout_check(l, ld->op, l->heads, nqb * block, nkb * block)) || (s = ada_layout_validate(l, ld->op)))
    goto fail;
  ada_layout_density(l, density);
  const float *dp = ada_tensor_data(den);
  for (int64_t h = 0; h < heads; h++)
    if (dp[h] != (float)density[h]) {
      s = LFAIL(ld, "layer.%d.density: head %lld is %.9g, but the layout's density is %.9g", N, (long long)h + 1,
                (double)dp[h], density[h]);
      goto fail;
    }
  if (rec) {
    const float *rp = ada_tensor_data(rec);
    for (int64_t h = 0; h < heads; h++) {
      if (!(rp[h] >= 0 && rp[h] <= 1)) {
        s = LFAIL(ld, "layer.%d.recall: head %lld is %g, outside [0, 1]", N, (long long)h + 1, (double)rp[h]);
        goto fail;
      }
      recall[h] = rp[h];
    }
  }
  e->layout = l;
  e->layout_step = step;
  e->density = density;
  e->recall = recall;
  ada_tensor_free(off);
  ada_tensor_free(idx);
  ada_tensor_free(den);
  ada_tensor_free(rec);
  return ADA_OK;
fail:
  ada_layout_free(l);
  free(density);
  free(recall);
  ada_tensor_free(off);
  ada_tensor_free(idx);
  ada_tensor_free(den);
  ada_tensor_free(rec);
  return s;
}

static ada_status load_lse(const loader *ld, int32_t layer, cache_layer *e) {
  char k[KEY_LEN];
  int N = (int)layer + 1;
  int64_t step;
  snprintf(k, sizeof k, "layer.%d.lse_step", N);
  ada_status s = meta_int(ld, k, 0, INT64_MAX, &step, NULL);
  if (s) return s;
  ada_tensor *t;
  if ((s = load_tensor(ld, layer, "lse", ADA_F32, 2, NULL, true, "metadata says the layer holds an lse", &t))) return s;
  if (e->layout) {
    const ada_layout *l = e->layout;
    int64_t S = t->shape[1];
    if (t->shape[0] != l->heads || (S + l->block - 1) / l->block != l->nqb) {
      s = LFAIL(ld, "layer.%d.lse: shape [%lld, %lld] does not fit the layout (heads %d, %d query blocks of %d): "
                "expected [%d, S] with %lld <= S <= %lld", N, (long long)t->shape[0], (long long)S, (int)l->heads,
                (int)l->nqb, (int)l->block, (int)l->heads, (long long)(l->nqb - 1) * l->block + 1,
                (long long)l->nqb * l->block);
      ada_tensor_free(t);
      return s;
    }
  }
  const float *p = ada_tensor_data(t);
  int64_t n = ada_tensor_numel(t);
  for (int64_t i = 0; i < n; i++)
    if (isnan(p[i]) || p[i] == INFINITY) {
      s = LFAIL(ld, "layer.%d.lse: element [%lld, %lld] is %s (an LSE is finite, or -inf for a row with no key)", N,
                (long long)(i / t->shape[1]) + 1, (long long)(i % t->shape[1]) + 1, isnan(p[i]) ? "nan" : "inf");
      ada_tensor_free(t);
      return s;
    }
  e->lse = t;
  e->lse_step = step;
  return ADA_OK;
}

/* Every tensor name must be layer.N.<field> with N in [1, n] and a known field; every metadata
 * key starting with "layer." must be layer.N.<meta field>. */
static ada_status check_names(const loader *ld, int32_t n) {
  static const char *const tfields[] = {"offsets", "indices", "density", "recall", "lse", NULL};
  static const char *const mfields[] = {"step", "heads", "nqb", "nkb", "block", "nnz", "lse_step", NULL};
  int64_t nt = ada_st_count(ld->f), nm = ada_st_metadata_count(ld->f);
  for (int64_t i = 0; i < nt + nm; i++) {
    bool tensor = i < nt;
    const char *name = tensor ? ada_st_name(ld->f, i) : ada_st_metadata_key(ld->f, i - nt);
    if (!tensor && strncmp(name, "layer.", 6) != 0) continue;
    const char *p = name + 6;
    char *end;
    errno = 0;
    long v = (*p >= '1' && *p <= '9') ? strtol(p, &end, 10) : 0;
    bool ok = v >= 1 && v <= n && !errno && *end == '.';
    if (ok) {
      ok = false;
      for (const char *const *f = tensor ? tfields : mfields; *f && !ok; f++) ok = strcmp(end + 1, *f) == 0;
    }
    if (!ok)
      return LFAIL(ld, "unexpected %s '%.64s' (a cache of %d layers holds layer.N.{%s} for N in [1, %d])",
                   tensor ? "tensor" : "metadata key", name, (int)n,
                   tensor ? "offsets, indices, density, recall, lse" : "step, heads, nqb, nkb, block, nnz, lse_step",
                   (int)n);
  }
  return ADA_OK;
}

ada_status ada_cache_load(ada_cache **out, const char *path) {
  loader ld = {"ada_cache_load", path, NULL};
  if (!out || !path) return ada_fail(ADA_EINVAL, "ada_cache_load: out and path must not be NULL");
  ada_status s = ada_st_open(&ld.f, path);
  if (s) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", ada_last_error());
    return ada_fail(s, "ada_cache_load: %s", msg);
  }
  ada_cache *c = NULL;
  const char *fmt = meta_get(&ld, "format"), *ver = meta_get(&ld, "version");
  int64_t n = 0;
  if (!fmt || strcmp(fmt, FORMAT_NAME) != 0) {
    s = LFAIL(&ld, "not an adaspa cache file (metadata format is %s%.40s%s, expected '" FORMAT_NAME "')",
              fmt ? "'" : "", fmt ? fmt : "missing", fmt ? "'" : "");
    goto done;
  }
  if (!ver || strcmp(ver, FORMAT_VERSION) != 0) {
    s = LFAIL(&ld, "metadata version is %s%.40s%s, this build reads version " FORMAT_VERSION, ver ? "'" : "",
              ver ? ver : "missing", ver ? "'" : "");
    goto done;
  }
  if ((s = meta_int(&ld, "n_layers", 1, MAX_LAYERS, &n, NULL)) || (s = check_names(&ld, (int32_t)n))) goto done;
  if ((s = ada_cache_new(&c, (int32_t)n))) goto done;
  for (int32_t i = 0; i < c->n && !s; i++) {
    char k[KEY_LEN], name[KEY_LEN];
    bool has_layout = false, has_lse = false;
    int64_t unused;
    snprintf(k, sizeof k, "layer.%d.step", (int)i + 1);
    if ((s = meta_int(&ld, k, 0, INT64_MAX, &unused, &has_layout))) break;
    snprintf(k, sizeof k, "layer.%d.lse_step", (int)i + 1);
    if ((s = meta_int(&ld, k, 0, INT64_MAX, &unused, &has_lse))) break;
    if (has_layout) s = load_layout(&ld, i, &c->layers[i]);
    else {
      /* without a layout, no layout tensor or metadata may be present */
      static const char *const lf[] = {"offsets", "indices", "density", "recall", "heads", "nqb", "nkb", "block", "nnz", NULL};
      for (const char *const *f = lf; *f && !s; f++) {
        snprintf(name, sizeof name, "layer.%d.%s", (int)i + 1, *f);
        if (ada_st_find(ld.f, name) >= 0 || meta_get(&ld, name))
          s = LFAIL(&ld, "%s is present, but metadata layer.%d.step (the layout's step) is missing", name, (int)i + 1);
      }
    }
    if (s) break;
    if (has_lse) s = load_lse(&ld, i, &c->layers[i]);
    else {
      snprintf(name, sizeof name, "layer.%d.lse", (int)i + 1);
      if (ada_st_find(ld.f, name) >= 0)
        s = LFAIL(&ld, "%s is present, but metadata layer.%d.lse_step is missing", name, (int)i + 1);
    }
  }
done:
  ada_st_close(ld.f);
  if (s) {
    ada_cache_free(c);
    return s;
  }
  *out = c;
  return ADA_OK;
}
