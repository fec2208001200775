/* attention_sm90.cu: the Hopper family of the attention kernels (sm_90a): dense and block-sparse
 * attention with wgmma, TMA and warp specialization. Launcher: ada_launch_attention_sm90; what it
 * takes: ada_attention_sm90_supports (the attention plan asks it before choosing this family).
 *
 * One persistent CTA per SM, 3 warpgroups (384 threads):
 *   - warpgroup 0 is the producer: it gives up registers (setmaxnreg.dec to 24) and one thread
 *     issues the TMA loads: the work item's Q tile (128 rows x 128 dims), then for each key tile
 *     K and V (128 keys x 128 dims each) into a ring of STAGES shared-memory stages, each load
 *     completing on its stage's "full" mbarrier (expect_tx bytes), each stage reused only after
 *     the consumers arrive on its "empty" mbarrier;
 *   - warpgroups 1 and 2 are consumers (setmaxnreg.inc to 240), each owning 64 of the tile's 128
 *     query rows: S = Q K^T as 8 wgmma m64n128k16 from shared memory (f32 accumulators in
 *     registers), the online softmax on the accumulator fragments (exp2 with scale*log2(e) folded
 *     into one FFMA), P rounded to bf16 in registers, O += P V as 8 wgmma with A from registers
 *     and V read transposed (MN-major) from shared memory. Dense: the warpgroup's 4 warps meet at
 *     a named barrier every 4 key tiles (+8-10% on the H200, NOTES session 9). Sparse and fused
 *     walks (block 128) compute the rescale exponentials (and the mass factor) only in tiles
 *     where a row max of the warp moved (LAZY: sparse block 128 +2-3.5%, NOTES session 10);
 *   - fused pass: the consumers pre-add each tile's block-mass partials over a few lanes and store
 *     them into a mass slot of the tile's ring stage once the next tile's GEMMs are issued; warp
 *     1 + s of the producer warpgroup, the reducer of stage s, adds them up and writes the mass
 *     (NOTES sessions 11-13: 1.057x -> 1.00-1.03x of dense). The reducers' code stays small: a
 *     branch or loop there once cost the whole kernel its uniform registers (session 13).
 * Shared-memory tiles are TMA boxes of 64 dims x 128 rows with the 128-byte swizzle (a row of the
 * box is 128 bytes; 16-byte chunk c of row r sits at chunk c ^ (r & 7)), the layout wgmma reads
 * with a 128B-swizzle descriptor: K-major for Q and K (8-row groups 1024 bytes apart), MN-major
 * for V (8-key groups 1024 bytes apart, the two 64-dim halves 16 KiB apart).
 * Work items are (head, 128-row query tile), handed out inside the kernel: the producer takes the
 * next index of the walk with one atomicAdd on a per-launch counter as soon as it has issued the
 * loads of its current item, and passes it to the consumers (and the second producer thread of
 * block-64 sparse) through a two-slot queue in shared memory on mbarriers. The walk is head-major
 * for dense and fused (the CTAs in flight share a head's K and V in L2) and the layout's
 * longest-first order for sparse, so a CTA takes the longest item left when it frees up: per-head
 * densities that differ 10x leave no SM idle while others still hold several items.
 * Keys at or past kv_valid: the K and V tensor maps end at kv_valid, so TMA fills zeros past it,
 * and their scores are set to -inf in the tile that holds kv_valid. Query rows past sq are
 * zero-filled and never written.
 * Block 64 in passes (ada_attn_params.kv_split, kind SPARSE64X): each head's items once a pass over
 * a part of its key blocks; a pass after the first waits on the row's flag for the one before and
 * merges their out and lse by the LSEs (an option: NOTES, sixteenth session). Block 64 in one pass
 * with a sweep (ada_attn_params.sweep_ns): each row's walk starts where a global sweep has reached
 * and wraps around (an option until timed: NOTES, seventeenth session).
 * Supported: bf16 q/k/v of head dim 128 with 16-byte aligned rows (TMA strides), scale > 0,
 * out_dim == 128, DENSE, FUSED (mass blocks 64, 128) and SPARSE with layout blocks of 64 and 128.
 * Everything else goes to the sm80 family (kernels/attention_sm80.cu).
 */
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "../runtime/walk.h"
#include "attention_common.cuh"
#include "kernels.h"

namespace {

constexpr int kD = 128;       /* head dimension */
constexpr int kBM = 128;      /* query rows per work item (2 consumer warpgroups x 64) */
constexpr int kThreads = 384; /* producer warpgroup + 2 consumer warpgroups */

/* Kernel kinds: DENSE128 walks 128-key tiles, all of them (DENSE) or the layout row's blocks of
 * 128 (SPARSE), both consumer warpgroups on one K/V ring; FUSED64/128 are DENSE plus the block mass under
 * lse_in; SPARSE64 gives each consumer warpgroup its own 64-row query block, its own list of
 * 64-key blocks and its own K/V ring (filled by its own producer thread). */
enum Kind { DENSE128 = 0, FUSED64 = 1, SPARSE64 = 2, FUSED128 = 3, SPARSE64X = 4, SPARSE64S = 5 };
/* SPARSE64X: SPARSE64 in passes over the key blocks (ada_attn_params.kv_split), its own
 * instantiation so that the one-pass loop stays as it was (+10 instructions a tile otherwise) */
/* SPARSE64S: SPARSE64 with the sweep (ada_attn_params.sweep_ns), its own instantiation, so that
 * the other kinds compile as without it (the phase in the work queue's slots, the rotated walk) */
__host__ __device__ constexpr bool is64(int kind) { return kind == SPARSE64 || kind == SPARSE64X || kind == SPARSE64S; }
/* the passes of block 64 over the key blocks (kv_split > 0) */
__host__ __device__ inline int64_t passes64(const ada_attn_params &p) { return ((p.kv_valid + 63) / 64 + p.kv_split - 1) / p.kv_split; }
/* the fused pass with mass blocks of 64 (FUSED64) or 128 (FUSED128), a compile-time choice: with
 * 128 the two key halves of a tile are one block, 7 instructions a tile fewer */
[[maybe_unused]] __host__ __device__ constexpr bool is_fused(int kind) { return kind == FUSED64 || kind == FUSED128; }

/* keys per tile (176-key dense tiles in two stages were measured slower than 128 in three: NOTES) */
__host__ __device__ constexpr int key_tile(int kind) { return is64(kind) ? 64 : 128; }
__host__ __device__ constexpr int rings(int kind) { return is64(kind) ? 2 : 1; }
/* bytes of one 64-dim half of a key tile and of one ring stage (K and V) */
__host__ __device__ constexpr uint32_t khalf(int kind) { return (uint32_t)key_tile(kind) * 128; }
__host__ __device__ constexpr uint32_t stage_bytes(int kind) { return 4 * khalf(kind); }
constexpr uint32_t kQHalf = 128 * 128; /* a 64-dim half of the 128-row Q tile: 16 KiB */
constexpr uint32_t kQBytes = 2 * kQHalf;
/* smem: Q, the rings (ring r stage s at kQBytes + (r * ST + s) * stage_bytes, K then V), then the
 * barriers (8 bytes each): q_full, q_empty, then per ring k_full[ST], v_full[ST], kv_empty[ST],
 * then the work queue (sched_full[2], sched_empty[2], two int64 item slots: 48 bytes), then the
 * mass queue (fused: mass_full[ST], 32 bytes) and its ST slots, 16 byte aligned, slot s the warp
 * partials of the key tile in ring stage s: f32 [2 warpgroups][16 entries][4 warps] */
constexpr uint32_t kMassSlotBytes = 2 * 4 * 16 * 4;
__host__ __device__ constexpr uint32_t bar_off(int kind, int st) { return kQBytes + (uint32_t)(rings(kind) * st) * stage_bytes(kind); }
__host__ __device__ constexpr uint32_t sched_off(int kind, int st) { return bar_off(kind, st) + 8 * (2 + 3 * rings(kind) * st); }
__host__ __device__ constexpr uint32_t mq_off(int kind, int st) { return sched_off(kind, st) + 48; }
__host__ __device__ constexpr uint32_t mslot_off(int kind, int st) { return (mq_off(kind, st) + 32 + 15) & ~15u; }
__host__ __device__ constexpr uint32_t smem_bytes(int kind, int st) { return mslot_off(kind, st) + (uint32_t)st * kMassSlotBytes + 1024; /* + alignment slack */ }

struct Sm90Params {
  CUtensorMap tq, tk, tv; /* 3D maps {dim, head, row} of q, k, v (k, v end at kv_valid; boxes of key_tile rows) */
  ada_attn_params p;
  unsigned long long *sched; /* the work counter of this launch (zeroed before it) */
};

/* Work counters, one per launch in flight: launch n uses slot n % kSchedSlots, zeroed in its stream
 * before the kernel (so up to kSchedSlots launches may overlap on different streams). */
constexpr int kSchedSlots = 64;
__device__ unsigned long long g_sched[kSchedSlots];

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ADA_SM90_DEVICE 1
#endif

#ifdef ADA_SM90_DEVICE
constexpr float kLog2e = 1.4426950408889634f;

using ada_attn::ex2;
using ada_attn::pack_bf16;
using ada_attn::smem_u32;

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done;
  do {
    asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done)
                 : "r"(bar), "r"(parity)
                 : "memory");
  } while (!done);
}

