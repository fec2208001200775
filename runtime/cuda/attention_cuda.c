/* attention_cuda.c: the CUDA backend of the attention ops (cuda_attn.h): staging of the inputs
 * the kernels cannot read in place, the finiteness check of a given lse, the device mirror of a
 * sparse layout, and the launch of kernels/attention.cu on the device's stream.
 *
 * - q, k, v are read in place when they are bf16 with a contiguous last dimension of 64 or 128,
 *   a 16-byte aligned first element and row and head strides that are multiples of 8 elements
 *   (the [S, 3, H, D] QKV projection's views are); anything else is copied on the device into a
 *   contiguous bf16 [S, H, 64 | 128] tensor, zero-padded past D (zeros change no dot product, and
 *   the padded output columns are not written).
 * - lse_in is read as contiguous f32 (copied otherwise) and must be finite, as on the CPU: a count
 *   of its non-finite values (and the first index) comes back to the host (a synchronizing copy
 *   of 16 bytes; the search steps that use it are rare).
 * - A layout is mirrored once per layout on the device it is used on (one allocation: offsets
 *   int64, indices int32, and the CTA order: query-block rows by descending length, so that the
 *   long rows (dense heads, text rows) start first and the short ones fill in at the end). The
 *   mirror is a cache of an immutable layout; ada_layout_free returns it to the allocator.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../kernels/kernels.h"
#include "../opcheck.h"
#include "cuda_attn.h"
#include "internal.h"

/* A bf16 view the kernels read: first element, row and head strides in elements. */
typedef struct kview {
  const void *p;
  int64_t rs, hs;
  ada_tensor *tmp; /* the staged copy, or NULL */
} kview;

static bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

static ada_status prep_qkv(const ada_tensor *t, int32_t dp, kview *o) {
  const int64_t S = t->shape[0], H = t->shape[1], D = t->shape[2];
  const int64_t rs = S > 1 ? t->stride[0] : 0, hs = H > 1 ? t->stride[1] : 0;
  o->tmp = NULL;
  if (t->dtype == ADA_BF16 && D == dp && (D == 1 || t->stride[2] == 1) && rs % 8 == 0 && hs % 8 == 0 &&
      aligned16(ada_tensor_data(t))) {
    o->p = ada_tensor_data(t);
    o->rs = rs;
    o->hs = hs;
    return ADA_OK;
  }
  ada_status s;
  ada_tensor *tmp = NULL;
  if (D == dp) {
    if ((s = ada_tensor_to(&tmp, t, ADA_BF16, t->storage->device))) return s;
  } else {
    const int64_t shape[3] = {S, H, dp};
    ada_tensor *view = NULL;
    if ((s = ada_tensor_full(&tmp, 3, shape, 0.0, ADA_BF16, t->storage->device)) ||
        (s = ada_tensor_narrow(&view, tmp, 2, 0, D)) || (s = ada_tensor_copy(view, t))) {
      ada_tensor_free(view);
      ada_tensor_free(tmp);
      return s;
    }
    ada_tensor_free(view);
  }
  o->tmp = tmp;
  o->p = ada_tensor_data(tmp);
  o->rs = H * dp;
  o->hs = dp;
  return ADA_OK;
}

