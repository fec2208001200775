/* ops.h: the neural-network and attention ops of adaspa (prefix ada_op_).
 *
 * Destination passing: the caller creates every output (any float dtype, the device of the
 * inputs, the documented shape; outputs must be contiguous) and the op fills it. The op
 * validates dtypes, devices, shapes and options first and fails with a message naming the op,
 * the argument and the shapes; nothing is written then. Inputs may be f32, bf16 or f16 and may
 * be strided views unless said otherwise; computation is in f32 (CPU reference) and outputs are
 * rounded to their dtype at the end. Shapes are token-major: [S, H, D] for q, k, v.
 *
 * Dispatch: through the op table of the tensors' backend (backend.h): CPU tensors run the
 * reference in runtime/cpu/, CUDA tensors the CUDA backend where it has the op (and, for
 * attention, where its plan takes the call), else the op fails with ADA_EUNSUPPORTED saying so.
 *
 * Validation lives in nn.c (nn ops) and attention.c (attention ops).
 */
#ifndef ADA_OPS_H
#define ADA_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "attn.h"
#include "layout.h"
#include "status.h"
#include "tensor.h"

/* ---- GEMM ------------------------------------------------------------------------------ */
/* out [N, O] = x [N, I] . w[O, I]^T (+ b [O]). */
ada_status ada_op_linear(ada_tensor *out, const ada_tensor *x, const ada_tensor *w, const ada_tensor *b);

/* Epilogue options of ada_op_linear_ex; a zeroed struct (or NULL) is plain ada_op_linear. */
typedef enum ada_linear_act {
  ADA_LINEAR_ACT_NONE = 0,
  ADA_LINEAR_ACT_GELU_TANH = 1 /* 0.5 y (1 + tanh(sqrt(2/pi) (y + 0.044715 y^3))), as ada_op_gelu_tanh */
} ada_linear_act;
typedef struct ada_linear_opts {
  ada_linear_act act; /* applied to y = x . w^T + b in f32 (the accumulator), before the one rounding to
                       * out's dtype: saves the separate pass over out of an activation op */
  bool accumulate;    /* out = out + x . w^T (+ b): out's previous values are read (it must hold
                       * them: not a fresh tensor) and the sum is rounded once, saving the pass of an
                       * add op and the temporary */
} ada_linear_opts;
/* ada_op_linear with epilogue options (opts NULL: the defaults). act and accumulate together, or
 * an act value not in ada_linear_act: ADA_EINVAL. Checks as ada_op_linear. */
ada_status ada_op_linear_ex(ada_tensor *out, const ada_tensor *x, const ada_tensor *w, const ada_tensor *b,
                            const ada_linear_opts *opts);
/* out [M, N] = a [M, K] . b [K, N]. */
ada_status ada_op_matmul(ada_tensor *out, const ada_tensor *a, const ada_tensor *b);

/* ---- normalization over the last dimension C --------------------------------------------- */
/* out = (x - mean) / sqrt(var + eps) (* weight [C]) (+ bias [C]); weight, bias may be NULL. */
ada_status ada_op_layernorm(ada_tensor *out, const ada_tensor *x, double eps, const ada_tensor *weight,
                            const ada_tensor *bias);
/* out = layernorm(x, eps, weight, bias) * (1 + scale) + shift (shift, scale [C] or x's shape):
 * the input of attention and MLP in every DiT block, one pass on the GPU. out may be x. */
ada_status ada_op_layernorm_modulate(ada_tensor *out, const ada_tensor *x, double eps, const ada_tensor *weight,
                                     const ada_tensor *bias, const ada_tensor *shift, const ada_tensor *scale);
