/* json.c: the strict JSON parser of json.h. Recursive descent with a depth limit; finished
 * values wait on a stack until their container closes, then move into the document's arena,
 * so a failed parse frees everything at once. */
#include "json.h"

#include <locale.h>
#include <math.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena -------------------------------------------------------------------------------- */

typedef struct arena_block {
  struct arena_block *next;
  size_t used, cap;
  alignas(max_align_t) unsigned char data[];
} arena_block;

struct ada_json_doc {
  ada_json root;
  arena_block *blocks;
};

static void *arena_alloc(ada_json_doc *d, size_t n) {
  size_t a = alignof(max_align_t);
  n = (n + a - 1) / a * a;
  arena_block *b = d->blocks;
  if (!b || b->cap - b->used < n) {
    size_t cap = n > 65536 ? n : 65536;
    b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->next = d->blocks;
    b->used = 0;
    b->cap = cap;
    d->blocks = b;
  }
  void *p = b->data + b->used;
  b->used += n;
  return p;
}

void ada_json_free(ada_json_doc *d) {
  if (!d) return;
  for (arena_block *b = d->blocks, *next; b; b = next) {
    next = b->next;
    free(b);
  }
  free(d);
}

const ada_json *ada_json_root(const ada_json_doc *d) { return &d->root; }

/* ---- UTF-8 ---------------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (n bytes available), 0 when invalid: no overlong
 * forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned c = s[0], lo = 0x80, hi = 0xBF;
  size_t len;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c == 0xE0) { len = 3; lo = 0xA0; }
  else if (c == 0xED) { len = 3; hi = 0x9F; }
  else if (c >= 0xE1 && c <= 0xEF) len = 3;
  else if (c == 0xF0) { len = 4; lo = 0x90; }
  else if (c == 0xF4) { len = 4; hi = 0x8F; }
  else if (c >= 0xF1 && c <= 0xF3) len = 4;
  else return 0;
  if (n < len || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return len;
}

size_t ada_json_utf8_valid_prefix(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    size_t k = utf8_seq(u + i, n - i);
    if (!k) break;
    i += k;
  }
  return i;
}

/* ---- parser ------------------------------------------------------------------------------- */

typedef struct parser {
  const unsigned char *s;
  size_t n, pos, base;
  const char *context;
  ada_json_doc *doc;
  ada_json *stack; /* finished values (and object keys) not yet owned by a container */
  size_t sp, scap;
  int depth;
  ada_status status;
} parser;

static bool fail_at(parser *p, size_t at, const char *fmt, const char *arg) {
  char msg[256];
  snprintf(msg, sizeof msg, fmt, arg);
  p->status = ada_fail(ADA_EINVAL, "%s: invalid JSON at byte %zu: %s", p->context, p->base + at, msg);
  return false;
}

static bool fail_nomem(parser *p) {
  p->status = ada_fail(ADA_ENOMEM, "%s: out of memory parsing JSON", p->context);
  return false;
}

/* Describes the byte at pos for messages: 'x', byte 0xNN, or end of input. */
static const char *found(const parser *p, char *buf, size_t n) {
  if (p->pos >= p->n) snprintf(buf, n, "end of input");
  else if (p->s[p->pos] >= 0x20 && p->s[p->pos] < 0x7f) snprintf(buf, n, "'%c'", p->s[p->pos]);
  else snprintf(buf, n, "byte 0x%02x", p->s[p->pos]);
  return buf;
}

static bool expected(parser *p, const char *what) {
  char f[32], msg[128];
  snprintf(msg, sizeof msg, "expected %s, found %s", what, found(p, f, sizeof f));
  return fail_at(p, p->pos, "%s", msg);
}

static void skip_ws(parser *p) {
  while (p->pos < p->n && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
                           p->s[p->pos] == '\r'))
    p->pos++;
}

