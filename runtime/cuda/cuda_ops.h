/* cuda_ops.h: the CUDA backend's entries of the neural-network ops (prefix ada_cuda_op_), for its
 * op table (runtime/cuda/backend.c). Plain C, no CUDA headers.
 *
 * runtime/nn.c validates every argument (dtypes, shapes, one CUDA device for all tensors, overlaps,
 * out contiguous) and then calls these with the same arguments as the ada_op_ function; they
 * run on the device's stream (nothing synchronizes) and return ADA_EDEVICE / ADA_ENOMEM with a
 * message naming the op on a CUDA or cuBLAS failure. Inputs may be strided views and any mix
 * of f32, bf16 and f16; a view the kernels cannot read directly is first copied on the device
 * (ada_tensor_contiguous / ada_tensor_to). Math is f32 (GEMMs: f32 accumulation, no TF32).
 *
 * Defined in runtime/cuda/gemm_cuda.c (linear, matmul) and runtime/cuda/nn_cuda.c (the rest).
 */
#ifndef ADA_CUDA_OPS_H
#define ADA_CUDA_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "../backend.h"

/* gemm_cuda.c (cuBLASLt, cuBLAS as a fallback) */
/* linear with its epilogue options (opts not NULL; see ops.h's ada_linear_opts) */
ada_status ada_cuda_op_linear(ada_tensor *out, const ada_tensor *x, const ada_tensor *w, const ada_tensor *b,
                              const ada_linear_opts *opts);
ada_status ada_cuda_op_matmul(ada_tensor *out, const ada_tensor *a, const ada_tensor *b);

/* nn_cuda.c (kernels/nn.cu) */
ada_status ada_cuda_op_layernorm(ada_tensor *out, const ada_tensor *x, double eps, const ada_tensor *weight,
                                 const ada_tensor *bias);
ada_status ada_cuda_op_rmsnorm(ada_tensor *out, const ada_tensor *x, const ada_tensor *weight, double eps);
ada_status ada_cuda_op_softmax(ada_tensor *out, const ada_tensor *x, double scale);
/* out = layernorm(x, eps, weight, bias) * (1 + scale) + shift in one pass (shift and scale: [C]). */
ada_status ada_cuda_op_layernorm_modulate(ada_tensor *out, const ada_tensor *x, double eps, const ada_tensor *weight,
                                          const ada_tensor *bias, const ada_tensor *shift, const ada_tensor *scale);
/* x_out = x + gate * y (gate, y: [C] or x's shape), then out = layernorm_modulate(x_out, ...) as
 * above, in one pass: the row is rounded to x_out's dtype before it is normalized (shift and
 * scale: [C]). x_out may be x. */
ada_status ada_cuda_op_gated_add_layernorm_modulate(ada_tensor *x_out, ada_tensor *out, const ada_tensor *x,
                                                    const ada_tensor *gate, const ada_tensor *y, double eps,
                                                    const ada_tensor *weight, const ada_tensor *bias,
                                                    const ada_tensor *shift, const ada_tensor *scale);
/* The row-wise and unary ops of backend.h's table (kernels/nn.cu's ada_launch_rowwise). */
ada_status ada_cuda_op_rowwise(ada_rowwise_kind kind, ada_tensor *out, const ada_tensor *x, const ada_tensor *a,
                              const ada_tensor *b);
ada_status ada_cuda_op_unary(ada_unary_kind kind, ada_tensor *out, const ada_tensor *x, double s);
ada_status ada_cuda_op_rope3d(ada_tensor *out, const ada_tensor *x, const int32_t grid[3], const int32_t axes[3],
                              double theta, int64_t n_tokens);
ada_status ada_cuda_op_rmsnorm_rope3d(ada_tensor *out, const ada_tensor *x, const ada_tensor *weight, double eps,
                                      const int32_t grid[3], const int32_t axes[3], double theta, int64_t n_tokens);
ada_status ada_cuda_op_patchify(ada_tensor *out, const ada_tensor *x);
ada_status ada_cuda_op_unpatchify(ada_tensor *out, const ada_tensor *x, int32_t t, int32_t h, int32_t w);
ada_status ada_cuda_op_timestep_embedding(ada_tensor *out, const ada_tensor *t, int32_t dim, double max_period);

#endif
