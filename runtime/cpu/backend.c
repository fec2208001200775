/* backend.c: the CPU backend (backend.h), registered at start-up: host memory, the wall-clock
 * events of timers, and the op table. The nn entries below stage their validated arguments to
 * f32 (stage.h) and run the kernels of gemm.c and nn.c; attention and its plan are in
 * attention.c. The CPU backend is the reference for every op and is always built.
 * linear's epilogue options (ada_linear_opts) run on the GEMM's f32 result before it is rounded
 * into out: act = gelu_tanh applies ada_cpu_gelu_tanh to it; accumulate adds an f32 copy of
 * out's previous values, taken before the GEMM writes (the f32 buffer may be out itself). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../backend.h"
#include "cpu.h"
#include "cpu_attn.h"
#include "cpu_nn.h"
#include "stage.h"

static void free3(ada_tensor *a, ada_tensor *b, ada_tensor *c) {
  ada_tensor_free(a);
  ada_tensor_free(b);
  ada_tensor_free(c);
}

#define f32 ada_cpu_f32

/* ---- GEMM ------------------------------------------------------------------------------------- */

/* f32 tensors are used in place with any strides (the GEMM packs them); others are converted. */
static ada_status gemm_in(const ada_tensor *t, const ada_tensor **use, ada_tensor **tmp) {
  *tmp = NULL;
  *use = t;
  return t->dtype == ADA_F32 ? ADA_OK : ada_cpu_f32_in(t, true, use, tmp);
}

/* out [m, n] = a [m, k] . B (+ bias [n]), B = b [k, n], or b^T for b [n, k] when bt; then, per
 * opts, gelu_tanh on the f32 result or out's previous values added, before the one rounding. */
static ada_status run_gemm(ada_tensor *out, const ada_tensor *a, const ada_tensor *b, bool bt,
                           const ada_tensor *bias, const ada_linear_opts *opts) {
  const ada_tensor *ua, *ub, *ubias = NULL;
  ada_tensor *ta = NULL, *tb = NULL, *tbias = NULL, *tout = NULL, *old = NULL, *buf;
  ada_status s = gemm_in(a, &ua, &ta);
  if (!s) s = gemm_in(b, &ub, &tb);
  if (!s && bias) s = ada_cpu_f32_in(bias, true, &ubias, &tbias);
  /* accumulate: an f32 copy of out's values before the GEMM overwrites them (buf may be out) */
  if (!s && opts->accumulate) s = ada_tensor_to(&old, out, ADA_F32, (ada_device){ADA_CPU, 0});
  if (!s) s = ada_cpu_f32_out(out, &buf, &tout);
  if (!s) {
    const int64_t m = out->shape[0], n = out->shape[1], k = a->shape[1];
    float *c = ada_tensor_data(buf);
    s = ada_cpu_gemm(c, n, f32(ua), ua->stride[0], ua->stride[1], f32(ub), ub->stride[bt ? 1 : 0],
                     ub->stride[bt ? 0 : 1], f32(ubias), m, n, k);
    if (!s) {
      if (old) ada_cpu_add(c, c, f32(old), n, m, n);
      if (opts->act == ADA_LINEAR_ACT_GELU_TANH) ada_cpu_gelu_tanh(c, c, m * n); /* elementwise: in place is fine */
      s = ada_cpu_f32_out_done(out, tout);
      tout = NULL;
    }
  }
  ada_tensor_free(tout);
  ada_tensor_free(old);
  free3(ta, tb, tbias);
  return s;
}

static ada_status cpu_linear(ada_tensor *out, const ada_tensor *x, const ada_tensor *w, const ada_tensor *b,
                             const ada_linear_opts *opts) {
  return run_gemm(out, x, w, true, b, opts);
}

static ada_status cpu_matmul(ada_tensor *out, const ada_tensor *a, const ada_tensor *b) {
  return run_gemm(out, a, b, false, NULL, &(const ada_linear_opts){ADA_LINEAR_ACT_NONE, false});
}

/* ---- norms and elementwise ops ------------------------------------------------------------------ */

