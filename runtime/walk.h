/* walk.h: the order in which the persistent CTAs of the sm90 block-64 sparse kernel take their
 * work items (kernels/attention_sm90.cu, ada_attn_params.walk), and the head-major order of rows
 * for its blocks of 128 (ada_order_head, at the end). Header-only C, so that the CUDA
 * backend's layout mirror (runtime/cuda/mirror.c), the Lua layout binding (layout:walk64) and the
 * kernel test bed (kernels/testbed/attn_testbed.cu) compute the same walk.
 *
 * Item i = h * nqt + qt (nqt = ceil(nqb / 2)) is the pair of 64-row query blocks 2 qt and
 * 2 qt + 1 of head h, one per consumer warpgroup; it costs about the longer block's key-block
 * count, plus ADA_WALK64_ITEM_COST tiles for Q, the epilogue and the hand-over.
 *
 * Base order, what the kernel does without a walk: head-major, the k-th item of head h being
 * qt = (k + 37 h) mod nqt, so a wave of CTAs shares one head's K and V in L2 and the full text
 * rows of successive heads fall on different CTAs (37 is coprime with 132 SMs).
 *
 * The CTAs take items from an atomic counter, so an item of cost c that starts when work W is left
 * (its own included) ends about c - W / ctas after the rest. Text rows read every key block (10x a
 * row at density 0.1), and the last heads' text rows start too late: a modelled tail of 5.7% at
 * 540p-129f and 1.3% at 720p-129f, density 0.1 (kernels/testbed/walk_sim.lua). The walk moves such
 * an item up to the last place of the base order where c * ctas <= W; every other item keeps its
 * place, and items moved to the same place keep their order (a stable sort on the place).
 */
#ifndef ADA_WALK_H
#define ADA_WALK_H

#include <stdint.h>
#include <stdlib.h>

#define ADA_WALK64_ITEM_COST 2 /* key-block tiles of per-item work besides the key blocks */
#define ADA_WALK64_ROTATE 37   /* the base order's rotation per head */

#ifdef __CUDACC__
#define ADA_WALK64_HD __host__ __device__
#else
#define ADA_WALK64_HD
#endif

/* The item at place w of the base order (also the kernel's walk when it is given none). */
static inline ADA_WALK64_HD int64_t ada_walk64_base(int64_t w, int64_t nqt) {
  const int64_t h = w / nqt, k = w - h * nqt;
  return h * nqt + (k + ADA_WALK64_ROTATE * h) % nqt;
}

/* The cost of item i: the longer of its two rows (a block past nqb has none), plus the item cost.
 * offsets: [heads * (nqb + 1)], row r of head h spans offsets[h * (nqb + 1) + r .. + 1]. */
static inline int64_t ada_walk64_cost(const int64_t *offsets, int64_t nqb, int64_t nqt, int64_t i) {
  const int64_t h = i / nqt, qb = 2 * (i - h * nqt);
  const int64_t *o = offsets + h * (nqb + 1) + qb;
  const int64_t a = o[1] - o[0], b = qb + 1 < nqb ? o[2] - o[1] : 0;
  return (a > b ? a : b) + ADA_WALK64_ITEM_COST;
}

/* walk[heads * ceil(nqb / 2)]: the items in the order the CTAs take them, for ctas persistent
 * CTAs. 0 on success; -1 on bad sizes (heads, nqb, ctas < 1, or more items than int32 holds),
 * -2 out of memory (walk untouched then). */
static inline int ada_walk64(int32_t heads, int64_t nqb, const int64_t *offsets, int32_t ctas, int32_t *walk) {
  if (heads < 1 || nqb < 1 || ctas < 1 || !offsets || !walk) return -1;
  const int64_t nqt = (nqb + 1) / 2, n = (int64_t)heads * nqt;
  if (n > INT32_MAX) return -1;
  int64_t *suf = (int64_t *)malloc(sizeof(int64_t) * (size_t)(n + 1)); /* work left at each place */
  int64_t *start = (int64_t *)calloc((size_t)n + 1, sizeof(int64_t));   /* counting sort on the place */
  int32_t *place = (int32_t *)malloc(sizeof(int32_t) * (size_t)n);
  if (!suf || !start || !place) {
    free(suf);
    free(start);
    free(place);
    return -2;
  }
  suf[n] = 0;
  for (int64_t w = n - 1; w >= 0; w--) suf[w] = suf[w + 1] + ada_walk64_cost(offsets, nqb, nqt, ada_walk64_base(w, nqt));
  for (int64_t w = 0; w < n; w++) {
    const int64_t need = ada_walk64_cost(offsets, nqb, nqt, ada_walk64_base(w, nqt)) * (int64_t)ctas;
    int64_t to = w;
    if (suf[w] < need) { /* suf does not increase with w: the last place lo < w with suf[lo] >= need */
      if (suf[0] < need) {
        to = 0;
      } else {
        int64_t lo = 0, hi = w; /* suf[lo] >= need > suf[hi] */
        while (hi - lo > 1) {
          const int64_t mid = lo + (hi - lo) / 2;
          if (suf[mid] >= need) lo = mid;
          else hi = mid;
        }
        to = lo;
      }
    }
    place[w] = (int32_t)to;
    start[to + 1]++;
  }
  for (int64_t w = 1; w <= n; w++) start[w] += start[w - 1];
  for (int64_t w = 0; w < n; w++) walk[start[place[w]]++] = (int32_t)ada_walk64_base(w, nqt);
  free(suf);
  free(start);
  free(place);
  return 0;
}

