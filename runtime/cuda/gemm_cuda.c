/* gemm_cuda.c: the GEMMs of the CUDA backend (linear, matmul) on cuBLASLt, with cuBLAS as a fallback.
 *
 * - Row-major out [m, n] = A [m, k] . B [k, n] is computed as the column-major product
 *   out^T [n, m] = B^T . A^T, so no operand is copied: a row-major matrix is a transposed
 *   column-major one, and a view whose rows or columns are contiguous is described with the
 *   transpose flag and its leading dimension (w [n, k] of linear is the usual "TN" case; narrowed
 *   and transposed views pass as they are). Only a view with neither dimension contiguous (or
 *   a degenerate stride) is first copied on the device.
 * - Types: A and B of one dtype (f32, bf16 or f16), else both converted to f32 on the device.
 *   Compute is CUBLAS_COMPUTE_32F with f32 scale: f32 accumulation, and for f32 inputs plain
 *   f32 FMA (no TF32), which keeps f32 results within 1e-5 of the CPU. D is out's dtype when
 *   the library has that combination (f32 in -> f32 out; bf16/f16 in -> same or f32 out), else
 *   an f32 scratch that is then converted into out.
 * - Bias in the epilogue (CUBLASLT_EPILOGUE_BIAS; the vector in D's dtype, converted when it is
 *   not). When no algorithm takes it, the bias is added by the row-wise add kernel afterwards.
 * - linear's options (ada_linear_opts): act = gelu_tanh runs in the epilogue on the f32
 *   accumulator (CUBLASLT_EPILOGUE_GELU_BIAS with a bias, CUBLASLT_EPILOGUE_GELU without;
 *   cuBLASLt's GELU is the tanh approximation, which the GPU spec of linear checks against the
 *   CPU), so out is written once; when no algorithm takes it, the plain (or bias) GEMM runs and
 *   the row-wise gelu_tanh kernel follows in place on D. accumulate is beta = 1 with C = D = out
 *   (an f32 scratch D is first filled from out), so out's previous values are added in the
 *   GEMM's f32 epilogue, one read and one write of out.
 * - One cuBLASLt and one cuBLAS handle per device, created on first use under a mutex; every
 *   call is enqueued on the device's one stream. The workspace (32 MiB) comes from the caching
 *   allocator for each call and goes back right after it (reuse is ordered on the stream).
 * - Pointer alignments are passed to the heuristic (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*), so
 *   views at odd offsets get algorithms that accept them.
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "../../kernels/kernels.h"
#include "cuda_ops.h"
#include "internal.h"

#define WORKSPACE_BYTES ((size_t)32 << 20)

typedef struct blas_handles {
  cublasLtHandle_t lt;
  cublasHandle_t blas;
} blas_handles;

static pthread_mutex_t handles_mu = PTHREAD_MUTEX_INITIALIZER;
static blas_handles handles[ADA_CUDA_MAX_DEVICES];

static ada_status blas_error(cublasStatus_t e, const char *op, const char *call) {
  const char *paren = strchr(call, '(');
  const int len = paren ? (int)(paren - call) : (int)strlen(call);
  return ada_fail(e == CUBLAS_STATUS_ALLOC_FAILED ? ADA_ENOMEM : ADA_EDEVICE, "%s: %.*s: %s (%s)", op, len, call,
                  cublasGetStatusString(e), cublasGetStatusName(e));
}

/* Evaluates a cuBLAS / cuBLASLt call; on failure sets s (an ada_status in scope) and jumps to
 * the enclosing function's `done` label. */