static ada_status norm(bool layer, ada_tensor *out, const ada_tensor *x, double eps, const ada_tensor *weight,
                       const ada_tensor *bias) {
  const int64_t c = x->shape[x->ndim - 1], rows = ada_tensor_numel(x) / c;
  const ada_tensor *ux, *uw = NULL, *ub = NULL;
  ada_tensor *tx = NULL, *tw = NULL, *tb = NULL, *tout = NULL, *buf;
  ada_status s = ada_cpu_f32_in(x, true, &ux, &tx);
  if (!s && weight) s = ada_cpu_f32_in(weight, true, &uw, &tw);
  if (!s && bias) s = ada_cpu_f32_in(bias, true, &ub, &tb);
  if (!s) s = ada_cpu_f32_out(out, &buf, &tout);
  if (!s) {
    if (layer)
      ada_cpu_layernorm(ada_tensor_data(buf), f32(ux), rows, c, eps, f32(uw), f32(ub));
    else
      ada_cpu_rmsnorm(ada_tensor_data(buf), f32(ux), rows, c, eps, f32(uw));
    s = ada_cpu_f32_out_done(out, tout);
    tout = NULL;
  }
  ada_tensor_free(tout);
  free3(tx, tw, tb);
  return s;
}

static ada_status cpu_layernorm(ada_tensor *out, const ada_tensor *x, double eps, const ada_tensor *weight,
                                const ada_tensor *bias) {
  return norm(true, out, x, eps, weight, bias);
}

static ada_status cpu_rmsnorm(ada_tensor *out, const ada_tensor *x, const ada_tensor *weight, double eps) {
  return norm(false, out, x, eps, weight, NULL);
}

static ada_status cpu_softmax(ada_tensor *out, const ada_tensor *x, double scale) {
  const int64_t c = x->shape[x->ndim - 1], rows = ada_tensor_numel(x) / c;
  const ada_tensor *ux;
  ada_tensor *tx = NULL, *tout = NULL, *buf;
  ada_status s = ada_cpu_f32_in(x, true, &ux, &tx);
  if (!s) s = ada_cpu_f32_out(out, &buf, &tout);
  if (!s) {
    ada_cpu_softmax(ada_tensor_data(buf), f32(ux), rows, c, (float)scale);
    s = ada_cpu_f32_out_done(out, tout);
    tout = NULL;
  }
  ada_tensor_free(tout);
  ada_tensor_free(tx);
  return s;
}

/* Row stride of operand v of x [.., C]: C when it has x's shape, 0 for a broadcast [C] vector. */
static int64_t operand_ld(const ada_tensor *v, const ada_tensor *x) {
  if (v->ndim == x->ndim && !memcmp(v->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim)) return x->shape[x->ndim - 1];
  return 0;
}

static ada_status cpu_rowwise(ada_rowwise_kind kind, ada_tensor *out, const ada_tensor *x, const ada_tensor *v1,
                              const ada_tensor *v2) {
  const int64_t c = x->shape[x->ndim - 1], rows = ada_tensor_numel(x) / c;
  const int64_t ld1 = operand_ld(v1, x), ld2 = v2 ? operand_ld(v2, x) : 0;
  const ada_tensor *ux, *u1, *u2 = NULL;
  ada_tensor *tx = NULL, *t1 = NULL, *t2 = NULL, *tout = NULL, *buf;
  ada_status s = ada_cpu_f32_in(x, true, &ux, &tx);
  if (!s) s = ada_cpu_f32_in(v1, true, &u1, &t1);
  if (!s && v2) s = ada_cpu_f32_in(v2, true, &u2, &t2);
  if (!s) s = ada_cpu_f32_out(out, &buf, &tout);
  if (!s) {
    float *o = ada_tensor_data(buf);
    switch (kind) {
    case ADA_ROWWISE_MODULATE: ada_cpu_modulate(o, f32(ux), f32(u1), ld1, f32(u2), ld2, rows, c); break;
    case ADA_ROWWISE_GATED_ADD: ada_cpu_gated_add(o, f32(ux), f32(u1), ld1, f32(u2), ld2, rows, c); break;
    case ADA_ROWWISE_ADD: ada_cpu_add(o, f32(ux), f32(u1), ld1, rows, c); break;
    case ADA_ROWWISE_MUL: ada_cpu_mul(o, f32(ux), f32(u1), ld1, rows, c); break;
    }
    s = ada_cpu_f32_out_done(out, tout);
    tout = NULL;
  }
  ada_tensor_free(tout);
  free3(tx, t1, t2);
  return s;
}

