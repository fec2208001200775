/* nn.c: CPU kernels of the non-GEMM neural-network ops: layernorm, rmsnorm, softmax, the row-wise
 * elementwise ops (modulate, gated_add, add, mul) and the unary ones (scale, silu, gelu_tanh, gelu),
 * 3D RoPE, patchify / unpatchify and the sinusoidal timestep embedding. f32 in and out; every
 * output element is computed by one thread in a fixed order, whatever the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../scalar.h"
#include "cpu_nn.h"

/* Below this many elements a loop runs on one thread. */
enum { PAR_MIN = 1 << 14 };

/* Sum of x[i] (sq: of (x[i] - mean)^2) in double, in 8 interleaved partial sums. */
static double row_sum(const float *x, int64_t n, int sq, double mean) {
  double acc[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) {
      const double v = (double)x[i + j] - mean;
      acc[j] += sq ? v * v : v;
    }
  for (; i < n; i++) {
    const double v = (double)x[i] - mean;
    acc[i & 7] += sq ? v * v : v;
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* One row of layernorm: o = (xr - mean) / sqrt(var + eps) (* weight) (+ bias); o may be xr. */
static void layernorm_row(float *o, const float *xr, int64_t n, double eps, const float *weight, const float *bias) {
  const double mean = row_sum(xr, n, 0, 0.0) / (double)n;
  const double var = row_sum(xr, n, 1, mean) / (double)n;
  const float mu = (float)mean, rstd = (float)(1.0 / sqrt(var + eps));
  for (int64_t j = 0; j < n; j++) {
    float v = (xr[j] - mu) * rstd;
    if (weight) v *= weight[j];
    if (bias) v += bias[j];
    o[j] = v;
  }
}

void ada_cpu_layernorm(float *out, const float *x, int64_t rows, int64_t n, double eps, const float *weight,
                       const float *bias) {
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
  for (int64_t r = 0; r < rows; r++) layernorm_row(out + r * n, x + r * n, n, eps, weight, bias);
}

/* v rounded to dtype dt and back (the value an f32 result has once stored as dt). */
static inline float round_to(float v, ada_dtype dt) {
  if (dt == ADA_BF16) return ada_bf16_to_f32(ada_f32_to_bf16(v));
  if (dt == ADA_F16) return ada_f16_to_f32(ada_f32_to_f16(v));
  return v;
}

void ada_cpu_gated_add_layernorm_modulate(float *x_out, float *out, const float *x, const float *gate,
                                          int64_t ld_gate, const float *y, int64_t ld_y, double eps,
                                          const float *weight, const float *bias, const float *shift,
                                          const float *scale, int64_t rows, int64_t n, ada_dtype xo_dt,
                                          ada_dtype out_dt) {
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * n, *g = gate + r * ld_gate, *yr = y + r * ld_y;
    float *xo = x_out + r * n, *o = out + r * n;
    /* ada_cpu_gated_add, rounded as storing x_out rounds it (f32: plain loops, vectorized) */
    if (xo_dt == ADA_F32)
      for (int64_t j = 0; j < n; j++) xo[j] = xr[j] + g[j] * yr[j];
    else
      for (int64_t j = 0; j < n; j++) xo[j] = round_to(xr[j] + g[j] * yr[j], xo_dt);
    /* ada_cpu_layernorm of the stored row, rounded into out, then ada_cpu_modulate in place */
    layernorm_row(o, xo, n, eps, weight, bias);
    if (out_dt == ADA_F32)
      for (int64_t j = 0; j < n; j++) o[j] = o[j] * (1.0f + scale[j]) + shift[j];
    else
      for (int64_t j = 0; j < n; j++) o[j] = round_to(o[j], out_dt) * (1.0f + scale[j]) + shift[j];
  }
}

void ada_cpu_rmsnorm(float *out, const float *x, int64_t rows, int64_t n, double eps, const float *weight) {
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * n;
    float *o = out + r * n;
    const float rr = (float)(1.0 / sqrt(row_sum(xr, n, 1, 0.0) / (double)n + eps));
    for (int64_t j = 0; j < n; j++) o[j] = weight ? xr[j] * rr * weight[j] : xr[j] * rr;
  }
}