/* TMA: box {64 dims, 1 head, 128 rows} at coordinates (c0 dim, c1 head, c2 row) into dst. */
__device__ __forceinline__ void tma_load(uint32_t dst, const CUtensorMap *map, int c0, int c1, int c2, uint32_t bar) {
  asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(
                   dst),
               "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
               : "memory");
}

/* tma_load with an L2 cache policy (createpolicy): ada_attn_params.l2_hint. */
__device__ __forceinline__ void tma_load_hint(uint32_t dst, const CUtensorMap *map, int c0, int c1, int c2, uint32_t bar,
                                              uint64_t policy) {
  asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1, {%2, %3, %4}], [%5], %6;\n" ::"r"(
                   dst),
               "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar), "l"(policy)
               : "memory");
}
__device__ __forceinline__ uint64_t policy_evict_first() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(p));
  return p;
}
__device__ __forceinline__ uint64_t policy_evict_last() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;\n" : "=l"(p));
  return p;
}

/* wgmma shared-memory descriptor, 128-byte swizzle: start address and leading byte offset in the
 * low word (desc_lo), stride byte offset and the swizzle mode in the high word (desc_hi) */
__device__ __forceinline__ uint32_t desc_lo(uint32_t addr, uint32_t lbo) { return ((addr & 0x3FFFFu) >> 4) | ((lbo >> 4) << 16); }
__device__ __forceinline__ constexpr uint32_t desc_hi(uint32_t sbo) { return (sbo >> 4) | (1u << 30); }
__device__ __forceinline__ uint64_t desc128(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  /* the low word as desc_lo's, widened before the OR: the PV descriptors built from desc_lo and
   * desc_pack instead made the fused st3 loop 727 -> 735 instructions (twelfth session): not kept */
  return (uint64_t)((addr & 0x3FFFFu) >> 4) | ((uint64_t)(lbo >> 4) << 16) | ((uint64_t)desc_hi(sbo) << 32);
}
/* a low word under the high word of every descriptor here (stride 1024) */
__device__ __forceinline__ uint64_t desc_pack(uint32_t lo) { return ((uint64_t)desc_hi(1024) << 32) | lo; }

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/* keeps the compiler from moving accumulator accesses across the asynchronous wgmma */
template <int N> __device__ __forceinline__ void fence_regs(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}

/* the accumulator operands of a wgmma: d[0..N-1] read and written */
#define ADA_WGMMA_D8(d, i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define ADA_WGMMA_D32(d) ADA_WGMMA_D8(d, 0), ADA_WGMMA_D8(d, 8), ADA_WGMMA_D8(d, 16), ADA_WGMMA_D8(d, 24)
#define ADA_WGMMA_D64(d) ADA_WGMMA_D32(d), ADA_WGMMA_D8(d, 32), ADA_WGMMA_D8(d, 40), ADA_WGMMA_D8(d, 48), ADA_WGMMA_D8(d, 56)

/* d[64] (+)= A(smem desc) * B(smem desc), K-major A and B; scale_d 0 overwrites d. */
__device__ __forceinline__ void wgmma_ss(float (&d)[64], uint64_t da, uint64_t db, int scale_d) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
               "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
               "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "
               "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "
               "%62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
               : ADA_WGMMA_D64(d)
               : "l"(da), "l"(db), "r"(scale_d));
}

/* d[32] (+)= A(smem desc) * B(smem desc), m64n64k16, K-major A and B; scale_d 0 overwrites d. */
__device__ __forceinline__ void wgmma_ss(float (&d)[32], uint64_t da, uint64_t db, int scale_d) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
               "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
               : ADA_WGMMA_D32(d)
               : "l"(da), "l"(db), "r"(scale_d));
}
/* d[64] += A(registers a[4], the m16n8k16 A-fragment layout per warp) * B(smem desc), B MN-major. */
__device__ __forceinline__ void wgmma_rs(float (&d)[64], const uint32_t (&a)[4], uint64_t db) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
               "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
               "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "
               "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "
               "%62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
               : ADA_WGMMA_D64(d)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

/* The key blocks a consumer warpgroup walks for work item (h, qt): n blocks of key_tile keys,
 * block t starting at key j0(t). */
template <int KT, bool ROT = false> struct Tiles {
  const int32_t *list; /* SPARSE: the layout row's key blocks; NULL: all blocks in order */
  int n;
  int rot; /* ROT (SPARSE64S, ada_attn_params.sweep_ns): the walk starts at list[rot] and wraps around */
  __device__ __forceinline__ int64_t j0(int t) const {
    if (!ROT) return list ? (int64_t)list[t] * KT : (int64_t)t * KT;
    const int u = t + rot >= n ? t + rot - n : t + rot;
    return (int64_t)list[u] * KT;
  }
};
/* The sweep (ada_attn_params.sweep_ns, seventeenth session): block 64 in one pass starts each
 * row's walk at the fraction of its key blocks that a global sweep has reached; the sweep's period
 * is one item (the head's mean row length + 2, times sweep_ns a step; %globaltimer), so that the
 * CTAs in flight read the same stretch of a head's K/V whatever the rows' lengths
 * (kernels/testbed/l2_sim.lua: 720p d0.1 L2 hit rate 0.832 -> 0.955 on per-block draws, row-wise
 * top-k 0.955 unchanged). The producer takes the phase with the item and hands it on in the work
 * queue's slot: walk index | phase (16 bits) << kPhaseShift. */
constexpr int kPhaseShift = 44;

