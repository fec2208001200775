/* json.h: a small strict JSON reader (prefix ada_json_), enough for safetensors headers.
 *
 * RFC 8259 grammar, nothing more: one value with optional surrounding whitespace; objects,
 * arrays, strings (escapes including \uXXXX and surrogate pairs; raw bytes must be valid
 * UTF-8 and control characters must be escaped), numbers, true, false, null. Nesting deeper
 * than ADA_JSON_MAX_DEPTH is rejected, and so is a number token longer than 127 characters.
 *
 * It is a cursor over the text, not a tree: the caller walks the document value by value and
 * keeps only what it wants, so reading never allocates (a header's memory is what its reader
 * keeps, bounded by the text). Duplicate object keys are the caller's to reject (safetensors.c
 * does, for every object a header may hold). ada_json_skip() validates and skips any value.
 *
 * Every function that can fail returns false (or -1) and leaves the failure in c->status:
 * ADA_EINVAL with "<context>: invalid JSON at byte <base + offset>: <problem>". After a
 * failure the cursor must not be used again.
 */
#ifndef ADA_JSON_H
#define ADA_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../status.h"

#define ADA_JSON_MAX_DEPTH 64

typedef enum ada_json_type {
  ADA_JSON_NONE = -1, /* the next byte starts no value (or the input ended) */
  ADA_JSON_NULL = 0,
  ADA_JSON_BOOL,
  ADA_JSON_NUMBER,
  ADA_JSON_STRING,
  ADA_JSON_ARRAY,
  ADA_JSON_OBJECT
} ada_json_type;

typedef struct ada_json_cursor {
  const unsigned char *s;
  size_t n, pos, base; /* text [0, n), the next byte, the text's offset in its file */
  const char *context;
  int32_t depth;
  ada_status status;
} ada_json_cursor;

typedef struct ada_json_number {
  double value;    /* the nearest double */
  bool is_integer; /* written without fraction or exponent, and fits int64 */
  int64_t integer; /* when is_integer */
} ada_json_number;

/* Starts a cursor on text[0, len) (not NUL-terminated). base is added to every reported byte
 * offset (the text's position in a larger file); context starts the error message. */
void ada_json_start(ada_json_cursor *c, const char *text, size_t len, size_t base, const char *context);
/* Skips whitespace; the type of the value that starts there (ADA_JSON_NONE: none does). */
ada_json_type ada_json_peek(ada_json_cursor *c);
/* Enters the array or object at the cursor. */
bool ada_json_enter(ada_json_cursor *c);
/* In the container entered last (object or not), before its item number index (from 0): 1 when
 * an item follows (its ',' consumed), 0 when the container closed here (its bracket consumed),
 * -1 on error. In an object, the item starts with its key: call ada_json_key next. */
int ada_json_next(ada_json_cursor *c, bool object, size_t index);
/* A string (ada_json_key: an object key and its ':'). The decoded bytes go to out[0, cap)
 * (truncated when longer; no NUL added; out may be NULL with cap 0); *len (may be NULL) gets
 * the full decoded length, never more than the raw text's length. */
bool ada_json_string(ada_json_cursor *c, char *out, size_t cap, size_t *len);
bool ada_json_key(ada_json_cursor *c, char *out, size_t cap, size_t *len);
/* A number; out may be NULL. A number beyond the double range is an error. */
bool ada_json_number_at(ada_json_cursor *c, ada_json_number *out);
/* Validates and skips one value of any type. */
bool ada_json_skip(ada_json_cursor *c);
/* Only whitespace is left. */
bool ada_json_end(ada_json_cursor *c);

/* Length of the longest valid UTF-8 prefix of s[0, n): n when all of s is valid. */
size_t ada_json_utf8_valid_prefix(const char *s, size_t n);

#endif
