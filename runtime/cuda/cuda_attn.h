/* cuda_attn.h: the CUDA backend's attention, its plan, layout mirrors and layout selection
 * (prefix ada_cuda_). Internal to runtime/cuda/: the core reaches these through the backend's
 * table (runtime/cuda/backend.c). Plain C, no CUDA headers.
 *
 * runtime/attention.c validates every argument exactly as for the CPU (shapes, dtypes, one
 * device, outputs contiguous and not overlapping the inputs, the layout against the shapes)
 * and hands over an ada_attn_call (backend.h). The plan (attention_plan.c) decides from the call
 * and the device (compute capability, SM count) the kernel family, its variant, tiles, the head
 * dimension the kernel computes with and the schedule; the same function answers supports() and
 * launches (attention_cuda.c), so they cannot disagree.
 */
#ifndef ADA_CUDA_ATTN_H
#define ADA_CUDA_ATTN_H

#include <stddef.h>
#include <stdint.h>

#include "../../kernels/kernels.h"
#include "../backend.h"

/* ---- the plan (attention_plan.c) ---------------------------------------------------------------
 * The kernel parameters a call needs besides its pointers: filled by the plan into p (mode,
 * shapes, dim, scale, out dtype and dim, blocks, tiles, variant) and checked by the family.
 * Inputs the families cannot read in place are staged (attention_cuda.c); the plan assumes the
 * staged form when in_place is false. */
typedef struct ada_cuda_attn_plan {
  ada_attn_plan info;    /* what adaspa.attention_plan reports */
  ada_attn_params p;     /* the kernel parameters without pointers */
  int32_t family;        /* index into the family table */
} ada_cuda_attn_plan;

ada_status ada_cuda_attention_plan(const ada_attn_call *c, ada_attn_plan *out);
/* The plan with the kernel parameters (attention_cuda.c launches with it). */
ada_status ada_cuda_attention_plan_full(const ada_attn_call *c, ada_cuda_attn_plan *out);
/* Launches the planned family with p (pointers filled in). */
int ada_cuda_attention_launch(const ada_cuda_attn_plan *plan, const ada_attn_params *p, void *stream);

/* ---- the op (attention_cuda.c) ------------------------------------------------------------------ */
ada_status ada_cuda_attention(const ada_attn_call *c);

/* ---- a layout's device mirror (mirror.c) --------------------------------------------------------- */
typedef struct ada_cuda_mirror {
  void *base;       /* the one device allocation */
  int64_t *offsets; /* [heads * (nqb + 1)] */
  int32_t *indices; /* [nnz] */
  int32_t *order;   /* CTA order [heads * nqb] */
  int32_t *walk64;  /* layouts of blocks of 64: the sm90 kernel's walk [heads * ceil(nqb / 2)]
                       (runtime/walk.h); NULL for other blocks */
  int32_t *order_head; /* other blocks than 64: the head-major CTA order [heads * nqb]
                          (runtime/walk.h, ada_order_head; the plan's variant "head"); NULL for 64 */
  uint32_t *flags64; /* layouts of blocks of 64: [heads * nqb, 4] for the sm90 kernel in passes
                        (ada_attn_params.split_flags; the launcher writes them: launches on one
                        layout must be ordered in one stream); NULL otherwise */
  int32_t dev;
  size_t bytes;     /* reported device memory */
} ada_cuda_mirror;

/* Rows h * nqb + qb by descending length, stable (malloc'ed; NULL when out of memory). */
int32_t *ada_cuda_cta_order(const ada_layout *l);
/* The mirror of l on dev, uploaded on first use there and kept in l's derived cache. */
ada_status ada_cuda_mirror_get(const ada_layout *l, int32_t dev, const char *op, const ada_cuda_mirror **out);
/* A new mirror of l's sizes on dev with the CTA order (and for blocks of 64 the walk, for dev's
 * SM count) uploaded (offsets and indices not filled). */
ada_status ada_cuda_mirror_new(const ada_layout *l, int32_t dev, const char *op, ada_cuda_mirror **out);
/* Stores m in l's derived cache (freeing it on failure). */
ada_status ada_cuda_mirror_keep(const ada_layout *l, ada_cuda_mirror *m);
/* The backend's derived_free. */
void ada_cuda_mirror_free(void *data, int32_t dev);

/* ---- layout selection and recall (select_cuda.c) ----------------------------------------------------
 * ada_cuda_layout_select: mode 0 row-wise top-k (frac = density per head), 1 cumulative
 * threshold (frac = recall per head); ADA_OK with *out NULL when it does not take the mass (more
 * key blocks than the kernels sort), and the core selects on the CPU. */
ada_status ada_cuda_layout_select(ada_layout **out, const char *op, const ada_tensor *mass, int32_t mode,
                                  const double *frac, int32_t min_blocks, int32_t max_blocks,
                                  const ada_layout_force *force, int32_t block);
ada_status ada_cuda_layout_recall(const ada_layout *l, const ada_tensor *mass, double *recall);

/* ---- staging (stage.c): device buffers for inputs the kernels cannot read in place ---------------- */
typedef struct ada_cuda_buf {
  void *p;
  int32_t dev;
} ada_cuda_buf;

/* dst (contiguous, dtype ddt, shape of t with the last size widened to last_dim >= it and the
 * extra columns zero) = t converted. */
ada_status ada_cuda_stage(const ada_tensor *t, ada_dtype ddt, int64_t last_dim, ada_cuda_buf *dst);
void ada_cuda_buf_free(ada_cuda_buf *b);
/* A tensor's view as the kernels' ada_strided (a 0-d tensor as [1]). */
ada_strided ada_cuda_strided(const ada_tensor *t);

#endif
