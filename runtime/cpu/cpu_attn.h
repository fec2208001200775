/* cpu_attn.h: the CPU attention kernels (prefix ada_cpu_): dense and block-sparse attention with
 * an online softmax, block mass, and attention fused with block mass. f32 only; runtime/attention.c
 * validates the arguments and ada_cpu_attention_op stages them (see ops.h for the semantics).
 *
 * Work is split into (head, query tile) tasks run by OpenMP threads; every task is computed by
 * one thread in a fixed order, so results do not depend on the thread count. */
#ifndef ADA_CPU_ATTN_H
#define ADA_CPU_ATTN_H

#include <stdint.h>

#include "../backend.h"
#include "../status.h"

/* q [sq, heads, dim], k and v [skv, heads, dim] as f32 views whose last dimension is contiguous:
 * element (s, h, d) of q is q[s * q_rs + h * q_hs + d]. v is NULL for block mass. */
typedef struct ada_cpu_qkv {
  const float *q, *k, *v;
  int64_t q_rs, q_hs, k_rs, k_hs, v_rs, v_hs;
  int64_t sq, skv, kv_valid; /* keys >= kv_valid are ignored (0 < kv_valid <= skv) */
  int32_t heads, dim;
  float scale;
} ada_cpu_qkv;

/* Attention over query tiles of qblock rows and key blocks of kblock keys (multiples of 16); the
 * results of a row depend on kblock only.
 *   offsets/indices: a CSR layout per head (see layout.h) over qblock x kblock blocks restricting
 *     the key blocks, or NULL for every block;
 *   out [sq, heads, dim] and lse [heads, sq], contiguous; a row without keys gets 0 and -inf;
 *   lse_cached [heads, sq] (finite) and mass [heads, nqb, nkb], contiguous, or both NULL:
 *     mass[h, qb, kb] = mean over the rows i of the query tile of the sum over the valid keys j
 *     of the key block of exp(s_ij - lse_cached[h, i]).
 * Fails only when the per-thread scratch cannot be allocated (then nothing is written). */
ada_status ada_cpu_attention(const ada_cpu_qkv *a, int32_t qblock, int32_t kblock, const int64_t *offsets,
                             const int32_t *indices, const float *lse_cached, float *out, float *lse, float *mass);

/* mass [heads, nqb, nkb] as above, from the given lse [heads, sq] (finite); v is unused. */
ada_status ada_cpu_block_mass(const ada_cpu_qkv *a, int32_t block, const float *lse, float *mass);

/* The op entries of the CPU backend (backend.h): the plan ("cpu" family; dense: query tiles of 128
 * against key blocks of 64; the others: blocks x blocks), and the call (f32 staging of the
 * inputs, the finiteness check of a given lse, the kernels above). */
ada_status ada_cpu_attention_plan(const ada_attn_call *c, ada_attn_plan *out);
ada_status ada_cpu_attention_op(const ada_attn_call *c);

#endif