#define BLAS_TRY(op, call)                                          \
  do {                                                              \
    cublasStatus_t blas_e_ = (call);                                \
    if (blas_e_ != CUBLAS_STATUS_SUCCESS) {                         \
      s = blas_error(blas_e_, (op), #call);                         \
      goto done;                                                    \
    }                                                               \
  } while (0)

/* The handles of dev (current already), created on first use, bound to the device's stream. */
static ada_status get_handles(int32_t dev, const char *op, cudaStream_t st, blas_handles **out) {
  ada_status s = ADA_OK;
  pthread_mutex_lock(&handles_mu);
  blas_handles *h = &handles[dev];
  if (!h->lt) {
    cublasLtHandle_t lt = NULL;
    cublasHandle_t b = NULL;
    cublasStatus_t e = cublasLtCreate(&lt);
    if (e != CUBLAS_STATUS_SUCCESS) {
      s = blas_error(e, op, "cublasLtCreate");
    } else if ((e = cublasCreate(&b)) != CUBLAS_STATUS_SUCCESS) {
      s = blas_error(e, op, "cublasCreate");
      cublasLtDestroy(lt);
    } else if ((e = cublasSetStream(b, st)) != CUBLAS_STATUS_SUCCESS) {
      s = blas_error(e, op, "cublasSetStream");
      cublasDestroy(b);
      cublasLtDestroy(lt);
    } else if ((e = cublasSetMathMode(b, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS) {
      s = blas_error(e, op, "cublasSetMathMode");
      cublasDestroy(b);
      cublasLtDestroy(lt);
    } else {
      h->lt = lt;
      h->blas = b;
    }
  }
  pthread_mutex_unlock(&handles_mu);
  *out = h;
  return s;
}

static cudaDataType_t cuda_type(ada_dtype t) {
  return t == ADA_BF16 ? CUDA_R_16BF : t == ADA_F16 ? CUDA_R_16F : CUDA_R_32F;
}

/* Largest power of two (up to 256) dividing the address. */
static uint32_t alignment(const void *p) {
  uint32_t a = 256;
  while (a > 1 && ((uintptr_t)p & (a - 1))) a >>= 1;
  return a;
}

/* A column-major operand op(M) of r x c whose element (i, j) is at p[i * si + j * sj]: stored
 * r x c with leading dimension sj (no transpose) or c x r with leading dimension si (transposed). */
typedef struct mat {
  const void *p;
  cublasOperation_t op;
  uint64_t rows, cols; /* as stored */
  int64_t ld;
} mat;

static bool describe(const void *p, int64_t r, int64_t c, int64_t si, int64_t sj, mat *m) {
  m->p = p;
  if (r == 1 || si == 1) { /* stored r x c: element (i, j) at i + j * ld */
    const int64_t ld = c == 1 ? r : sj;
    if (ld >= r && ld >= 1) {
      *m = (mat){p, CUBLAS_OP_N, (uint64_t)r, (uint64_t)c, ld};
      return true;
    }
  }
  if (c == 1 || sj == 1) { /* stored c x r, transposed: element (i, j) at j + i * ld */
    const int64_t ld = r == 1 ? c : si;
    if (ld >= c && ld >= 1) {
      *m = (mat){p, CUBLAS_OP_T, (uint64_t)c, (uint64_t)r, ld};
      return true;
    }
  }
  return false;
}

/* A matrix view t [r0, r1] as op(M) with rows along dimension `rd` of t: describes it in place
 * or makes a contiguous copy (*tmp). */
static ada_status operand(const ada_tensor *t, int rd, mat *m, ada_tensor **tmp) {
  const int cd = 1 - rd;
  if (describe(ada_tensor_data(t), t->shape[rd], t->shape[cd], t->stride[rd], t->stride[cd], m)) return ADA_OK;
  ada_status s = ada_tensor_contiguous(tmp, t);
  if (s) return s;
  const ada_tensor *u = *tmp;
  describe(ada_tensor_data(u), u->shape[rd], u->shape[cd], u->stride[rd], u->stride[cd], m);
  return ADA_OK;
}

/* Adds bias [n] (dtype bdt) to every row of d [m, n] (dtype ddt), in place. */
static ada_status add_bias(void *d, ada_dtype ddt, int64_t m, int64_t n, const void *bias, ada_dtype bdt,
                           cudaStream_t st, const char *op) {
  const ada_nn_operand x = {d, ddt, 0, {1, 0, n}}, b = {bias, bdt, 1, {1, 0, 0}};
  const bool vec = (((uintptr_t)d | (uintptr_t)bias) & 15u) == 0 && n % 8 == 0;
  const int e = ada_launch_rowwise(ADA_NN_ADD, d, ddt, m, n, &x, &b, NULL, 0.0f, vec, (void *)st);
  if (e == 0) return ADA_OK;
  (void)cudaGetLastError();
  return ada_fail(ADA_EDEVICE, "%s: bias kernel launch failed: %s (%s)", op, cudaGetErrorString((cudaError_t)e),
                  cudaGetErrorName((cudaError_t)e));
}

/* gelu_tanh over d [m, n] (contiguous, dtype dt), in place: the activation when no algorithm
 * took the GELU epilogue. */
static ada_status gelu_in_place(void *d, ada_dtype dt, int64_t m, int64_t n, cudaStream_t st, const char *op) {
  const ada_nn_operand x = {d, dt, 0, {1, 0, m * n}}; /* one long row: the grid spreads over all of it */
  const bool vec = ((uintptr_t)d & 15u) == 0;
  const int e = ada_launch_rowwise(ADA_NN_GELU_TANH, d, dt, 1, m * n, &x, NULL, NULL, 0.0f, vec, (void *)st);
  if (e == 0) return ADA_OK;
  (void)cudaGetLastError();
  return ada_fail(ADA_EDEVICE, "%s: gelu_tanh kernel launch failed: %s (%s)", op,
                  cudaGetErrorString((cudaError_t)e), cudaGetErrorName((cudaError_t)e));
}

/* out [m, n] (contiguous) = a [m, k] . B (+ bias [n]), B = b [k, n], or b^T for b [n, k] when bt;
 * then opts->act on it, or out's previous values added (opts->accumulate). */
static ada_status gemm(const char *op, ada_tensor *out, const ada_tensor *a, const ada_tensor *b, bool bt,
                       const ada_tensor *bias, const ada_linear_opts *opts) {
  const bool gelu = opts->act == ADA_LINEAR_ACT_GELU_TANH, acc = opts->accumulate;
  const int32_t dev = out->storage->device.index;
  const ada_device device = out->storage->device;
  cudaStream_t st;
  ada_status s = ada_cuda_enter(dev, op);
  if (!s) s = ada_cuda_stream(dev, op, &st);
  if (s) return s;
  blas_handles *h;
  if ((s = get_handles(dev, op, st, &h))) return s;

  const int64_t m = out->shape[0], n = out->shape[1], k = a->shape[1];
  ada_tensor *ta = NULL, *tb = NULL, *ta2 = NULL, *tb2 = NULL, *tbias = NULL, *tout = NULL;
  cublasLtMatmulDesc_t desc = NULL;
  cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
  cublasLtMatmulPreference_t pref = NULL;
  void *ws = NULL;

  /* one input dtype */
  const ada_tensor *ua = a, *ub = b;
  ada_dtype in_dt = a->dtype;
  if (a->dtype != b->dtype) {
    in_dt = ADA_F32;
    if (a->dtype != ADA_F32 && (s = ada_tensor_to(&ta, a, ADA_F32, device))) goto done;
    if (b->dtype != ADA_F32 && (s = ada_tensor_to(&tb, b, ADA_F32, device))) goto done;
    if (ta) ua = ta;
    if (tb) ub = tb;
  }
  /* cuBLASLt's A is our B side: op(A) = B^T [n, k]; its B is our a: op(B) = a^T [k, m] */
  mat ma, mb;
  if ((s = operand(ub, bt ? 0 : 1, &ma, &tb2))) goto done;
  if ((s = operand(ua, 1, &mb, &ta2))) goto done;

  /* D: out itself when the library writes its dtype, else f32 scratch */
  ada_dtype d_dt = out->dtype;
  if (!(d_dt == ADA_F32 || d_dt == in_dt)) d_dt = ADA_F32;
  void *d = ada_tensor_data(out);
  if (d_dt != out->dtype) {
    if ((s = ada_tensor_empty(&tout, 2, out->shape, ADA_F32, device))) goto done;
    if (acc && (s = ada_tensor_copy(tout, out))) goto done; /* C = D: out's previous values */
    d = ada_tensor_data(tout);
  }
  /* bias: contiguous in D's dtype */
  const void *bias_p = NULL;
  if (bias) {
    if (bias->dtype != d_dt || (n > 1 && bias->stride[0] != 1)) {
      if ((s = ada_tensor_to(&tbias, bias, d_dt, device))) goto done;
      bias_p = ada_tensor_data(tbias);
    } else {
      bias_p = ada_tensor_data(bias);
    }
  }
  if ((s = ada_cuda_malloc(&ws, WORKSPACE_BYTES, dev))) goto done;

  const float alpha = 1.0f, beta = acc ? 1.0f : 0.0f; /* accumulate: D = A.B (+ bias) + C, C = D */
  const cudaDataType_t t_in = cuda_type(in_dt), t_d = cuda_type(d_dt);
  BLAS_TRY(op, cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  BLAS_TRY(op, cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ma.op, sizeof ma.op));
  BLAS_TRY(op, cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &mb.op, sizeof mb.op));
  BLAS_TRY(op, cublasLtMatrixLayoutCreate(&la, t_in, ma.rows, ma.cols, ma.ld));
  BLAS_TRY(op, cublasLtMatrixLayoutCreate(&lb, t_in, mb.rows, mb.cols, mb.ld));
  BLAS_TRY(op, cublasLtMatrixLayoutCreate(&ld, t_d, (uint64_t)n, (uint64_t)m, n));
  BLAS_TRY(op, cublasLtMatmulPreferenceCreate(&pref));
  size_t ws_bytes = WORKSPACE_BYTES;
  BLAS_TRY(op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                                    sizeof ws_bytes));
  const uint32_t al_a = alignment(ma.p), al_b = alignment(mb.p), al_d = alignment(d);
  BLAS_TRY(op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, 4));
  BLAS_TRY(op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, 4));
  BLAS_TRY(op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, 4));
  BLAS_TRY(op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, 4));

  /* epilogues to try, best first: the fused one (GELU with or without bias, or bias), then
   * fewer fused steps; whatever the chosen one lacks runs as a kernel afterwards */
  cublasLtEpilogue_t epis[3];
  int n_epi = 0;
  if (gelu) epis[n_epi++] = bias_p ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
  if (bias_p) {
    epis[n_epi++] = CUBLASLT_EPILOGUE_BIAS;
    const int32_t bias_t = (int32_t)t_d;
    BLAS_TRY(op, cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_p, sizeof bias_p));
    BLAS_TRY(op, cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_t, sizeof bias_t));
  }
  epis[n_epi++] = CUBLASLT_EPILOGUE_DEFAULT;
  cublasLtMatmulHeuristicResult_t res;
  int found = 0;
  bool bias_done = false, gelu_done = false;
  for (int i = 0; i < n_epi && found == 0; i++) {
    BLAS_TRY(op, cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epis[i], sizeof epis[i]));
    if (cublasLtMatmulAlgoGetHeuristic(h->lt, desc, la, lb, ld, ld, pref, 1, &res, &found) != CUBLAS_STATUS_SUCCESS)
      found = 0;
    if (found > 0) {
      bias_done = epis[i] == CUBLASLT_EPILOGUE_GELU_BIAS || epis[i] == CUBLASLT_EPILOGUE_BIAS;
      gelu_done = epis[i] == CUBLASLT_EPILOGUE_GELU_BIAS || epis[i] == CUBLASLT_EPILOGUE_GELU;
    }
  }
  if (found > 0) {
    BLAS_TRY(op, cublasLtMatmul(h->lt, desc, &alpha, ma.p, la, mb.p, lb, &beta, d, ld, d, ld, &res.algo, ws,
                                WORKSPACE_BYTES, st));
  } else {
    /* cuBLAS's GemmEx takes every layout cuBLASLt declined (int sizes) */
    if (n > INT_MAX || m > INT_MAX || k > INT_MAX || ma.ld > INT_MAX || mb.ld > INT_MAX) {
      s = ada_fail(ADA_EUNSUPPORTED, "%s: no cuBLASLt algorithm for out [%lld, %lld] with k = %lld, and the sizes are "
                                     "too large for cuBLAS",
                   op, (long long)m, (long long)n, (long long)k);
      goto done;
    }
    BLAS_TRY(op, cublasSetWorkspace(h->blas, ws, WORKSPACE_BYTES));
    BLAS_TRY(op, cublasGemmEx(h->blas, ma.op, mb.op, (int)n, (int)m, (int)k, &alpha, ma.p, t_in, (int)ma.ld, mb.p,
                              t_in, (int)mb.ld, &beta, d, t_d, (int)n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  if (bias_p && !bias_done && (s = add_bias(d, d_dt, m, n, bias_p, d_dt, st, op))) goto done;
  if (gelu && !gelu_done && (s = gelu_in_place(d, d_dt, m, n, st, op))) goto done;
  if (tout) s = ada_tensor_copy(out, tout);

done:
  if (pref) cublasLtMatmulPreferenceDestroy(pref);
  if (ld) cublasLtMatrixLayoutDestroy(ld);
  if (lb) cublasLtMatrixLayoutDestroy(lb);
  if (la) cublasLtMatrixLayoutDestroy(la);
  if (desc) cublasLtMatmulDescDestroy(desc);
  ada_cuda_free(ws, dev);
  ada_tensor_free(tout);
  ada_tensor_free(tbias);
  ada_tensor_free(ta2);
  ada_tensor_free(tb2);
  ada_tensor_free(ta);
  ada_tensor_free(tb);
  return s;
}

ada_status ada_cuda_op_linear(ada_tensor *out, const ada_tensor *x, const ada_tensor *w, const ada_tensor *b,
                              const ada_linear_opts *opts) {
  return gemm("linear", out, x, w, true, b, opts);
}

ada_status ada_cuda_op_matmul(ada_tensor *out, const ada_tensor *a, const ada_tensor *b) {
  return gemm("matmul", out, a, b, false, NULL, &(const ada_linear_opts){ADA_LINEAR_ACT_NONE, false});
}