/* The residual update of a DiT block followed by the next block's input norm, in one pass:
 *   x_out = x + gate * y                                       (ada_op_gated_add)
 *   out   = layernorm(x_out, eps, weight, bias) * (1 + scale) + shift   (ada_op_layernorm_modulate)
 * x [.., C] (at least one dimension); gate, y, shift and scale [C] (broadcast over the rows; any
 * tensor of C elements with C last, e.g. [1, C]) or x's shape; weight, bias [C] or NULL; x_out and
 * out x's shape. x_out is rounded to its dtype before the norm reads it, as the two ops in turn
 * do, so the results are those of the two calls: bit for bit on the CPU; on a GPU one read of x,
 * gate and y and one write of x_out and out (with [C] shift and scale; otherwise the two ops).
 * x_out may be x itself (in place: the residual stream) but no other view overlapping x, gate or
 * y; out must not overlap x_out or any input. */
ada_status ada_op_gated_add_layernorm_modulate(ada_tensor *x_out, ada_tensor *out, const ada_tensor *x,
                                               const ada_tensor *gate, const ada_tensor *y, double eps,
                                               const ada_tensor *weight, const ada_tensor *bias,
                                               const ada_tensor *shift, const ada_tensor *scale);
/* out = x / sqrt(mean(x^2) + eps) * weight [C] (weight may be NULL). */
ada_status ada_op_rmsnorm(ada_tensor *out, const ada_tensor *x, const ada_tensor *weight, double eps);
/* Softmax over the last dimension C of scale * x: out [.., C] (x's shape) =
 * exp(scale * x - m) / sum_C exp(scale * x - m), m the row's maximum of scale * x; scale finite
 * and > 0. -inf entries give 0; a row of only -inf entries gives zeros. out may be x. */
ada_status ada_op_softmax(ada_tensor *out, const ada_tensor *x, double scale);

/* ---- elementwise; x [N, C] (any rank: N = all leading dims); a vector operand is [C]
 * (broadcast over rows) or the same shape as x. out may be the same tensor as x. --------- */
ada_status ada_op_modulate(ada_tensor *out, const ada_tensor *x, const ada_tensor *shift, const ada_tensor *scale);
/* out = x + gate * y */
ada_status ada_op_gated_add(ada_tensor *out, const ada_tensor *x, const ada_tensor *gate, const ada_tensor *y);
ada_status ada_op_add(ada_tensor *out, const ada_tensor *a, const ada_tensor *b);
ada_status ada_op_mul(ada_tensor *out, const ada_tensor *a, const ada_tensor *b);
ada_status ada_op_scale(ada_tensor *out, const ada_tensor *x, double s);
ada_status ada_op_silu(ada_tensor *out, const ada_tensor *x);
ada_status ada_op_gelu_tanh(ada_tensor *out, const ada_tensor *x);
/* out = 0.5 x (1 + erf(x / sqrt 2)), the exact GELU (PyTorch's GELU(approximate="none")) */
ada_status ada_op_gelu(ada_tensor *out, const ada_tensor *x);

/* ---- video DiT pieces -------------------------------------------------------------------------- */
/* 3D RoPE on x [S, H, D] for tokens s < n_tokens = T * Hh * Ww at grid position
 * (s / (Hh*Ww), (s / Ww) % Hh, s % Ww); tokens past n_tokens are copied unchanged.
 * axes[0..2] sum to D and are even; the pairs are t first, then h, then w; pair i of an axis of
 * dim d has frequency theta^(-2i/d); pair j of the head rotates (x[2j], x[2j+1]). */
ada_status ada_op_rope3d(ada_tensor *out, const ada_tensor *x, const int32_t grid[3], const int32_t axes[3],
                         double theta, int64_t n_tokens);
/* rope3d(rmsnorm(x, weight, eps), grid, axes, theta, n_tokens) in one pass: x [S, H, D] (RMS over
 * each head's D), weight [D] or NULL; tokens past n_tokens are normalized, not rotated. The q and
 * k of every DiT block; on the GPU one read and one write of x (D <= 256), on the CPU the two
 * ops in f32. out may be x. */
ada_status ada_op_rmsnorm_rope3d(ada_tensor *out, const ada_tensor *x, const ada_tensor *weight, double eps,
                                 const int32_t grid[3], const int32_t axes[3], double theta, int64_t n_tokens);