/* the tiles of warpgroup c (SPARSE64: query block 2 qt + c; otherwise the whole 128-row tile) */
template <int KIND>
__device__ __forceinline__ Tiles<key_tile(KIND), KIND == SPARSE64S> item_tiles(const ada_attn_params &p, int h, int64_t qt,
                                                                             int64_t nqt, int c, int pass = 0,
                                                                             uint32_t phase = 0) {
  constexpr int KT = key_tile(KIND);
  Tiles<KT, KIND == SPARSE64S> r;
  r.list = nullptr;
  r.rot = 0;
  /* the fused walk is dense: compiled out of it, the sparse branch (and in the reducers the kv_valid
   * zeroing loop, now the launcher's) no longer costs the whole kernel its uniform registers:
   * ptxas kept the consumers' 8 Q descriptors in uniform registers again (fused st3 loop 716 ->
   * 693 instructions with mass 128, 725 -> 702 with 64; dense 686) */
  if (!is_fused(KIND) && p.mode == ADA_ATTN_SPARSE) {
    const int64_t nqb = is64(KIND) ? (p.sq + 63) / 64 : nqt, qb = is64(KIND) ? 2 * qt + c : qt;
    if (qb >= nqb) {
      r.n = 0;
      return r;
    }
    const int64_t *o = p.offsets + (int64_t)h * (nqb + 1) + qb;
    r.list = p.indices + o[0];
    r.n = (int)(o[1] - o[0]);
    while (r.n > 0 && r.j0(r.n - 1) >= p.kv_valid) r.n--; /* ascending: drop blocks past kv_valid (rot is 0 here) */
    if (KIND == SPARSE64S) r.rot = (int)(((uint64_t)phase * (uint32_t)r.n) >> 16);
    if (KIND == SPARSE64X) { /* pass k: the blocks in [k kv_split, (k + 1) kv_split), from the
      * places split_prep found (a binary search here, 8 dependent loads a bound, cost 5-10%) */
      const uint32_t *b = p.split_flags + 4 * ((int64_t)h * nqb + qb);
      const int a = pass > 0 ? (int)b[pass] : 0, e = pass < 3 && b[pass + 1] != 0xffffffffu ? (int)b[pass + 1] : r.n;
      r.n = e - a;
      r.list += a;
    }
  } else {
    r.n = (int)((p.kv_valid + KT - 1) / KT);
  }
  return r;
}

/* The w-th work item of the persistent walk (item = h * nqt + qt). DENSE and fused: head-major,
 * so the CTAs in flight share a head's K and V in L2. SPARSE over blocks of 128: the layout's
 * longest-first order. SPARSE64: head-major too (the layout's order counts 64-row blocks), with
 * each head's query tiles rotated by 37 h: when nqt is a multiple of the grid (540p: 528 = 4 x 132)
 * an unrotated walk puts the full text rows of every head on the same few CTAs (density 0.1 ran at
 * 168 TFLOP/s, H200 2026-12-03); a head-minor walk fixed that (291) but lost the L2 reuse at 720p
 * (410 -> 290). The rotation keeps a wave inside one head (consecutive tiles, wrapping) and sends
 * head h's text rows to CTA (qt_text - 37 h) mod grid, a different one per head (37 is coprime
 * with 132). With p.walk (the plan's variant "tail") the same walk with the last heads' long items
 * moved up, so that they end with the rest (runtime/walk.h, the layout mirror's). */
template <int KIND>
__device__ __forceinline__ int64_t item_of(const ada_attn_params &p, int64_t w, int64_t nqt, int npass, int &pass) {
  pass = 0;
  if (KIND == SPARSE64X) { /* passes: head h's tiles over its first kv_split key blocks, then the next ones... */
    const int64_t h = w / (npass * nqt), k = w - h * npass * nqt;
    pass = (int)(k / nqt);
    return ada_walk64_base(h * nqt + k - pass * nqt, nqt);
  }
  if (KIND == SPARSE64 || KIND == SPARSE64S) {
    /* the walk: the same order, but the long items that would end last moved up (runtime/walk.h) */
    return p.walk ? (int64_t)p.walk[w] : ada_walk64_base(w, nqt);
  }
  return p.order ? (int64_t)p.order[w] : w;
}

/* the passes done of a 64-row block (block 64 in passes): written with release after a pass's out
 * and lse, read with acquire by the next pass before it merges */
__device__ __forceinline__ void flag_release(uint32_t *f, uint32_t v) { asm volatile("st.release.gpu.global.u32 [%0], %1;\n" ::"l"(f), "r"(v) : "memory"); }
__device__ __forceinline__ uint32_t flag_acquire(const uint32_t *f) {
  uint32_t v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(f) : "memory");
  return v;
}

/* Named barriers 1 and 2 order the two consumer warpgroups' wgmma issue (PP): warpgroup c waits
 * on barrier 1 + c, issues, then lets the other one go, so one warpgroup's softmax overlaps the
 * other's GEMMs. Barrier 3 + c (one warpgroup) orders the mass partials and, in dense walks,
 * brings the warpgroup's warps together every SYNC tiles. */
__device__ __forceinline__ void pp_sync(int c) { asm volatile("bar.sync %0, 256;\n" ::"r"(1 + c) : "memory"); }
__device__ __forceinline__ void pp_arrive(int c) { asm volatile("bar.arrive %0, 256;\n" ::"r"(2 - c) : "memory"); }
__device__ __forceinline__ void bar_wg(int c) { asm volatile("bar.sync %0, 128;\n" ::"r"(3 + c) : "memory"); }
template <int N> __device__ __forceinline__ void fence_a(uint32_t (&a)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) asm volatile("" : "+r"(a[i][j])::"memory");
}

