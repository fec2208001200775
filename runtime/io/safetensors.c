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
  uint64_t begin, end; /* in the data buffer */
  int64_t shape[ADA_MAX_DIMS];
  int32_t dtype, ndim;
} st_tensor;

typedef struct st_meta {
  const char *key, *value;
} st_meta;

struct ada_st_file {
  char *path;
  st_map *map;
  char *strings; /* the names, metadata keys and values, NUL-terminated, back to back */
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

static const char *fmt_shape(const st_tensor *t, char *buf, size_t n) {
  ada_shape_format(t->ndim, t->shape, buf, n);
  return buf;
}

/* ---- sorting in place (heap sort: no memory beyond the array) -------------------------------- */

static void swap_bytes(unsigned char *a, unsigned char *b, size_t size) {
  for (size_t i = 0; i < size; i++) {
    unsigned char t = a[i];
    a[i] = b[i];
    b[i] = t;
  }
}

static void sift(unsigned char *v, size_t size, size_t root, size_t n, int (*cmp)(const void *, const void *)) {
  for (;;) {
    size_t child = 2 * root + 1;
    if (child >= n) return;
    if (child + 1 < n && cmp(v + child * size, v + (child + 1) * size) < 0) child++;
    if (cmp(v + root * size, v + child * size) >= 0) return;
    swap_bytes(v + root * size, v + child * size, size);
    root = child;
  }
}

static void heap_sort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *)) {
  unsigned char *v = base;
  if (n < 2) return;
  for (size_t i = n / 2; i-- > 0;) sift(v, size, i, n, cmp);
  for (size_t end = n - 1; end > 0; end--) {
    swap_bytes(v, v + end * size, size);
    sift(v, size, 0, end, cmp);
  }
}

/* ---- header: first pass (syntax, counts, string bytes) -------------------------------------- */

#define BAD(...) ada_fail(ADA_EINVAL, __VA_ARGS__)

typedef struct reader {
  ada_json_cursor c;
  const char *path, *text; /* text: the header, at file offset 8 */
  uint64_t data_size;
  ada_st_file *f;
  size_t str_used, str_cap;
} reader;

static bool is_meta_key(const char *k, size_t len) { return len == 12 && memcmp(k, "__metadata__", 12) == 0; }

/* The source text of the value at [begin, end) of the header, at most 64 bytes, for messages. */
static const char *span(const reader *r, size_t begin, size_t end, char *buf, size_t n) {
  return quoted(buf, n, r->text + begin, end - begin > 64 ? 64 : end - begin);
}

/* Skips the value that starts at byte begin, depth depth (valid: the first pass checked the whole
 * header) and quotes it. */
static const char *skip_quoted(reader *r, size_t begin, int32_t depth, char *buf, size_t n) {
  r->c.pos = begin;
  r->c.depth = depth;
  if (!ada_json_skip(&r->c)) return "(invalid JSON)";
  return span(r, begin, r->c.pos, buf, n);
}

/* Validates the JSON and counts what the second pass will keep: tensors, metadata entries and
 * the bytes of their strings (each with its NUL). */
static ada_status first_pass(reader *r, int64_t *nt, int64_t *nm, size_t *bytes) {
  ada_json_cursor *c = &r->c;
  char key[16], f[160];
  *nt = *nm = 0;
  *bytes = 0;
  ada_json_type t = ada_json_peek(c);
  size_t begin = c->pos;
  if (t != ADA_JSON_OBJECT) {
    if (!ada_json_skip(c) || !ada_json_end(c)) return c->status;
    return BAD("safetensors: %s: header must be a JSON object, found %s", r->path, span(r, begin, c->pos, f, sizeof f));
  }
  if (!ada_json_enter(c)) return c->status;
  for (size_t i = 0;; i++) {
    int more = ada_json_next(c, true, i);
    if (more < 0) return c->status;
    if (!more) break;
    size_t klen;
    if (!ada_json_key(c, key, sizeof key, &klen)) return c->status;
    if (is_meta_key(key, klen) && ada_json_peek(c) == ADA_JSON_OBJECT) {
      if (!ada_json_enter(c)) return c->status;
      for (size_t j = 0;; j++) {
        int m = ada_json_next(c, true, j);
        if (m < 0) return c->status;
        if (!m) break;
        size_t kl, vl = 0;
        if (!ada_json_key(c, NULL, 0, &kl)) return c->status;
        if (ada_json_peek(c) == ADA_JSON_STRING ? !ada_json_string(c, NULL, 0, &vl) : !ada_json_skip(c))
          return c->status;
        if (++*nm > ADA_ST_MAX_ENTRIES)
          return BAD("safetensors: %s: __metadata__ holds more than %d entries (the limit)", r->path,
                     ADA_ST_MAX_ENTRIES);
        *bytes += kl + vl + 2;
      }
    } else {
      if (!ada_json_skip(c)) return c->status;
      if (!is_meta_key(key, klen)) {
        if (++*nt > ADA_ST_MAX_ENTRIES)
          return BAD("safetensors: %s: header holds more than %d tensors (the limit)", r->path, ADA_ST_MAX_ENTRIES);
        *bytes += klen + 1;
      }
    }
  }
  if (!ada_json_end(c)) return c->status;
  return ADA_OK;
}

