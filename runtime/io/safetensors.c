/* safetensors.c: the safetensors reader (a validated, refcounted private mapping whose
 * tensors are views) and writer (header padded to 8 bytes, written through "<path>.tmp"). */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "outdir.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader assumes a little-endian host"
#endif

#define MAX_HEADER ((uint64_t)100 << 20)

/* safetensors dtype names: those adaspa holds, then those it refuses by name. */
static const char *const st_dtype_names[ADA_NDTYPES] = {"F32", "BF16", "F16", "I32", "I16", "U8"};
static const char *const st_unsupported[] = {"F64", "I64", "U64", "U32", "U16", "I8", "BOOL",
                                             "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3",
                                             "F6_E3M2", "F4"};

typedef struct st_map {
  void *base;
  size_t size;
  int32_t refs;
} st_map;

typedef struct st_tensor {
  const char *name;
  ada_dtype dtype;
  int32_t ndim;
  int64_t shape[ADA_MAX_DIMS];
  uint64_t begin, end; /* in the data buffer */
} st_tensor;

typedef struct st_meta {
  const char *key, *value;
} st_meta;

struct ada_st_file {
  char *path;
  st_map *map;
  ada_json_doc *doc; /* owns the names and metadata strings */
  uint64_t data_start;
  int64_t n, n_meta;
  st_tensor *tensors; /* sorted by name */
  st_meta *meta;      /* sorted by key */
};

static void map_release(void *ctx) {
  st_map *m = ctx;
  if (--m->refs > 0) return;
  munmap(m->base, m->size);
  free(m);
}

/* ---- messages ------------------------------------------------------------------------------ */

/* s[0, len) for a message: at most 96 bytes (cut at a UTF-8 boundary), non-printable ASCII as
 * \xNN. */
static const char *quoted(char *buf, size_t n, const char *s, size_t len) {
  size_t o = 0, cut = len > 96 ? 96 : len;
  while (cut < len && cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80) cut--;
  for (size_t i = 0; i < cut && o + 5 < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7f) o += (size_t)snprintf(buf + o, n - o, "\\x%02x", c);
    else buf[o++] = (char)c;
  }
  snprintf(buf + o, n - o, "%s", cut < len ? "..." : "");
  return buf;
}

/* The source text of a JSON value in the file (at most 64 bytes) for "found ..." messages. */
static const char *source(const st_map *m, const ada_json *v, char *buf, size_t n) {
  return quoted(buf, n, (const char *)m->base + v->begin, v->end - v->begin > 64 ? 64 : v->end - v->begin);
}

static const char *fmt_shape(const st_tensor *t, char *buf, size_t n) {
  ada_shape_format(t->ndim, t->shape, buf, n);
  return buf;
}

/* ---- header validation ------------------------------------------------------------------------ */

typedef struct checker {
  const char *path;
  const st_map *map;
  uint64_t data_size;
} checker;

#define BAD(...) ada_fail(ADA_EINVAL, __VA_ARGS__)

static bool is_nonneg_int(const ada_json *v) {
  return v->type == ADA_JSON_NUMBER && v->is_integer && v->integer >= 0;
}

static ada_status check_dtype(const checker *c, const char *nm, const ada_json *v, ada_dtype *out) {
  char f[160];
  if (v->type != ADA_JSON_STRING)
    return BAD("safetensors: %s: tensor '%s': dtype must be a string, found %s", c->path, nm,
               source(c->map, v, f, sizeof f));
  for (int d = 0; d < ADA_NDTYPES; d++)
    if (strcmp(v->string, st_dtype_names[d]) == 0) { *out = (ada_dtype)d; return ADA_OK; }
  for (size_t i = 0; i < sizeof st_unsupported / sizeof *st_unsupported; i++)
    if (strcmp(v->string, st_unsupported[i]) == 0)
      return ada_fail(ADA_EUNSUPPORTED,
                      "safetensors: %s: unsupported dtype %s for tensor '%s' (adaspa reads F32, BF16, "
                      "F16, I32, I16, U8)", c->path, v->string, nm);
  return BAD("safetensors: %s: tensor '%s': unknown dtype \"%s\" (expected F32, BF16, F16, I32, I16 or U8)",
             c->path, nm, quoted(f, sizeof f, v->string, v->length));
}

