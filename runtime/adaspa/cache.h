/* cache.h: the AdaSpa cache (prefix ada_cache_): what a search step leaves for later steps.
 *
 * AdaSpa observes that the sparse layout and the softmax log-sum-exp (LSE) of every head barely
 * change across denoising steps, so a search step computes them and later steps reuse them. The
 * cache holds, per attention layer (0-based here; files and messages number layers from 1, as the
 * Lua surface does):
 *   layout        an ada_layout (one CSR per head), shared by reference: the cache retains it
 *                 (ada_layout_retain) and drops its reference when replaced, cleared or freed;
 *   lse           the cached LSE [H, S] (f32, contiguous, any device): the cache keeps its own
 *                 view (ada_tensor_view), NOT a copy. The caller must not write to the tensor
 *                 afterwards: a write shows through the cache. Freeing the caller's handle is fine.
 *   layout step   the step the layout was searched at (-1: no layout);
 *   lse step      the step the lse was stored at (-1: no lse);
 *   density       per head (heads doubles), computed from the layout when it is set;
 *   recall        per head (heads doubles, rounded to f32 precision so that a saved and loaded
 *                 cache gives identical values), or none.
 * When a layer holds both, they must agree: lse [heads, S] with ceil(S / block) == nqb (the LSE
 * is over the same queries as the layout's rows). Setting one checks it against the other that
 * stays; to change the shapes set both at once (ada_cache_set) or clear the layer first.
 *
 * File format (safetensors, ada_cache_save / ada_cache_load), N = 1-based layer number:
 *   tensors  layer.N.offsets  i32 [heads, nqb + 1]  the layout's offsets (absolute; the in-memory
 *                                                   int64 offsets must fit i32, else saving fails)
 *            layer.N.indices  i32 [nnz]             0-based key blocks (absent when nnz = 0)
 *            layer.N.density  f32 [heads]           (checked against the layout on load)
 *            layer.N.recall   f32 [heads]           (only when recall is set)
 *            layer.N.lse      f32 [H, S]
 *   metadata format = "adaspa.cache", version = "1", n_layers,
 *            per layer with a layout: layer.N.step, layer.N.heads, .nqb, .nkb, .block, .nnz;
 *            per layer with an lse:   layer.N.lse_step;
 *            other metadata keys are ignored unless they start with "layer." (then they must be
 *            one of the above for N in [1, n_layers]); tensors other than the above are refused.
 * Loading validates everything before returning (types, shapes, ranges, monotone offsets, key
 * blocks strictly increasing within [0, nkb) per row, density consistent, LSE free of NaN and
 * +inf) and fails with "ada_cache_load: <path>: layer.N.<key>: <expected vs found>". Loaded
 * LSE tensors are CPU views over the file's private mapping (they keep it mapped).
 *
 * Every function returning ada_status leaves a message in ada_last_error() on failure and
 * leaves the cache unchanged then.
 */
#ifndef ADA_CACHE_H
#define ADA_CACHE_H

#include <stdint.h>

#include "../layout.h"
#include "../tensor.h"

typedef struct ada_cache ada_cache;

/* A cache of n_layers (>= 1) empty layers. */
ada_status ada_cache_new(ada_cache **out, int32_t n_layers);
/* Drops every reference the cache holds and frees it. NULL is ignored. */
void ada_cache_free(ada_cache *c);
int32_t ada_cache_layers(const ada_cache *c);

/* General setter of layer (0-based):
 *   layout  NULL keeps the current one; else retained (the caller keeps its own reference) and
 *           the layer's recall is replaced by `recall` (NULL: none);
 *   lse     NULL keeps the current one; else a contiguous f32 [H, S] tensor, of which the cache
 *           takes a new view;
 *   step    >= 0, the layout step and/or lse step of what is given (ignored when neither is);
 *   recall  heads values in [0, 1] or NULL; with layout == NULL, non-NULL recall replaces the
 *           recall of the current layout (which must exist).
 * The resulting layout and lse must agree (see above). */
ada_status ada_cache_set(ada_cache *c, int32_t layer, ada_layout *layout, const ada_tensor *lse, int64_t step,
                         const double *recall);
/* ada_cache_set with a layout (required) and no lse. */
ada_status ada_cache_set_layout(ada_cache *c, int32_t layer, ada_layout *layout, int64_t step, const double *recall);
/* ada_cache_set with an lse (required) and no layout. */
ada_status ada_cache_set_lse(ada_cache *c, int32_t layer, const ada_tensor *lse, int64_t step);
/* Empties layer (drops its layout and lse). */
ada_status ada_cache_clear(ada_cache *c, int32_t layer);

/* Getters; layer must be in [0, n_layers) (else NULL / -1). Borrowed: valid until the layer
 * changes or the cache is freed; retain the layout or view the lse to keep them longer. */
ada_layout *ada_cache_layout(const ada_cache *c, int32_t layer);
const ada_tensor *ada_cache_lse(const ada_cache *c, int32_t layer);
int64_t ada_cache_layout_step(const ada_cache *c, int32_t layer); /* -1 when no layout */
int64_t ada_cache_lse_step(const ada_cache *c, int32_t layer);    /* -1 when no lse */
/* heads values, or NULL when the layer has no layout (density) or no recall (recall). */
const double *ada_cache_density(const ada_cache *c, int32_t layer);
const double *ada_cache_recall(const ada_cache *c, int32_t layer);

/* Bytes the cached data takes: host = layouts (int64 offsets heads * (nqb + 1) * 8 plus int32
 * indices nnz * 4) + LSE views on the CPU (H * S * 4); device = LSE views on GPUs + the layouts'
 * device mirrors (the same CSR plus the CTA order, heads * nqb * 4). A layout or
 * LSE view cached in several layers counts once. Either pointer may be NULL. */
void ada_cache_memory(const ada_cache *c, int64_t *host_bytes, int64_t *device_bytes);

/* Writes the cache to path (safetensors, format above; written through "<path>.tmp"). */
ada_status ada_cache_save(const ada_cache *c, const char *path);
/* Reads a cache written by ada_cache_save, validating it completely; *out is a new cache. */
ada_status ada_cache_load(ada_cache **out, const char *path);

#endif