/* ---- header: second pass (the entries) -------------------------------------------------------- */

/* Decodes the string (or key) at the cursor into the string store, NUL-terminated. */
static ada_status store_string(reader *r, bool key, const char **out, size_t *len) {
  char *dst = r->f->strings + r->str_used;
  size_t room = r->str_cap - r->str_used;
  bool ok = key ? ada_json_key(&r->c, dst, room, len) : ada_json_string(&r->c, dst, room, len);
  if (!ok) return r->c.status;
  if (*len >= room) return ada_fail(ADA_EINVAL, "safetensors: %s: header strings outgrew their count", r->path);
  dst[*len] = '\0';
  *out = dst;
  return ADA_OK;
}

static bool is_nonneg_int(const ada_json_number *v) { return v->is_integer && v->integer >= 0; }

/* A non-negative integer at the cursor into *v; false (cursor unchanged) when it is none. */
static bool read_count(reader *r, ada_json_number *v) {
  size_t at = r->c.pos;
  if (ada_json_peek(&r->c) == ADA_JSON_NUMBER && ada_json_number_at(&r->c, v) && is_nonneg_int(v)) return true;
  r->c.pos = at;
  return false;
}

static ada_status read_dtype(reader *r, const char *nm, const char *s, size_t len, int32_t *out) {
  char f[160];
  for (int d = 0; d < ADA_NDTYPES; d++)
    if (len == strlen(st_dtype_names[d]) && memcmp(s, st_dtype_names[d], len) == 0) { *out = d; return ADA_OK; }
  for (size_t i = 0; i < sizeof st_unsupported / sizeof *st_unsupported; i++)
    if (len == strlen(st_unsupported[i]) && memcmp(s, st_unsupported[i], len) == 0)
      return ada_fail(ADA_EUNSUPPORTED,
                      "safetensors: %s: unsupported dtype %s for tensor '%s' (adaspa reads F32, BF16, "
                      "F16, I32, I16, U8)", r->path, st_unsupported[i], nm);
  return BAD("safetensors: %s: tensor '%s': unknown dtype \"%s\" (expected F32, BF16, F16, I32, I16 or U8)",
             r->path, nm, quoted(f, sizeof f, s, len));
}

/* shape: an array of non-negative integers. */
static ada_status read_shape(reader *r, const char *nm, st_tensor *t) {
  ada_json_cursor *c = &r->c;
  char f[160];
  ada_json_type ty = ada_json_peek(c);
  size_t begin = c->pos, n = 0;
  if (ty != ADA_JSON_ARRAY)
    return BAD("safetensors: %s: tensor '%s': shape must be an array of integers, found %s", r->path, nm,
               skip_quoted(r, begin, c->depth, f, sizeof f));
  if (!ada_json_enter(c)) return c->status;
  for (;; n++) {
    int more = ada_json_next(c, false, n);
    if (more < 0) return c->status;
    if (!more) break;
    ada_json_number v;
    size_t at = (ada_json_peek(c), c->pos);
    if (!read_count(r, &v))
      return BAD("safetensors: %s: tensor '%s': shape entry %zu must be a non-negative integer, found %s",
                 r->path, nm, n + 1, skip_quoted(r, at, c->depth, f, sizeof f));
    if (n < ADA_MAX_DIMS) t->shape[n] = v.integer;
  }
  if (n > ADA_MAX_DIMS)
    return BAD("safetensors: %s: tensor '%s': shape %s has %zu dimensions (adaspa supports at most %d)",
               r->path, nm, span(r, begin, c->pos, f, sizeof f), n, ADA_MAX_DIMS);
  t->ndim = (int32_t)n;
  for (size_t i = 0; i < n; i++)
    if (t->shape[i] == 0)
      return BAD("safetensors: %s: tensor '%s': shape %s has a zero-size dimension (adaspa tensors "
                 "cannot be empty)", r->path, nm, fmt_shape(t, f, sizeof f));
  return ADA_OK;
}

