/* attention_common.cuh: device code shared by the attention kernel families (attention_smNN.cu):
 * shared-memory addresses, cp.async, ldmatrix, mma.sync m16n8k16 bf16, ex2, bf16 packing and the
 * output stores of each output dtype. Header-only, included by .cu files only. */
#ifndef ADA_ATTENTION_COMMON_CUH
#define ADA_ATTENTION_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace ada_attn {

__device__ __forceinline__ uint32_t smem_u32(const void *p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

/* c += a * b, m16n8k16, bf16 in, f32 accumulate. */
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
               "{%8, %9}, {%0, %1, %2, %3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t *>(&v);
}

template <typename T> struct OutPair;
template <> struct OutPair<float> {
  static __device__ __forceinline__ void store2(float *p, float a, float b) { *reinterpret_cast<float2 *>(p) = make_float2(a, b); }
  /* streaming store (st.global.cs: written once, evict first) */
  static __device__ __forceinline__ void store2_cs(float *p, float a, float b) { __stcs(reinterpret_cast<float2 *>(p), make_float2(a, b)); }
  static __device__ __forceinline__ void store1(float *p, float a) { *p = a; }
  /* a pair written by another CTA (ld.global.cg: from L2, not this SM's L1) */
  static __device__ __forceinline__ float2 load2_cg(const float *p) { return __ldcg(reinterpret_cast<const float2 *>(p)); }
};
template <> struct OutPair<__nv_bfloat16> {
  static __device__ __forceinline__ void store2(__nv_bfloat16 *p, float a, float b) {
    *reinterpret_cast<__nv_bfloat162 *>(p) = __floats2bfloat162_rn(a, b);
  }
  static __device__ __forceinline__ void store2_cs(__nv_bfloat16 *p, float a, float b) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    __stcs(reinterpret_cast<unsigned int *>(p), *reinterpret_cast<const unsigned int *>(&v));
  }
  static __device__ __forceinline__ void store1(__nv_bfloat16 *p, float a) { *p = __float2bfloat16_rn(a); }
  static __device__ __forceinline__ float2 load2_cg(const __nv_bfloat16 *p) {
    const unsigned int u = __ldcg(reinterpret_cast<const unsigned int *>(p));
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&u));
  }
};
template <> struct OutPair<__half> {
  static __device__ __forceinline__ void store2(__half *p, float a, float b) { *reinterpret_cast<__half2 *>(p) = __floats2half2_rn(a, b); }
  static __device__ __forceinline__ void store2_cs(__half *p, float a, float b) {
    const __half2 v = __floats2half2_rn(a, b);
    __stcs(reinterpret_cast<unsigned int *>(p), *reinterpret_cast<const unsigned int *>(&v));
  }
  static __device__ __forceinline__ void store1(__half *p, float a) { *p = __float2half_rn(a); }
  static __device__ __forceinline__ float2 load2_cg(const __half *p) {
    const unsigned int u = __ldcg(reinterpret_cast<const unsigned int *>(p));
    return __half22float2(*reinterpret_cast<const __half2 *>(&u));
  }
};

} // namespace ada_attn

#endif