static ada_status check_shape(const checker *c, const char *nm, const ada_json *v, st_tensor *t) {
  char f[160];
  if (v->type != ADA_JSON_ARRAY)
    return BAD("safetensors: %s: tensor '%s': shape must be an array of integers, found %s", c->path,
               nm, source(c->map, v, f, sizeof f));
  for (size_t i = 0; i < v->count; i++)
    if (!is_nonneg_int(&v->items[i]))
      return BAD("safetensors: %s: tensor '%s': shape entry %zu must be a non-negative integer, found %s",
                 c->path, nm, i + 1, source(c->map, &v->items[i], f, sizeof f));
  if (v->count > ADA_MAX_DIMS)
    return BAD("safetensors: %s: tensor '%s': shape %s has %zu dimensions (adaspa supports at most %d)",
               c->path, nm, source(c->map, v, f, sizeof f), v->count, ADA_MAX_DIMS);
  t->ndim = (int32_t)v->count;
  for (size_t i = 0; i < v->count; i++) t->shape[i] = v->items[i].integer;
  for (size_t i = 0; i < v->count; i++)
    if (t->shape[i] == 0)
      return BAD("safetensors: %s: tensor '%s': shape %s has a zero-size dimension (adaspa tensors "
                 "cannot be empty)", c->path, nm, fmt_shape(t, f, sizeof f));
  return ADA_OK;
}

/* data_offsets: two non-negative integers, in order, inside the data buffer, spanning exactly
 * the bytes the dtype and shape need. */
static ada_status check_offsets(const checker *c, const char *nm, const ada_json *v, st_tensor *t) {
  char f[160], g[96];
  if (v->type != ADA_JSON_ARRAY || v->count != 2 || !is_nonneg_int(&v->items[0]) ||
      !is_nonneg_int(&v->items[1]))
    return BAD("safetensors: %s: tensor '%s': data_offsets must be [begin, end] with non-negative "
               "integers, found %s", c->path, nm, source(c->map, v, f, sizeof f));
  t->begin = (uint64_t)v->items[0].integer;
  t->end = (uint64_t)v->items[1].integer;
  if (t->begin > t->end)
    return BAD("safetensors: %s: tensor '%s': data_offsets [%llu, %llu] end before they begin",
               c->path, nm, (unsigned long long)t->begin, (unsigned long long)t->end);
  if (t->end > c->data_size)
    return BAD("safetensors: %s: tensor '%s': data_offsets [%llu, %llu] reach past the end of the "
               "data buffer (%llu bytes)", c->path, nm, (unsigned long long)t->begin,
               (unsigned long long)t->end, (unsigned long long)c->data_size);
  uint64_t need = (uint64_t)ada_dtype_size(t->dtype);
  for (int32_t i = 0; i < t->ndim; i++) {
    if (need > c->data_size / (uint64_t)t->shape[i]) { need = UINT64_MAX; break; }
    need *= (uint64_t)t->shape[i];
  }
  if (need != t->end - t->begin) {
    if (need == UINT64_MAX) snprintf(g, sizeof g, "more than the %llu bytes of data", (unsigned long long)c->data_size);
    else snprintf(g, sizeof g, "%llu bytes", (unsigned long long)need);
    return BAD("safetensors: %s: tensor '%s': data_offsets [%llu, %llu] but shape %s %s needs %s",
               c->path, nm, (unsigned long long)t->begin, (unsigned long long)t->end,
               fmt_shape(t, f, sizeof f), ada_dtype_name(t->dtype), g);
  }
  return ADA_OK;
}