template <typename OutT, int KIND, int ST, bool PP, int SYNC>
__global__ void __launch_bounds__(kThreads, 1) attn_sm90_kernel(const __grid_constant__ Sm90Params P) {
  constexpr int KT = key_tile(KIND), NJ = KT / 8, NR = rings(KIND);
  /* LAZY: alpha's exponentials, and the fused pass's mass factor 2^(max - lse_in) of each row,
   * only in tiles where some row max of the warp moved, which after the first tiles is rare.
   * H200 test bed (tenth session, NOTES): sparse block 128 +2-3.5% in the same call, fused 720p
   * mass 64 +2.5% in one call and even in the next. Not taken by the dense walk (DENSE128 with
   * the SYNC barrier: the launcher's dense instantiations; 0.8% slower with it) nor by block 64
   * (even in the test bed, 3-6% lower in one attention bench). Dense without the barrier but
   * LAZY runs as fast as with the barrier (720p 639-641 against 642-647 TFLOP/s). */
  constexpr bool LAZY = !is64(KIND) && !(KIND == DENSE128 && SYNC > 0);
  constexpr uint32_t KH = khalf(KIND), TILE = 2 * KH, STAGE = stage_bytes(KIND);
  static_assert(!(PP && is64(KIND)), "ping-pong needs equal tile counts in both warpgroups");
  static_assert(SYNC == 0 || KIND == DENSE128, "the periodic warpgroup barrier is for dense walks");
  const ada_attn_params &p = P.p;
  extern __shared__ unsigned char smem_raw[];
  unsigned char *smem = reinterpret_cast<unsigned char *>(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
  const uint32_t base = smem_u32(smem);
  const uint32_t bar_q_full = base + bar_off(KIND, ST), bar_q_empty = bar_q_full + 8;
  /* ring r's barriers */
  auto k_full = [&](int r, uint32_t s) { return bar_q_full + 16 + 8 * (3 * ST * r + s); };
  auto v_full = [&](int r, uint32_t s) { return bar_q_full + 16 + 8 * (3 * ST * r + ST + s); };
  auto kv_empty = [&](int r, uint32_t s) { return bar_q_full + 16 + 8 * (3 * ST * r + 2 * ST + s); };
  auto k_smem = [&](int r, uint32_t s) { return base + kQBytes + ((uint32_t)r * ST + s) * STAGE; };

  const int tid = threadIdx.x, wg = tid / 128;
  const int64_t nqt = (p.sq + kBM - 1) / kBM;
  /* block 64 in passes walks every (head, tile) once a pass */
  const int npass = KIND == SPARSE64X ? (int)passes64(p) : 1;
  const int64_t items = (int64_t)p.heads * nqt * npass;
  /* the work queue: slot s holds the walk index of the next item (-1: no more) */
  const uint32_t sq_base = base + sched_off(KIND, ST);
  auto sched_full = [&](uint32_t s) { return sq_base + 8 * s; };
  auto sched_empty = [&](uint32_t s) { return sq_base + 16 + 8 * s; };
  volatile int64_t *slots = reinterpret_cast<volatile int64_t *>(smem + sched_off(KIND, ST) + 32);
  /* a consumer or reducer warp takes the i-th item of the walk from the queue: false when it is
   * over, else its head h and query tile qt (warp-uniform: lane 0's read through a shuffle, so
   * the wgmma descriptors built from them live in uniform registers) */
  auto take_item = [&](uint32_t i, int lane, int &h, int64_t &qt, int &pass, uint32_t &phase) {
    const uint32_t ss = i & 1;
    mbar_wait(sched_full(ss), (i >> 1) & 1);
    /* lane 0 alone reads the slot, then arrives (release) in its own program order: the slot's
     * reuse is ordered after every read by the mbarrier alone, which racecheck follows (a read by
     * every lane, ordered through __syncwarp into lane 0's arrival, it did not) */
    int64_t raw = 0;
    if (lane == 0) {
      raw = slots[ss];
      mbar_arrive(sched_empty(ss));
    }
    raw = __shfl_sync(0xffffffffu, raw, 0);
    if (raw < 0) return false;
    const int64_t w = KIND == SPARSE64S ? raw & ((1ll << kPhaseShift) - 1) : raw;
    phase = KIND == SPARSE64S ? (uint32_t)(raw >> kPhaseShift) : 0u;
    const int64_t item = item_of<KIND>(p, w, nqt, npass, pass);
    h = (int)(item / nqt);
    qt = item - (int64_t)h * nqt;
    return true;
  };
  /* fused: the mass queue, slot s for the key tile in ring stage s; the reducer frees a slot by
   * its arrival on the stage's kv_empty, so a consumer that holds the stage's K finds the slot free */
  const uint32_t mq_base = base + mq_off(KIND, ST), ms_base = base + mslot_off(KIND, ST);
  auto mass_full = [&](uint32_t s) { return mq_base + 8 * s; };
  constexpr int kReducers = is_fused(KIND) ? ST : 0; /* the mass reducer warps take the work queue too */

  if (tid == 0) {
    mbar_init(bar_q_full, 1);
    mbar_init(bar_q_empty, 8); /* one arrival per consumer warp */
    for (int r = 0; r < NR; r++)
      for (int s = 0; s < ST; s++) {
        mbar_init(k_full(r, s), 1);
        mbar_init(v_full(r, s), 1);
        mbar_init(kv_empty(r, s), 8 / NR + (is_fused(KIND) ? 32 : 0)); /* the warps that read the ring, its reducer's lanes */
        if (is_fused(KIND)) mbar_init(mass_full(s), 128);              /* 16 lanes of each consumer warp */
      }
    for (int s = 0; s < 2; s++) {
      mbar_init(sched_full(s), 1);
      mbar_init(sched_empty(s), 8 + (NR - 1) + kReducers); /* consumer warps, second producer, reducers */
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (wg == 0) { /* ---- producer: thread 32 r fills ring r (thread 0 also loads Q) ---- */
    asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n" ::: "memory");
    const int ring = tid / 32;
    if (is_fused(KIND) && ring >= 1 && ring <= ST) { /* ---- the mass reducers ----
      * Warp 1 + s takes the key tiles of ring stage s, in the consumers' order, so each of the
      * SM's 4 schedulers issues a third of the reducers' work. For each such tile it reads the 16
      * pre-added partials of each of the 8 consumer warps from mass slot s (lane 16 c + j loads
      * warp 0..3's entry j of warpgroup c as one float4; FUSED64: entry 8 half + k, 8 lanes then
      * meet in 3 shuffles; FUSED128: all 32 in 5), frees the slot and the stage (kv_empty), scales
      * by 1 / the valid rows and writes the mass. One writer per entry, a fixed order: the same
      * bits every run, no atomics. */
      constexpr int mb = KIND == FUSED128 ? 128 : 64;
      const int lane = tid & 31;
      const uint32_t stage = (uint32_t)ring - 1, la = ms_base + stage * kMassSlotBytes + 16 * (uint32_t)lane;
      const int64_t nmqb = (p.sq + mb - 1) / mb, nmkb = (p.skv + mb - 1) / mb, nkvm = (p.kv_valid + mb - 1) / mb;
      uint32_t mt = 0, use = 0; /* tiles of the walk so far, tiles of stage s taken */
      int h, pass;
      int64_t qt;
      uint32_t phase;
      for (uint32_t i = 0; take_item(i, lane, h, qt, pass, phase); i++) {
        const int n = item_tiles<KIND>(p, h, qt, nqt, 0).n;
        /* the writers: mb 64 lanes 0, 8, 16, 24 (query block 2 qt + lane / 16, key blocks 2 t +
         * lane / 8 % 2 below kv_valid), mb 128 lane 0 (query block qt, key block t) */
        float *dst = nullptr;
        int lim = 0, step = 1;
        float minv = 0.0f;
        if (mb == 64 ? (lane & 7) == 0 : lane == 0) {
          const int64_t mq = mb == 64 ? 2 * qt + (lane >> 4) : qt;
          if (mq < nmqb) {
            float *row = p.mass + ((int64_t)h * nmqb + mq) * nmkb;
            minv = 1.0f / (float)(p.sq - mq * mb < mb ? p.sq - mq * mb : mb);
            if (mb == 64) { /* blocks past kv_valid: the launcher zeroes them */
              const int hf = (lane >> 3) & 1;
              dst = row + hf;
              lim = (int)((nkvm - hf + 1) / 2);
              step = 2;
            } else {
              dst = row;
              lim = n;
            }
          }
        }
        /* this warp's first tile of the item: the first t with (mt + t) % ST == stage */
        int t = (int)((stage + ST - mt % ST) % ST);
        mt += (uint32_t)n;
        for (; t < n; t += ST, use++) {
          mbar_wait(mass_full(stage), use & 1);
          float4 v;
          asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "r"(la) : "memory");
          mbar_arrive(kv_empty(0, stage)); /* each lane after its own load (release): slot and stage free */
          float x = (v.x + v.y) + (v.z + v.w);
          x += __shfl_xor_sync(0xffffffffu, x, 1);
          x += __shfl_xor_sync(0xffffffffu, x, 2);
          x += __shfl_xor_sync(0xffffffffu, x, 4);
          if (KIND == FUSED128) {
            x += __shfl_xor_sync(0xffffffffu, x, 8);
            x += __shfl_xor_sync(0xffffffffu, x, 16);
          }
          if (t < lim) dst[(int64_t)t * step] = x * minv;
        }
      }
      return;
    }
    if ((tid & 31) != 0 || ring >= NR) return;
    if (ring == 0) {
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&P.tq)) : "memory");
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&P.tk)) : "memory");
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&P.tv)) : "memory");
    }
    uint32_t it = 0, qi = 0;
    /* the policies are made at each load: this warp has 24 registers */
    const bool hint_q = (p.l2_hint & ADA_L2_Q_FIRST) != 0, hint_kv = (p.l2_hint & ADA_L2_KV_LAST) != 0;
    for (uint32_t i = 0;; i++) {
      const uint32_t ss = i & 1, sph = (i >> 1) & 1;
      int64_t w;
      uint32_t phase = 0;
      if (ring == 0) { /* takes the next item and hands it on */
        w = p.static_walk ? (int64_t)blockIdx.x + (int64_t)i * gridDim.x : (int64_t)atomicAdd(P.sched, 1ull);
        if (w >= items) w = -1;
        if (KIND == SPARSE64S && w >= 0) { /* the sweep's phase now, for the item's head */
          int ps;
          const int64_t hh = item_of<KIND>(p, w, nqt, 1, ps) / nqt, nqb = (p.sq + 63) / 64;
          const int64_t *o = p.offsets + hh * (nqb + 1);
          const uint64_t per64 = (uint64_t)((o[nqb] - o[0]) / nqb + 2) * (uint64_t)p.sweep_ns >> 6; /* 64 ns units */
          const uint32_t per = per64 > 0xffffffffull ? 0xffffffffu : (uint32_t)per64;
          uint64_t T;
          asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(T));
          phase = per ? (uint32_t)(((uint64_t)((uint32_t)(T >> 6) % per) << 16) / per) : 0u;
        }
        mbar_wait(sched_empty(ss), sph ^ 1);
        slots[ss] = KIND != SPARSE64S || w < 0 ? w : w | ((int64_t)phase << kPhaseShift);
        mbar_arrive(sched_full(ss));
      } else {
        mbar_wait(sched_full(ss), sph);
        const int64_t raw = slots[ss];
        mbar_arrive(sched_empty(ss));
        w = KIND != SPARSE64S || raw < 0 ? raw : raw & ((1ll << kPhaseShift) - 1);
        phase = KIND != SPARSE64S || raw < 0 ? 0u : (uint32_t)(raw >> kPhaseShift);
      }
      if (w < 0) break;
      int pass;
      const int64_t item = item_of<KIND>(p, w, nqt, npass, pass);
      const int h = (int)(item / nqt);
      const int64_t qt = item - (int64_t)h * nqt;
      const auto tl = item_tiles<KIND>(p, h, qt, nqt, ring, pass, phase);
      if (ring == 0) {
        const auto t1 = NR == 2 ? item_tiles<KIND>(p, h, qt, nqt, 1, pass) : tl;
        if (tl.n + t1.n > 0) { /* the consumers read Q only when some warpgroup has tiles */
          mbar_wait(bar_q_empty, (qi & 1) ^ 1);
          mbar_expect_tx(bar_q_full, kQBytes);
          for (int hf = 0; hf < 2; hf++) {
            if (hint_q) tma_load_hint(base + hf * kQHalf, &P.tq, hf * 64, h, (int)(qt * kBM), bar_q_full, policy_evict_first());
            else tma_load(base + hf * kQHalf, &P.tq, hf * 64, h, (int)(qt * kBM), bar_q_full);
          }
          qi++;
        }
      }
      for (int t = 0; t < tl.n; t++, it++) {
        const uint32_t s = it % ST, ph = (it / ST) & 1;
        mbar_wait(kv_empty(ring, s), ph ^ 1);
        const int j0 = (int)tl.j0(t);
        const uint32_t kd = k_smem(ring, s), vd = kd + TILE;
        mbar_expect_tx(k_full(ring, s), TILE);
        for (int hf = 0; hf < 2; hf++) {
          if (hint_kv) tma_load_hint(kd + hf * KH, &P.tk, hf * 64, h, j0, k_full(ring, s), policy_evict_last());
          else tma_load(kd + hf * KH, &P.tk, hf * 64, h, j0, k_full(ring, s));
        }
        mbar_expect_tx(v_full(ring, s), TILE);
        for (int hf = 0; hf < 2; hf++) {
          if (hint_kv) tma_load_hint(vd + hf * KH, &P.tv, hf * 64, h, j0, v_full(ring, s), policy_evict_last());
          else tma_load(vd + hf * KH, &P.tv, hf * 64, h, j0, v_full(ring, s));
        }
      }
    }
    return;
  }

  /* ---- consumers: warpgroup c = wg - 1 owns rows 64 c .. 64 c + 63 of the tile ----
   * Software pipeline per item (intra-warpgroup overlap): S_0 = Q K_0^T, softmax; then for each
   * t >= 1 issue S_t = Q K_t^T and O += P_{t-1} V_{t-1} together, run the softmax of S_t while the
   * PV product runs, wait for it, rescale O to the new max and round P_t to bf16; finally O +=
   * P_{n-1} V_{n-1}. */
  asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n" ::: "memory");
  /* c comes through a shuffle from lane 0 so that the compiler sees it warp-uniform: the wgmma
   * descriptors built from it then live in uniform registers (no R2UR per descriptor) */
  const int c = __shfl_sync(0xffffffffu, wg - 1, 0), lt = tid - 128 * wg, warp = lt / 32, lane = lt & 31;
  const int ring = NR == 2 ? c : 0;
  const int g = lane >> 2, tig = lane & 3;
  const float sl2 = p.scale * kLog2e;
  OutT *out = static_cast<OutT *>(p.out);
  const int64_t o_rs = (int64_t)p.heads * p.out_dim;
  /* fused: where this lane's pre-added partial goes in a mass slot, [warpgroup c][entry][warp]:
   * FUSED64 lanes with lane & 8 == 0 at entry 8 (lane / 16) + lane % 8, FUSED128 lanes 0-15 at
   * entry lane */
  const uint32_t ms_lane = ms_base + (uint32_t)((c * 16 + (KIND == FUSED128 ? lane & 15 : (lane >> 4) * 8 + (lane & 7))) * 4 + warp) * 4;
  uint32_t it = 0, qi = 0;
  if (PP && c == 1) pp_arrive(c); /* warpgroup 0 issues first */

  int h, pass;
  int64_t qt;
  uint32_t phase;
  for (uint32_t i = 0; take_item(i, lane, h, qt, pass, phase); i++) {
    const auto tl = item_tiles<KIND>(p, h, qt, nqt, c, pass, phase);
    const int other_n = NR == 2 ? item_tiles<KIND>(p, h, qt, nqt, 1 - c, pass).n : tl.n;
    const int64_t r0 = qt * kBM + c * 64 + warp * 16 + g; /* this thread's rows: r0, r0 + 8 */

    float o[64], sc[KT / 2];
    uint32_t pa[KT / 16][4];
#pragma unroll
    for (int i = 0; i < 64; i++) o[i] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, alpha[2] = {1.0f, 1.0f};
    bool chg = true;               /* LAZY: some row max of the warp moved in this tile */
    float fr[2] = {0.0f, 0.0f};    /* LAZY fused: 2^(scale max - lse_in) of the two rows */

    /* fused: lse_in of the rows (log2 units) */
    float lc2[2] = {0.0f, 0.0f};
    if (is_fused(KIND)) {
      for (int rh = 0; rh < 2; rh++) {
        const int64_t row = r0 + 8 * rh;
        lc2[rh] = row < p.sq ? p.lse_in[(int64_t)h * p.sq + row] * kLog2e : INFINITY;
        fr[rh] = ex2(fminf(-lc2[rh], 64.0f)); /* the factor of a row whose max is still -inf (ms 0) */
      }
    }

    /* descriptors: a shared address's field is (addr & 0x3FFFF) >> 4 and shared memory ends below
     * 0x40000, so desc128(a + d) = desc128(a) + d / 16 for the 16-byte multiples d added here; the
     * sums are 32-bit (desc_lo) under the one high word of every descriptor here (stride 1024, the
     * 128-byte swizzle): ptxas then adds in 32 bits, with no carries into the high word */
    auto issue_s = [&](uint32_t s) {
      const uint32_t qd = desc_lo(base + (uint32_t)c * 8192, 16), kd = desc_lo(k_smem(ring, 0), 16) + (s * STAGE >> 4);
#pragma unroll
      for (int kk = 0; kk < kD / 16; kk++) {
        const uint32_t qo = (uint32_t)(kk >> 2) * kQHalf + (uint32_t)(kk & 3) * 32;
        const uint32_t ko = (uint32_t)(kk >> 2) * KH + (uint32_t)(kk & 3) * 32;
        wgmma_ss(sc, desc_pack(qd + (qo >> 4)), desc_pack(kd + (ko >> 4)), kk > 0);
      }
    };
    auto issue_pv = [&](uint32_t s) {
      const uint64_t vd = desc128(k_smem(ring, 0) + TILE, KH, 1024) + (s * STAGE >> 4);
#pragma unroll
      for (int kk = 0; kk < KT / 16; kk++) wgmma_rs(o, pa[kk], vd + (uint32_t)kk * (2048 >> 4));
    };
    /* masks keys past kv_valid, updates m and l, leaves exp2 of the scores in sc and the O
     * rescale factors in alpha; fused: the tile's mass partials (FUSED64: of the two 64-key
     * halves, mhi stays 0 for FUSED128) */
    auto softmax = [&](int64_t j0, float &mlo, float &mhi) {
      if (j0 + KT > p.kv_valid) {
#pragma unroll
        for (int i = 0; i < KT / 2; i++)
          if (j0 + (i >> 2) * 8 + 2 * tig + (i & 1) >= p.kv_valid) sc[i] = -INFINITY;
      }
      mlo = mhi = 0.0f;
      if (LAZY) { /* the exponentials of alpha (and the mass factor) only when some row max moved */
        float mxs[2];
#pragma unroll
        for (int rh = 0; rh < 2; rh++) {
          float mx = m[rh];
#pragma unroll
          for (int j = 0; j < NJ; j++) mx = fmaxf(mx, fmaxf(sc[4 * j + 2 * rh], sc[4 * j + 2 * rh + 1]));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mxs[rh] = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        }
        chg = __any_sync(0xffffffffu, mxs[0] != m[0] || mxs[1] != m[1]);
        alpha[0] = alpha[1] = 1.0f;
        if (chg) {
#pragma unroll
          for (int rh = 0; rh < 2; rh++) {
            const float mx = mxs[rh];
            alpha[rh] = mx == m[rh] ? 1.0f : ex2((m[rh] - mx) * sl2);
            if (is_fused(KIND)) fr[rh] = ex2(fminf((mx == -INFINITY ? 0.0f : mx * sl2) - lc2[rh], 64.0f));
            m[rh] = mx;
          }
        }
      }
#pragma unroll
      for (int rh = 0; rh < 2; rh++) {
        if (!LAZY) {
          float mx = m[rh];
#pragma unroll
          for (int j = 0; j < NJ; j++) mx = fmaxf(mx, fmaxf(sc[4 * j + 2 * rh], sc[4 * j + 2 * rh + 1]));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          alpha[rh] = mx == m[rh] ? 1.0f : ex2((m[rh] - mx) * sl2);
          m[rh] = mx;
        }
        const float ms = m[rh] == -INFINITY ? 0.0f : m[rh] * sl2;
        float rs[2] = {0.0f, 0.0f};
#pragma unroll
        for (int j = 0; j < NJ; j++) {
#pragma unroll
          for (int e = 0; e < 2; e++) {
            const float pv = ex2(fmaf(sc[4 * j + 2 * rh + e], sl2, -ms));
            sc[4 * j + 2 * rh + e] = pv;
            rs[j >= NJ / 2] += pv;
          }
        }
        l[rh] = fmaf(l[rh], alpha[rh], rs[0] + rs[1]);
        if (is_fused(KIND)) { /* f capped at 2^64 so that a row with no keys (rs 0) adds 0, never 0 x inf */
          const float f = LAZY ? fr[rh] : ex2(fminf(ms - lc2[rh], 64.0f));
          if (KIND == FUSED128) {
            mlo = fmaf(rs[0] + rs[1], f, mlo);
          } else {
            mlo = fmaf(rs[0], f, mlo);
            mhi = fmaf(rs[1], f, mhi);
          }
        }
      }
    };
    /* fused: the tile's mass partials of this thread's two rows are pre-added over lanes and 16
     * lanes store them into the mass slot of the tile's ring stage s for a reducer warp, which
     * does the rest. FUSED64 (mlo, mhi: the two 64-key halves): over the 4 lanes L, L ^ 8, L ^ 16,
     * L ^ 24 in two shuffles, the first one transposed (lanes 0-15 keep half 0, 16-31 half 1)
     * and made by fold_mass right after the tile's softmax, so that the shuffle left for the push
     * is one, as in FUSED128 (mlo, the whole tile: over L and L ^ 16). ptxas hoists the push's
     * shuffles above the GEMM issue; with two chained ones, the second QK HGMMA waited on both
     * (720p mass 64 test bed 274 -> 290 ms once the Q descriptors no longer filled the gap). A
     * reduction over the warpgroup here cost ~40 instructions a tile (9% of the loop, tenth
     * session's profile). No wait: K of stage s came after the reducer freed the slot */
    auto fold_mass = [&](float &mlo, float mhi) {
      if (KIND == FUSED64) {
        const bool b4 = lane & 16;
        mlo = (b4 ? mhi : mlo) + __shfl_xor_sync(0xffffffffu, b4 ? mlo : mhi, 16);
      }
    };
    auto push_mass = [&](uint32_t s, float mf) {
      const float x = mf + __shfl_xor_sync(0xffffffffu, mf, KIND == FUSED128 ? 16 : 8);
      if (KIND == FUSED128 ? lane < 16 : (lane & 8) == 0) {
        asm volatile("st.shared.f32 [%0], %1;" ::"r"(ms_lane + s * kMassSlotBytes), "f"(x) : "memory");
        mbar_arrive(mass_full(s));
      }
    };
    auto to_p = [&]() {
#pragma unroll
      for (int kk = 0; kk < KT / 16; kk++) {
        pa[kk][0] = pack_bf16(sc[8 * kk], sc[8 * kk + 1]);
        pa[kk][1] = pack_bf16(sc[8 * kk + 2], sc[8 * kk + 3]);
        pa[kk][2] = pack_bf16(sc[8 * kk + 4], sc[8 * kk + 5]);
        pa[kk][3] = pack_bf16(sc[8 * kk + 6], sc[8 * kk + 7]);
      }
    };

    if (tl.n + other_n > 0) {
      mbar_wait(bar_q_full, qi & 1);
      qi++;
    }
    if (tl.n == 0 && other_n > 0 && lane == 0) mbar_arrive(bar_q_empty); /* this warpgroup reads no Q */
    if (tl.n > 0) {
      float mlo, mhi;
      uint32_t s = it % ST;
      mbar_wait(k_full(ring, s), (it / ST) & 1);
      if (PP) pp_sync(c);
      wgmma_fence();
      issue_s(s);
      wgmma_commit();
      if (PP) pp_arrive(c);
      wgmma_wait<0>();
      fence_regs(sc);
      if (tl.n == 1 && lane == 0) mbar_arrive(bar_q_empty); /* Q is no longer read */
      softmax(tl.j0(0), mlo, mhi);
      fold_mass(mlo, mhi);
      to_p();
      for (int t = 1; t < tl.n; t++) {
        const uint32_t sp = it % ST, php = (it / ST) & 1; /* tile t - 1 */
        it++;
        s = it % ST;
        mbar_wait(k_full(ring, s), (it / ST) & 1);
        mbar_wait(v_full(ring, sp), php);
        if (PP) pp_sync(c);
        wgmma_fence();
        issue_s(s);
        wgmma_commit();
        issue_pv(sp);
        wgmma_commit();
        if (PP) pp_arrive(c);
        /* fused: tile t - 1's mass partials to the reducers while the GEMMs run (pushed whole
         * right after its softmax, the shuffle chain delayed the next issue: 2% of the pass) */
        if (is_fused(KIND)) push_mass(sp, mlo);
        wgmma_wait<1>();
        fence_regs(sc);
        if (t == tl.n - 1 && lane == 0) mbar_arrive(bar_q_empty);
        softmax(tl.j0(t), mlo, mhi);
        fold_mass(mlo, mhi);
        /* SYNC: the warpgroup's 4 warps meet every SYNC tiles (dense and fused walks): H200 test
         * bed, same call, dense 720p 577 -> 633 TFLOP/s with the period a constant, only 580 -> 594
         * with it read at run time; sparse ran 1-7% slower (NOTES) */
        if (SYNC > 0 && t % (SYNC > 0 ? SYNC : 1) == SYNC - 1) bar_wg(c);
        wgmma_wait<0>();
        fence_regs(o);
        fence_a(pa);
        if (lane == 0) mbar_arrive(kv_empty(ring, sp));
        /* after the first tiles a row's max rarely moves: alpha is then exactly 1 for every row
         * of the warp and the 64 multiplies are skipped (the same bits either way) */
        if (LAZY ? chg : __any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
          for (int j = 0; j < 16; j++) {
            o[4 * j] *= alpha[0];
            o[4 * j + 1] *= alpha[0];
            o[4 * j + 2] *= alpha[1];
            o[4 * j + 3] *= alpha[1];
          }
        }
        to_p();
      }
      mbar_wait(v_full(ring, it % ST), (it / ST) & 1);
      if (PP) pp_sync(c);
      wgmma_fence();
      issue_pv(it % ST);
      wgmma_commit();
      if (PP) pp_arrive(c);
      if (is_fused(KIND)) push_mass(it % ST, mlo); /* the last tile's */
      wgmma_wait<0>();
      fence_regs(o);
      fence_a(pa);
      if (lane == 0) mbar_arrive(kv_empty(ring, it % ST));
      it++;
    }

    /* block 64 in passes (kv_split): a pass after the first waits for the one before it on this
     * 64-row block (an item taken earlier, so held by a running CTA) and merges their out and lse
     * with its own */
    const bool split = KIND == SPARSE64X && qt * kBM + c * 64 < p.sq;
    uint32_t *flag = split ? p.split_flags + 4 * ((int64_t)h * ((p.sq + 63) / 64) + 2 * qt + c) : nullptr;
    if (split && pass > 0) {
      if (lt == 0)
        while (flag_acquire(flag) < (uint32_t)pass) __nanosleep(256);
      bar_wg(c);
    }
    /* epilogue: out = o / l, lse = scale * m + log(l) (natural log) */
#pragma unroll
    for (int rh = 0; rh < 2; rh++) {
      float ls = l[rh];
      ls += __shfl_xor_sync(0xffffffffu, ls, 1);
      ls += __shfl_xor_sync(0xffffffffu, ls, 2);
      const int64_t row = r0 + rh * 8;
      if (row >= p.sq) continue;
      float inv = ls > 0.0f ? 1.0f / ls : 0.0f, lse = ls > 0.0f ? fmaf(m[rh], p.scale, logf(ls)) : -INFINITY;
      OutT *orow = out + row * o_rs + (int64_t)h * p.out_dim;
      if (split && pass > 0) { /* out = (out0 e^lse0 + o / l e^lse) / (e^lse0 + e^lse) */
        const float lse0 = __ldcg(p.lse + (int64_t)h * p.sq + row), mx = fmaxf(lse0, lse);
        float a0 = 0.0f;
        inv = 0.0f;
        if (mx > -INFINITY) {
          const float w0 = expf(lse0 - mx), w1 = expf(lse - mx), den = w0 + w1;
          a0 = w0 / den;
          inv = ls > 0.0f ? w1 / (den * ls) : 0.0f;
          lse = mx + logf(den);
        }
#pragma unroll
        for (int j = 0; j < 16; j++) {
          const float2 v0 = ada_attn::OutPair<OutT>::load2_cg(orow + 8 * j + 2 * tig);
          ada_attn::OutPair<OutT>::store2(orow + 8 * j + 2 * tig, fmaf(v0.x, a0, o[4 * j + 2 * rh] * inv),
                                          fmaf(v0.y, a0, o[4 * j + 2 * rh + 1] * inv));
        }
      } else {
#pragma unroll
        for (int j = 0; j < 16; j++) {
          if (p.l2_hint & ADA_L2_OUT_STREAM) ada_attn::OutPair<OutT>::store2_cs(orow + 8 * j + 2 * tig, o[4 * j + 2 * rh] * inv, o[4 * j + 2 * rh + 1] * inv);
          else ada_attn::OutPair<OutT>::store2(orow + 8 * j + 2 * tig, o[4 * j + 2 * rh] * inv, o[4 * j + 2 * rh + 1] * inv);
        }
      }
      if (tig == 0) p.lse[(int64_t)h * p.sq + row] = lse;
    }
    if (split && pass + 1 < npass) { /* the block's out and lse, then its flag */
      bar_wg(c);
      if (lt == 0) {
        __threadfence();
        flag_release(flag, (uint32_t)pass + 1);
      }
    }
  }
  if (PP && c == 0) pp_sync(c); /* consume warpgroup 1's last arrival */
}
#else
template <typename OutT, int KIND, int ST, bool PP, int SYNC> __global__ void attn_sm90_kernel(const __grid_constant__ Sm90Params P) {}
#endif

