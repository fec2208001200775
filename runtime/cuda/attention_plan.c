/* attention_plan.c: the CUDA backend's attention plan (cuda_attn.h): one function from a call's
 * description (mode, shapes, dtypes, blocks, the family and variant options) and the device
 * (compute capability, SM count) to {kernel family, variant, tiles, head dimension, schedule}.
 * It answers supports() (through the backend's attention_plan entry) and it is what
 * attention_cuda.c launches with.
 *
 * - Head dimension: the kernels compute with 64 or 128 (inputs zero-padded to it); a call with
 *   D > 128 is not taken. Decided here only.
 * - Families, in order of preference: a family is a candidate on devices whose compute
 *   capability lies in its range, when the call names it or names none; the first candidate
 *   whose tiles() accepts the variant and whose kernel-side supports() accepts the parameters
 *   is chosen.
 * - Adding a family: put kernels/attention_smNN.cu next to attention_sm80.cu with the two
 *   entry points of kernels/kernels.h (ada_attention_smNN_supports, ada_launch_attention_smNN);
 *   the Makefile then defines ADA_HAVE_SMNN and the entry under that macro below is built. The
 *   sm90 entry waits for kernels/attention_sm90.cu: it is listed first (preferred on 9.x) and
 *   falls back to sm80 for what it does not support.
 * - Schedule: sparse attention runs its CTAs longest row first (the layout mirror's CTA order,
 *   mirror.c); the others in natural order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_attn.h"
#include "internal.h"

enum { MAX_KERNEL_DIM = 128, KEY_TILE = 64 };

/* Fills the family's tiles into p (and info's variant) for the call; false when the family does
 * not know the variant. */
typedef bool (*tiles_fn)(const ada_attn_call *c, ada_attn_params *p, ada_attn_plan *info);

typedef struct family {
  const char *name;
  int32_t min_cc, max_cc; /* major * 10 + minor, inclusive; max 0: no upper bound */
  int (*supports)(const ada_attn_params *p);
  int (*launch)(const ada_attn_params *p, void *stream);
  tiles_fn tiles;
} family;

/* sm80: 128-row CTAs; sparse attention over blocks of 64 uses 64-row CTAs, as 2 row groups x 2
 * key halves ("halves", the default) or 4 warps of 16 rows ("rows"). */
static bool sm80_tiles(const ada_attn_call *c, ada_attn_params *p, ada_attn_plan *info) {
  const char *v = c->variant;
  const bool rows = v && strcmp(v, "rows") == 0;
  if (v && !rows && strcmp(v, "halves") != 0) return false;
  if (p->mode == ADA_ATTN_SPARSE && p->layout_block == 64) {
    p->tile_rows = 64;
    p->key_halves = rows ? 1 : 2;
    snprintf(info->variant, sizeof info->variant, "%s", rows ? "rows" : "halves");
  } else {
    p->tile_rows = 128;
    p->key_halves = 1;
  }
  return true;
}

#ifdef ADA_HAVE_SM90
/* the fused pass's L2 priorities: none, or for A/B timing ADA_SM90_FUSED_L2=kv (K/V evict-last)
 * or =all (as dense) */
static int fused_l2_hint(void) {
  static int hint = -1;
  if (hint < 0) {
    const char *e = getenv("ADA_SM90_FUSED_L2");
    hint = e && !strcmp(e, "kv") ? ADA_L2_KV_LAST : e && !strcmp(e, "all") ? ADA_L2_ALL : 0;
  }
  return hint;
}