void ada_cpu_softmax(float *out, const float *x, int64_t rows, int64_t n, float scale) {
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * n;
    float *o = out + r * n;
    float m = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
      const float v = scale * xr[j];
      if (v > m || v != v) m = v; /* a NaN stays the maximum: the row becomes NaN */
      if (m != m) break;
    }
    if (m == -INFINITY) {
      for (int64_t j = 0; j < n; j++) o[j] = 0.0f;
      continue;
    }
    double sum = 0.0;
    for (int64_t j = 0; j < n; j++) {
      const float e = expf(scale * xr[j] - m);
      o[j] = e;
      sum += (double)e;
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t j = 0; j < n; j++) o[j] *= inv;
  }
}

void ada_cpu_modulate(float *out, const float *x, const float *shift, int64_t ld_shift, const float *scale,
                      int64_t ld_scale, int64_t rows, int64_t n) {
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * n, *sh = shift + r * ld_shift, *sc = scale + r * ld_scale;
    float *o = out + r * n;
    for (int64_t j = 0; j < n; j++) o[j] = xr[j] * (1.0f + sc[j]) + sh[j];
  }
}

void ada_cpu_gated_add(float *out, const float *x, const float *gate, int64_t ld_gate, const float *y, int64_t ld_y,
                       int64_t rows, int64_t n) {
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * n, *g = gate + r * ld_gate, *yr = y + r * ld_y;
    float *o = out + r * n;
    for (int64_t j = 0; j < n; j++) o[j] = xr[j] + g[j] * yr[j];
  }
}

void ada_cpu_add(float *out, const float *a, const float *b, int64_t ld_b, int64_t rows, int64_t n) {
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const float *ar = a + r * n, *br = b + r * ld_b;
    float *o = out + r * n;
    for (int64_t j = 0; j < n; j++) o[j] = ar[j] + br[j];
  }
}

void ada_cpu_mul(float *out, const float *a, const float *b, int64_t ld_b, int64_t rows, int64_t n) {
#pragma omp parallel for schedule(static) if (rows * n > PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const float *ar = a + r * n, *br = b + r * ld_b;
    float *o = out + r * n;
    for (int64_t j = 0; j < n; j++) o[j] = ar[j] * br[j];
  }
}

void ada_cpu_scale(float *out, const float *x, float s, int64_t n) {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
  for (int64_t i = 0; i < n; i++) out[i] = x[i] * s;
}

void ada_cpu_silu(float *out, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
  for (int64_t i = 0; i < n; i++) out[i] = x[i] / (1.0f + expf(-x[i]));
}

