/* layout_fuzz.c: libFuzzer harness of the layout message decoder (runtime/layout.c,
 * ada_layout_decode), which reads the compact CSR messages that processes send each other when
 * heads move between ranks. Every input is decoded; a decoded layout must pass
 * ada_layout_validate, and encoding all its heads and decoding that again must give the same
 * layout; a refused input must be a clean ADA_EINVAL. The decode's heap peak is held to 4 x the
 * input + a fixed bound (its indices may widen from 2 to 4 bytes, never more). */
#include "fuzz_common.h"

#include <string.h>

#include "../../runtime/layout.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  fz_init("layout_fuzz");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_mem_begin();
  ada_layout *l = NULL;
  ada_status s = ada_layout_decode(&l, data, size, "fuzz");
  fz_mem_end(size, 4096);
  if (s != ADA_OK) {
    if (s != ADA_EINVAL || l != NULL || strncmp(ada_last_error(), "fuzz: ", 6) != 0) abort();
    return 0;
  }
  if (ada_layout_validate(l, "fuzz") != ADA_OK) abort();
  int32_t *heads = malloc(sizeof(int32_t) * (size_t)l->heads);
  if (!heads) abort();
  for (int32_t h = 0; h < l->heads; h++) heads[h] = h;
  const size_t n = ada_layout_msg_size(l, heads, l->heads);
  void *buf = malloc(n ? n : 1);
  size_t got = 0;
  ada_layout *r = NULL;
  if (!buf || ada_layout_encode(l, heads, l->heads, buf, n, &got) != ADA_OK || got != n ||
      ada_layout_decode(&r, buf, got, "fuzz") != ADA_OK)
    abort();
  const size_t noff = sizeof(int64_t) * (size_t)l->heads * ((size_t)l->nqb + 1);
  if (r->heads != l->heads || r->nqb != l->nqb || r->nkb != l->nkb || r->block != l->block || r->nnz != l->nnz ||
      memcmp(r->offsets, l->offsets, noff) != 0 ||
      (l->nnz && memcmp(r->indices, l->indices, sizeof(int32_t) * (size_t)l->nnz) != 0))
    abort(); /* the round trip must give the same layout */
  ada_layout_free(r);
  free(buf);
  free(heads);
  ada_layout_free(l);
  return 0;
}
