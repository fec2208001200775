/* layout.h: block-sparse attention layouts (prefix ada_layout_).
 *
 * A layout says, per head, which key blocks each query block attends to: CSR per head.
 *   heads H, query blocks nqb = ceil(Sq / block), key blocks nkb = ceil(Skv / block).
 *   offsets [H * (nqb + 1)] (int64): row r of head h spans indices[offsets[h*(nqb+1)+r] ..
 *     offsets[h*(nqb+1)+r+1]), offsets are absolute into indices (head h's first offset is the
 *     number of entries of heads before it).
 *   indices [nnz] (int32): key-block numbers, strictly increasing within a row.
 * Layouts live in host memory (a backend mirrors them on its device when it needs them, in the
 * layout's derived cache). A layout is well-formed from its creation (offsets contiguous, key
 * blocks strictly increasing within [0, nkb)): the constructors here build it so, and a layout
 * read from elsewhere (a cache file) is checked with ada_layout_validate before use. The last
 * query/key block may be partial (S not a multiple of block); it still counts as one block.
 *
 * Selection (topk, threshold) reads a block-mass tensor mass [H, nqb, nkb] (f32, contiguous,
 * CPU, or on another device whose backend selects there (the CUDA backend: row-wise top-k and
 * threshold for nkb <= 4096, filling the layout's device mirror too)): mass[h, qb, kb] = share of softmax mass of block (qb, kb),
 * see ops.h.
 */
#ifndef ADA_LAYOUT_H
#define ADA_LAYOUT_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"
#include "tensor.h"

typedef struct ada_layout {
  int32_t heads, nqb, nkb, block;
  int64_t *offsets; /* [heads * (nqb + 1)] */
  int32_t *indices; /* [nnz] */
  int64_t nnz;
  int32_t refcount; /* owners: the creator, Lua userdata, the AdaSpa cache; see ada_layout_retain */
  /* Data backends derive from the layout and keep with it (backend.h: the CUDA backend's device
   * mirror of offsets, indices and CTA order), freed with the layout. A layout is immutable once
   * built, so derived data never goes stale. */
  struct ada_derived *derived;
} ada_layout;

/* Blocks every selection keeps (inclusive-exclusive block ranges, 0-based):
 *   cols: key-block ranges kept in every row (text sink as columns, first-frame sink);
 *   rows: query-block ranges whose rows keep every key block (text queries attend to all);
 *   diagonal: block (qb, qb) when qb < nkb. */
typedef struct ada_layout_force {
  int32_t n_cols;
  const int32_t (*cols)[2];
  int32_t n_rows;
  const int32_t (*rows)[2];
  bool diagonal;
} ada_layout_force;

/* A layout of the given sizes with offsets allocated ([heads * (nqb + 1)], uninitialized), no
 * indices (NULL, nnz 0) and one reference: for a backend's selection, which fills offsets and
 * sets indices (malloc'ed, freed with free()) and nnz. block: 64 or 128. */
ada_status ada_layout_new(ada_layout **out, const char *op, int32_t heads, int32_t nqb, int32_t nkb, int32_t block);
/* Drops one reference; the layout is freed with its last one. NULL is ignored. Layouts are
 * created with one reference. */
void ada_layout_free(ada_layout *l);
/* Adds a reference (for a second owner); returns l. */
ada_layout *ada_layout_retain(ada_layout *l);

/* Every block of every head. block: 64 or 128. */
ada_status ada_layout_full(ada_layout **out, int32_t heads, int32_t nqb, int32_t nkb, int32_t block);
/* From a u8 mask [H, nqb, nkb] (nonzero = kept), CPU, any strides. */
ada_status ada_layout_from_mask(ada_layout **out, const ada_tensor *mask, int32_t block);
/* The u8 mask [H, nqb, nkb] (1 = kept) of a layout, on the CPU. */
ada_status ada_layout_to_mask(ada_tensor **out, const ada_layout *l);