/* x [C, T, H, W] (H, W even) -> out [T * H/2 * W/2, C * 4], token t-major then h then w,
 * feature c*4 + kh*2 + kw. */
ada_status ada_op_patchify(ada_tensor *out, const ada_tensor *x);
/* The inverse: x [T * H/2 * W/2, C * 4] -> out [C, T, H, W]. */
ada_status ada_op_unpatchify(ada_tensor *out, const ada_tensor *x, int32_t t, int32_t h, int32_t w);
/* t [N] -> out [N, dim]: [cos(t f_k), sin(t f_k)], f_k = max_period^(-k / (dim/2)), dim even. */
ada_status ada_op_timestep_embedding(ada_tensor *out, const ada_tensor *t, int32_t dim, double max_period);
/* out [sum S_i, ...] = the n inputs [S_i, ...] stacked along dimension 1 (tokens). */
ada_status ada_op_concat(ada_tensor *out, const ada_tensor *const *xs, int32_t n);

/* ---- attention ------------------------------------------------------------------------------------
 * q [Sq, H, D], k and v [Skv, H, D] (strided views allowed; the last dimension contiguous), D <= 256.
 * scale: the softmax scale (pass 0 for 1/sqrt(D)). kv_valid: keys at index >= kv_valid are ignored
 * (0 < kv_valid <= Skv). out [Sq, H, D]; lse [H, Sq] f32 (natural log; -inf for a row with no key).
 * block: 64 or 128; nqb = ceil(Sq / block), nkb = ceil(Skv / block). */
typedef struct ada_attn_opts {
  double scale;     /* 0: 1/sqrt(D) */
  int64_t kv_valid; /* 0: all keys */
  int32_t block;    /* 64 or 128 (mass ops; sparse attention uses the layout's) */
  /* Kernel choice, for specs and benches (NULL: the backend's plan decides): the family ("cpu";
   * on a GPU "sm80", "sm90" where built) and the family's variant (sm80 sparse attention over
   * blocks of 64: "halves", the default, or "rows"). A name the plan does not know fails with
   * ADA_EUNSUPPORTED naming the ones it has. Results do not depend on them beyond rounding. */
  const char *family, *variant;
} ada_attn_opts;

ada_status ada_op_attention(ada_tensor *out, ada_tensor *lse, const ada_tensor *q, const ada_tensor *k,
                            const ada_tensor *v, const ada_attn_opts *o);
/* Dense attention restricted to the layout's blocks (equals attention with dropped blocks masked
 * to -inf); the layout's block is used. */
ada_status ada_op_sparse_attention(ada_tensor *out, ada_tensor *lse, const ada_tensor *q, const ada_tensor *k,
                                   const ada_tensor *v, const ada_layout *layout, const ada_attn_opts *o);
/* mass [H, nqb, nkb] f32: mean over the valid query rows of the block of the sum over its valid
 * keys of exp(q.k * scale - lse[h, row]), with lse [H, Sq] given (finite). */
ada_status ada_op_block_mass(ada_tensor *mass, const ada_tensor *q, const ada_tensor *k, const ada_tensor *lse,
                             const ada_attn_opts *o);
/* One pass: dense out and its lse, and mass as block_mass with lse_cached. */
ada_status ada_op_attention_with_mass(ada_tensor *out, ada_tensor *lse, ada_tensor *mass, const ada_tensor *q,
                                      const ada_tensor *k, const ada_tensor *v, const ada_tensor *lse_cached,
                                      const ada_attn_opts *o);

/* The plan the backend of q's device would use for an attention call of this mode (v taken
 * like k; layout for SPARSE, o->block for FUSED and MASS), validated as the op would be; fails
 * with ADA_EUNSUPPORTED and the backend's reason when it would not take the call. */
ada_status ada_op_attention_plan(ada_attn_plan *plan, ada_attn_mode mode, const ada_tensor *q, const ada_tensor *k,
                                 const ada_layout *layout, const ada_attn_opts *o);

#endif
