/* kernels.h: C-ABI launchers of the CUDA kernels (prefix ada_launch_).
 *
 * Device code only lives in the .cu files of kernels/, one op family per file with its launcher
 * (attention: one file per kernel family, attention_smNN.cu, over attention_common.cuh). A launcher
 * enqueues its kernel(s) on `stream` (a cudaStream_t passed as void *) and returns the
 * cudaError_t of the launch (cudaGetLastError() after it) as an int: 0 is success. Launchers
 * never allocate, synchronize or print. Pointers are device pointers to the first element.
 */
#ifndef ADA_KERNELS_H
#define ADA_KERNELS_H

#include <stdint.h>

#include "../runtime/attn.h"
#include "../runtime/scalar.h"

#ifdef __cplusplus
extern "C" {
#endif

/* kernels/copy.cu: strided copy with dtype conversion over the common shape of dl and sl. */
int ada_launch_copy(void *dst, ada_dtype ddt, const ada_strided *dl, const void *src,
                    ada_dtype sdt, const ada_strided *sl, void *stream);

/* kernels/fill.cu: fill a strided view with a value; contiguous arange. */
int ada_launch_fill(void *dst, ada_dtype ddt, const ada_strided *dl, double value, void *stream);
int ada_launch_arange(void *dst, ada_dtype ddt, int64_t n, double start, double step,
                      void *stream);

/* kernels/randn.cu: contiguous dst[i] = ada_randn_at(seed, i) in ddt (f32, bf16 or f16). */
int ada_launch_randn(void *dst, ada_dtype ddt, int64_t n, uint64_t seed, void *stream);

/* ---- kernels/nn.cu: the non-GEMM neural-network ops (f32 math; inputs and outputs f32, bf16 or
 * f16, each with its own dtype). Rows of an input [rows, c] have their last dimension contiguous
 * and start at a 1- or 2-level stride: row r begins at element (r / n1) * s0 + (r % n1) * s1
 * (n1 = 1: r * s0; n1 > 1 needs rows < 2^32). Outputs are contiguous [rows, c]. `vec` allows
 * 16-byte loads and stores: every pointer 16-byte aligned and every row start a multiple of 8
 * elements (the launcher does not check it; the host side does). ---------------------------- */
typedef struct ada_nn_rows {
  int64_t n1, s1, s0;
} ada_nn_rows;

/* An operand of a row-wise op: a full [rows, c] input (rows as above), or with bcast set one
 * contiguous [c] vector used for every row. p NULL: absent. */
typedef struct ada_nn_operand {
  const void *p;
  ada_dtype dt;
  int32_t bcast;
  ada_nn_rows rows;
} ada_nn_operand;

enum {
  ADA_NN_MODULATE = 0, /* x * (1 + b) + a (a = shift, b = scale) */
  ADA_NN_GATED_ADD,    /* x + a * b (a = gate, b = y) */
  ADA_NN_ADD,          /* x + a */
  ADA_NN_MUL,          /* x * a */
  ADA_NN_SCALE,        /* x * s */
  ADA_NN_SILU,         /* x / (1 + exp(-x)) */
  ADA_NN_GELU_TANH,    /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
  ADA_NN_GELU          /* 0.5 x (1 + erf(x / sqrt 2)) = 0.5 x erfc(-x / sqrt 2), the exact GELU */
};

/* out [rows, c] = kind(x, a, b, s); out may be x (same elements) for in-place use. */
int ada_launch_rowwise(int32_t kind, void *out, ada_dtype odt, int64_t rows, int64_t c, const ada_nn_operand *x,
                       const ada_nn_operand *a, const ada_nn_operand *b, float s, int32_t vec, void *stream);

/* Norms over the last dimension c of x [rows, c]: layernorm (rms = 0) or rmsnorm (rms = 1);
 * w, bias: [c] vectors or NULL (bias only for layernorm). With shift and scale (broadcast [c]
 * vectors, both or neither; layernorm only) the result is also modulated: y * (1 + scale) +
 * shift, the fused layernorm + modulate. out may be x when x is contiguous.
 * With gate.p and y.p set (the fused gated_add + layernorm + modulate; needs shift and scale):
 * the row normalized is x + gate * y (gate, y: operands as the row-wise ops take them), rounded
 * to xodt and stored in x_out (contiguous [rows, c]; may be x when x is contiguous, not out)
 * before the norm reads it; with `vec`, x_out is 16-byte aligned and gate and y are as x. */
typedef struct ada_nn_norm_args {
  void *out;
  ada_dtype odt;
  ada_nn_operand x;
  int64_t rows, c;
  double eps;
  int32_t rms, vec;
  const void *w, *bias, *shift, *scale;
  ada_dtype wdt, bdt, shdt, scdt;
  ada_nn_operand gate, y; /* p NULL: plain norm */
  void *x_out;
  ada_dtype xodt;
} ada_nn_norm_args;
int ada_launch_norm(const ada_nn_norm_args *a, void *stream);

/* Softmax over the last dimension c of scale * x [rows, c] (see ada_op_softmax; scale > 0): out
 * [rows, c] contiguous; -inf entries give 0, a row of -inf gives zeros, a NaN makes its row NaN.
 * out may be x when x is contiguous. */
int ada_launch_softmax(void *out, ada_dtype odt, const ada_nn_operand *x, int64_t rows, int64_t c, float scale,
                       void *stream);

/* 3D RoPE (see ada_op_rope3d): x [s, h, d] with strides (xs_s, xs_h, 1) -> out [s, h, d]
 * contiguous (out may be x when x is contiguous). table: device scratch of
 * ada_rope3d_table_len(grid, axes) floats, filled here (cos and sin per axis, position, pair,
 * computed in double as the CPU does) before the rotation kernel runs. */
int64_t ada_rope3d_table_len(const int32_t grid[3], const int32_t axes[3]);
int ada_launch_rope3d(void *out, ada_dtype odt, const void *x, ada_dtype xdt, int64_t xs_s, int64_t xs_h, int64_t s,
                      int64_t h, int64_t d, const int32_t grid[3], const int32_t axes[3], double theta,
                      int64_t n_tokens, float *table, void *stream);

/* rope3d(rmsnorm(x, w, eps)) (see ada_op_rmsnorm_rope3d) in one pass, arguments as rope3d's;
 * d <= 256; w: [d] (16-byte aligned) of dtype wdt, or NULL. */
int ada_launch_rmsnorm_rope3d(void *out, ada_dtype odt, const void *x, ada_dtype xdt, int64_t xs_s, int64_t xs_h,
                              int64_t s, int64_t h, int64_t d, const void *w, ada_dtype wdt, double eps,
                              const int32_t grid[3], const int32_t axes[3], double theta, int64_t n_tokens,
                              float *table, void *stream);

/* x [c, t, hgt, w] with strides xs[0..2] and 1 -> out [t * hgt/2 * w/2, 4c] contiguous. */
int ada_launch_patchify(void *out, ada_dtype odt, const void *x, ada_dtype xdt, const int64_t xs[3], int64_t c,
                        int64_t t, int64_t hgt, int64_t w, void *stream);
/* x [t * hgt/2 * w/2, 4c] with row stride ldx (columns contiguous) -> out [c, t, hgt, w] contiguous. */
int ada_launch_unpatchify(void *out, ada_dtype odt, const void *x, ada_dtype xdt, int64_t ldx, int64_t c, int64_t t,
                          int64_t hgt, int64_t w, void *stream);
/* t [n] (element stride ts) -> out [n, dim]: cos and sin of t * exp(-log_max_period * k / (dim/2)),
 * in double as the CPU does. */
int ada_launch_timestep_embedding(void *out, ada_dtype odt, const void *t, ada_dtype tdt, int64_t ts, int64_t n,
                                  int64_t dim, double log_max_period, void *stream);

/* ---- attention: one parameter block for every kernel family --------------------------------
 * Dense and block-sparse attention, block mass and attention fused with block mass. The mode is
 * ada_attn_mode of runtime/attn.h (one enum from the ops down to here). q, k, v are bf16 [S, H,
 * dim] views: element (s, h, d) at s * rs + h * hs + d, base 16-byte aligned, rs and hs
 * multiples of 8. Outputs are contiguous: out [sq, heads, out_dim] (out_dtype f32, bf16 or
 * f16), lse and lse_in [heads, sq] f32, mass [heads, nmqb, nmkb] f32 (nmqb = ceil(sq /
 * mass_block), nmkb = ceil(skv / mass_block)). Semantics are those of runtime/cpu/cpu_attn.h:
 * keys >= kv_valid are ignored, a row without keys gets 0 and lse -inf, mass is the mean over
 * the block's rows. The host's attention plan (runtime/cuda/attention_plan.c) fills the shapes,
 * the head dimension, the tiles and the variant; a family's supports() says whether it takes
 * them, and its launcher enqueues the kernel (cudaErrorInvalidValue for what supports() refuses). */
/* ada_attn_params.l2_hint bits (sm90) */
typedef enum ada_l2_hint { ADA_L2_Q_FIRST = 1, ADA_L2_KV_LAST = 2, ADA_L2_OUT_STREAM = 4, ADA_L2_ALL = 7 } ada_l2_hint;

typedef struct ada_attn_params {
  int32_t mode;                 /* ada_attn_mode: DENSE/SPARSE write out and lse, FUSED out, lse
                                   and mass under lse_in, MASS only mass under lse_in */
  const void *q, *k, *v;        /* bf16; v unused by MASS */
  int64_t q_rs, q_hs, k_rs, k_hs, v_rs, v_hs;
  int64_t sq, skv, kv_valid;    /* 0 < kv_valid <= skv */
  int32_t heads, dim;           /* dim: the head dimension computed (inputs zero-padded to it) */
  float scale;                  /* finite, nonzero; may be negative */
  void *out;                    /* [sq, heads, out_dim], out_dim <= dim */
  ada_dtype out_dtype;
  int32_t out_dim;
  float *lse;
  const float *lse_in;          /* FUSED, MASS: finite */
  float *mass;                  /* FUSED, MASS */
  int32_t mass_block;           /* FUSED, MASS: 64 or 128 */
  /* SPARSE: CSR per head over blocks of layout_block; order[i] = h * nqb + qb of the i-th CTA
   * (NULL: natural order). */
  const int64_t *offsets;
  const int32_t *indices;
  const int32_t *order;
  int32_t layout_block;
  /* sm90, SPARSE over blocks of 64: walk[i] = h * nqt + qt, the i-th work item the persistent CTAs
   * take (qt: the 64-row blocks 2 qt and 2 qt + 1; nqt = ceil(nqb / 2)), runtime/walk.h; NULL:
   * head-major, each head's tiles rotated by 37 h. tail_walk: the plan's variant "tail" asks the
   * launch for the layout mirror's walk (the plan has no pointers). */
  const int32_t *walk;
  int32_t tail_walk;
  /* sm90, SPARSE over blocks of 64: kv_split > 0 walks each head in passes over its key blocks,
   * first every query tile over blocks [0, kv_split), then [kv_split, 2 kv_split), ..., so that the
   * CTAs in flight read a part of a head's K and V (in L2 at 720p, where a whole head's passes it);
   * each pass after the first merges its partial output with the ones before (out and lse, by their
   * LSEs); at most 4 passes. split_flags: device memory, [heads * nqb, 4] u32 per 64-row block: the
   * passes done and where passes 1-3 start in the row (written by the launcher in the stream:
   * launches that share it must be ordered); needs the in-kernel counter (static_walk 0); ignores
   * walk. 0 (or kv_split >= the key blocks): one pass. */
  int32_t kv_split;
  uint32_t *split_flags;
  /* The plan's tiles: query rows per CTA, and how a CTA's warps split a key tile (1: every warp
   * all of it; 2: two row groups x two key halves); variant: the family's own variant number
   * (sm90: 1 two stages, 2 two stages + ping-pong, 3 three stages, 4 three stages + ping-pong). */
  int32_t tile_rows, key_halves, variant;
  /* sm90: 0 (default) hands work items out inside the kernel (an atomic counter); 1 walks them in a
   * fixed stride (item = blockIdx.x + i * gridDim.x), the earlier scheme, kept for A/B timing */
  int32_t static_walk;
  /* sm90: L2 priorities, a mask of ada_l2_hint: Q (read once) evict-first, K and V (read by every
   * query tile of the head) evict-last, out written with streaming stores; 0: none. The plan sets
   * all three for dense attention. */
  int32_t l2_hint;
  /* sm90, SPARSE over blocks of 128: head_order asks the launch for the layout mirror's head-major
   * order (runtime/walk.h, ada_order_head; the plan's variant "head") as `order` instead of the
   * longest-first one. */
  int32_t head_order;
  /* sm90, SPARSE over blocks of 64 in one pass: sweep_ns > 0 starts each row's walk at the
   * fraction of its key blocks that a global sweep has reached, and wraps around (online softmax
   * takes the blocks in any order): the sweep's phase is %globaltimer over a period of one work
   * item, (the head's mean row length + 2) * sweep_ns, read when the item is taken. The CTAs in
   * flight then read one stretch of a head's K and V whatever the rows' lengths (rows of one
   * length keep them in step by themselves; kernels/testbed/l2_sim.lua). 0: every walk from the
   * row's first block. */
  int32_t sweep_ns;
} ada_attn_params;

/* kernels/attention_sm80.cu: the sm80 family (mma.sync m16n8k16 bf16, f32 accumulation, cp.async;
 * runs on sm_80 and later). One CTA of 4 warps per (query tile, head), key tiles of 64 keys;
 * dim 64 or 128; tiles: 128 rows (key_halves 1), or for sparse attention over blocks of 64, 64
 * rows with key_halves 2 (variant "halves") or 1 ("rows"). */
int ada_attention_sm80_supports(const ada_attn_params *p);
int ada_launch_attention_sm80(const ada_attn_params *p, void *stream);

/* kernels/attention_sm90.cu: the Hopper family (sm_90a: wgmma, TMA, warp specialization, persistent
 * CTAs; see the file). Head dim 128 (out_dim 128), scale > 0, DENSE, FUSED (mass blocks 64 or
 * 128) and SPARSE (layout blocks 64 or 128); 128-row tiles (sparse blocks of 64: two 64-row
 * blocks per CTA, one per consumer warpgroup); variant 1-4 (above). */
int ada_attention_sm90_supports(const ada_attn_params *p);
int ada_launch_attention_sm90(const ada_attn_params *p, void *stream);

/* kernels/nonfinite.cu: result[0] = number of non-finite values of x[0, n), result[1] = index of the first one
 * (UINT64_MAX when none); result is device memory, written by the kernels (2 launches). */
int ada_launch_count_nonfinite(const float *x, int64_t n, unsigned long long *result, void *stream);

/* ---- kernels/select.cu: layout selection from a block mass on the device (runtime/layout.c
 * semantics; runtime/cuda/select_cuda.c). mass: contiguous f32 [heads, nqb, nkb], nkb <=
 * ada_select_max_nkb(). mode 0: row-wise top-k (frac = density [heads]); mode 1: cumulative
 * threshold (frac = recall [heads], min_blocks, max_blocks <= 0: none). force: int32 pairs, the
 * n_cols column ranges then the n_rows row ranges ([first, end), 0-based). Writes count [heads *
 * nqb] (int64, kept per row), bits [heads * nqb, ceil(nkb / 32)] (u32 bitmask of the kept blocks)
 * and lowers *bad (init UINT64_MAX) to the flat index of a value not finite or negative. */
int ada_select_max_nkb(void);
int ada_launch_select_rows(const float *mass, int32_t heads, int32_t nqb, int32_t nkb, int32_t mode,
                           const double *frac, int32_t min_blocks, int32_t max_blocks, const int32_t *force,
                           int32_t n_cols, int32_t n_rows, int32_t diagonal, int64_t *count, uint32_t *bits,
                           unsigned long long *bad, void *stream);
/* CSR offsets [heads * (nqb + 1)] (layout.h) from the row counts (one CTA). */
int ada_launch_select_offsets(const int64_t *count, int32_t heads, int32_t nqb, int64_t *offsets, void *stream);
/* indices[offsets of row r ...] = the kept blocks of row r, ascending, from the bitmask. */
int ada_launch_select_fill(const uint32_t *bits, int32_t heads, int32_t nqb, int32_t nkb, const int64_t *offsets,
                           int32_t *indices, void *stream);
/* recall [heads] (double, device) of a device CSR layout over the mass (ada_layout_recall);
 * scratch: 2 * heads * nqb doubles. */
int ada_launch_layout_recall(const float *mass, int32_t heads, int32_t nqb, int32_t nkb, const int64_t *offsets,
                             const int32_t *indices, double *scratch, double *recall, void *stream);

#ifdef __cplusplus
}
#endif

#endif