/* gated_add, then layernorm_modulate, in one pass over each row (ada_cpu_gated_add_layernorm_modulate):
 * the same rounding points as the two ops, so the same bits. shift and scale are [C] vectors. */
static ada_status cpu_gated_add_layernorm_modulate(ada_tensor *x_out, ada_tensor *out, const ada_tensor *x,
                                                   const ada_tensor *gate, const ada_tensor *y, double eps,
                                                   const ada_tensor *weight, const ada_tensor *bias,
                                                   const ada_tensor *shift, const ada_tensor *scale) {
  const int64_t c = x->shape[x->ndim - 1], rows = ada_tensor_numel(x) / c;
  const int64_t ld_gate = operand_ld(gate, x), ld_y = operand_ld(y, x);
  enum { X, GATE, Y, W, B, SHIFT, SCALE, N_IN };
  const ada_tensor *in[N_IN] = {x, gate, y, weight, bias, shift, scale}, *u[N_IN] = {NULL};
  ada_tensor *t[N_IN] = {NULL}, *txo = NULL, *tout = NULL, *bxo, *bout;
  ada_status s = ADA_OK;
  for (int i = 0; i < N_IN && !s; i++)
    if (in[i]) s = ada_cpu_f32_in(in[i], true, &u[i], &t[i]);
  /* x_out's buffer is x's f32 data itself when x_out is x in f32 (in place, row by row) */
  if (!s) s = ada_cpu_f32_out(x_out, &bxo, &txo);
  if (!s) s = ada_cpu_f32_out(out, &bout, &tout);
  if (!s) {
    ada_cpu_gated_add_layernorm_modulate(ada_tensor_data(bxo), ada_tensor_data(bout), f32(u[X]), f32(u[GATE]), ld_gate,
                                         f32(u[Y]), ld_y, eps, f32(u[W]), f32(u[B]), f32(u[SHIFT]), f32(u[SCALE]),
                                         rows, c, x_out->dtype, out->dtype);
    s = ada_cpu_f32_out_done(x_out, txo);
    txo = NULL;
    if (!s) s = ada_cpu_f32_out_done(out, tout);
    tout = NULL;
  }
  ada_tensor_free(txo);
  ada_tensor_free(tout);
  for (int i = 0; i < N_IN; i++) ada_tensor_free(t[i]);
  return s;
}

static ada_status cpu_unary(ada_unary_kind kind, ada_tensor *out, const ada_tensor *x, double sc) {
  const ada_tensor *ux;
  ada_tensor *tx = NULL, *tout = NULL, *buf;
  ada_status s = ada_cpu_f32_in(x, true, &ux, &tx);
  if (!s) s = ada_cpu_f32_out(out, &buf, &tout);
  if (!s) {
    float *o = ada_tensor_data(buf);
    const int64_t n = ada_tensor_numel(x);
    switch (kind) {
    case ADA_UNARY_SCALE: ada_cpu_scale(o, f32(ux), (float)sc, n); break;
    case ADA_UNARY_SILU: ada_cpu_silu(o, f32(ux), n); break;
    case ADA_UNARY_GELU_TANH: ada_cpu_gelu_tanh(o, f32(ux), n); break;
    case ADA_UNARY_GELU: ada_cpu_gelu(o, f32(ux), n); break;
    }
    s = ada_cpu_f32_out_done(out, tout);
    tout = NULL;
  }
  ada_tensor_free(tout);
  ada_tensor_free(tx);
  return s;
}

/* ---- video DiT pieces ------------------------------------------------------------------------- */

static ada_status cpu_rope3d(ada_tensor *out, const ada_tensor *x, const int32_t grid[3], const int32_t axes[3],
                             double theta, int64_t n_tokens) {
  const int64_t sl = x->shape[0], h = x->shape[1], d = x->shape[2];
  const ada_tensor *ux;
  ada_tensor *tx = NULL, *tout = NULL, *buf;
  ada_status s = ada_cpu_f32_in(x, false, &ux, &tx);
  if (!s) s = ada_cpu_f32_out(out, &buf, &tout);
  if (!s) s = ada_cpu_rope3d(ada_tensor_data(buf), f32(ux), ux->stride[0], ux->stride[1], sl, h, d, grid, axes,
                             theta, n_tokens);
  if (!s) {
    s = ada_cpu_f32_out_done(out, tout);
    tout = NULL;
  }
  ada_tensor_free(tout);
  ada_tensor_free(tx);
  return s;
}