/* sm90 (kernels/attention_sm90.cu): 128-row tiles (sparse blocks of 64: two per CTA, one per
 * consumer warpgroup). Variants: "st2", "st2pp", "st3", "st3pp" (K/V ring stages, and ping-pong of
 * the two consumer warpgroups' GEMM issue). Default (H200, 2026-12-03, kernels/testbed/NOTES.md):
 * st3 with L2 priorities for dense attention (below; since the ninth session the kernel also
 * brings each warpgroup's warps together every 4 tiles in dense walks: 720p 595 -> 642 TFLOP/s;
 * before the priorities st3pp was the dense default over 64k keys, 3-5% over st3); st3 for everything else: since the wgmma descriptors live in uniform
 * registers (seventh session) the fused pass runs st3 at 312.9 / 305.3 ms (mass 64 / 128, 720p)
 * against st3pp's 316.4 / 308.9, and sparse st3 stays 0-1% over st3pp.
 * Sparse blocks of 64 run st3 whatever the variant names, in one pass over the key blocks ("one"
 * names it), or in 2 to 4 ("split2" to "split4"; the default with ADA_SM90_PASSES=N, for A/B
 * timing of whole steps), and "tail" takes the layout mirror's tail walk of the work items
 * (runtime/walk.h) instead of the head-major one (one pass; H200 fifteenth session: no faster,
 * kept for A/B). "sweep": one pass, each row's walk started where a global sweep has reached
 * (kernels.h, sweep_ns): the default since the twentieth session ("one" is one pass without it;
 * ADA_SM90_SWEEP=0 makes that the default, for A/B timing of whole steps).
 * Sparse blocks of 128: "head" takes the layout mirror's head-major order of the rows (each head's
 * longest first) instead of the longest-first order over all heads (runtime/walk.h; the default
 * with ADA_SM90_HEAD=1): timed on an H100 (twentieth session), mixed (0.96-1.06x), so an option. */
static int sm90_passes(void) {
  static int n = -1;
  if (n < 0) {
    const char *e = getenv("ADA_SM90_PASSES");
    n = e && e[0] >= '1' && e[0] <= '4' && !e[1] ? e[0] - '0' : 1;
  }
  return n;
}
/* the sweep's step: a CTA's 4.2 MFLOP a key block pair (two 64 x 64 x 128 tiles, S and PV) at
 * ~450 TFLOP/s over 132 SMs, H200; off by 30% either way the model still keeps the CTAs within a
 * third of a head's K/V (kernels/testbed/NOTES.md, seventeenth session) */
enum { SM90_SWEEP_NS = 1230 };
static bool env_on(const char *name) {
  const char *e = getenv(name);
  return e && e[0] == '1' && !e[1];
}
/* the sweep is block 64's default since the twentieth session (H100, kernels/testbed/NOTES.md:
 * the attention bench's alternation 1.09-1.31x over one plain pass, a whole 720p step's sparse
 * attention 2.7-3.3% less); ADA_SM90_SWEEP=0 turns it off, to time whole steps without it */