/* data_offsets: [begin, end], two non-negative integers. */
static ada_status read_offsets(reader *r, const char *nm, st_tensor *t) {
  ada_json_cursor *c = &r->c;
  char f[160];
  size_t begin = (ada_json_peek(c), c->pos), n = 0;
  int32_t depth = c->depth;
  ada_json_number v[2];
  bool ok = ada_json_peek(c) == ADA_JSON_ARRAY && ada_json_enter(c);
  for (; ok; n++) {
    int more = ada_json_next(c, false, n);
    if (more < 0) return c->status;
    if (!more) break;
    ok = n < 2 && read_count(r, &v[n]);
  }
  if (!ok || n != 2)
    return BAD("safetensors: %s: tensor '%s': data_offsets must be [begin, end] with non-negative "
               "integers, found %s", r->path, nm, skip_quoted(r, begin, depth, f, sizeof f));
  t->begin = (uint64_t)v[0].integer;
  t->end = (uint64_t)v[1].integer;
  return ADA_OK;
}

/* end - begin is exactly the bytes of the dtype and shape, inside the data buffer. */
static ada_status check_offsets(const reader *r, const char *nm, const st_tensor *t) {
  char f[160], g[96];
  if (t->begin > t->end)
    return BAD("safetensors: %s: tensor '%s': data_offsets [%llu, %llu] end before they begin",
               r->path, nm, (unsigned long long)t->begin, (unsigned long long)t->end);
  if (t->end > r->data_size)
    return BAD("safetensors: %s: tensor '%s': data_offsets [%llu, %llu] reach past the end of the "
               "data buffer (%llu bytes)", r->path, nm, (unsigned long long)t->begin,
               (unsigned long long)t->end, (unsigned long long)r->data_size);
  uint64_t need = (uint64_t)ada_dtype_size((ada_dtype)t->dtype);
  for (int32_t i = 0; i < t->ndim; i++) {
    if (need > r->data_size / (uint64_t)t->shape[i]) { need = UINT64_MAX; break; }
    need *= (uint64_t)t->shape[i];
  }
  if (need != t->end - t->begin) {
    if (need == UINT64_MAX) snprintf(g, sizeof g, "more than the %llu bytes of data", (unsigned long long)r->data_size);
    else snprintf(g, sizeof g, "%llu bytes", (unsigned long long)need);
    return BAD("safetensors: %s: tensor '%s': data_offsets [%llu, %llu] but shape %s %s needs %s",
               r->path, nm, (unsigned long long)t->begin, (unsigned long long)t->end,
               fmt_shape(t, f, sizeof f), ada_dtype_name((ada_dtype)t->dtype), g);
  }
  return ADA_OK;
}

