/* attn.h: what the attention ops, their backends and the attention kernels share (prefix
 * ada_attn_). Header-only plain C, no dependencies: it compiles as C11 and as CUDA C++, so
 * runtime/attention.c, the backends and kernels/ use one definition of each.
 *
 * - ada_attn_mode: what one attention call computes, from the ops (ops.h) down to the kernel
 *   parameters (kernels/kernels.h). One enum, one numbering.
 * - ada_attn_block_ok: the block sizes of layouts, block mass and sparse attention (64 or 128),
 *   checked here and nowhere else.
 * - ada_attn_plan: what a backend's attention plan chose for a call (backend.h).
 * - ADA_ATTN_MAX_DIM: the largest head dimension the ops take (the CPU reference); a backend's
 *   attention plan may take less (the CUDA plan says so in its reason).
 */
#ifndef ADA_ATTN_H
#define ADA_ATTN_H

#include <stdint.h>

typedef enum ada_attn_mode {
  ADA_ATTN_DENSE = 0,  /* out, lse */
  ADA_ATTN_SPARSE = 1, /* out, lse over a layout's blocks */
  ADA_ATTN_FUSED = 2,  /* out, lse, and the block mass under a given lse */
  ADA_ATTN_MASS = 3    /* the block mass under a given lse only (no v, out, lse) */
} ada_attn_mode;

#define ADA_ATTN_NMODES 4
#define ADA_ATTN_MAX_DIM 256

/* A backend's attention plan for a call: which kernel family, its tiles and its schedule. */
typedef struct ada_attn_plan {
  char family[16];   /* "cpu", "sm80", "sm90", ... */
  char variant[16];  /* the family's variant ("" when it has one kind) */
  int32_t tile_rows; /* query rows per tile (a CTA, or a CPU task) */
  int32_t tile_keys; /* keys per tile */
  int32_t dim;       /* the head dimension the kernel computes with (inputs padded to it) */
  char schedule[48]; /* order of the tiles: "natural", "longest-first", ... */
} ada_attn_plan;

#if defined(__CUDACC__)
#define ADA_ATTN_HD __host__ __device__ __forceinline__
#else
#define ADA_ATTN_HD static inline
#endif

/* Block sizes of layouts and of the block mass: 64 or 128. */
ADA_ATTN_HD int ada_attn_block_ok(int64_t block) { return block == 64 || block == 128; }

/* "dense", "sparse", "fused", "mass". */
ADA_ATTN_HD const char *ada_attn_mode_name(int32_t mode) {
  return mode == ADA_ATTN_DENSE    ? "dense"
         : mode == ADA_ATTN_SPARSE ? "sparse"
         : mode == ADA_ATTN_FUSED  ? "fused"
         : mode == ADA_ATTN_MASS   ? "mass"
                                   : "?";
}

#endif
