/* cuda_ops.h: the CUDA backend of the neural-network ops of ops.h (prefix ada_cuda_op_). Plain
 * C, no CUDA headers: runtime/ops.c includes it.
 *
 * ops.c validates every argument (dtypes, shapes, one CUDA device for all tensors, overlaps,
 * out contiguous) and then calls these with the same arguments as the ada_op_ function; they
 * run on the device's stream (nothing synchronizes) and return ADA_EDEVICE / ADA_ENOMEM with a
 * message naming the op on a CUDA or cuBLAS failure. Inputs may be strided views and any mix
 * of f32, bf16 and f16; a view the kernels cannot read directly is first copied on the device
 * (ada_tensor_contiguous / ada_tensor_to). Math is f32 (GEMMs: f32 accumulation, no TF32).
 *
 * Defined in runtime/cuda/blas.c (linear, matmul) and runtime/cuda/ops_nn.c (the rest), which
 * are built only with the CUDA backend; a build without it links runtime/cuda/none.c, whose
 * versions fail with ADA_EUNSUPPORTED (never reached: no tensor can live on a GPU there).
 */
#ifndef ADA_CUDA_OPS_H
#define ADA_CUDA_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "../status.h"
#include "../tensor.h"

/* blas.c (cuBLASLt, cuBLAS as a fallback) */
ada_status ada_cuda_op_linear(ada_tensor *out, const ada_tensor *x, const ada_tensor *w, const ada_tensor *b);
ada_status ada_cuda_op_matmul(ada_tensor *out, const ada_tensor *a, const ada_tensor *b);

/* ops_nn.c (kernels/nn.cu) */
ada_status ada_cuda_op_layernorm(ada_tensor *out, const ada_tensor *x, double eps, const ada_tensor *weight,
                                 const ada_tensor *bias);
ada_status ada_cuda_op_rmsnorm(ada_tensor *out, const ada_tensor *x, const ada_tensor *weight, double eps);
ada_status ada_cuda_op_softmax(ada_tensor *out, const ada_tensor *x, double scale);
/* out = layernorm(x, eps, weight, bias) * (1 + scale) + shift in one pass (shift and scale: [C]). */
ada_status ada_cuda_op_layernorm_modulate(ada_tensor *out, const ada_tensor *x, double eps, const ada_tensor *weight,
                                          const ada_tensor *bias, const ada_tensor *shift, const ada_tensor *scale);
ada_status ada_cuda_op_modulate(ada_tensor *out, const ada_tensor *x, const ada_tensor *shift, const ada_tensor *scale);
ada_status ada_cuda_op_gated_add(ada_tensor *out, const ada_tensor *x, const ada_tensor *gate, const ada_tensor *y);
ada_status ada_cuda_op_add(ada_tensor *out, const ada_tensor *a, const ada_tensor *b);
ada_status ada_cuda_op_mul(ada_tensor *out, const ada_tensor *a, const ada_tensor *b);
ada_status ada_cuda_op_scale(ada_tensor *out, const ada_tensor *x, double s);
ada_status ada_cuda_op_silu(ada_tensor *out, const ada_tensor *x);
ada_status ada_cuda_op_gelu_tanh(ada_tensor *out, const ada_tensor *x);
ada_status ada_cuda_op_rope3d(ada_tensor *out, const ada_tensor *x, const int32_t grid[3], const int32_t axes[3],
                              double theta, int64_t n_tokens);
ada_status ada_cuda_op_rmsnorm_rope3d(ada_tensor *out, const ada_tensor *x, const ada_tensor *weight, double eps,
                                      const int32_t grid[3], const int32_t axes[3], double theta, int64_t n_tokens);
ada_status ada_cuda_op_patchify(ada_tensor *out, const ada_tensor *x);
ada_status ada_cuda_op_unpatchify(ada_tensor *out, const ada_tensor *x, int32_t t, int32_t h, int32_t w);
ada_status ada_cuda_op_timestep_embedding(ada_tensor *out, const ada_tensor *t, int32_t dim, double max_period);

#endif