void ada_cpu_gelu_tanh(float *out, const float *x, int64_t n) {
  const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
  for (int64_t i = 0; i < n; i++) {
    const float v = x[i];
    out[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
  }
}

void ada_cpu_gelu(float *out, const float *x, int64_t n) {
  const float r = 0.7071067811865476f; /* 1 / sqrt(2) */
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
  for (int64_t i = 0; i < n; i++) {
    const float v = x[i];
    out[i] = 0.5f * v * erfcf(-v * r); /* erfc(-z) = 1 + erf(z), without its cancellation for v < 0 */
  }
}

ada_status ada_cpu_rope3d(float *out, const float *x, int64_t xs_s, int64_t xs_h, int64_t s, int64_t h, int64_t d,
                          const int32_t grid[3], const int32_t axes[3], double theta, int64_t n_tokens) {
  /* cos and sin of every (position, pair) of each axis: angle pos * theta^(-2k/dim) in double */
  int64_t len = 0;
  for (int a = 0; a < 3; a++) len += (int64_t)grid[a] * (axes[a] / 2);
  float *tab = malloc(sizeof(float) * (size_t)(2 * len + 1));
  if (!tab) return ada_fail(ADA_ENOMEM, "rope3d: cannot allocate %lld bytes of tables", (long long)(8 * len));
  const float *cs[3], *sn[3];
  float *p = tab;
  for (int a = 0; a < 3; a++) {
    const int32_t half = axes[a] / 2;
    float *c = p, *si = p + (int64_t)grid[a] * half;
    for (int32_t pos = 0; pos < grid[a]; pos++)
      for (int32_t k = 0; k < half; k++) {
        const double ang = (double)pos * pow(theta, -2.0 * k / axes[a]);
        c[pos * half + k] = (float)cos(ang);
        si[pos * half + k] = (float)sin(ang);
      }
    cs[a] = c;
    sn[a] = si;
    p += 2 * (int64_t)grid[a] * half;
  }
  const int64_t hw = (int64_t)grid[1] * grid[2];
#pragma omp parallel for schedule(static) if (s * h * d > PAR_MIN)
  for (int64_t i = 0; i < s; i++) {
    const int64_t pos[3] = {i / hw, (i / grid[2]) % grid[1], i % grid[2]};
    for (int64_t hd = 0; hd < h; hd++) {
      const float *xi = x + i * xs_s + hd * xs_h;
      float *o = out + (i * h + hd) * d;
      if (i >= n_tokens) {
        if (o != xi) memcpy(o, xi, sizeof(float) * (size_t)d);
        continue;
      }
      int64_t j = 0;
      for (int a = 0; a < 3; a++) {
        const int32_t half = axes[a] / 2;
        const float *c = cs[a] + pos[a] * half, *si = sn[a] + pos[a] * half;
        for (int32_t k = 0; k < half; k++, j++) {
          const float x0 = xi[2 * j], x1 = xi[2 * j + 1];
          o[2 * j] = x0 * c[k] - x1 * si[k];
          o[2 * j + 1] = x0 * si[k] + x1 * c[k];
        }
      }
    }
  }
  free(tab);
  return ADA_OK;
}

void ada_cpu_patchify(float *out, const float *x, const int64_t xs[3], int64_t c, int64_t t, int64_t h, int64_t w) {
  const int64_t hh = h / 2, ww = w / 2, ntok = t * hh * ww;
#pragma omp parallel for schedule(static) if (ntok * c * 4 > PAR_MIN)
  for (int64_t tok = 0; tok < ntok; tok++) {
    const int64_t ti = tok / (hh * ww), i = (tok / ww) % hh, j = tok % ww;
    float *o = out + tok * c * 4;
    for (int64_t ci = 0; ci < c; ci++) {
      const float *px = x + ci * xs[0] + ti * xs[1] + 2 * i * xs[2] + 2 * j;
      o[ci * 4 + 0] = px[0];
      o[ci * 4 + 1] = px[1];
      o[ci * 4 + 2] = px[xs[2]];
      o[ci * 4 + 3] = px[xs[2] + 1];
    }
  }
}

void ada_cpu_unpatchify(float *out, const float *x, int64_t ldx, int64_t c, int64_t t, int64_t h, int64_t w) {
  const int64_t hh = h / 2, ww = w / 2, nrows = c * t * h;
#pragma omp parallel for schedule(static) if (nrows * w > PAR_MIN)
  for (int64_t row = 0; row < nrows; row++) {
    const int64_t ci = row / (t * h), ti = (row / h) % t, y = row % h;
    const float *xr = x + (ti * hh + y / 2) * ww * ldx + ci * 4 + (y % 2) * 2;
    float *o = out + row * w;
    for (int64_t xw = 0; xw < w; xw++) o[xw] = xr[(xw / 2) * ldx + xw % 2];
  }
}

void ada_cpu_timestep_embedding(float *out, const float *t, int64_t n, int64_t dim, double max_period) {
  const int64_t half = dim / 2;
  const double lm = log(max_period);
#pragma omp parallel for schedule(static) if (n * dim > PAR_MIN)
  for (int64_t i = 0; i < n; i++)
    for (int64_t k = 0; k < half; k++) {
      const double a = (double)t[i] * exp(-lm * (double)k / (double)half);
      out[i * dim + k] = (float)cos(a);
      out[i * dim + half + k] = (float)sin(a);
    }
}