static ada_status check_entry(const checker *c, const ada_json *key, const ada_json *v, st_tensor *t) {
  static const char *const fields[3] = {"dtype", "shape", "data_offsets"};
  char nm[160], f[160];
  quoted(nm, sizeof nm, key->string, key->length);
  if (strlen(key->string) != key->length)
    return BAD("safetensors: %s: tensor '%s': name contains a NUL character", c->path, nm);
  if (key->length == 0) return BAD("safetensors: %s: a tensor has an empty name", c->path);
  if (v->type != ADA_JSON_OBJECT)
    return BAD("safetensors: %s: tensor '%s': entry must be an object {dtype, shape, data_offsets}, "
               "found %s", c->path, nm, source(c->map, v, f, sizeof f));
  const ada_json *field[3] = {NULL, NULL, NULL};
  for (size_t i = 0; i < v->count; i++) {
    int k = 0;
    while (k < 3 && strcmp(v->keys[i].string, fields[k]) != 0) k++;
    if (k == 3 || strlen(v->keys[i].string) != v->keys[i].length)
      return BAD("safetensors: %s: tensor '%s': unknown field '%s' (expected dtype, shape, data_offsets)",
                 c->path, nm, quoted(f, sizeof f, v->keys[i].string, v->keys[i].length));
    field[k] = &v->items[i];
  }
  for (int k = 0; k < 3; k++)
    if (!field[k]) return BAD("safetensors: %s: tensor '%s': missing field '%s'", c->path, nm, fields[k]);
  t->name = key->string;
  ada_status s = check_dtype(c, nm, field[0], &t->dtype);
  if (!s) s = check_shape(c, nm, field[1], t);
  if (!s) s = check_offsets(c, nm, field[2], t);
  return s;
}

static ada_status check_metadata(const checker *c, const ada_json *v, st_meta *meta) {
  char f[160], k[160];
  if (v->type != ADA_JSON_OBJECT)
    return BAD("safetensors: %s: __metadata__ must be an object of strings, found %s", c->path,
               source(c->map, v, f, sizeof f));
  for (size_t i = 0; i < v->count; i++) {
    const ada_json *key = &v->keys[i], *val = &v->items[i];
    quoted(k, sizeof k, key->string, key->length);
    if (val->type != ADA_JSON_STRING)
      return BAD("safetensors: %s: __metadata__ '%s' must be a string, found %s", c->path, k,
                 source(c->map, val, f, sizeof f));
    if (strlen(key->string) != key->length || strlen(val->string) != val->length)
      return BAD("safetensors: %s: __metadata__ '%s' contains a NUL character", c->path, k);
    meta[i].key = key->string;
    meta[i].value = val->string;
  }
  return ADA_OK;
}