/* One tensor entry {dtype, shape, data_offsets} (any order, each once), its key already read. */
static ada_status read_entry(reader *r, const char *name, size_t name_len, st_tensor *t) {
  static const char *const fields[3] = {"dtype", "shape", "data_offsets"};
  ada_json_cursor *c = &r->c;
  char nm[160], f[160], key[16], dtype[16];
  size_t dtype_len = 0;
  quoted(nm, sizeof nm, name, name_len);
  if (strlen(name) != name_len) return BAD("safetensors: %s: tensor '%s': name contains a NUL character", r->path, nm);
  if (name_len == 0) return BAD("safetensors: %s: a tensor has an empty name", r->path);
  t->name = name;
  size_t begin = (ada_json_peek(c), c->pos);
  if (ada_json_peek(c) != ADA_JSON_OBJECT)
    return BAD("safetensors: %s: tensor '%s': entry must be an object {dtype, shape, data_offsets}, "
               "found %s", r->path, nm, skip_quoted(r, begin, c->depth, f, sizeof f));
  if (!ada_json_enter(c)) return c->status;
  unsigned seen = 0;
  for (size_t i = 0;; i++) {
    int more = ada_json_next(c, true, i);
    if (more < 0) return c->status;
    if (!more) break;
    size_t klen;
    if (!ada_json_key(c, key, sizeof key, &klen)) return c->status;
    int k = 0;
    while (k < 3 && !(klen == strlen(fields[k]) && memcmp(key, fields[k], klen) == 0)) k++;
    if (k == 3)
      return BAD("safetensors: %s: tensor '%s': unknown field '%s' (expected dtype, shape, data_offsets)",
                 r->path, nm, quoted(f, sizeof f, key, klen < sizeof key ? klen : sizeof key));
    if (seen & (1u << k))
      return BAD("safetensors: %s: tensor '%s': duplicate key \"%s\" in its entry", r->path, nm, fields[k]);
    seen |= 1u << k;
    ada_status s = ADA_OK;
    if (k == 0) {
      size_t at = (ada_json_peek(c), c->pos);
      if (ada_json_peek(c) != ADA_JSON_STRING)
        return BAD("safetensors: %s: tensor '%s': dtype must be a string, found %s", r->path, nm,
                   skip_quoted(r, at, c->depth, f, sizeof f));
      if (!ada_json_string(c, dtype, sizeof dtype, &dtype_len)) return c->status;
      if (dtype_len > sizeof dtype) dtype_len = sizeof dtype; /* too long for any known name */
    } else if (k == 1) {
      s = read_shape(r, nm, t);
    } else {
      s = read_offsets(r, nm, t);
    }
    if (s) return s;
  }
  for (int k = 0; k < 3; k++)
    if (!(seen & (1u << k))) return BAD("safetensors: %s: tensor '%s': missing field '%s'", r->path, nm, fields[k]);
  ada_status s = read_dtype(r, nm, dtype, dtype_len, &t->dtype);
  return s ? s : check_offsets(r, nm, t);
}

static ada_status read_metadata(reader *r, st_meta *meta, int64_t *n) {
  ada_json_cursor *c = &r->c;
  char f[160], k[160];
  size_t begin = (ada_json_peek(c), c->pos);
  if (ada_json_peek(c) != ADA_JSON_OBJECT)
    return BAD("safetensors: %s: __metadata__ must be an object of strings, found %s", r->path,
               skip_quoted(r, begin, c->depth, f, sizeof f));
  if (!ada_json_enter(c)) return c->status;
  for (size_t i = 0;; i++) {
    int more = ada_json_next(c, true, i);
    if (more < 0) return c->status;
    if (!more) break;
    size_t klen, vlen;
    const char *key, *val;
    ada_status s = store_string(r, true, &key, &klen);
    if (s) return s;
    r->str_used += klen + 1;
    quoted(k, sizeof k, key, klen);
    size_t at = (ada_json_peek(c), c->pos);
    if (ada_json_peek(c) != ADA_JSON_STRING)
      return BAD("safetensors: %s: __metadata__ '%s' must be a string, found %s", r->path, k,
                 skip_quoted(r, at, c->depth, f, sizeof f));
    if ((s = store_string(r, false, &val, &vlen))) return s;
    r->str_used += vlen + 1;
    if (strlen(key) != klen || strlen(val) != vlen)
      return BAD("safetensors: %s: __metadata__ '%s' contains a NUL character", r->path, k);
    meta[*n].key = key;
    meta[*n].value = val;
    ++*n;
  }
  return ADA_OK;
}