/* The reference: rmsnorm, then rope3d in place, both in f32. */
static ada_status cpu_rmsnorm_rope3d(ada_tensor *out, const ada_tensor *x, const ada_tensor *weight, double eps,
                                     const int32_t grid[3], const int32_t axes[3], double theta, int64_t n_tokens) {
  const int64_t sl = x->shape[0], h = x->shape[1], d = x->shape[2];
  const ada_tensor *ux, *uw = NULL;
  ada_tensor *tx = NULL, *tw = NULL, *tout = NULL, *buf;
  ada_status s = ada_cpu_f32_in(x, true, &ux, &tx);
  if (!s && weight) s = ada_cpu_f32_in(weight, true, &uw, &tw);
  if (!s) s = ada_cpu_f32_out(out, &buf, &tout);
  if (!s) {
    ada_cpu_rmsnorm(ada_tensor_data(buf), f32(ux), sl * h, d, eps, f32(uw));
    s = ada_cpu_rope3d(ada_tensor_data(buf), ada_tensor_data(buf), h * d, d, sl, h, d, grid, axes, theta, n_tokens);
  }
  if (!s) {
    s = ada_cpu_f32_out_done(out, tout);
    tout = NULL;
  }
  ada_tensor_free(tout);
  ada_tensor_free(tx);
  ada_tensor_free(tw);
  return s;
}

static ada_status cpu_patchify(ada_tensor *out, const ada_tensor *x) {
  const int64_t c = x->shape[0], t = x->shape[1], h = x->shape[2], w = x->shape[3];
  const ada_tensor *ux;
  ada_tensor *tx = NULL, *tout = NULL, *buf;
  ada_status s = ada_cpu_f32_in(x, false, &ux, &tx);
  if (!s) s = ada_cpu_f32_out(out, &buf, &tout);
  if (!s) {
    ada_cpu_patchify(ada_tensor_data(buf), f32(ux), ux->stride, c, t, h, w);
    s = ada_cpu_f32_out_done(out, tout);
    tout = NULL;
  }
  ada_tensor_free(tout);
  ada_tensor_free(tx);
  return s;
}

static ada_status cpu_unpatchify(ada_tensor *out, const ada_tensor *x, int32_t t, int32_t h, int32_t w) {
  const int64_t c = x->shape[1] / 4;
  const ada_tensor *ux;
  ada_tensor *tx = NULL, *tout = NULL, *buf;
  ada_status s = ada_cpu_f32_in(x, false, &ux, &tx);
  if (!s) s = ada_cpu_f32_out(out, &buf, &tout);
  if (!s) {
    ada_cpu_unpatchify(ada_tensor_data(buf), f32(ux), ux->stride[0], c, t, h, w);
    s = ada_cpu_f32_out_done(out, tout);
    tout = NULL;
  }
  ada_tensor_free(tout);
  ada_tensor_free(tx);
  return s;
}

static ada_status cpu_timestep_embedding(ada_tensor *out, const ada_tensor *t, int32_t dim, double max_period) {
  const ada_tensor *ut;
  ada_tensor *tt = NULL, *tout = NULL, *buf;
  ada_status s = ada_cpu_f32_in(t, true, &ut, &tt);
  if (!s) s = ada_cpu_f32_out(out, &buf, &tout);
  if (!s) {
    ada_cpu_timestep_embedding(ada_tensor_data(buf), f32(ut), t->shape[0], dim, max_period);
    s = ada_cpu_f32_out_done(out, tout);
    tout = NULL;
  }
  ada_tensor_free(tout);
  ada_tensor_free(tt);
  return s;
}

/* ---- devices, memory, events -------------------------------------------------------------------- */

static int32_t cpu_device_count(void) { return 1; }
static const char *cpu_unavailable_reason(void) { return ""; }

static ada_status cpu_device_info(int32_t dev, ada_device_info *out) {
  memset(out, 0, sizeof *out);
  out->index = dev;
  strcpy(out->name, "cpu");
  out->sm_count = ada_cpu_threads();
  return ADA_OK;
}

static ada_status cpu_alloc(void **out, size_t nbytes, int32_t dev) {
  (void)dev;
  /* 64-byte aligned for vector loads; size rounded up as aligned_alloc requires */
  size_t n = (nbytes + 63) & ~(size_t)63;
  *out = aligned_alloc(64, n ? n : 64);
  if (!*out) return ada_fail(ADA_ENOMEM, "tensor: out of host memory allocating %zu bytes", nbytes);
  return ADA_OK;
}

