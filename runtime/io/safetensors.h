/* safetensors.h: reading and writing safetensors files (prefix ada_st_).
 *
 * Format: an 8-byte little-endian header length N, N bytes of JSON, then the data buffer.
 * The JSON object maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
 * (offsets relative to the data buffer, which starts at byte 8 + N) and may hold
 * "__metadata__": {string: string}.
 *
 * Reading memory-maps the file and validates the whole header before anything is returned:
 * N within the file and at most 100 MiB (ADA_ST_MAX_HEADER), at most ADA_ST_MAX_ENTRIES tensors
 * and as many metadata entries, a JSON object (json.h) with no duplicate keys, every
 * entry exactly {dtype, shape, data_offsets} of the right types, a dtype adaspa holds (F32, BF16,
 * F16, I32, I16, U8; the other safetensors dtypes are refused by name), at most ADA_MAX_DIMS
 * sizes, each >= 1 (0-dim tensors are fine; adaspa has no empty tensors), end - begin equal to
 * the tensor's bytes, offsets inside the data buffer, no two tensors overlapping. Errors fail
 * with "safetensors: <path>: <key>: <expected vs found>".
 *
 * Memory: the header is read in two passes over the mapping (the first validates the JSON and
 * counts, the second fills tables allocated once at their exact size), so what an open file
 * holds besides its mapping is at most about 1.5 times its header: 72 bytes per tensor (an
 * entry takes at least 46 bytes of JSON) plus the decoded names and metadata strings.
 *
 * The mapping is private copy-on-write: a loaded tensor may be written to, the change stays in
 * this process and never reaches the file. It is refcounted: the file handle and every tensor
 * viewing it hold a reference, and it is unmapped when the last one goes. The file must not be
 * truncated while mapped (a read past the new end raises SIGBUS, as with any mapping).
 */
#ifndef ADA_SAFETENSORS_H
#define ADA_SAFETENSORS_H

#include <stdint.h>

#include "../tensor.h"

#define ADA_ST_MAX_HEADER ((uint64_t)100 << 20) /* bytes of header JSON */
#define ADA_ST_MAX_ENTRIES 262144                /* tensors, and metadata entries */

typedef struct ada_st_file ada_st_file;

/* Description of one tensor of a file. */
typedef struct ada_st_entry {
  ada_dtype dtype;
  int32_t ndim;
  int64_t shape[ADA_MAX_DIMS];
  uint64_t nbytes; /* bytes of data: numel * element size */
  uint64_t offset; /* byte offset of the data in the file */
} ada_st_entry;

/* Opens and validates path. On success *out owns the mapping's first reference. */
ada_status ada_st_open(ada_st_file **out, const char *path);
/* Drops the handle; tensors obtained from it stay valid. NULL is ignored. */
void ada_st_close(ada_st_file *f);

/* The path as given to ada_st_open. */
const char *ada_st_path(const ada_st_file *f);
/* Tensors are indexed 0..count-1 in byte order of their names (strcmp). */
int64_t ada_st_count(const ada_st_file *f);
/* Name of tensor i (owned by f; valid until ada_st_close). */
const char *ada_st_name(const ada_st_file *f, int64_t i);
void ada_st_info(const ada_st_file *f, int64_t i, ada_st_entry *out);
/* Index of the tensor called name, or -1. */
int64_t ada_st_find(const ada_st_file *f, const char *name);
/* Tensor i as a new contiguous CPU tensor: a view over the mapping when its address is aligned
 * to the element size, else an aligned copy. The caller owns *out. */
ada_status ada_st_tensor(const ada_st_file *f, int64_t i, ada_tensor **out);

/* The __metadata__ entries, indexed in byte order of their keys; strings owned by f. */
int64_t ada_st_metadata_count(const ada_st_file *f);
const char *ada_st_metadata_key(const ada_st_file *f, int64_t i);
const char *ada_st_metadata_value(const ada_st_file *f, int64_t i);

/* Writes n tensors (any dtype, device and strides) under the given names, in the given order,
 * with n_meta string metadata entries (keys[i] -> values[i]; n_meta may be 0 and keys/values
 * NULL). Names must be distinct, non-empty, valid UTF-8 and not "__metadata__"; metadata keys
 * distinct and valid UTF-8. The header is padded with spaces to a multiple of 8 bytes. The
 * file is written under a new temporary name next to path (O_EXCL, no link followed) and
 * renamed to path once complete: on failure no file is left at path (an existing one is kept)
 * and no temporary remains. While a recipe runs, path must lie inside the run's output folder
 * (outdir.h: ada_wfile_begin); reading (ada_st_open) is limited likewise. */
ada_status ada_st_write(const char *path, int64_t n, const char *const *names,
                        const ada_tensor *const *tensors, int64_t n_meta, const char *const *keys,
                        const char *const *values);

#endif