static int tensor_by_name(const void *a, const void *b) {
  return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static int tensor_by_offset(const void *a, const void *b) {
  const st_tensor *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return strcmp(x->name, y->name);
}

static int meta_by_key(const void *a, const void *b) {
  return strcmp(((const st_meta *)a)->key, ((const st_meta *)b)->key);
}

/* No two tensors share a byte (every tensor has at least one). Leaves t sorted by offset. */
static ada_status check_overlap(const reader *r, st_tensor *t, int64_t n) {
  if (n < 2) return ADA_OK;
  heap_sort(t, (size_t)n, sizeof *t, tensor_by_offset);
  const st_tensor *reach = &t[0]; /* the tensor ending last among those seen */
  for (int64_t i = 1; i < n; i++) {
    if (t[i].begin < reach->end) {
      char a[160], b[160];
      return BAD("safetensors: %s: tensors '%s' (data_offsets [%llu, %llu]) and '%s' (data_offsets "
                 "[%llu, %llu]) overlap", r->path, quoted(a, sizeof a, reach->name, strlen(reach->name)),
                 (unsigned long long)reach->begin, (unsigned long long)reach->end,
                 quoted(b, sizeof b, t[i].name, strlen(t[i].name)), (unsigned long long)t[i].begin,
                 (unsigned long long)t[i].end);
    }
    if (t[i].end > reach->end) reach = &t[i];
  }
  return ADA_OK;
}

/* Reads the header text[0, len) into f: a first pass validates the JSON and counts, then the
 * tensors, metadata and strings are allocated once, at their exact sizes (together at most about
 * 1.5 times the header), and a second pass fills them. */
static ada_status read_header(ada_st_file *f, const char *text, size_t len) {
  char ctx[1100], q[160];
  snprintf(ctx, sizeof ctx, "safetensors: %s: header", f->path);
  reader r = {.path = f->path, .text = text, .data_size = (uint64_t)f->map->size - f->data_start, .f = f};
  ada_json_start(&r.c, text, len, 8, ctx);
  int64_t nt, nm;
  size_t bytes;
  ada_status s = first_pass(&r, &nt, &nm, &bytes);
  if (s) return s;
  r.str_cap = bytes + 16; /* + room to decode a "__metadata__" key */
  f->tensors = calloc(nt ? (size_t)nt : 1, sizeof *f->tensors);
  f->meta = calloc(nm ? (size_t)nm : 1, sizeof *f->meta);
  f->strings = malloc(r.str_cap);
  if (!f->tensors || !f->meta || !f->strings) return ada_fail(ADA_ENOMEM, "safetensors: %s: out of memory", f->path);
  ada_json_start(&r.c, text, len, 8, ctx);
  if (!ada_json_enter(&r.c)) return r.c.status;
  bool had_meta = false;
  for (size_t i = 0;; i++) {
    int more = ada_json_next(&r.c, true, i);
    if (more < 0) return r.c.status;
    if (!more) break;
    const char *key;
    size_t klen;
    if ((s = store_string(&r, true, &key, &klen))) return s;
    if (is_meta_key(key, klen)) {
      if (had_meta) return BAD("safetensors: %s: duplicate key \"__metadata__\" in the header", f->path);
      had_meta = true;
      s = read_metadata(&r, f->meta, &f->n_meta);
    } else {
      r.str_used += klen + 1;
      if (f->n >= nt) return ada_fail(ADA_EINVAL, "safetensors: %s: header tensors outgrew their count", f->path);
      s = read_entry(&r, key, klen, &f->tensors[f->n]);
      f->n++;
    }
    if (s) return s;
  }
  heap_sort(f->tensors, (size_t)f->n, sizeof *f->tensors, tensor_by_name);
  for (int64_t i = 1; i < f->n; i++)
    if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0)
      return BAD("safetensors: %s: duplicate key \"%s\" in the header (tensor names must be distinct)", f->path,
                 quoted(q, sizeof q, f->tensors[i].name, strlen(f->tensors[i].name)));
  if ((s = check_overlap(&r, f->tensors, f->n))) return s;
  heap_sort(f->tensors, (size_t)f->n, sizeof *f->tensors, tensor_by_name);
  heap_sort(f->meta, (size_t)f->n_meta, sizeof *f->meta, meta_by_key);
  for (int64_t i = 1; i < f->n_meta; i++)
    if (strcmp(f->meta[i - 1].key, f->meta[i].key) == 0)
      return BAD("safetensors: %s: __metadata__: duplicate key \"%s\"", f->path,
                 quoted(q, sizeof q, f->meta[i].key, strlen(f->meta[i].key)));
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
  if (close(fd) != 0 && !s) {
    s = ada_fail(ADA_EIO, "safetensors: %s: cannot close: %s", path, strerror(errno));
    map_release(m);
  }
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
    else if (hlen > ADA_ST_MAX_HEADER)
      s = BAD("safetensors: %s: header length %llu exceeds the 100 MiB limit", path, (unsigned long long)hlen);
    f->data_start = 8 + hlen;
  }
  if (!s) s = read_header(f, (const char *)f->map->base + 8, (size_t)(f->data_start - 8));
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
  free(f->strings);
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
  out->dtype = (ada_dtype)t->dtype;
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
  ada_dtype dt = (ada_dtype)t->dtype;
  char *p = (char *)f->map->base + f->data_start + t->begin;
  if ((uintptr_t)p % (uintptr_t)ada_dtype_size(dt) == 0) {
    f->map->refs++;
    ada_status s = ada_tensor_from_host_memory(out, p, t->ndim, t->shape, dt, map_release, f->map);
    if (s) f->map->refs--;
    return s;
  }
  ada_tensor *c;
  ada_device cpu = {ADA_CPU, 0};
  ada_status s = ada_tensor_empty(&c, t->ndim, t->shape, dt, cpu);
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