/* Top-k selection per head. density[h] in [0, 1] is the kept fraction of blocks of head h.
 *  row_wise: every query-block row keeps k = max(round(density * nkb), forced in the row) blocks
 *    (forced first, then by descending mass), so rows that no `rows` range forces have equal
 *    counts whenever their forced counts are at most k;
 *  otherwise: the head keeps its forced blocks plus the top-mass blocks up to
 *    max(round(density * nqb * nkb), forced) in all. Ties break toward the lower block index. */
ada_status ada_layout_topk(ada_layout **out, const ada_tensor *mass, const double *density,
                           bool row_wise, const ada_layout_force *force, int32_t block);
/* Cumulative-mass selection per head and row: forced blocks, then blocks by descending mass
 * until the kept mass of the row reaches recall[h] times the row's total mass, keeping at least
 * min_blocks and at most max_blocks (<= 0: no maximum) per row. */
ada_status ada_layout_threshold(ada_layout **out, const ada_tensor *mass, const double *recall,
                                int32_t min_blocks, int32_t max_blocks,
                                const ada_layout_force *force, int32_t block);

/* density[h] = kept blocks / (nqb * nkb). density has heads entries. */
void ada_layout_density(const ada_layout *l, double *density);
/* recall[h] = kept mass / total mass of head h (1 when the head's total is 0). The mass must be
 * [heads, nqb, nkb] float, on the CPU or a GPU (checked). */
ada_status ada_layout_recall(const ada_layout *l, const ada_tensor *mass, double *recall);
/* Checks that l fits attention over Sq queries, Skv keys and H heads (names op in the error):
 * its sizes, O(1) (the structure holds from creation). */
ada_status ada_layout_check(const ada_layout *l, const char *op, int32_t heads, int64_t sq, int64_t skv);
/* Checks the structure of a layout read from elsewhere: offsets contiguous and within nnz, key
 * blocks strictly increasing within [0, nkb). O(nnz). */
ada_status ada_layout_validate(const ada_layout *l, const char *op);
/* ---- messages: some heads of a layout as compact bytes (moving heads between processes) -----
 * A message holds n heads of one layout in CSR form: a 40-byte header (magic "ALY1", index
 * width, heads, nqb, nkb, block, nnz, the message's total bytes), then heads * (nqb + 1) u64
 * offsets (head h's first one continues head h - 1's last; the first is 0, the last nnz), then
 * nnz key-block indices of 2 bytes (nkb <= 65536) or 4. Host byte order: peers share a host.
 * At 720p (1857 x 1857 blocks of 64) a head at density 0.1 is 0.71 MB, against 6.9 MB as an
 * f16 mask. */
#define ADA_LAYOUT_MSG_HEADER 40
/* The bytes of the message of heads[0..n) of l (0-based, any order, repeats allowed). */
size_t ada_layout_msg_size(const ada_layout *l, const int32_t *heads, int32_t n);
/* Writes that message to buf (cap bytes, at least ada_layout_msg_size); *bytes: its size. */
ada_status ada_layout_encode(const ada_layout *l, const int32_t *heads, int32_t n, void *buf, size_t cap, size_t *bytes);
/* A layout of every head of the messages that fill msg[0 .. bytes) back to back (one or more,
 * equal nqb, nkb and block), their heads in message order. Everything is checked before use and
 * against the bytes at hand (sizes, header fields, offsets monotone from 0 to nnz, rows of at most
 * nkb entries, indices strictly increasing within [0, nkb)): a truncated, oversized or corrupt
 * message is an ADA_EINVAL naming op and what is wrong, never a read past bytes; nothing is
 * allocated beyond a small multiple of bytes. */
ada_status ada_layout_decode(ada_layout **out, const void *msg, size_t bytes, const char *op);
/* A layout of n heads: head j is head head[j] of parts[part[j]] (parts of equal nqb, nkb, block;
 * checked). Selects, reorders and joins heads. */
ada_status ada_layout_pick(ada_layout **out, const ada_layout *const *parts, int32_t n_parts, const int32_t *part,
                           const int32_t *head, int32_t n, const char *op);

/* "block must be 64 or 128, got N" under op and arg unless ada_attn_block_ok(block). */
ada_status ada_layout_check_block(const char *op, const char *arg, int64_t block);

#endif