static bool sm90_sweep_default(void) {
  static int on = -1;
  if (on < 0) {
    const char *e = getenv("ADA_SM90_SWEEP");
    on = !(e && e[0] == '0' && !e[1]);
  }
  return on;
}
static bool sm90_head_default(void) {
  static int on = -1;
  if (on < 0) on = env_on("ADA_SM90_HEAD");
  return on;
}
static bool sm90_tiles(const ada_attn_call *c, ada_attn_params *p, ada_attn_plan *info) {
  static const char *const names[] = {"st2", "st2pp", "st3", "st3pp"};
  static const char *const walks64[] = {"one", "split2", "split3", "split4"};
  const bool sparse64 = p->mode == ADA_ATTN_SPARSE && p->layout_block == 64;
  const bool sparse128 = p->mode == ADA_ATTN_SPARSE && p->layout_block == 128;
  const bool tail = c->variant && strcmp(c->variant, "tail") == 0;
  const bool head = c->variant && strcmp(c->variant, "head") == 0;
  bool sweep = c->variant && strcmp(c->variant, "sweep") == 0;
  int v = 0, passes = 0; /* passes 0: the default (sm90_passes) */
  for (int i = 0; i < 4 && c->variant; i++)
    if (strcmp(c->variant, walks64[i]) == 0) passes = i + 1;
  if (head) {
    if (!sparse128) return false;
    v = 3;
  } else if (tail || sweep || passes) {
    if (!sparse64) return false;
    v = 3;
    if (tail || sweep) passes = 1;
  } else if (c->variant && c->variant[0]) {
    for (int i = 0; i < 4; i++)
      if (strcmp(c->variant, names[i]) == 0) v = i + 1;
    if (!v) return false;
  } else {
    v = 3;
  }
  /* dense: L2 priorities on (Q evict-first, K/V evict-last, streaming out): 720p st3 540 -> 586
   * TFLOP/s, st3pp 543 -> 569, in one test-bed run (H200, sixth session of 2026-12-03); sparse
   * even, the fused pass even to 2% slower, so only dense takes them */
  p->l2_hint = p->mode == ADA_ATTN_DENSE ? ADA_L2_ALL : p->mode == ADA_ATTN_FUSED ? fused_l2_hint() : 0;
  p->tile_rows = 128;
  p->key_halves = 1;
  p->variant = v;
  p->tail_walk = tail;
  p->head_order = head || (sparse128 && !c->variant && sm90_head_default());
  /* block 64 in passes over the key blocks (kernels.h, kv_split): at 720p-129f a head's K and V
   * (61 MB) pass the H200's 50 MB L2, and the CTAs in flight read half of them a pass. H200,
   * sixteenth session (kernels/testbed/NOTES.md): on the test bed's layouts (densities per head
   * 0.25x-2.5x, 1% full rows) 720p density 0.1 / 0.2 / 0.4 393-404 / 410-417 / 417-428 ->
   * 428-431 / 451-457 / 465-470 TFLOP/s in two passes; on the attention bench's row-wise top-k
   * layouts slower (one pass 453 / 477 / 462, two 405 / 440 / 441, in alternation), and on
   * AdaSpa's own selection a whole 720p step too (sparse attention 4.64 / 2.47 s in one pass,
   * 4.78 / 2.63 s in three): one pass stays the default */
  const int64_t nkb = (p->kv_valid + 63) / 64;
  if (sparse64 && !passes) {
    passes = sm90_passes();
    sweep = passes == 1 && !c->variant && sm90_sweep_default();
  }
  if (passes > nkb) passes = (int)nkb;
  p->kv_split = passes > 1 ? (int32_t)((nkb + passes - 1) / passes) : 0;
  if (p->kv_split > 0) passes = (int)((nkb + p->kv_split - 1) / p->kv_split);
  p->sweep_ns = sweep && passes <= 1 ? SM90_SWEEP_NS : 0;
  if (tail) snprintf(info->variant, sizeof info->variant, "tail");
  else if (p->sweep_ns) snprintf(info->variant, sizeof info->variant, "sweep");
  else if (p->head_order) snprintf(info->variant, sizeof info->variant, "head");
  else if (sparse64 && passes > 1) snprintf(info->variant, sizeof info->variant, "split%d", passes);
  else snprintf(info->variant, sizeof info->variant, "%s", sparse64 ? "st3" : names[v - 1]);
  info->tile_keys = sparse64 ? 64 : 128;
  /* persistent CTAs; sparse rows of 128 take the mirror's longest-first order (variant "head": its
   * head-major one), pairs of 64-rows
   * a head-major walk (the order counts 64-row blocks), in passes over the key blocks, or with
   * variant "tail" the mirror's walk, the same with the long items that would end last moved up
   * (runtime/walk.h) */
  if (sparse64 && passes > 1) snprintf(info->schedule, sizeof info->schedule, "persistent, head-major, %d key passes", passes);
  else
    snprintf(info->schedule, sizeof info->schedule, "%s",
             p->head_order                           ? "persistent, head-major, longest first"
             : p->mode == ADA_ATTN_SPARSE && !sparse64 ? "persistent, longest-first"
             : sparse64 ? (tail ? "persistent, tail walk" : p->sweep_ns ? "persistent, head-major, swept start" : "persistent, head-major")
             : p->l2_hint                            ? "persistent, L2 priorities"
                                                     : "persistent");
  return true;
}
#endif

static const family families[] = {
#ifdef ADA_HAVE_SM90
    {"sm90", 90, 99, ada_attention_sm90_supports, ada_launch_attention_sm90, sm90_tiles},
#endif
    {"sm80", 80, 0, ada_attention_sm80_supports, ada_launch_attention_sm80, sm80_tiles},
};
enum { N_FAMILIES = (int)(sizeof families / sizeof families[0]) };

static void shape_str(const ada_tensor *t, char *buf, size_t n) { ada_shape_format(t->ndim, t->shape, buf, n); }

