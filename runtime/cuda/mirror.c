/* mirror.c: a layout's device mirror (cuda_attn.h), kept in the layout's derived cache
 * (backend.h): one allocation on the device holding offsets (int64, as layout.h), indices (int32)
 * and the CTA order of the sparse kernels (int32 [heads * nqb]). The CTA order (runtime/walk.h,
 * ada_order_longest) lists the query-block rows h * nqb + qb by descending length (a stable
 * counting sort), so that the long rows (dense heads, text rows) start first and the short ones
 * fill in at the end; layouts of other blocks than 64 also get the head-major order
 * (ada_order_head: the plan's variant "head" for the sm90 kernel). Layouts of blocks of 64 also get the sm90 kernel's walk of 128-row items
 * (runtime/walk.h), for the device's SM count, and the per-row flags of the kernel's passes over
 * the key blocks (ada_attn_params.split_flags, 4 a row; written by the launcher). A layout is immutable, so its mirror never goes
 * stale; it goes back to the allocator with the layout (ada_cuda_mirror_free through the
 * backend's derived_free). */
#include <stdlib.h>
#include <string.h>

#include "../walk.h"
#include "cuda_attn.h"
#include "internal.h"

static size_t round256(size_t n) { return (n + 255) & ~(size_t)255; }

int32_t *ada_cuda_cta_order(const ada_layout *l) {
  const size_t rows = (size_t)l->heads * (size_t)l->nqb;
  int32_t *order = malloc(sizeof(int32_t) * (rows ? rows : 1));
  if (order && rows && ada_order_longest(l->heads, l->nqb, l->nkb, l->offsets, order) != 0) {
    free(order);
    return NULL;
  }
  return order;
}

void ada_cuda_mirror_free(void *data, int32_t dev) {
  ada_cuda_mirror *m = data;
  if (!m) return;
  ada_cuda_free(m->base, dev);
  free(m);
}

ada_status ada_cuda_mirror_new(const ada_layout *l, int32_t dev, const char *op, ada_cuda_mirror **out) {
  const size_t rows = (size_t)l->heads * (size_t)l->nqb, noff = rows + (size_t)l->heads;
  const size_t b_off = round256(sizeof(int64_t) * noff);
  const size_t b_idx = round256(sizeof(int32_t) * (size_t)(l->nnz > 0 ? l->nnz : 1));
  const size_t b_ord = round256(sizeof(int32_t) * rows);
  const size_t items = l->block == 64 ? (size_t)l->heads * (((size_t)l->nqb + 1) / 2) : 0;
  const size_t hrows = l->block == 64 ? 0 : rows; /* the head-major order: other blocks than 64 */
  ada_cuda_mirror *m = calloc(1, sizeof *m);
  int32_t *order = ada_cuda_cta_order(l), *walk = items ? malloc(sizeof(int32_t) * items) : NULL;
  int32_t *horder = hrows ? malloc(sizeof(int32_t) * hrows) : NULL;
  if (!m || !order || (items && !walk) || (hrows && !horder)) {
    free(m);
    free(order);
    free(walk);
    free(horder);
    return ada_fail(ADA_ENOMEM, "%s: out of host memory for the order of %zu layout rows", op, rows);
  }
  ada_status s = ADA_OK;
  if (hrows && ada_order_head(l->heads, l->nqb, l->nkb, l->offsets, horder) != 0)
    s = ada_fail(ADA_ENOMEM, "%s: out of host memory for the head-major order of %zu layout rows", op, rows);
  if (!s && items) {
    int32_t major, minor, sms;
    s = ada_cuda_props(dev, &major, &minor, &sms);
    const int e = s ? 0 : ada_walk64(l->heads, l->nqb, l->offsets, sms, walk);
    if (!s && e)
      s = ada_fail(e == -2 ? ADA_ENOMEM : ADA_EINVAL,
                   "%s: %s computing the walk of %zu work items (layout heads %d, %d x %d blocks of 64)", op,
                   e == -2 ? "out of host memory" : "bad sizes", items, (int)l->heads, (int)l->nqb, (int)l->nkb);
  }
  unsigned char *d = NULL;
  const size_t b_walk = round256(sizeof(int32_t) * items), flags = l->block == 64 ? 4 * rows : 0;
  const size_t b_hord = round256(sizeof(int32_t) * hrows);
  if (!s) s = ada_cuda_malloc((void **)&d, b_off + b_idx + b_ord + b_walk + b_hord + sizeof(uint32_t) * flags, dev);
  if (!s) s = ada_cuda_memcpy(d + b_off + b_idx, order, sizeof(int32_t) * rows, 0, dev);
  if (!s && items) s = ada_cuda_memcpy(d + b_off + b_idx + b_ord, walk, sizeof(int32_t) * items, 0, dev);
  if (!s && hrows) s = ada_cuda_memcpy(d + b_off + b_idx + b_ord + b_walk, horder, sizeof(int32_t) * hrows, 0, dev);
  free(order); /* copies from pageable memory are staged before cudaMemcpyAsync returns */
  free(walk);
  free(horder);
  if (s) {
    ada_cuda_free(d, dev);
    free(m);
    return s;
  }
  m->base = d;
  m->offsets = (int64_t *)d;
  m->indices = (int32_t *)(d + b_off);
  m->order = (int32_t *)(d + b_off + b_idx);
  m->walk64 = items ? (int32_t *)(d + b_off + b_idx + b_ord) : NULL;
  m->order_head = hrows ? (int32_t *)(d + b_off + b_idx + b_ord + b_walk) : NULL;
  m->flags64 = flags ? (uint32_t *)(d + b_off + b_idx + b_ord + b_walk + b_hord) : NULL;
  m->dev = dev;
  /* what the AdaSpa cache reports as the layout's device memory */
  m->bytes = sizeof(int64_t) * noff + sizeof(int32_t) * (size_t)l->nnz + sizeof(int32_t) * (rows + items + hrows + flags);
  *out = m;
  return ADA_OK;
}

ada_status ada_cuda_mirror_keep(const ada_layout *l, ada_cuda_mirror *m) {
  ada_status s = ada_derived_put(l->derived, ada_backend_find(ADA_CUDA), m->dev, m, m->bytes);
  if (s) ada_cuda_mirror_free(m, m->dev);
  return s;
}

ada_status ada_cuda_mirror_get(const ada_layout *l, int32_t dev, const char *op, const ada_cuda_mirror **out) {
  const ada_cuda_mirror *have = ada_derived_get(l->derived, ada_backend_find(ADA_CUDA), dev);
  if (have) {
    *out = have;
    return ADA_OK;
  }
  ada_cuda_mirror *m;
  ada_status s = ada_cuda_mirror_new(l, dev, op, &m);
  if (s) return s;
  const size_t noff = (size_t)l->heads * ((size_t)l->nqb + 1);
  if ((s = ada_cuda_memcpy(m->offsets, l->offsets, sizeof(int64_t) * noff, 0, dev)) ||
      (l->nnz > 0 && (s = ada_cuda_memcpy(m->indices, l->indices, sizeof(int32_t) * (size_t)l->nnz, 0, dev)))) {
    ada_cuda_mirror_free(m, dev);
    return s;
  }
  if ((s = ada_cuda_mirror_keep(l, m))) return s;
  *out = m;
  return ADA_OK;
}