/* Block 64 in passes: for each 64-row block (h, qb) its entry of split_flags, [flag, b1, b2, b3]:
 * the flag (passes done) zeroed, and b_k the place in the row's list (past kv_valid dropped) of the
 * first block >= k kv_split, for the passes k < npass (0xffffffff past them). */
__global__ void split_prep_kernel(const __grid_constant__ ada_attn_params p, int npass) {
  const int64_t nqb = (p.sq + 63) / 64, rows = (int64_t)p.heads * nqb;
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < rows; r += (int64_t)gridDim.x * blockDim.x) {
    const int64_t h = r / nqb, qb = r - h * nqb;
    const int64_t *o = p.offsets + h * (nqb + 1) + qb;
    const int32_t *list = p.indices + o[0];
    int n = (int)(o[1] - o[0]);
    while (n > 0 && (int64_t)list[n - 1] * 64 >= p.kv_valid) n--;
    uint32_t *f = p.split_flags + 4 * r;
    f[0] = 0;
    for (int k = 1; k < 4; k++) {
      int lo = 0, hi = n;
      while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (list[mid] < k * p.kv_split) lo = mid + 1;
        else hi = mid;
      }
      f[k] = k < npass ? (uint32_t)lo : 0xffffffffu;
    }
  }
}

/* cuTensorMapEncodeTiled through the runtime's driver entry point (no -lcuda). */
PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  if (!fn) {
    void *f = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) == cudaSuccess &&
        q == cudaDriverEntryPointSuccess)
      fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }
  return fn;
}