/* lse_in as contiguous f32 (*tmp owns a copy), checked finite. */
static ada_status prep_lse(const char *op, const char *arg, const ada_tensor *t, int32_t dev, cudaStream_t st,
                           const float **out, ada_tensor **tmp) {
  *tmp = NULL;
  ada_status s;
  const ada_tensor *use = t;
  if (t->dtype != ADA_F32 || !ada_tensor_is_contiguous(t)) {
    if ((s = ada_tensor_to(tmp, t, ADA_F32, t->storage->device))) return s;
    use = *tmp;
  }
  const float *x = ada_tensor_data(use);
  const int64_t n = ada_tensor_numel(use);
  unsigned long long *res = NULL, host[2] = {0, 0};
  if ((s = ada_cuda_malloc((void **)&res, sizeof host, dev))) goto fail;
  int e = ada_launch_count_nonfinite(x, n, res, st);
  if (e) {
    s = ada_cuda_error((cudaError_t)e, op, "ada_launch_count_nonfinite(...)");
    goto fail;
  }
  s = ada_cuda_memcpy(host, res, sizeof host, 1, dev);
  ada_cuda_free(res, dev);
  res = NULL;
  if (s) goto fail;
  if (host[0]) {
    float first = 0;
    if ((s = ada_cuda_memcpy(&first, x + host[1], sizeof first, 1, dev))) goto fail;
    s = ada_fail(ADA_EINVAL, "%s: %s %s must be finite, got %lld non-finite values (the first is %g)", op, arg,
                 ada_chk_shape_str(t), (long long)host[0], (double)first);
    goto fail;
  }
  *out = x;
  return ADA_OK;
fail:
  ada_cuda_free(res, dev);
  ada_tensor_free(*tmp);
  *tmp = NULL;
  return s;
}

static size_t round256(size_t n) { return (n + 255) & ~(size_t)255; }

/* The device mirror of l on dev (uploaded on first use there). */
static ada_status mirror(const char *op, const ada_layout *cl, int32_t dev) {
  ada_layout *l = (ada_layout *)cl; /* the mirror is a cache on an immutable layout */
  if (l->dev_offsets && l->dev_index == dev) return ADA_OK;
  if (l->dev_offsets) {
    ada_cuda_free(l->dev_offsets, l->dev_index);
    l->dev_offsets = l->dev_indices = l->dev_order = NULL;
  }
  const size_t rows = (size_t)l->heads * (size_t)l->nqb, noff = rows + (size_t)l->heads;
  const size_t b_off = round256(sizeof(int64_t) * noff), b_idx = round256(sizeof(int32_t) * (size_t)(l->nnz > 0 ? l->nnz : 1));
  const size_t b_ord = round256(sizeof(int32_t) * rows);
  /* rows by descending length (counting sort, stable) */
  int32_t *order = malloc(sizeof(int32_t) * rows);
  int64_t *start = calloc((size_t)l->nkb + 2, sizeof(int64_t));
  if (!order || !start) {
    free(order);
    free(start);
    return ada_fail(ADA_ENOMEM, "%s: out of host memory for the order of %zu layout rows", op, rows);
  }
  for (size_t r = 0; r < rows; r++) {
    const int64_t *o = l->offsets + (r / (size_t)l->nqb) * ((size_t)l->nqb + 1) + r % (size_t)l->nqb;
    start[l->nkb - (o[1] - o[0]) + 1]++; /* bucket nkb - length: the longest first */
  }
  for (int32_t b = 1; b <= l->nkb + 1; b++) start[b] += start[b - 1];
  for (size_t r = 0; r < rows; r++) {
    const int64_t *o = l->offsets + (r / (size_t)l->nqb) * ((size_t)l->nqb + 1) + r % (size_t)l->nqb;
    order[start[l->nkb - (o[1] - o[0])]++] = (int32_t)r;
  }
  free(start);
  unsigned char *d = NULL;
  ada_status s = ada_cuda_malloc((void **)&d, b_off + b_idx + b_ord, dev);
  if (!s) s = ada_cuda_memcpy(d, l->offsets, sizeof(int64_t) * noff, 0, dev);
  if (!s && l->nnz > 0) s = ada_cuda_memcpy(d + b_off, l->indices, sizeof(int32_t) * (size_t)l->nnz, 0, dev);
  if (!s) s = ada_cuda_memcpy(d + b_off + b_idx, order, sizeof(int32_t) * rows, 0, dev);
  free(order); /* copies from pageable memory are staged before cudaMemcpyAsync returns */
  if (s) {
    ada_cuda_free(d, dev);
    return s;
  }
  l->dev_offsets = d;
  l->dev_indices = d + b_off;
  l->dev_order = d + b_off + b_idx;
  l->dev_index = dev;
  return ADA_OK;
}