static void cpu_free(void *p, int32_t dev) {
  (void)dev;
  free(p);
}

static ada_status cpu_memcpy(void *dst, const void *src, size_t n, int32_t dev) {
  (void)dev;
  memcpy(dst, src, n);
  return ADA_OK;
}

static ada_status cpu_copy(void *dst, ada_dtype ddt, const ada_strided *dl, const void *src, ada_dtype sdt,
                           const ada_strided *sl, int32_t dev) {
  (void)dev;
  ada_cpu_copy(dst, ddt, dl, src, sdt, sl);
  return ADA_OK;
}

static ada_status cpu_fill(void *dst, ada_dtype ddt, const ada_strided *dl, double value, int32_t dev) {
  (void)dev;
  ada_cpu_fill(dst, ddt, dl, value);
  return ADA_OK;
}

static ada_status cpu_arange(void *dst, ada_dtype ddt, int64_t n, double start, double step, int32_t dev) {
  (void)dev;
  ada_cpu_arange(dst, ddt, n, start, step);
  return ADA_OK;
}

static ada_status cpu_randn(void *dst, ada_dtype ddt, int64_t n, uint64_t seed, int32_t dev) {
  (void)dev;
  ada_cpu_randn(dst, ddt, n, seed);
  return ADA_OK;
}

static ada_status cpu_reduce(const void *src, ada_dtype sdt, const ada_strided *sl, ada_reduce_op op, int32_t dev,
                             double *out) {
  (void)dev;
  *out = ada_cpu_reduce(src, sdt, sl, op);
  return ADA_OK;
}

static ada_status cpu_synchronize(int32_t dev) {
  (void)dev;
  return ADA_OK;
}

/* An event is the monotonic clock's reading when it was recorded. */
static ada_status cpu_event_new(void **out, int32_t dev) {
  (void)dev;
  *out = calloc(1, sizeof(double));
  return *out ? ADA_OK : ada_fail(ADA_ENOMEM, "timer: out of host memory");
}

static ada_status cpu_event_record(void *ev, int32_t dev) {
  (void)dev;
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return ada_fail(ADA_EDEVICE, "timer: clock_gettime failed");
  *(double *)ev = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
  return ADA_OK;
}

static ada_status cpu_event_elapsed(void *start, void *stop, int32_t dev, double *seconds) {
  (void)dev;
  *seconds = *(double *)stop - *(double *)start;
  return ADA_OK;
}

static void cpu_event_free(void *ev, int32_t dev) {
  (void)dev;
  free(ev);
}

static const ada_backend cpu_backend = {
    .name = "cpu",
    .type = ADA_CPU,
    .device_count = cpu_device_count,
    .unavailable_reason = cpu_unavailable_reason,
    .device_info = cpu_device_info,
    .set_threads = ada_cpu_set_threads,
    .threads = ada_cpu_threads,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .to_host = cpu_memcpy,
    .from_host = cpu_memcpy,
    .copy = cpu_copy,
    .fill = cpu_fill,
    .arange = cpu_arange,
    .randn = cpu_randn,
    .reduce = cpu_reduce,
    .synchronize = cpu_synchronize,
    .event_new = cpu_event_new,
    .event_record = cpu_event_record,
    .event_elapsed = cpu_event_elapsed,
    .event_free = cpu_event_free,
    .ops =
        {
            .linear = cpu_linear,
            .matmul = cpu_matmul,
            .layernorm = cpu_layernorm,
            .gated_add_layernorm_modulate = cpu_gated_add_layernorm_modulate,
            .rmsnorm = cpu_rmsnorm,
            .softmax = cpu_softmax,
            .rowwise = cpu_rowwise,
            .unary = cpu_unary,
            .rope3d = cpu_rope3d,
            .rmsnorm_rope3d = cpu_rmsnorm_rope3d,
            .patchify = cpu_patchify,
            .unpatchify = cpu_unpatchify,
            .timestep_embedding = cpu_timestep_embedding,
            .attention_plan = ada_cpu_attention_plan,
            .attention = ada_cpu_attention_op,
        },
};

__attribute__((constructor)) static void register_cpu(void) { (void)ada_backend_register(&cpu_backend); }

