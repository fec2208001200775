/* json.h: a small strict JSON parser (prefix ada_json_), enough for safetensors headers.
 *
 * RFC 8259 grammar, nothing more: one value with optional surrounding whitespace; objects,
 * arrays, strings (escapes including \uXXXX and surrogate pairs; raw bytes must be valid
 * UTF-8 and control characters must be escaped), numbers, true, false, null. Objects with a
 * duplicate key are rejected. Nesting deeper than ADA_JSON_MAX_DEPTH is rejected, and so is a
 * number token longer than 127 characters.
 *
 * A parse yields a document that owns every node and string; nodes stay valid until
 * ada_json_free(). Errors fail with ADA_EINVAL and the message
 * "<context>: invalid JSON at byte <base + offset>: <problem>".
 */
#ifndef ADA_JSON_H
#define ADA_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../status.h"

#define ADA_JSON_MAX_DEPTH 64

typedef enum ada_json_type {
  ADA_JSON_NULL = 0,
  ADA_JSON_BOOL,
  ADA_JSON_NUMBER,
  ADA_JSON_STRING,
  ADA_JSON_ARRAY,
  ADA_JSON_OBJECT
} ada_json_type;

typedef struct ada_json ada_json;
struct ada_json {
  ada_json_type type;
  size_t begin, end;      /* the value's bytes in the input, [begin, end), plus base */
  bool boolean;           /* BOOL */
  double number;          /* NUMBER (nearest double) */
  bool is_integer;        /* NUMBER written without fraction or exponent that fits int64 */
  int64_t integer;        /* NUMBER when is_integer */
  const char *string;     /* STRING: decoded UTF-8, NUL-terminated (may hold NULs from \u0000) */
  size_t length;          /* STRING: bytes, without the terminating NUL */
  size_t count;           /* ARRAY elements, OBJECT members */
  const ada_json *items;  /* ARRAY elements, OBJECT member values; document order */
  const ada_json *keys;   /* OBJECT member keys (STRING nodes); document order */
};

typedef struct ada_json_doc ada_json_doc;

/* Parses text[0, len) (not NUL-terminated). base is added to every reported byte offset (the
 * text's position in a larger file); context starts the error message. */
ada_status ada_json_parse(ada_json_doc **out, const char *text, size_t len, size_t base,
                          const char *context);
const ada_json *ada_json_root(const ada_json_doc *doc);
/* Frees the document and all its nodes; NULL is ignored. */
void ada_json_free(ada_json_doc *doc);

/* Length of the longest valid UTF-8 prefix of s[0, n): n when all of s is valid. */
size_t ada_json_utf8_valid_prefix(const char *s, size_t n);

#endif
