/* png_fuzz.c: libFuzzer harness of the PNG reader (runtime/io/png.c over libpng), with a
 * decoded-size limit of 16 MiB. A failure must be a clean status with a "png: <path>: " message;
 * heap per input within 4 x the file + the limit + 1 MiB (libpng and zlib state). */
#include "fuzz_common.h"

#include <string.h>

#include "../../runtime/io/png.h"

#define LIMIT ((uint64_t)16 << 20)

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  fz_init("png_fuzz");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fz_file(data, size);
  fz_mem_begin();
  ada_tensor *t;
  ada_status s = ada_png_read_limited(path, LIMIT, &t);
  if (s) {
    fz_check_failure("png", path, ada_last_error());
  } else {
    int64_t c = t->shape[2];
    if (t->ndim != 3 || (c != 1 && c != 3 && c != 4) || (uint64_t)ada_tensor_numel(t) > LIMIT) abort();
    ada_tensor_free(t);
  }
  fz_mem_end(size, (size_t)LIMIT + (1 << 20));
  return 0;
}
