/* select_cuda.c: layout selection (row-wise top-k, cumulative threshold) and recall on the GPU,
 * for a block mass that lives on a CUDA device (kernels/select.cu), declared in cuda_attn.h.
 * runtime/layout.c checks every argument and calls these, so the mass never goes to the host.
 *
 * Selection: the kernels rank each row in shared memory (the CPU's rank keys and tie rule),
 * write per-row counts and a bitmask, scan the counts into CSR offsets and fill the indices
 * straight into the layout's device mirror (mirror.c: offsets, indices, CTA order in one
 * allocation, kept in the layout's derived cache), so sparse attention needs no upload. The host
 * CSR is filled by two synchronizing copies (the offsets with the error flag, then the indices);
 * the CTA order is computed on the host from the offsets (mirror.c) and uploaded.
 */
#define _DEFAULT_SOURCE /* madvise, MADV_HUGEPAGE */
#include <float.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cuda_attn.h"
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
static ada_status stage(const ada_tensor *mass, const float **m, ada_cuda_buf *tmp) {
  tmp->p = NULL;
  if (mass->dtype == ADA_F32 && ada_tensor_is_contiguous(mass)) {
    *m = ada_tensor_data(mass);
    return ADA_OK;
  }
  ada_status s = ada_cuda_stage(mass, ADA_F32, 0, tmp);
  if (s) return s;
  *m = tmp->p;
  return ADA_OK;
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
  ada_cuda_buf tmp = {0};
  if ((s = stage(mass, &m, &tmp))) return s;

  const int32_t nc = force ? force->n_cols : 0, nr = force ? force->n_rows : 0;
  const size_t rows = (size_t)H * (size_t)nqb, noff = rows + (size_t)H, W = ((size_t)nkb + 31) / 32;
  /* work: offsets [noff] + bad (one copy back), frac, force, count, bits */
  const size_t b_head = round256(sizeof(int64_t) * (noff + 1)), b_frac = round256(sizeof(double) * (size_t)H);
  const size_t b_force = round256(sizeof(int32_t) * 2 * (size_t)(nc + nr + 1)), b_count = round256(sizeof(int64_t) * rows);
  const size_t b_bits = round256(sizeof(uint32_t) * rows * W);
  const size_t b_param = b_frac + b_force;
  unsigned char *work = NULL;
  ada_cuda_mirror *mir = NULL;
  unsigned char *param = malloc(b_param + sizeof(uint64_t));
  int64_t *head = malloc(sizeof(int64_t) * (noff + 1));
  ada_layout *l = NULL;
  if (!param || !head) {
    s = ada_fail(ADA_ENOMEM, "%s: out of host memory for a layout of %d x %d x %d blocks", op, H, nqb, nkb);
    goto done;
  }
  if ((s = ada_layout_new(&l, op, H, nqb, nkb, block))) goto done;
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
  l->nnz = head[noff - 1];
  l->indices = host_indices(sizeof(int32_t) * (size_t)(l->nnz > 0 ? l->nnz : 1));
  if (!l->indices) {
    s = ada_fail(ADA_ENOMEM, "%s: out of memory for %lld layout entries", op, (long long)l->nnz);
    goto done;
  }
  memcpy(l->offsets, head, sizeof(int64_t) * noff);
  if ((s = ada_cuda_mirror_new(l, dev, op, &mir)) ||
      (s = ada_cuda_memcpy(mir->offsets, d_off, sizeof(int64_t) * noff, 2, dev)))
    goto done;
  if ((e = ada_launch_select_fill(d_bits, H, nqb, nkb, mir->offsets, mir->indices, st))) {
    s = ada_cuda_error((cudaError_t)e, op, "ada_launch_select_fill(...)");
    goto done;
  }
  if (l->nnz > 0 && (s = ada_cuda_memcpy(l->indices, mir->indices, sizeof(int32_t) * (size_t)l->nnz, 1, dev)))
    goto done;
  s = ada_cuda_mirror_keep(l, mir); /* frees it on failure */
  mir = NULL;
  if (s) goto done;
  *out = l;
  l = NULL;
done:
  ada_cuda_mirror_free(mir, dev);
  ada_cuda_free(work, dev);
  ada_cuda_buf_free(&tmp);
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
  ada_cuda_buf tmp = {0};
  if ((s = stage(mass, &m, &tmp))) return s;
  const size_t rows = (size_t)l->heads * (size_t)l->nqb, noff = rows + (size_t)l->heads;
  const ada_cuda_mirror *mir = ada_derived_get(l->derived, ada_backend_find(ADA_CUDA), dev);
  const bool own = !mir; /* upload the CSR when there is no mirror here */
  const size_t b_sc = round256(sizeof(double) * (2 * rows + (size_t)l->heads));
  const size_t b_off = own ? round256(sizeof(int64_t) * noff) : 0;
  const size_t b_idx = own ? round256(sizeof(int32_t) * (size_t)(l->nnz > 0 ? l->nnz : 1)) : 0;
  unsigned char *work = NULL;
  if ((s = ada_cuda_malloc((void **)&work, b_sc + b_off + b_idx, dev))) goto done;
  const int64_t *off = mir ? mir->offsets : NULL;
  const int32_t *idx = mir ? mir->indices : NULL;
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
  ada_cuda_buf_free(&tmp);
  return s;
}
