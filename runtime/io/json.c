/* json.c: the strict JSON cursor of json.h. Nothing is allocated: strings are decoded into
 * the caller's buffer, containers are walked by the caller, ada_json_skip recurses at most
 * ADA_JSON_MAX_DEPTH levels. */
#include "json.h"

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- cursor ------------------------------------------------------------------------------- */

typedef ada_json_cursor parser;

static bool fail_at(parser *p, size_t at, const char *fmt, const char *arg) {
  char msg[256];
  snprintf(msg, sizeof msg, fmt, arg);
  p->status = ada_fail(ADA_EINVAL, "%s: invalid JSON at byte %zu: %s", p->context, p->base + at, msg);
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

void ada_json_start(ada_json_cursor *c, const char *text, size_t len, size_t base, const char *context) {
  memset(c, 0, sizeof *c);
  c->s = (const unsigned char *)text;
  c->n = len;
  c->base = base;
  c->context = context;
}

ada_json_type ada_json_peek(ada_json_cursor *p) {
  skip_ws(p);
  int ch = p->pos < p->n ? p->s[p->pos] : -1;
  switch (ch) {
    case '{': return ADA_JSON_OBJECT;
    case '[': return ADA_JSON_ARRAY;
    case '"': return ADA_JSON_STRING;
    case 't': case 'f': return ADA_JSON_BOOL;
    case 'n': return ADA_JSON_NULL;
    default: return ch == '-' || (ch >= '0' && ch <= '9') ? ADA_JSON_NUMBER : ADA_JSON_NONE;
  }
}

bool ada_json_enter(ada_json_cursor *p) {
  ada_json_type t = ada_json_peek(p);
  if (t != ADA_JSON_OBJECT && t != ADA_JSON_ARRAY) return expected(p, "'{' or '['");
  if (p->depth >= ADA_JSON_MAX_DEPTH) {
    char d[16];
    snprintf(d, sizeof d, "%d", ADA_JSON_MAX_DEPTH);
    return fail_at(p, p->pos, "nesting deeper than %s levels", d);
  }
  p->depth++;
  p->pos++;
  return true;
}

int ada_json_next(ada_json_cursor *p, bool object, size_t index) {
  char close = object ? '}' : ']';
  skip_ws(p);
  if (p->pos < p->n && p->s[p->pos] == close) {
    p->pos++;
    p->depth--;
    return 0;
  }
  if (index == 0) return 1;
  if (p->pos < p->n && p->s[p->pos] == ',') {
    p->pos++;
    return 1;
  }
  expected(p, object ? "',' or '}' in object" : "',' or ']' in array");
  return -1;
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

/* Appends k decoded bytes to out[0, cap) (as far as they fit). */
static void emit(char *out, size_t cap, size_t *len, const void *b, size_t k) {
  if (*len < cap) memcpy(out + *len, b, cap - *len < k ? cap - *len : k);
  *len += k;
}

bool ada_json_string(ada_json_cursor *p, char *out, size_t cap, size_t *len_out) {
  if (ada_json_peek(p) != ADA_JSON_STRING) return expected(p, "a string");
  size_t start = p->pos++, raw = p->pos, len = 0;
  while (raw < p->n && p->s[raw] != '"') raw += p->s[raw] == '\\' ? 2 : 1;
  if (raw >= p->n) return fail_at(p, start, "%s", "unterminated string");
  /* every escape ends before raw: the closing quote bounds every read below */
  while (p->s[p->pos] != '"') {
    unsigned c = p->s[p->pos];
    if (c == '\\') {
      unsigned e = p->s[++p->pos];
      const char *esc = "\"\\/bfnrt", *rep = "\"\\/\b\f\n\r\t", *hit = strchr(esc, (int)e);
      if (e == 'u') {
        uint32_t cp;
        unsigned char o[4];
        if (!parse_u_escape(p, &cp)) return false;
        emit(out, cap, &len, o, put_utf8(o, cp));
      } else if (e && hit) {
        emit(out, cap, &len, &rep[hit - esc], 1);
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
      size_t k = utf8_seq(p->s + p->pos, raw - p->pos);
      if (!k) return fail_at(p, p->pos, "%s", "invalid UTF-8 in string");
      emit(out, cap, &len, p->s + p->pos, k);
      p->pos += k;
    }
  }
  p->pos++;
  if (len_out) *len_out = len;
  return true;
}

bool ada_json_key(ada_json_cursor *p, char *out, size_t cap, size_t *len) {
  if (ada_json_peek(p) != ADA_JSON_STRING) return expected(p, "a string key");
  if (!ada_json_string(p, out, cap, len)) return false;
  skip_ws(p);
  if (p->pos >= p->n || p->s[p->pos] != ':') return expected(p, "':' after an object key");
  p->pos++;
  return true;
}

static bool digits(parser *p) {
  size_t s = p->pos;
  while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
  return p->pos > s;
}

bool ada_json_number_at(ada_json_cursor *p, ada_json_number *out) {
  if (ada_json_peek(p) != ADA_JSON_NUMBER) return expected(p, "a number");
  ada_json_number v = {0};
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
  if (integral) {
    uint64_t m = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    bool fits = true;
    for (size_t i = neg; i < len && fits; i++) {
      uint64_t d = (uint64_t)(tok[i] - '0');
      fits = m <= (lim - d) / 10;
      m = m * 10 + d;
    }
    if (fits) {
      v.is_integer = true;
      v.integer = neg ? (int64_t)(0 - m) : (int64_t)m;
    }
  } else {
    char *dot = strchr(tok, '.'); /* strtod reads the locale's decimal point */
    if (dot) *dot = *localeconv()->decimal_point;
  }
  v.value = strtod(tok, NULL);
  if (isinf(v.value)) return fail_at(p, start, "number %s is out of range", tok);
  if (out) *out = v;
  return true;
}

static bool literal(parser *p, const char *word) {
  size_t k = strlen(word);
  if (p->n - p->pos < k || memcmp(p->s + p->pos, word, k) != 0) return expected(p, "a JSON value");
  p->pos += k;
  return true;
}

bool ada_json_skip(ada_json_cursor *p) {
  ada_json_type t = ada_json_peek(p);
  switch (t) {
    case ADA_JSON_OBJECT:
    case ADA_JSON_ARRAY: {
      bool object = t == ADA_JSON_OBJECT;
      if (!ada_json_enter(p)) return false;
      for (size_t i = 0;; i++) {
        int r = ada_json_next(p, object, i);
        if (r < 0) return false;
        if (r == 0) return true;
        if (object && !ada_json_key(p, NULL, 0, NULL)) return false;
        if (!ada_json_skip(p)) return false;
      }
    }
    case ADA_JSON_STRING: return ada_json_string(p, NULL, 0, NULL);
    case ADA_JSON_NUMBER: return ada_json_number_at(p, NULL);
    case ADA_JSON_BOOL: return literal(p, p->s[p->pos] == 't' ? "true" : "false");
    case ADA_JSON_NULL: return literal(p, "null");
    default: return expected(p, "a JSON value");
  }
}

bool ada_json_end(ada_json_cursor *p) {
  skip_ws(p);
  return p->pos < p->n ? expected(p, "end of input after the JSON value") : true;
}
