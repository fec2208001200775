/* select_cuda.c: layout selection (row-wise top-k, cumulative threshold) and recall on the GPU,
 * for a block mass that lives on a CUDA device (kernels/select.cu), declared in cuda_attn.h.
 * runtime/layout.c checks every argument and calls these, so the mass never goes to the host.
 *
 * Selection: the kernels rank each row in shared memory (the CPU's rank keys and tie rule),
 * write per-row counts and a bitmask, scan the counts into CSR offsets and fill the indices
 * straight into the layout's device mirror (layout.h: offsets, indices, CTA order in one
 * allocation, as runtime/cuda/attention_cuda.c builds it), so sparse attention needs no upload.
 * The host CSR is filled by two synchronizing copies (the offsets with the error flag, then the
 * indices); the CTA order is computed on the host from the offsets and uploaded.
 */
#define _DEFAULT_SOURCE /* madvise, MADV_HUGEPAGE */
#include <float.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "../../kernels/kernels.h"
#include "../layout.h"
#include "../opcheck.h"
#include "internal.h"


static size_t round256(size_t n) { return (n + 255) & ~(size_t)255; }

/* Host memory for a layout's indices (freed with free()): above 2 MiB, 2 MiB-aligned and
 * marked for transparent huge pages where the kernel offers them, so that the copy from the
 * device does not take a page fault every 4 KiB (the copy ran at 1.6 GB/s before). */
static void *host_indices(size_t n) {
  const size_t huge = (size_t)2 << 20;
  if (n < huge) return malloc(n);
  const size_t a = (n + huge - 1) & ~(huge - 1);
  void *p = aligned_alloc(huge, a);
#ifdef MADV_HUGEPAGE
  if (p) (void)madvise(p, a, MADV_HUGEPAGE);
#endif
  return p;
}

/* The mass as contiguous f32 on its device (*tmp owns a device copy when one is needed). */
static ada_status stage(const ada_tensor *mass, const float **m, ada_tensor **tmp) {
  *tmp = NULL;
  if (mass->dtype == ADA_F32 && ada_tensor_is_contiguous(mass)) {
    *m = ada_tensor_data(mass);
    return ADA_OK;
  }
  ada_status s = ada_tensor_to(tmp, mass, ADA_F32, mass->storage->device);
  if (s) return s;
  *m = ada_tensor_data(*tmp);
  return ADA_OK;
}

/* Rows h * nqb + qb by descending length, stable (the order attention_cuda.c uses). */
static int32_t *cta_order(const ada_layout *l) {
  const size_t rows = (size_t)l->heads * (size_t)l->nqb;
  int32_t *order = malloc(sizeof(int32_t) * rows);
  int64_t *start = calloc((size_t)l->nkb + 2, sizeof(int64_t));
  if (!order || !start) {
    free(order);
    free(start);
    return NULL;
  }
  for (size_t r = 0; r < rows; r++) {
    const int64_t *o = l->offsets + (r / (size_t)l->nqb) * ((size_t)l->nqb + 1) + r % (size_t)l->nqb;
    start[l->nkb - (o[1] - o[0]) + 1]++;
  }
  for (int32_t b = 1; b <= l->nkb + 1; b++) start[b] += start[b - 1];
  for (size_t r = 0; r < rows; r++) {
    const int64_t *o = l->offsets + (r / (size_t)l->nqb) * ((size_t)l->nqb + 1) + r % (size_t)l->nqb;
    order[start[l->nkb - (o[1] - o[0])]++] = (int32_t)r;
  }
  free(start);
  return order;
}