static int tensor_by_name(const void *a, const void *b) {
  return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static int tensor_by_offset(const void *a, const void *b) {
  const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return strcmp(x->name, y->name);
}

static int meta_by_key(const void *a, const void *b) {
  return strcmp(((const st_meta *)a)->key, ((const st_meta *)b)->key);
}

/* No two tensors share a byte (every tensor has at least one). */
static ada_status check_overlap(const checker *c, const st_tensor *t, int64_t n) {
  if (n < 2) return ADA_OK;
  const st_tensor **order = malloc((size_t)n * sizeof *order);
  if (!order) return ada_fail(ADA_ENOMEM, "safetensors: %s: out of memory", c->path);
  for (int64_t i = 0; i < n; i++) order[i] = &t[i];
  qsort(order, (size_t)n, sizeof *order, tensor_by_offset);
  const st_tensor *reach = order[0]; /* the tensor ending last among those seen */
  ada_status s = ADA_OK;
  for (int64_t i = 1; i < n && !s; i++) {
    if (order[i]->begin < reach->end) {
      char a[160], b[160];
      s = BAD("safetensors: %s: tensors '%s' (data_offsets [%llu, %llu]) and '%s' (data_offsets "
              "[%llu, %llu]) overlap", c->path, quoted(a, sizeof a, reach->name, strlen(reach->name)),
              (unsigned long long)reach->begin, (unsigned long long)reach->end,
              quoted(b, sizeof b, order[i]->name, strlen(order[i]->name)),
              (unsigned long long)order[i]->begin, (unsigned long long)order[i]->end);
    }
    if (order[i]->end > reach->end) reach = order[i];
  }
  free(order);
  return s;
}

/* Validates the parsed header into f->tensors and f->meta. */
static ada_status check_header(ada_st_file *f, const ada_json *root) {
  checker c = {f->path, f->map, (uint64_t)f->map->size - f->data_start};
  char buf[160];
  if (root->type != ADA_JSON_OBJECT)
    return BAD("safetensors: %s: header must be a JSON object, found %s", f->path,
               source(f->map, root, buf, sizeof buf));
  const ada_json *meta = NULL;
  for (size_t i = 0; i < root->count; i++)
    if (strcmp(root->keys[i].string, "__metadata__") == 0 && root->keys[i].length == 12) meta = &root->items[i];
  size_t nt = root->count - (meta != NULL), nm = meta && meta->type == ADA_JSON_OBJECT ? meta->count : 0;
  f->tensors = calloc(nt ? nt : 1, sizeof *f->tensors);
  f->meta = calloc(nm ? nm : 1, sizeof *f->meta);
  if (!f->tensors || !f->meta) return ada_fail(ADA_ENOMEM, "safetensors: %s: out of memory", f->path);
  for (size_t i = 0; i < root->count; i++) {
    if (&root->items[i] == meta) continue;
    ada_status s = check_entry(&c, &root->keys[i], &root->items[i], &f->tensors[f->n]);
    if (s) return s;
    f->n++;
  }
  if (meta) {
    ada_status s = check_metadata(&c, meta, f->meta);
    if (s) return s;
    f->n_meta = (int64_t)nm;
  }
  ada_status s = check_overlap(&c, f->tensors, f->n);
  if (s) return s;
  qsort(f->tensors, (size_t)f->n, sizeof *f->tensors, tensor_by_name);
  qsort(f->meta, (size_t)f->n_meta, sizeof *f->meta, meta_by_key);
  return ADA_OK;
}

/* ---- reader ------------------------------------------------------------------------------------ */

/* Maps path privately into *out (one reference). */
static ada_status map_file(const char *path, st_map **out) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ada_fail(ADA_EIO, "safetensors: %s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  ada_status s = ADA_OK;
  if (fstat(fd, &sb) != 0) s = ada_fail(ADA_EIO, "safetensors: %s: cannot stat: %s", path, strerror(errno));
  else if (!S_ISREG(sb.st_mode)) s = BAD("safetensors: %s: not a regular file", path);
  else if (sb.st_size < 8)
    s = BAD("safetensors: %s: file is %lld bytes, too short for the 8-byte header length", path,
            (long long)sb.st_size);
  st_map *m = NULL;
  if (!s && !(m = calloc(1, sizeof *m))) s = ada_fail(ADA_ENOMEM, "safetensors: %s: out of memory", path);
  if (!s) {
    m->size = (size_t)sb.st_size;
    m->refs = 1;
    /* writable copy-on-write pages: a loaded tensor may be modified in memory, never on disk */
    m->base = mmap(NULL, m->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (m->base == MAP_FAILED) {
      s = ada_fail(ADA_EIO, "safetensors: %s: cannot map %zu bytes: %s", path, m->size, strerror(errno));
      free(m);
    }
  }
  close(fd);
  if (!s) *out = m;
  return s;
}

ada_status ada_st_open(ada_st_file **out, const char *path) {
  ada_status cs = ada_confine_check_read(path, "safetensors"); /* while a recipe runs (outdir.h) */
  if (cs) return cs;
  ada_st_file *f = calloc(1, sizeof *f);
  if (!f || !(f->path = strdup(path))) {
    free(f);
    return ada_fail(ADA_ENOMEM, "safetensors: %s: out of memory", path);
  }
  ada_status s = map_file(path, &f->map);
  if (!s) {
    const unsigned char *b = f->map->base;
    uint64_t hlen = 0, avail = (uint64_t)f->map->size - 8;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];
    if (hlen > avail)
      s = BAD("safetensors: %s: header length %llu exceeds the %llu bytes after the length field "
              "(truncated file or not a safetensors file)", path, (unsigned long long)hlen,
              (unsigned long long)avail);
    else if (hlen > MAX_HEADER)
      s = BAD("safetensors: %s: header length %llu exceeds the 100 MiB limit", path, (unsigned long long)hlen);
    f->data_start = 8 + hlen;
  }
  if (!s) {
    char ctx[1100];
    snprintf(ctx, sizeof ctx, "safetensors: %s: header", path);
    s = ada_json_parse(&f->doc, (const char *)f->map->base + 8, (size_t)(f->data_start - 8), 8, ctx);
  }
  if (!s) s = check_header(f, ada_json_root(f->doc));
  if (s) {
    ada_st_close(f);
    return s;
  }
  *out = f;
  return ADA_OK;
}

void ada_st_close(ada_st_file *f) {
  if (!f) return;
  if (f->map) map_release(f->map);
  ada_json_free(f->doc);
  free(f->tensors);
  free(f->meta);
  free(f->path);
  free(f);
}

const char *ada_st_path(const ada_st_file *f) { return f->path; }
int64_t ada_st_count(const ada_st_file *f) { return f->n; }
const char *ada_st_name(const ada_st_file *f, int64_t i) { return f->tensors[i].name; }
int64_t ada_st_metadata_count(const ada_st_file *f) { return f->n_meta; }
const char *ada_st_metadata_key(const ada_st_file *f, int64_t i) { return f->meta[i].key; }
const char *ada_st_metadata_value(const ada_st_file *f, int64_t i) { return f->meta[i].value; }

void ada_st_info(const ada_st_file *f, int64_t i, ada_st_entry *out) {
  const st_tensor *t = &f->tensors[i];
  out->dtype = t->dtype;
  out->ndim = t->ndim;
  memcpy(out->shape, t->shape, sizeof out->shape);
  out->nbytes = t->end - t->begin;
  out->offset = f->data_start + t->begin;
}

int64_t ada_st_find(const ada_st_file *f, const char *name) {
  int64_t lo = 0, hi = f->n;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    int c = strcmp(f->tensors[mid].name, name);
    if (c == 0) return mid;
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return -1;
}

ada_status ada_st_tensor(const ada_st_file *f, int64_t i, ada_tensor **out) {
  const st_tensor *t = &f->tensors[i];
  char *p = (char *)f->map->base + f->data_start + t->begin;
  if ((uintptr_t)p % (uintptr_t)ada_dtype_size(t->dtype) == 0) {
    f->map->refs++;
    ada_status s = ada_tensor_from_host_memory(out, p, t->ndim, t->shape, t->dtype, map_release, f->map);
    if (s) f->map->refs--;
    return s;
  }
  ada_tensor *c;
  ada_device cpu = {ADA_CPU, 0};
  ada_status s = ada_tensor_empty(&c, t->ndim, t->shape, t->dtype, cpu);
  if (s) return s;
  memcpy(ada_tensor_data(c), p, (size_t)(t->end - t->begin));
  *out = c;
  return ADA_OK;
}

/* ---- writer ------------------------------------------------------------------------------------- */

typedef struct sbuf {
  char *p;
  size_t len, cap;
  bool oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) { b->oom = true; return; }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

static void put_u64(sbuf *b, uint64_t v) {
  char t[24];
  put(b, t, (size_t)snprintf(t, sizeof t, "%llu", (unsigned long long)v));
}

/* s as a JSON string literal (s is valid UTF-8). */
static void put_jstring(sbuf *b, const char *s) {
  put(b, "\"", 1);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      put(b, e, 2);
    } else if (c < 0x20) {
      char e[8];
      put(b, e, (size_t)snprintf(e, sizeof e, "\\u%04x", c));
    } else {
      put(b, s, 1);
    }
  }
  put(b, "\"", 1);
}

