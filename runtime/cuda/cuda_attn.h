/* cuda_attn.h: the CUDA backend of the attention ops of ops.h (prefix ada_cuda_attn). Plain C,
 * no CUDA headers: runtime/attention.c includes it.
 *
 * attention.c validates every argument exactly as for the CPU (shapes, dtypes, one device,
 * outputs contiguous and not overlapping the inputs, the layout against the shapes) and then
 * calls ada_cuda_attn with the tensors on one CUDA device. It runs on the device's stream: bf16
 * tensor-core kernels (kernels/attention.cu) with f32 accumulation. Inputs that the kernels
 * cannot read in place (f32 or f16, a last dimension that is not contiguous, strides or an
 * address not a multiple of 16 bytes, a head dimension other than 64 or 128 but at most 128)
 * are first copied on the device into bf16 (zero-padded to 64 or 128); so f32 inputs are
 * computed from their bf16 rounding and carry bf16 accuracy. Outputs may be f32, bf16 or f16.
 * lse_in (block mass, attention_with_mass) is checked finite on the device (one small copy to
 * the host, which synchronizes); a sparse layout is mirrored on the device once (layout.h).
 *
 * Defined in runtime/cuda/attention_cuda.c and (layout selection) runtime/cuda/select_cuda.c,
 * built only with the CUDA backend; a build without it links runtime/cuda/none.c, whose versions
 * fail with ADA_EUNSUPPORTED (never reached: no tensor can live on a GPU there).
 */
#ifndef ADA_CUDA_ATTN_H
#define ADA_CUDA_ATTN_H

#include <stdint.h>

#include "../layout.h"
#include "../status.h"
#include "../tensor.h"

/* What ada_cuda_attn computes (the ops of ops.h). */
typedef enum ada_cuda_attn_mode {
  ADA_CUDA_ATTN_DENSE = 0,  /* out, lse */
  ADA_CUDA_ATTN_SPARSE = 1, /* out, lse over the layout's blocks */
  ADA_CUDA_ATTN_FUSED = 2,  /* out, lse, and mass under lse_in */
  ADA_CUDA_ATTN_MASS = 3    /* mass under lse_in (out, lse, v unused) */
} ada_cuda_attn_mode;

/* op names the op in messages. kv_valid: 1..Skv; scale: the effective scale (finite, nonzero);
 * block: the mass block (FUSED, MASS). NULL for what the mode does not use. */
ada_status ada_cuda_attn(const char *op, ada_cuda_attn_mode mode, ada_tensor *out, ada_tensor *lse,
                                            ada_tensor *mass, const ada_tensor *q, const ada_tensor *k,
                                            const ada_tensor *v, const ada_tensor *lse_in, const ada_layout *layout,
                                            int64_t kv_valid, double scale, int32_t block);

/* Layout selection and recall for a block mass on a CUDA device (runtime/layout.c checks every
 * argument first). ada_cuda_layout_select: mode 0 row-wise top-k (frac = density per head), 1
 * cumulative threshold (frac = recall per head); ADA_OK with *out NULL when it does not take the
 * mass (more key blocks than the kernels sort), and the caller selects on the CPU. */
ada_status ada_cuda_layout_select(ada_layout **out, const char *op, const ada_tensor *mass, int32_t mode,
                                  const double *frac, int32_t min_blocks, int32_t max_blocks,
                                  const ada_layout_force *force, int32_t block);
ada_status ada_cuda_layout_recall(const ada_layout *l, const ada_tensor *mass, double *recall);

#endif