static bool push(parser *p, const ada_json *v) {
  if (p->sp == p->scap) {
    size_t cap = p->scap ? p->scap * 2 : 64;
    ada_json *s = realloc(p->stack, cap * sizeof *s);
    if (!s) return fail_nomem(p);
    p->stack = s;
    p->scap = cap;
  }
  p->stack[p->sp++] = *v;
  return true;
}

static int hex4(const unsigned char *s) {
  int v = 0;
  for (int i = 0; i < 4; i++) {
    int c = s[i], d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return -1;
    v = v * 16 + d;
  }
  return v;
}

/* \uXXXX at p->pos (pointing at the 'u'), with a following low surrogate when needed. */
static bool parse_u_escape(parser *p, uint32_t *cp) {
  size_t at = p->pos - 1;
  int h = p->n - p->pos >= 5 ? hex4(p->s + p->pos + 1) : -1;
  if (h < 0) return fail_at(p, at, "%s", "\\u must be followed by 4 hex digits");
  p->pos += 5;
  if (h >= 0xDC00 && h <= 0xDFFF) return fail_at(p, at, "%s", "lone low surrogate in \\u escape");
  if (h >= 0xD800 && h <= 0xDBFF) {
    int l = p->n - p->pos >= 6 && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u' ? hex4(p->s + p->pos + 2) : -1;
    if (l < 0xDC00 || l > 0xDFFF)
      return fail_at(p, at, "%s", "high surrogate in \\u escape not followed by a low surrogate");
    p->pos += 6;
    *cp = 0x10000u + (((uint32_t)h - 0xD800u) << 10) + ((uint32_t)l - 0xDC00u);
  } else {
    *cp = (uint32_t)h;
  }
  return true;
}

