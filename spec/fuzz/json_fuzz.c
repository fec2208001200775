/* json_fuzz.c: libFuzzer harness of the JSON cursor (runtime/io/json.c). Every input is walked
 * value by value, strings decoded into a deliberately small buffer; the walk must end in success
 * or a clean ADA_EINVAL with a message, never read out of bounds, and allocate nothing. */
#include "fuzz_common.h"

#include <string.h>

#include "../../runtime/io/json.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  fz_init("json_fuzz");
  return 0;
}

static bool walk(ada_json_cursor *c) {
  char buf[8];
  size_t len, at;
  switch (ada_json_peek(c)) {
    case ADA_JSON_OBJECT:
    case ADA_JSON_ARRAY: {
      bool object = ada_json_peek(c) == ADA_JSON_OBJECT;
      if (!ada_json_enter(c)) return false;
      for (size_t i = 0;; i++) {
        int r = ada_json_next(c, object, i);
        if (r < 0) return false;
        if (r == 0) return true;
        at = c->pos;
        if (object && !ada_json_key(c, buf, sizeof buf, &len)) return false;
        if (object && len > c->pos - at) abort(); /* decoded longer than the raw text */
        if (!walk(c)) return false;
      }
    }
    case ADA_JSON_STRING:
      at = c->pos;
      if (!ada_json_string(c, buf, sizeof buf, &len)) return false;
      if (len + 2 > c->pos - at) abort();
      return true;
    case ADA_JSON_NUMBER: {
      ada_json_number v;
      if (!ada_json_number_at(c, &v)) return false;
      if (v.is_integer && (double)v.integer != v.value && (v.integer < -(1LL << 53) || v.integer > (1LL << 53)) == 0)
        abort(); /* an exact integer must read as the same double */
      return true;
    }
    default:
      return ada_json_skip(c);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_mem_begin();
  ada_json_cursor a, b;
  ada_json_start(&a, (const char *)data, size, 8, "fuzz");
  ada_json_start(&b, (const char *)data, size, 8, "fuzz");
  bool ok_walk = walk(&a) && ada_json_end(&a);
  bool ok_skip = ada_json_skip(&b) && ada_json_end(&b);
  if (ok_walk != ok_skip) abort(); /* two walks of one text must agree */
  if (!ok_walk && (a.status != ADA_EINVAL || strncmp(ada_last_error(), "fuzz: invalid JSON at byte ", 27) != 0))
    abort();
  if (a.pos > size || b.pos > size) abort();
  fz_mem_end(size, 0);
  return 0;
}
