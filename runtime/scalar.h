/* scalar.h: element types and scalar math shared by the C runtime and the CUDA kernels
 * (prefix ada_). Everything here is header-only, has no dependencies, and compiles both as
 * C11 and as CUDA C++ (where the functions are __host__ __device__).
 *
 * - dtypes and their sizes;
 * - f32 <-> bf16 and f32 <-> f16 conversion, round to nearest even, NaN and Inf kept;
 * - Philox4x32-10 and the counter-based normal sampler behind randn. The sampler uses only
 *   IEEE-exact operations (+, -, *, /, sqrt) in double, written as explicit calls so that no
 *   compiler may contract them into FMAs: one seed gives bit-identical numbers on the CPU and
 *   on the GPU, at any thread count.
 */
#ifndef ADA_SCALAR_H
#define ADA_SCALAR_H

#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define ADA_HD __host__ __device__ __forceinline__
#else
#define ADA_HD static inline
#endif

typedef enum ada_dtype {
  ADA_F32 = 0,
  ADA_BF16,
  ADA_F16,
  ADA_I32,
  ADA_I16,
  ADA_U8,
  ADA_NDTYPES
} ada_dtype;

#define ADA_MAX_DIMS 5

/* A strided view as the kernels see it: sizes and strides in elements, row-major order of
 * the logical index. */
typedef struct ada_strided {
  int32_t ndim;
  int64_t shape[ADA_MAX_DIMS];
  int64_t stride[ADA_MAX_DIMS];
} ada_strided;

ADA_HD int32_t ada_dtype_size(ada_dtype t) {
  switch (t) {
  case ADA_F32: case ADA_I32: return 4;
  case ADA_BF16: case ADA_F16: case ADA_I16: return 2;
  case ADA_U8: return 1;
  default: return 0;
  }
}

ADA_HD int ada_dtype_is_float(ada_dtype t) {
  return t == ADA_F32 || t == ADA_BF16 || t == ADA_F16;
}

ADA_HD uint32_t ada_f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

ADA_HD float ada_bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* ---- bfloat16 ------------------------------------------------------------------------ */

ADA_HD uint16_t ada_f32_to_bf16(float f) {
  uint32_t u = ada_f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
  uint32_t lsb = (u >> 16) & 1u;
  u += 0x7fffu + lsb; /* round to nearest even; overflow carries into Inf correctly */
  return (uint16_t)(u >> 16);
}

ADA_HD float ada_bf16_to_f32(uint16_t h) { return ada_bits_f32((uint32_t)h << 16); }

/* ---- IEEE half ----------------------------------------------------------------------- */

ADA_HD uint16_t ada_f32_to_f16(float f) {
  uint32_t u = ada_f32_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* NaN */
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to Inf */
  if (a < 0x38800000u) { /* result is subnormal or zero: a < 2^-14 */
    if (a < 0x33000000u) return (uint16_t)sign; /* < 2^-25 rounds to zero */
    uint32_t e = a >> 23;
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e; /* 14..24 */
    uint32_t r = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) r++;
    return (uint16_t)(sign | r);
  }
  uint32_t r = a - 0x38000000u; /* rebias exponent 127 -> 15 */
  uint32_t lsb = (r >> 13) & 1u;
  r += 0xfffu + lsb;
  return (uint16_t)(sign | (r >> 13));
}