ada_status ada_cuda_attn(const char *op, ada_cuda_attn_mode mode, ada_tensor *out, ada_tensor *lse, ada_tensor *mass,
                         const ada_tensor *q, const ada_tensor *k, const ada_tensor *v, const ada_tensor *lse_in,
                         const ada_layout *layout, int64_t kv_valid, double scale, int32_t block) {
  const int32_t dev = q->storage->device.index;
  const int64_t D = q->shape[2];
  if (D > 128)
    return ada_fail(ADA_EUNSUPPORTED, "%s: q %s has head dimension %lld; the CUDA kernels take at most 128", op,
                    ada_chk_shape_str(q), (long long)D);
  ada_status s = ada_cuda_enter(dev, op);
  if (s) return s;
  cudaStream_t st;
  if ((s = ada_cuda_stream(dev, op, &st))) return s;
  const int32_t dp = D <= 64 ? 64 : 128;
  const bool has_v = mode != ADA_CUDA_ATTN_MASS, has_lse_in = mode == ADA_CUDA_ATTN_FUSED || mode == ADA_CUDA_ATTN_MASS;
  kview qv = {0}, kv = {0}, vv = {0};
  ada_tensor *lse_tmp = NULL;
  const float *lse_in_p = NULL;
  if ((s = prep_qkv(q, dp, &qv)) || (s = prep_qkv(k, dp, &kv)) || (has_v && (s = prep_qkv(v, dp, &vv))) ||
      (has_lse_in && (s = prep_lse(op, mode == ADA_CUDA_ATTN_MASS ? "lse" : "lse_cached", lse_in, dev, st, &lse_in_p,
                                   &lse_tmp))) ||
      (mode == ADA_CUDA_ATTN_SPARSE && (s = mirror(op, layout, dev))))
    goto done;

  ada_attn_params p;
  memset(&p, 0, sizeof p);
  p.mode = mode == ADA_CUDA_ATTN_DENSE    ? ADA_ATTN_DENSE
           : mode == ADA_CUDA_ATTN_SPARSE ? ADA_ATTN_SPARSE
           : mode == ADA_CUDA_ATTN_FUSED  ? ADA_ATTN_FUSED
                                          : ADA_ATTN_MASS;
  p.q = qv.p;
  p.q_rs = qv.rs;
  p.q_hs = qv.hs;
  p.k = kv.p;
  p.k_rs = kv.rs;
  p.k_hs = kv.hs;
  if (has_v) {
    p.v = vv.p;
    p.v_rs = vv.rs;
    p.v_hs = vv.hs;
    p.out = ada_tensor_data(out);
    p.out_dtype = out->dtype;
    p.out_dim = (int32_t)D;
    p.lse = ada_tensor_data(lse);
  }
  p.sq = q->shape[0];
  p.skv = k->shape[0];
  p.kv_valid = kv_valid;
  p.heads = (int32_t)q->shape[1];
  p.dim = dp;
  p.scale = (float)scale;
  if (has_lse_in) {
    p.lse_in = lse_in_p;
    p.mass = ada_tensor_data(mass);
    p.mass_block = block;
  }
  if (mode == ADA_CUDA_ATTN_SPARSE) {
    p.offsets = layout->dev_offsets;
    p.indices = layout->dev_indices;
    p.order = layout->dev_order;
    p.layout_block = layout->block;
  }
  int e = ada_launch_attention(&p, st);
  if (e) s = ada_cuda_error((cudaError_t)e, op, "ada_launch_attention(...)");
done:
  /* staged copies go back to the allocator's cache; the stream orders their reuse after the kernel */
  ada_tensor_free(qv.tmp);
  ada_tensor_free(kv.tmp);
  ada_tensor_free(vv.tmp);
  ada_tensor_free(lse_tmp);
  return s;
}
