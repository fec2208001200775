/* safetensors_fuzz.c: libFuzzer harness of the safetensors reader (runtime/io/safetensors.c,
 * json.c). Each input is a whole file; a file that opens is walked completely (every tensor's
 * info, name lookup and data, every metadata entry). A failure must be a clean status with a
 * "safetensors: <path>: " message; heap per input within 4 x the file + 64 KiB. */
#include "fuzz_common.h"

#include <string.h>

#include "../../runtime/io/safetensors.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  fz_init("safetensors_fuzz");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fz_file(data, size);
  fz_mem_begin();
  ada_st_file *f;
  ada_status s = ada_st_open(&f, path);
  if (s) {
    fz_check_failure("safetensors", path, ada_last_error());
  } else {
    int64_t n = ada_st_count(f);
    for (int64_t i = 0; i < n; i++) {
      ada_st_entry e;
      ada_st_info(f, i, &e);
      const char *name = ada_st_name(f, i);
      if (ada_st_find(f, name) != i) abort();
      if (i > 0 && strcmp(ada_st_name(f, i - 1), name) >= 0) abort(); /* sorted, distinct */
      if (e.offset + e.nbytes > size || e.nbytes == 0) abort();
      ada_tensor *t;
      if (ada_st_tensor(f, i, &t) == ADA_OK) {
        const unsigned char *p = ada_tensor_data(t);
        if (memcmp(p, data + e.offset, (size_t)e.nbytes) != 0) abort();
        ada_tensor_free(t);
      }
    }
    for (int64_t i = 0; i < ada_st_metadata_count(f); i++)
      if (strlen(ada_st_metadata_key(f, i)) + strlen(ada_st_metadata_value(f, i)) > size) abort();
    ada_st_close(f);
  }
  fz_mem_end(size, 64 << 10);
  return 0;
}