/* The rows r0 .. r0 + n - 1 (r = h * nqb + qb) longest first, rows of one length in order, into
 * order[0 .. n): a counting sort on nkb - length over start[nkb + 2] (scratch). */
static inline void ada_rows_longest(const int64_t *offsets, int64_t nqb, int64_t nkb, int64_t r0, int64_t n, int64_t *start,
                                    int32_t *order) {
  for (int64_t b = 0; b < nkb + 2; b++) start[b] = 0;
  for (int64_t pass = 0; pass < 2; pass++) {
    for (int64_t r = r0; r < r0 + n; r++) {
      const int64_t *o = offsets + (r / nqb) * (nqb + 1) + r % nqb, len = o[1] - o[0];
      const int64_t key = nkb - (len < 0 ? 0 : len > nkb ? nkb : len);
      if (pass == 0) start[key + 1]++;
      else order[start[key]++] = (int32_t)r;
    }
    if (pass == 0)
      for (int64_t b = 1; b < nkb + 2; b++) start[b] += start[b - 1];
  }
}

/* The default order of sparse rows (ada_attn_params.order; the layout mirror's): every row
 * r = h * nqb + qb longest first, rows of one length in order. order[heads * nqb]; 0 on success,
 * -1 on bad sizes, -2 out of memory. */
static inline int ada_order_longest(int32_t heads, int64_t nqb, int64_t nkb, const int64_t *offsets, int32_t *order) {
  if (heads < 1 || nqb < 1 || nkb < 0 || !offsets || !order || (int64_t)heads * nqb > INT32_MAX) return -1;
  int64_t *start = (int64_t *)malloc(sizeof(int64_t) * (size_t)(nkb + 2));
  if (!start) return -2;
  ada_rows_longest(offsets, nqb, nkb, 0, (int64_t)heads * nqb, start, order);
  free(start);
  return 0;
}

/* The head-major order of sparse rows (the sm90 kernel's blocks of 128 with the plan's variant
 * "head"; ada_attn_params.order, a permutation of the rows r = h * nqb + qb): the heads by their
 * work (key blocks over all rows), most first, ties by head; inside a head its rows longest first,
 * rows of one length in order. The default order is longest first over all rows: while a head's
 * rows have one length (row-wise top-k, AdaSpa's selection) that too leaves them head-major, but
 * rows of spread lengths (a recall target's) are sorted across heads, and the CTAs in flight then
 * read every head's K/V: an L2 hit rate of 53-77% against 87-98% head-major in
 * kernels/testbed/l2_sim.lua (seventeenth session). order[heads * nqb]; 0 on success, -1 on bad
 * sizes, -2 out of memory (order untouched then). */
static inline int ada_order_head(int32_t heads, int64_t nqb, int64_t nkb, const int64_t *offsets, int32_t *order) {
  if (heads < 1 || nqb < 1 || nkb < 0 || !offsets || !order || (int64_t)heads * nqb > INT32_MAX) return -1;
  int64_t *work = (int64_t *)malloc(sizeof(int64_t) * (size_t)heads);
  int32_t *hs = (int32_t *)malloc(sizeof(int32_t) * (size_t)heads);
  int64_t *start = (int64_t *)malloc(sizeof(int64_t) * (size_t)(nkb + 2));
  if (!work || !hs || !start) {
    free(work);
    free(hs);
    free(start);
    return -2;
  }
  for (int32_t h = 0; h < heads; h++) {
    const int64_t *o = offsets + (int64_t)h * (nqb + 1);
    work[h] = o[nqb] - o[0];
    hs[h] = h;
  }
  for (int32_t i = 1; i < heads; i++) { /* insertion sort, stable: heads are few */
    const int32_t h = hs[i];
    int32_t j = i;
    for (; j > 0 && work[hs[j - 1]] < work[h]; j--) hs[j] = hs[j - 1];
    hs[j] = h;
  }
  for (int32_t i = 0; i < heads; i++) ada_rows_longest(offsets, nqb, nkb, (int64_t)hs[i] * nqb, nqb, start, order + (int64_t)i * nqb);
  free(work);
  free(hs);
  free(start);
  return 0;
}

#endif