static const char *family_names(void) {
  static char names[64];
  if (!names[0]) {
    size_t o = 0;
    for (int i = 0; i < N_FAMILIES && o < sizeof names; i++)
      o += (size_t)snprintf(names + o, sizeof names - o, "%s%s", i ? ", " : "", families[i].name);
  }
  return names;
}

ada_status ada_cuda_attention_plan_full(const ada_attn_call *c, ada_cuda_attn_plan *out) {
  const ada_tensor *q = c->q;
  const int32_t dev = q->storage->device.index;
  const int64_t D = q->shape[2];
  char shape[96];
  if (D > MAX_KERNEL_DIM) {
    shape_str(q, shape, sizeof shape);
    return ada_fail(ADA_EUNSUPPORTED, "%s: q %s has head dimension %lld; the CUDA kernels take at most %d", c->op,
                    shape, (long long)D, MAX_KERNEL_DIM);
  }
  int32_t major, minor, sms;
  ada_status s = ada_cuda_props(dev, &major, &minor, &sms);
  if (s) return s;
  const int32_t cc = major * 10 + minor;

  memset(out, 0, sizeof *out);
  ada_attn_params *p = &out->p;
  p->mode = c->mode;
  p->sq = q->shape[0];
  p->skv = c->k->shape[0];
  p->kv_valid = c->kv_valid;
  p->heads = (int32_t)q->shape[1];
  p->dim = D <= 64 ? 64 : MAX_KERNEL_DIM;
  p->scale = c->scale;
  if (c->mode != ADA_ATTN_MASS) {
    p->out_dtype = c->out ? c->out->dtype : q->dtype;
    p->out_dim = (int32_t)D;
  }
  if (c->mode == ADA_ATTN_FUSED || c->mode == ADA_ATTN_MASS) p->mass_block = c->block;
  if (c->mode == ADA_ATTN_SPARSE) p->layout_block = c->block;

  bool named = false, variant_known = false;
  for (int i = 0; i < N_FAMILIES; i++) {
    const family *f = &families[i];
    if (c->family && strcmp(c->family, f->name) != 0) continue;
    named = true;
    if (cc < f->min_cc || (f->max_cc && cc > f->max_cc)) continue;
    ada_attn_params fp = *p;
    ada_attn_plan info = {0};
    if (!f->tiles(c, &fp, &info)) continue;
    variant_known = true;
    if (!f->supports(&fp)) continue;
    out->p = fp;
    out->family = i;
    out->info = info;
    snprintf(out->info.family, sizeof out->info.family, "%s", f->name);
    out->info.tile_rows = fp.tile_rows;
    if (!out->info.tile_keys) out->info.tile_keys = KEY_TILE;
    out->info.dim = fp.dim;
    if (!out->info.schedule[0])
      snprintf(out->info.schedule, sizeof out->info.schedule, "%s",
               c->mode == ADA_ATTN_SPARSE ? "longest-first" : "natural");
    return ADA_OK;
  }
  if (!named)
    return ada_fail(ADA_EUNSUPPORTED, "%s: family %s is not built (cuda families: %s)", c->op, c->family,
                    family_names());
  if (c->variant && !variant_known)
    return ada_fail(ADA_EUNSUPPORTED, "%s: variant %s is unknown to the %s kernel famil%s for compute capability %d.%d",
                    c->op, c->variant, c->family ? c->family : family_names(), c->family ? "y" : "ies", major,
                    minor);
  shape_str(q, shape, sizeof shape);
  return ada_fail(ADA_EUNSUPPORTED,
                  "%s: no CUDA attention kernel family (%s) takes mode %s, q %s, block %d on compute capability %d.%d",
                  c->op, c->family ? c->family : family_names(), ada_attn_mode_name(c->mode), shape, (int)c->block,
                  major, minor);
}

ada_status ada_cuda_attention_plan(const ada_attn_call *c, ada_attn_plan *out) {
  ada_cuda_attn_plan pl;
  ada_status s = ada_cuda_attention_plan_full(c, &pl);
  if (!s) *out = pl.info;
  return s;
}

int ada_cuda_attention_launch(const ada_cuda_attn_plan *plan, const ada_attn_params *p, void *stream) {
  if (plan->family < 0 || plan->family >= N_FAMILIES) return (int)cudaErrorInvalidValue;
  return families[plan->family].launch(p, stream);
}