/* *out NULL with ADA_OK: the device path does not take this mass (nkb too large). */
ada_status ada_cuda_layout_select(ada_layout **out, const char *op, const ada_tensor *mass, int32_t mode,
                                  const double *frac, int32_t min_blocks, int32_t max_blocks,
                                  const ada_layout_force *force, int32_t block) {
  *out = NULL;
  const int32_t H = (int32_t)mass->shape[0], nqb = (int32_t)mass->shape[1], nkb = (int32_t)mass->shape[2];
  if (nkb > ada_select_max_nkb()) return ADA_OK;
  const int32_t dev = mass->storage->device.index;
  ada_status s = ada_cuda_enter(dev, op);
  if (s) return s;
  cudaStream_t st;
  if ((s = ada_cuda_stream(dev, op, &st))) return s;
  const float *m;
  ada_tensor *tmp = NULL;
  if ((s = stage(mass, &m, &tmp))) return s;

  const int32_t nc = force ? force->n_cols : 0, nr = force ? force->n_rows : 0;
  const size_t rows = (size_t)H * (size_t)nqb, noff = rows + (size_t)H, W = ((size_t)nkb + 31) / 32;
  /* work: offsets [noff] + bad (one copy back), frac, force, count, bits */
  const size_t b_head = round256(sizeof(int64_t) * (noff + 1)), b_frac = round256(sizeof(double) * (size_t)H);
  const size_t b_force = round256(sizeof(int32_t) * 2 * (size_t)(nc + nr + 1)), b_count = round256(sizeof(int64_t) * rows);
  const size_t b_bits = round256(sizeof(uint32_t) * rows * W);
  const size_t b_param = b_frac + b_force;
  unsigned char *work = NULL, *mir = NULL;
  unsigned char *param = malloc(b_param + sizeof(uint64_t));
  int64_t *head = malloc(sizeof(int64_t) * (noff + 1));
  ada_layout *l = calloc(1, sizeof *l);
  if (!param || !head || !l) {
    s = ada_fail(ADA_ENOMEM, "%s: out of host memory for a layout of %d x %d x %d blocks", op, H, nqb, nkb);
    goto done;
  }
  l->refcount = 1;
  l->heads = H;
  l->nqb = nqb;
  l->nkb = nkb;
  l->block = block;
  memset(param, 0, b_param + sizeof(uint64_t));
  memcpy(param, frac, sizeof(double) * (size_t)H);
  int32_t *fp = (int32_t *)(param + b_frac);
  for (int32_t i = 0; i < nc; i++) fp[2 * i] = force->cols[i][0], fp[2 * i + 1] = force->cols[i][1];
  for (int32_t i = 0; i < nr; i++) fp[2 * (nc + i)] = force->rows[i][0], fp[2 * (nc + i) + 1] = force->rows[i][1];
  const uint64_t none = UINT64_MAX;
  if ((s = ada_cuda_malloc((void **)&work, b_head + b_param + b_count + b_bits, dev)) ||
      (s = ada_cuda_memcpy(work + sizeof(int64_t) * noff, &none, sizeof none, 0, dev)) ||
      (s = ada_cuda_memcpy(work + b_head, param, b_param, 0, dev)))
    goto done;
  int64_t *d_off = (int64_t *)work, *d_count = (int64_t *)(work + b_head + b_param);
  unsigned long long *d_bad = (unsigned long long *)(work + sizeof(int64_t) * noff);
  uint32_t *d_bits = (uint32_t *)(work + b_head + b_param + b_count);
  int e = ada_launch_select_rows(m, H, nqb, nkb, mode, (const double *)(work + b_head), min_blocks, max_blocks,
                                 (const int32_t *)(work + b_head + b_frac), nc, nr, force && force->diagonal ? 1 : 0,
                                 d_count, d_bits, d_bad, st);
  if (e) {
    s = ada_cuda_error((cudaError_t)e, op, "ada_launch_select_rows(...)");
    goto done;
  }
  if ((e = ada_launch_select_offsets(d_count, H, nqb, d_off, st))) {
    s = ada_cuda_error((cudaError_t)e, op, "ada_launch_select_offsets(...)");
    goto done;
  }
  if ((s = ada_cuda_memcpy(head, work, sizeof(int64_t) * (noff + 1), 1, dev))) goto done;
  const uint64_t bad = (uint64_t)head[noff];
  if (bad != UINT64_MAX) {
    float v = 0;
    if ((s = ada_cuda_memcpy(&v, m + bad, sizeof v, 1, dev))) goto done;
    const uint64_t per = (uint64_t)nqb * (uint64_t)nkb;
    s = ada_fail(ADA_EINVAL,
                 "%s: mass must be finite and >= 0, got %g at head %llu, query block %llu, key block %llu (counting from 1)",
                 op, (double)v, (unsigned long long)(bad / per + 1), (unsigned long long)(bad / nkb % nqb + 1),
                 (unsigned long long)(bad % nkb + 1));
    goto done;
  }
  l->offsets = malloc(sizeof(int64_t) * noff);
  l->nnz = head[noff - 1];
  l->indices = host_indices(sizeof(int32_t) * (size_t)(l->nnz > 0 ? l->nnz : 1));
  if (!l->offsets || !l->indices) {
    s = ada_fail(ADA_ENOMEM, "%s: out of memory for %lld layout entries", op, (long long)l->nnz);
    goto done;
  }
  memcpy(l->offsets, head, sizeof(int64_t) * noff);
  int32_t *order = cta_order(l);
  if (!order) {
    s = ada_fail(ADA_ENOMEM, "%s: out of host memory for the order of %zu layout rows", op, rows);
    goto done;
  }
  const size_t m_off = round256(sizeof(int64_t) * noff), m_idx = round256(sizeof(int32_t) * (size_t)(l->nnz > 0 ? l->nnz : 1));
  const size_t m_ord = round256(sizeof(int32_t) * rows);
  if (!(s = ada_cuda_malloc((void **)&mir, m_off + m_idx + m_ord, dev)) &&
      !(s = ada_cuda_memcpy(mir, d_off, sizeof(int64_t) * noff, 2, dev)))
    s = ada_cuda_memcpy(mir + m_off + m_idx, order, sizeof(int32_t) * rows, 0, dev);
  free(order);
  if (s) goto done;
  if ((e = ada_launch_select_fill(d_bits, H, nqb, nkb, (const int64_t *)mir, (int32_t *)(mir + m_off), st))) {
    s = ada_cuda_error((cudaError_t)e, op, "ada_launch_select_fill(...)");
    goto done;
  }
  if (l->nnz > 0 && (s = ada_cuda_memcpy(l->indices, mir + m_off, sizeof(int32_t) * (size_t)l->nnz, 1, dev))) goto done;
  l->dev_offsets = mir;
  l->dev_indices = mir + m_off;
  l->dev_order = mir + m_off + m_idx;
  l->dev_index = dev;
  mir = NULL;
  *out = l;
  l = NULL;
done:
  ada_cuda_free(mir, dev);
  ada_cuda_free(work, dev);
  ada_tensor_free(tmp);
  ada_layout_free(l);
  free(param);
  free(head);
  return s;
}