static size_t put_utf8(unsigned char *o, uint32_t c) {
  if (c < 0x80) { o[0] = (unsigned char)c; return 1; }
  if (c < 0x800) { o[0] = (unsigned char)(0xC0 | (c >> 6)); o[1] = (unsigned char)(0x80 | (c & 0x3F)); return 2; }
  if (c < 0x10000) {
    o[0] = (unsigned char)(0xE0 | (c >> 12));
    o[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
    o[2] = (unsigned char)(0x80 | (c & 0x3F));
    return 3;
  }
  o[0] = (unsigned char)(0xF0 | (c >> 18));
  o[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
  o[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
  o[3] = (unsigned char)(0x80 | (c & 0x3F));
  return 4;
}

/* A string at p->pos (the opening quote) into v. Decoded text is never longer than the raw
 * text, so one arena allocation of the raw length suffices. */
static bool parse_string(parser *p, ada_json *v) {
  size_t start = p->pos++, raw = p->pos;
  while (raw < p->n && p->s[raw] != '"') raw += p->s[raw] == '\\' ? 2 : 1;
  if (raw >= p->n) return fail_at(p, start, "%s", "unterminated string");
  unsigned char *o = arena_alloc(p->doc, raw - p->pos + 1);
  if (!o) return fail_nomem(p);
  size_t len = 0;
  while (p->s[p->pos] != '"') {
    unsigned c = p->s[p->pos];
    if (c == '\\') {
      unsigned e = p->s[++p->pos];
      const char *esc = "\"\\/bfnrt", *rep = "\"\\/\b\f\n\r\t", *hit = strchr(esc, (int)e);
      if (e == 'u') {
        uint32_t cp;
        if (!parse_u_escape(p, &cp)) return false;
        len += put_utf8(o + len, cp);
      } else if (e && hit) {
        o[len++] = (unsigned char)rep[hit - esc];
        p->pos++;
      } else {
        char f[32];
        p->pos--;
        snprintf(f, sizeof f, "\\%c", e >= 0x20 && e < 0x7f ? (int)e : '?');
        return fail_at(p, p->pos, "invalid escape %s in string", f);
      }
    } else if (c < 0x20) {
      return fail_at(p, p->pos, "%s", "unescaped control character in string");
    } else {
      size_t k = utf8_seq(p->s + p->pos, p->n - p->pos);
      if (!k) return fail_at(p, p->pos, "%s", "invalid UTF-8 in string");
      memcpy(o + len, p->s + p->pos, k);
      len += k;
      p->pos += k;
    }
  }
  p->pos++;
  o[len] = '\0';
  v->type = ADA_JSON_STRING;
  v->string = (const char *)o;
  v->length = len;
  return true;
}

static bool digits(parser *p) {
  size_t s = p->pos;
  while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
  return p->pos > s;
}

static bool parse_number(parser *p, ada_json *v) {
  size_t start = p->pos;
  bool neg = p->s[p->pos] == '-', integral = true;
  if (neg) p->pos++;
  if (p->pos < p->n && p->s[p->pos] == '0') p->pos++;
  else if (!digits(p)) return expected(p, "a digit");
  if (p->pos < p->n && p->s[p->pos] == '.') {
    integral = false;
    p->pos++;
    if (!digits(p)) return expected(p, "a digit after '.'");
  }
  if (p->pos < p->n && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
    integral = false;
    p->pos++;
    if (p->pos < p->n && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
    if (!digits(p)) return expected(p, "a digit in the exponent");
  }
  size_t len = p->pos - start;
  char tok[128];
  if (len >= sizeof tok) return fail_at(p, start, "%s", "number longer than 127 characters");
  memcpy(tok, p->s + start, len);
  tok[len] = '\0';
  v->type = ADA_JSON_NUMBER;
  if (integral) {
    uint64_t m = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    bool fits = true;
    for (size_t i = neg; i < len && fits; i++) {
      uint64_t d = (uint64_t)(tok[i] - '0');
      fits = m <= (lim - d) / 10;
      m = m * 10 + d;
    }
    if (fits) {
      v->is_integer = true;
      v->integer = neg ? (int64_t)(0 - m) : (int64_t)m;
    }
  } else {
    char *dot = strchr(tok, '.'); /* strtod reads the locale's decimal point */
    if (dot) *dot = *localeconv()->decimal_point;
  }
  v->number = strtod(tok, NULL);
  if (isinf(v->number)) return fail_at(p, start, "number %s is out of range", tok);
  return true;
}

static bool parse_value(parser *p);

static int key_cmp(const void *a, const void *b) {
  const ada_json *x = *(const ada_json *const *)a, *y = *(const ada_json *const *)b;
  size_t n = x->length < y->length ? x->length : y->length;
  int c = memcmp(x->string, y->string, n);
  if (c) return c;
  if (x->length != y->length) return x->length < y->length ? -1 : 1;
  return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Rejects an object whose keys repeat, naming the second occurrence. */
static bool check_unique(parser *p, const ada_json *keys, size_t n) {
  if (n < 2) return true;
  const ada_json **sorted = malloc(n * sizeof *sorted);
  if (!sorted) return fail_nomem(p);
  for (size_t i = 0; i < n; i++) sorted[i] = &keys[i];
  qsort(sorted, n, sizeof *sorted, key_cmp);
  bool ok = true;
  for (size_t i = 1; i < n && ok; i++) {
    const ada_json *a = sorted[i - 1], *b = sorted[i];
    if (a->length == b->length && memcmp(a->string, b->string, a->length) == 0) {
      char k[96];
      snprintf(k, sizeof k, "%.80s%s", a->string, a->length > 80 ? "..." : "");
      ok = fail_at(p, b->begin - p->base, "duplicate key \"%s\" in object", k);
    }
  }
  free(sorted);
  return ok;
}

/* An array or object at p->pos; its children are parsed onto the stack, then moved into the
 * arena (object members alternate key, value on the stack). */
static bool parse_container(parser *p, ada_json *v, bool object) {
  char close = object ? '}' : ']';
  if (++p->depth > ADA_JSON_MAX_DEPTH) {
    char d[16];
    snprintf(d, sizeof d, "%d", ADA_JSON_MAX_DEPTH);
    return fail_at(p, p->pos, "nesting deeper than %s levels", d);
  }
  p->pos++;
  size_t first = p->sp;
  skip_ws(p);
  if (p->pos < p->n && p->s[p->pos] == close) {
    p->pos++;
  } else {
    for (;;) {
      skip_ws(p);
      if (object) {
        if (p->pos >= p->n || p->s[p->pos] != '"') return expected(p, "a string key");
        ada_json k = {0};
        k.begin = p->base + p->pos;
        if (!parse_string(p, &k)) return false;
        k.end = p->base + p->pos;
        if (!push(p, &k)) return false;
        skip_ws(p);
        if (p->pos >= p->n || p->s[p->pos] != ':') return expected(p, "':' after an object key");
        p->pos++;
      }
      if (!parse_value(p)) return false;
      skip_ws(p);
      if (p->pos < p->n && p->s[p->pos] == ',') { p->pos++; continue; }
      if (p->pos < p->n && p->s[p->pos] == close) { p->pos++; break; }
      return expected(p, object ? "',' or '}' in object" : "',' or ']' in array");
    }
  }
  p->depth--;
  size_t n = (p->sp - first) / (object ? 2 : 1);
  v->type = object ? ADA_JSON_OBJECT : ADA_JSON_ARRAY;
  v->count = n;
  if (n) {
    ada_json *items = arena_alloc(p->doc, n * sizeof *items), *keys = NULL;
    if (!items || (object && !(keys = arena_alloc(p->doc, n * sizeof *keys)))) return fail_nomem(p);
    for (size_t i = 0; i < n; i++) {
      if (object) {
        keys[i] = p->stack[first + 2 * i];
        items[i] = p->stack[first + 2 * i + 1];
      } else {
        items[i] = p->stack[first + i];
      }
    }
    v->items = items;
    v->keys = keys;
    if (object && !check_unique(p, keys, n)) return false;
  }
  p->sp = first;
  return true;
}

static bool literal(parser *p, const char *word) {
  size_t k = strlen(word);
  if (p->n - p->pos < k || memcmp(p->s + p->pos, word, k) != 0) return expected(p, "a JSON value");
  p->pos += k;
  return true;
}

/* One value at p->pos (after whitespace), pushed onto the stack. */
static bool parse_value(parser *p) {
  ada_json v = {0};
  skip_ws(p);
  v.begin = p->base + p->pos;
  int c = p->pos < p->n ? p->s[p->pos] : -1;
  bool ok;
  if (c == '{' || c == '[') ok = parse_container(p, &v, c == '{');
  else if (c == '"') ok = parse_string(p, &v);
  else if (c == '-' || (c >= '0' && c <= '9')) ok = parse_number(p, &v);
  else if (c == 't' || c == 'f') {
    ok = literal(p, c == 't' ? "true" : "false");
    v.type = ADA_JSON_BOOL;
    v.boolean = c == 't';
  } else if (c == 'n') {
    ok = literal(p, "null");
    v.type = ADA_JSON_NULL;
  } else {
    ok = expected(p, "a JSON value");
  }
  v.end = p->base + p->pos;
  return ok && push(p, &v);
}

ada_status ada_json_parse(ada_json_doc **out, const char *text, size_t len, size_t base,
                          const char *context) {
  parser p = {0};
  p.s = (const unsigned char *)text;
  p.n = len;
  p.base = base;
  p.context = context;
  p.doc = calloc(1, sizeof *p.doc);
  if (!p.doc) return ada_fail(ADA_ENOMEM, "%s: out of memory parsing JSON", context);
  bool ok = parse_value(&p);
  if (ok) {
    skip_ws(&p);
    if (p.pos < p.n) ok = expected(&p, "end of input after the JSON value");
  }
  if (ok) p.doc->root = p.stack[0];
  free(p.stack);
  if (!ok) {
    ada_json_free(p.doc);
    return p.status;
  }
  *out = p.doc;
  return ADA_OK;
}