/* A 3D map {dim 128, heads, rows} over a bf16 [rows, heads, 128] view with strides rs, hs. */
int make_map(CUtensorMap *m, const void *ptr, int64_t rows, int64_t heads, int64_t rs, int64_t hs, int box_rows) {
  PFN_cuTensorMapEncodeTiled_v12000 fn = encode_fn();
  if (!fn) return (int)cudaErrorNotSupported;
  const cuuint64_t dims[3] = {(cuuint64_t)kD, (cuuint64_t)heads, (cuuint64_t)rows};
  const cuuint64_t strides[2] = {(cuuint64_t)(heads > 1 ? hs : kD) * 2, (cuuint64_t)(rows > 1 ? rs : heads * kD) * 2};
  const cuuint32_t box[3] = {64, 1, (cuuint32_t)box_rows};
  const cuuint32_t estr[3] = {1, 1, 1};
  CUresult r = fn(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<void *>(ptr), dims, strides, box, estr,
                  CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? 0 : (int)cudaErrorInvalidValue;
}

template <typename OutT, int KIND, int ST, bool PP, int SYNC = 0> int launch_t(const Sm90Params &P, cudaStream_t st) {
  static int sms = 0;
  if (!sms) {
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (e != cudaSuccess) return (int)e;
  }
  constexpr int bytes = (int)smem_bytes(KIND, ST);
  static_assert(bytes <= 227 * 1024, "shared memory per block");
  cudaError_t e = cudaFuncSetAttribute(attn_sm90_kernel<OutT, KIND, ST, PP, SYNC>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e != cudaSuccess) return (int)e;
  const int64_t npass = KIND == SPARSE64X ? passes64(P.p) : 1;
  const int64_t items = (int64_t)P.p.heads * ((P.p.sq + kBM - 1) / kBM) * npass;
  const int grid = (int)(items < sms ? items : sms);
  if ((e = cudaMemsetAsync(P.sched, 0, sizeof *P.sched, st)) != cudaSuccess) return (int)e;
  attn_sm90_kernel<OutT, KIND, ST, PP, SYNC><<<grid, kThreads, bytes, st>>>(P);
  return (int)cudaGetLastError();
}

/* variant: 1 two stages, 2 two stages + ping-pong, 3 three stages, 4 three stages + ping-pong
 * (block-64 sparse: 3 stages per ring, no ping-pong, whatever the variant) */
template <typename OutT> int launch_v(const Sm90Params &P, int variant, cudaStream_t st) {
  if (P.p.mode == ADA_ATTN_SPARSE && P.p.layout_block == 64)
    return P.p.kv_split > 0  ? launch_t<OutT, SPARSE64X, 3, false>(P, st)
           : P.p.sweep_ns > 0 ? launch_t<OutT, SPARSE64S, 3, false>(P, st)
                              : launch_t<OutT, SPARSE64, 3, false>(P, st);
  if (P.p.mode == ADA_ATTN_FUSED) {
    if (P.p.mass_block == 128) switch (variant) {
      case 1: return launch_t<OutT, FUSED128, 2, false>(P, st);
      case 2: return launch_t<OutT, FUSED128, 2, true>(P, st);
      case 3: return launch_t<OutT, FUSED128, 3, false>(P, st);
      case 4: return launch_t<OutT, FUSED128, 3, true>(P, st);
      default: return (int)cudaErrorInvalidValue;
      }
    switch (variant) {
    case 1: return launch_t<OutT, FUSED64, 2, false>(P, st);
    case 2: return launch_t<OutT, FUSED64, 2, true>(P, st);
    case 3: return launch_t<OutT, FUSED64, 3, false>(P, st);
    case 4: return launch_t<OutT, FUSED64, 3, true>(P, st);
    default: return (int)cudaErrorInvalidValue;
    }
  }
  /* dense st3 / st3pp: the warpgroup barrier every 4 tiles (ADA_SM90_SYNC=0 turns it off, for
   * A/B timing; the fused pass ran up to 6% slower with it once its mass went to the reducers) */
  static int sync = -1;
  if (sync < 0) {
    const char *env = getenv("ADA_SM90_SYNC");
    sync = !(env && env[0] == '0');
  }
  const bool dsync = sync && P.p.mode == ADA_ATTN_DENSE;
  switch (variant) {
  case 1: return launch_t<OutT, DENSE128, 2, false>(P, st);
  case 2: return launch_t<OutT, DENSE128, 2, true>(P, st);
  case 3: return dsync ? launch_t<OutT, DENSE128, 3, false, 4>(P, st) : launch_t<OutT, DENSE128, 3, false>(P, st);
  case 4: return dsync ? launch_t<OutT, DENSE128, 3, true, 4>(P, st) : launch_t<OutT, DENSE128, 3, true>(P, st);
  default: return (int)cudaErrorInvalidValue;
  }
}

/* TMA: a 16-byte aligned base and strides of whole 16-byte units (the plan only asks with shapes;
 * the launcher checks the pointers) */
bool strides_ok(const void *ptr, int64_t rs, int64_t hs) {
  return ((uintptr_t)ptr & 15u) == 0 && rs % 8 == 0 && hs % 8 == 0 && rs >= 0 && hs >= 0;
}

} // namespace