static int cstr_cmp(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Strings s[0..n) are non-NULL, valid UTF-8 and, when distinct is set, distinct. what names
 * them in messages ("tensor name", "metadata key"). */
static ada_status check_strings(const char *path, int64_t n, const char *const *s, const char *what,
                                bool distinct) {
  char q[160];
  for (int64_t i = 0; i < n; i++) {
    if (!s[i]) return BAD("safetensors: %s: %s %lld is NULL", path, what, (long long)i + 1);
    size_t len = strlen(s[i]);
    if (ada_json_utf8_valid_prefix(s[i], len) != len)
      return BAD("safetensors: %s: %s '%s' is not valid UTF-8", path, what, quoted(q, sizeof q, s[i], len));
  }
  if (!distinct || n < 2) return ADA_OK;
  const char **sorted = malloc((size_t)n * sizeof *sorted);
  if (!sorted) return ada_fail(ADA_ENOMEM, "safetensors: %s: out of memory", path);
  memcpy(sorted, s, (size_t)n * sizeof *sorted);
  qsort(sorted, (size_t)n, sizeof *sorted, cstr_cmp);
  ada_status st = ADA_OK;
  for (int64_t i = 1; i < n && !st; i++)
    if (strcmp(sorted[i - 1], sorted[i]) == 0)
      st = BAD("safetensors: %s: %s '%s' appears twice", path, what, quoted(q, sizeof q, sorted[i], strlen(sorted[i])));
  free(sorted);
  return st;
}

static ada_status build_header(sbuf *h, const char *path, int64_t n, const char *const *names,
                               const ada_tensor *const *tensors, int64_t n_meta,
                               const char *const *keys, const char *const *values) {
  puts_(h, "{");
  if (n_meta > 0) {
    puts_(h, "\"__metadata__\":{");
    for (int64_t i = 0; i < n_meta; i++) {
      if (i) puts_(h, ",");
      put_jstring(h, keys[i]);
      puts_(h, ":");
      put_jstring(h, values[i]);
    }
    puts_(h, "}");
  }
  uint64_t off = 0;
  for (int64_t i = 0; i < n; i++) {
    const ada_tensor *t = tensors[i];
    uint64_t nb = (uint64_t)ada_tensor_numel(t) * (uint64_t)ada_dtype_size(t->dtype);
    if (i || n_meta > 0) puts_(h, ",");
    put_jstring(h, names[i]);
    puts_(h, ":{\"dtype\":\"");
    puts_(h, st_dtype_names[t->dtype]);
    puts_(h, "\",\"shape\":[");
    for (int32_t d = 0; d < t->ndim; d++) {
      if (d) puts_(h, ",");
      put_u64(h, (uint64_t)t->shape[d]);
    }
    puts_(h, "],\"data_offsets\":[");
    put_u64(h, off);
    puts_(h, ",");
    put_u64(h, off + nb);
    puts_(h, "]}");
    off += nb;
  }
  puts_(h, "}");
  while (h->len % 8) puts_(h, " ");
  if (h->oom) return ada_fail(ADA_ENOMEM, "safetensors: %s: out of memory building the header", path);
  return ADA_OK;
}

/* Writes the tensor's bytes (a contiguous CPU copy when it is strided or on a GPU). */
static ada_status write_tensor(FILE *fp, const char *path, const char *tmp, const ada_tensor *t) {
  ada_tensor *c = NULL;
  ada_device cpu = {ADA_CPU, 0};
  if (t->storage->device.type != ADA_CPU || !ada_tensor_is_contiguous(t)) {
    ada_status s = ada_tensor_to(&c, t, t->dtype, cpu);
    if (s) return s;
    t = c;
  }
  size_t nb = (size_t)ada_tensor_numel(t) * (size_t)ada_dtype_size(t->dtype);
  ada_status s = ADA_OK;
  if (fwrite(ada_tensor_data(t), 1, nb, fp) != nb)
    s = ada_fail(ADA_EIO, "safetensors: %s: writing %s failed: %s", path, tmp, strerror(errno));
  ada_tensor_free(c);
  return s;
}

ada_status ada_st_write(const char *path, int64_t n, const char *const *names,
                        const ada_tensor *const *tensors, int64_t n_meta, const char *const *keys,
                        const char *const *values) {
  char q[160];
  if (n < 0 || n_meta < 0)
    return BAD("safetensors: %s: negative count (%lld tensors, %lld metadata entries)", path,
               (long long)n, (long long)n_meta);
  ada_status s = check_strings(path, n, names, "tensor name", true);
  if (!s) s = check_strings(path, n_meta, keys, "metadata key", true);
  if (!s) s = check_strings(path, n_meta, values, "metadata value", false);
  if (s) return s;
  for (int64_t i = 0; i < n; i++) {
    if (names[i][0] == '\0') return BAD("safetensors: %s: tensor %lld has an empty name", path, (long long)i + 1);
    if (strcmp(names[i], "__metadata__") == 0)
      return BAD("safetensors: %s: a tensor cannot be named __metadata__", path);
    if (!tensors[i])
      return BAD("safetensors: %s: tensor '%s' is NULL", path, quoted(q, sizeof q, names[i], strlen(names[i])));
  }
  sbuf h = {0};
  s = build_header(&h, path, n, names, tensors, n_meta, keys, values);
  ada_wfile w;
  if (!s) s = ada_wfile_begin(&w, path, "safetensors");
  if (s) {
    free(h.p);
    return s;
  }
  const char *tmp = w.tmp;
  unsigned char len8[8];
  for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
  if (fwrite(len8, 1, 8, w.fp) != 8 || fwrite(h.p, 1, h.len, w.fp) != h.len)
    s = ada_fail(ADA_EIO, "safetensors: %s: writing %s failed: %s", path, tmp, strerror(errno));
  for (int64_t i = 0; i < n && !s; i++) s = write_tensor(w.fp, path, tmp, tensors[i]);
  if (s) ada_wfile_abort(&w);
  else s = ada_wfile_commit(&w, path, "safetensors");
  free(h.p);
  return s;
}
