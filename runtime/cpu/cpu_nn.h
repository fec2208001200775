/* cpu_nn.h: CPU kernels of the neural-network ops (prefix ada_cpu_): the f32 GEMM (gemm.c) and
 * the norms, elementwise ops, RoPE, patchify and timestep embedding (nn.c).
 *
 * Every kernel works on f32 data whose arguments runtime/nn.c has validated (and runtime/cpu/backend.c staged). Matrices are
 * row-major with a row stride; a "row operand" with row stride 0 is one row broadcast over all
 * rows. Kernels that allocate scratch return ADA_ENOMEM (nothing written) when that fails; the
 * others cannot fail and return nothing. Results do not depend on the thread count.
 */
#ifndef ADA_CPU_NN_H
#define ADA_CPU_NN_H

#include <stdint.h>

#include "../scalar.h"
#include "../status.h"

/* c [m, n] (row stride ldc) = a [m, k] . b [k, n] (+ bias [n] when non-NULL). Element (i, p) of
 * a is a[i * rsa + p * csa] and element (p, j) of b is b[p * rsb + j * csb]: any strides, so
 * transposed operands need no copy. c must not overlap a, b or bias. */
ada_status ada_cpu_gemm(float *c, int64_t ldc, const float *a, int64_t rsa, int64_t csa, const float *b,
                        int64_t rsb, int64_t csb, const float *bias, int64_t m, int64_t n, int64_t k);

/* Over rows of n contiguous elements (x and out: row stride n; out may be x). weight, bias may be
 * NULL. Statistics are accumulated in double. */
void ada_cpu_layernorm(float *out, const float *x, int64_t rows, int64_t n, double eps, const float *weight,
                       const float *bias);
void ada_cpu_rmsnorm(float *out, const float *x, int64_t rows, int64_t n, double eps, const float *weight);
/* Softmax of scale * x over each row (see ada_op_softmax); the sum is accumulated in double. */
void ada_cpu_softmax(float *out, const float *x, int64_t rows, int64_t n, float scale);

/* Row-wise ops on x [rows, n] (contiguous; out may be x); each operand has row stride 0 (a
 * broadcast [n] vector) or n. */
/* out = x * (1 + scale) + shift */
void ada_cpu_modulate(float *out, const float *x, const float *shift, int64_t ld_shift, const float *scale,
                      int64_t ld_scale, int64_t rows, int64_t n);
/* out = x + gate * y */
void ada_cpu_gated_add(float *out, const float *x, const float *gate, int64_t ld_gate, const float *y, int64_t ld_y,
                       int64_t rows, int64_t n);
/* x_out = x + gate * y, rounded to xo_dt (as storing it in that dtype rounds it); then out =
 * layernorm(x_out, eps, weight, bias) rounded to out_dt, * (1 + scale) + shift: the operations,
 * order and rounding points of ada_cpu_gated_add, ada_cpu_layernorm and ada_cpu_modulate run in
 * turn with their results stored in between, in one pass over each row. shift, scale (and weight,
 * bias unless NULL) are [n] vectors; x_out may be x; out overlaps nothing. out is not rounded at
 * the end (the caller stores it in out_dt). */
void ada_cpu_gated_add_layernorm_modulate(float *x_out, float *out, const float *x, const float *gate,
                                          int64_t ld_gate, const float *y, int64_t ld_y, double eps,
                                          const float *weight, const float *bias, const float *shift,
                                          const float *scale, int64_t rows, int64_t n, ada_dtype xo_dt,
                                          ada_dtype out_dt);
void ada_cpu_add(float *out, const float *a, const float *b, int64_t ld_b, int64_t rows, int64_t n);
void ada_cpu_mul(float *out, const float *a, const float *b, int64_t ld_b, int64_t rows, int64_t n);

/* Over n contiguous elements (out may be x). */
void ada_cpu_scale(float *out, const float *x, float s, int64_t n);
void ada_cpu_silu(float *out, const float *x, int64_t n);
void ada_cpu_gelu_tanh(float *out, const float *x, int64_t n);
/* exact GELU: 0.5 x (1 + erf(x / sqrt 2)) */
void ada_cpu_gelu(float *out, const float *x, int64_t n);

/* 3D RoPE (see ada_op_rope3d): x [S, H, D] with strides (xs_s, xs_h, 1), out [S, H, D]
 * contiguous (may be x when x is contiguous). */
ada_status ada_cpu_rope3d(float *out, const float *x, int64_t xs_s, int64_t xs_h, int64_t s, int64_t h, int64_t d,
                          const int32_t grid[3], const int32_t axes[3], double theta, int64_t n_tokens);

/* x [C, T, H, W] with strides xs[0..2] and 1 -> out [T * H/2 * W/2, C * 4] contiguous. */
void ada_cpu_patchify(float *out, const float *x, const int64_t xs[3], int64_t c, int64_t t, int64_t h, int64_t w);
/* x [T * H/2 * W/2, C * 4] with row stride ldx -> out [C, T, H, W] contiguous. */
void ada_cpu_unpatchify(float *out, const float *x, int64_t ldx, int64_t c, int64_t t, int64_t h, int64_t w);

/* t [n] -> out [n, dim] contiguous (dim even), computed in double. */
void ada_cpu_timestep_embedding(float *out, const float *t, int64_t n, int64_t dim, double max_period);

#endif