extern "C" int ada_attention_sm90_supports(const ada_attn_params *p) {
  if (!p || p->dim != kD || p->out_dim != kD || !(p->scale > 0.0f) || !isfinite(p->scale)) return 0;
  const bool fused = p->mode == ADA_ATTN_FUSED && (p->mass_block == 64 || p->mass_block == 128);
  if (p->mode != ADA_ATTN_DENSE && !fused &&
      !(p->mode == ADA_ATTN_SPARSE && (p->layout_block == 64 || p->layout_block == 128)))
    return 0;
  if (p->out_dtype != ADA_F32 && p->out_dtype != ADA_BF16 && p->out_dtype != ADA_F16) return 0;
  if (p->tile_rows != kBM || p->variant < 1 || p->variant > 4) return 0;
  if (!strides_ok(p->q, p->q_rs, p->q_hs) || !strides_ok(p->k, p->k_rs, p->k_hs) || !strides_ok(p->v, p->v_rs, p->v_hs))
    return 0;
  if (p->sq > INT32_MAX || p->skv > INT32_MAX || p->heads > 65535) return 0;
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
    return 0;
  return major == 9;
}

extern "C" int ada_launch_attention_sm90(const ada_attn_params *p, void *stream) {
  if (!ada_attention_sm90_supports(p) || !p->q || !p->k || !p->v || !p->out || !p->lse || p->sq < 1 ||
      p->kv_valid < 1 || p->kv_valid > p->skv || (p->mode == ADA_ATTN_SPARSE && (!p->offsets || !p->indices)) ||
      (p->mode == ADA_ATTN_FUSED && (!p->lse_in || !p->mass)))
    return (int)cudaErrorInvalidValue;
  const int variant = p->variant;
  Sm90Params P;
  P.p = *p;
  const bool sparse64 = p->mode == ADA_ATTN_SPARSE && p->layout_block == 64;
  if (!sparse64) P.p.walk = nullptr; /* the walk is block 64's */
  /* passes over the key blocks: block 64 with the in-kernel counter only (a pass waits for an item
   * taken earlier, which a running CTA holds; a fixed-stride walk may wait for a CTA not yet
   * resident) */
  if (!sparse64 || p->kv_split <= 0 || p->kv_split >= (p->kv_valid + 63) / 64) P.p.kv_split = 0;
  if (P.p.kv_split > 0 && (!p->split_flags || p->static_walk)) return (int)cudaErrorInvalidValue;
  if (P.p.kv_split > 0) P.p.walk = nullptr;
  /* the sweep: block 64 in one pass, a step of at most 1 ms (the period, a count of 64 ns units,
   * is clamped to 32 bits) */
  if (!sparse64 || P.p.kv_split > 0) P.p.sweep_ns = 0;
  if (P.p.sweep_ns < 0 || P.p.sweep_ns > 1000000) return (int)cudaErrorInvalidValue;
  int e;
  /* this launch's work counter (per device: the symbol's address differs between devices) */
  static unsigned long long *sched_base[64];
  static unsigned launches;
  int dev = 0;
  if ((e = (int)cudaGetDevice(&dev)) != 0) return e;
  if (dev < 0 || dev >= 64) return (int)cudaErrorInvalidDevice;
  if (!sched_base[dev] && (e = (int)cudaGetSymbolAddress((void **)&sched_base[dev], g_sched)) != 0) return e;
  P.sched = sched_base[dev] + launches++ % kSchedSlots;
  const int kt = p->mode == ADA_ATTN_SPARSE && p->layout_block == 64 ? 64 : 128;
  if ((e = make_map(&P.tq, p->q, p->sq, p->heads, p->q_rs, p->q_hs, kBM)) ||
      (e = make_map(&P.tk, p->k, p->kv_valid, p->heads, p->k_rs, p->k_hs, kt)) ||
      (e = make_map(&P.tv, p->v, p->kv_valid, p->heads, p->v_rs, p->v_hs, kt)))
    return e;
  cudaStream_t st = (cudaStream_t)stream;
  if (P.p.kv_split > 0) { /* the flags zeroed and the passes' places in each row */
    const int64_t npass = passes64(P.p), rows = (int64_t)p->heads * ((p->sq + 63) / 64);
    if (npass > 4) return (int)cudaErrorInvalidValue;
    split_prep_kernel<<<(unsigned)((rows + 255) / 256 < 1024 ? (rows + 255) / 256 : 1024), 256, 0, st>>>(P.p, (int)npass);
    const cudaError_t me = cudaGetLastError();
    if (me != cudaSuccess) return (int)me;
  }
  if (p->mode == ADA_ATTN_FUSED) { /* the key blocks past kv_valid, a column band of [heads x nb] rows (the kernel writes the rest) */
    const int64_t mb = p->mass_block, nb = (p->sq + mb - 1) / mb, nk = (p->skv + mb - 1) / mb, nkv = (p->kv_valid + mb - 1) / mb;
    if (nkv < nk) {
      cudaError_t me = cudaMemset2DAsync(p->mass + nkv, sizeof(float) * (size_t)nk, 0, sizeof(float) * (size_t)(nk - nkv),
                                         (size_t)p->heads * (size_t)nb, st);
      if (me != cudaSuccess) return (int)me;
    }
  }
  switch (p->out_dtype) {
  case ADA_F32: return launch_v<float>(P, variant, st);
  case ADA_BF16: return launch_v<__nv_bfloat16>(P, variant, st);
  case ADA_F16: return launch_v<__half>(P, variant, st);
  default: return (int)cudaErrorInvalidValue;
  }
}