ada_status ada_cuda_layout_recall(const ada_layout *l, const ada_tensor *mass, double *recall) {
  const char *op = "recall";
  const int32_t dev = mass->storage->device.index;
  ada_status s = ada_cuda_enter(dev, op);
  if (s) return s;
  cudaStream_t st;
  if ((s = ada_cuda_stream(dev, op, &st))) return s;
  const float *m;
  ada_tensor *tmp = NULL;
  if ((s = stage(mass, &m, &tmp))) return s;
  const size_t rows = (size_t)l->heads * (size_t)l->nqb, noff = rows + (size_t)l->heads;
  const bool own = !(l->dev_offsets && l->dev_index == dev); /* upload the CSR when there is no mirror here */
  const size_t b_sc = round256(sizeof(double) * (2 * rows + (size_t)l->heads));
  const size_t b_off = own ? round256(sizeof(int64_t) * noff) : 0;
  const size_t b_idx = own ? round256(sizeof(int32_t) * (size_t)(l->nnz > 0 ? l->nnz : 1)) : 0;
  unsigned char *work = NULL;
  if ((s = ada_cuda_malloc((void **)&work, b_sc + b_off + b_idx, dev))) goto done;
  const int64_t *off = l->dev_offsets;
  const int32_t *idx = l->dev_indices;
  if (own) {
    off = (const int64_t *)(work + b_sc);
    idx = (const int32_t *)(work + b_sc + b_off);
    if ((s = ada_cuda_memcpy(work + b_sc, l->offsets, sizeof(int64_t) * noff, 0, dev)) ||
        (l->nnz > 0 && (s = ada_cuda_memcpy(work + b_sc + b_off, l->indices, sizeof(int32_t) * (size_t)l->nnz, 0, dev))))
      goto done;
  }
  double *sc = (double *)work;
  int e = ada_launch_layout_recall(m, l->heads, l->nqb, l->nkb, off, idx, sc, sc + 2 * rows, st);
  if (e) {
    s = ada_cuda_error((cudaError_t)e, op, "ada_launch_layout_recall(...)");
    goto done;
  }
  s = ada_cuda_memcpy(recall, sc + 2 * rows, sizeof(double) * (size_t)l->heads, 1, dev);
done:
  ada_cuda_free(work, dev);
  ada_tensor_free(tmp);
  return s;
}