ADA_HD float ada_f16_to_f32(uint16_t h) {
  uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu;
  uint32_t m = h & 0x3ffu;
  if (e == 0x1fu) return ada_bits_f32(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    if (m == 0) return ada_bits_f32(sign);
    /* subnormal: m * 2^-24, exact in f32 */
    float v = (float)m * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return ada_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

/* ---- generic element load/store (as double: exact for every dtype here) -------------- */

ADA_HD double ada_load(const void *p, ada_dtype t) {
  switch (t) {
  case ADA_F32: return *(const float *)p;
  case ADA_BF16: return ada_bf16_to_f32(*(const uint16_t *)p);
  case ADA_F16: return ada_f16_to_f32(*(const uint16_t *)p);
  case ADA_I32: return *(const int32_t *)p;
  case ADA_I16: return *(const int16_t *)p;
  case ADA_U8: return *(const uint8_t *)p;
  default: return 0.0;
  }
}

/* Integer stores truncate toward zero and saturate; NaN stores 0. */
ADA_HD void ada_store(void *p, ada_dtype t, double v) {
  switch (t) {
  case ADA_F32: *(float *)p = (float)v; break;
  case ADA_BF16: *(uint16_t *)p = ada_f32_to_bf16((float)v); break;
  case ADA_F16: *(uint16_t *)p = ada_f32_to_f16((float)v); break;
  case ADA_I32:
    *(int32_t *)p = v != v ? 0 : v >= 2147483647.0 ? 2147483647 : v <= -2147483648.0 ? (-2147483647 - 1) : (int32_t)v;
    break;
  case ADA_I16: *(int16_t *)p = v != v ? 0 : v >= 32767.0 ? 32767 : v <= -32768.0 ? -32768 : (int16_t)v; break;
  case ADA_U8: *(uint8_t *)p = v != v ? 0 : v >= 255.0 ? 255 : v <= 0.0 ? 0 : (uint8_t)v; break;
  default: break;
  }
}

/* ---- Philox4x32-10 ------------------------------------------------------------------- */

typedef struct ada_u32x4 { uint32_t v[4]; } ada_u32x4;

ADA_HD ada_u32x4 ada_philox(uint64_t seed, uint64_t counter) {
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0x41444153u, c3 = 0u;
  for (int i = 0; i < 10; i++) {
    uint64_t p0 = (uint64_t)0xD2511F53u * c0;
    uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
    uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    c1 = (uint32_t)p1;
    c3 = (uint32_t)p0;
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  ada_u32x4 r;
  r.v[0] = c0; r.v[1] = c1; r.v[2] = c2; r.v[3] = c3;
  return r;
}

/* Exact double arithmetic that no compiler may fuse. */
#if defined(__CUDA_ARCH__)
#define ADA_DADD(a, b) __dadd_rn((a), (b))
#define ADA_DSUB(a, b) __dsub_rn((a), (b))
#define ADA_DMUL(a, b) __dmul_rn((a), (b))
#define ADA_DDIV(a, b) __ddiv_rn((a), (b))
#define ADA_DSQRT(a) __dsqrt_rn(a)
#else
ADA_HD double ada_dadd_(volatile double a, volatile double b) { return a + b; }
ADA_HD double ada_dsub_(volatile double a, volatile double b) { return a - b; }
ADA_HD double ada_dmul_(volatile double a, volatile double b) { return a * b; }
#define ADA_DADD(a, b) ada_dadd_((a), (b))
#define ADA_DSUB(a, b) ada_dsub_((a), (b))
#define ADA_DMUL(a, b) ada_dmul_((a), (b))
#define ADA_DDIV(a, b) ((a) / (b))
#define ADA_DSQRT(a) ada_dsqrt_(a)
#if defined(__GNUC__)
ADA_HD double ada_dsqrt_(double a) { return __builtin_sqrt(a); }
#else
#include <math.h>
ADA_HD double ada_dsqrt_(double a) { return sqrt(a); }
#endif
#endif

/* ln(u) for u in (0, 1], to ~1e-16 relative, from exact operations only. */
ADA_HD double ada_portable_log(double u) {
  /* u = m * 2^e with m in [sqrt(1/2), sqrt(2)): exact scaling by powers of two */
  int e = 0;
  double m = u;
  while (m < 0.70710678118654752) { m = ADA_DMUL(m, 2.0); e--; }
  double s = ADA_DDIV(ADA_DSUB(m, 1.0), ADA_DADD(m, 1.0));
  double s2 = ADA_DMUL(s, s);
  /* 2 * atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), |s| <= 0.1716, s^2 <= 0.0295 */
  double acc = 1.0 / 25.0;
  for (int k = 11; k >= 0; k--) acc = ADA_DADD(ADA_DMUL(acc, s2), 1.0 / (double)(2 * k + 1));
  double lm = ADA_DMUL(ADA_DMUL(2.0, s), acc);
  return ADA_DADD(ADA_DMUL((double)e, 0.69314718055994530942), lm);
}

/* cos(2 pi a) for a in [0, 1), from exact operations only. */
ADA_HD double ada_portable_cos2pi(double a) {
  double b = a > 0.5 ? ADA_DSUB(1.0, a) : a; /* cos is even and 1-periodic: b in [0, 0.5] */
  double sign = 1.0;
  if (b > 0.25) { b = ADA_DSUB(0.5, b); sign = -1.0; } /* cos(2pi b) = -cos(2pi(1/2 - b)) */
  double x = ADA_DMUL(b, 6.28318530717958647692); /* [0, pi/2] */
  double x2 = ADA_DMUL(x, x);
  /* Taylor series of cos to x^24: remainder < 1e-19 on [0, pi/2] */
  double acc = 0.0;
  for (int k = 12; k >= 1; k--) {
    acc = ADA_DMUL(ADA_DSUB(1.0, acc), ADA_DDIV(x2, (double)((2 * k) * (2 * k - 1))));
  }
  return ADA_DMUL(sign, ADA_DSUB(1.0, acc));
}

/* The i-th standard normal of a seed: Box-Muller on one Philox block per pair of elements. */
ADA_HD float ada_randn_at(uint64_t seed, uint64_t i) {
  ada_u32x4 r = ada_philox(seed, i >> 1);
  uint32_t a = (i & 1) ? r.v[2] : r.v[0];
  uint32_t b = (i & 1) ? r.v[3] : r.v[1];
  double u1 = ADA_DMUL((double)a + 1.0, 2.3283064365386963e-10); /* (0, 1] */
  double u2 = ADA_DMUL((double)b, 2.3283064365386963e-10);       /* [0, 1) */
  double rad = ADA_DSQRT(ADA_DMUL(-2.0, ada_portable_log(u1)));
  return (float)ADA_DMUL(rad, ada_portable_cos2pi(u2));
}

#endif
