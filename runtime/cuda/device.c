/* device.c: devices, streams, copies and the simple kernels of the CUDA backend (see cuda.h).
 *
 * - ada_cuda_device_count() asks cudaGetDeviceCount() once (pthread_once) and caches the
 *   answer; any failure means 0 devices and a reason for ada_cuda_unavailable_reason(). The
 *   CUDA runtime prints nothing on its own, so a machine without a driver stays silent.
 * - One non-blocking stream per device, created lazily under a mutex and never destroyed (the
 *   driver reclaims it at exit). All work of the backend is ordered on it; device->host copies
 *   and ada_cuda_synchronize() wait for it. Large device->host copies are staged through two
 *   pinned buffers (see staged_d2h).
 * - The op entry points validate their arguments (ADA_EINVAL), make the device current,
 *   launch the kernel from kernels/ and turn its status into ADA_EDEVICE "cuda <op>: ...".
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "../../kernels/kernels.h"
#include "internal.h"

/* ---- devices ---------------------------------------------------------------------------- */

static pthread_once_t count_once = PTHREAD_ONCE_INIT;
static int32_t n_devices;
static char no_device_reason[256];

static void count_devices(void) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    int drv = 0;
    if (e == cudaErrorNoDevice) {
      snprintf(no_device_reason, sizeof no_device_reason, "no CUDA device");
    } else if (e == cudaErrorInsufficientDriver) {
      if (cudaDriverGetVersion(&drv) == cudaSuccess && drv > 0)
        snprintf(no_device_reason, sizeof no_device_reason,
                 "CUDA driver too old (it supports CUDA %d.%d, adaspa was built with %d.%d)",
                 drv / 1000, drv % 1000 / 10, CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
      else
        snprintf(no_device_reason, sizeof no_device_reason, "no CUDA driver");
      (void)cudaGetLastError();
    } else if (e == cudaErrorStubLibrary) {
      snprintf(no_device_reason, sizeof no_device_reason,
               "no CUDA driver (only the stub libcuda.so was found)");
    } else {
      snprintf(no_device_reason, sizeof no_device_reason, "CUDA: %s (%s)", cudaGetErrorString(e),
               cudaGetErrorName(e));
    }
    n_devices = 0;
    return;
  }
  if (n <= 0) {
    snprintf(no_device_reason, sizeof no_device_reason, "no CUDA device");
    n = 0;
  }
  n_devices = n > ADA_CUDA_MAX_DEVICES ? ADA_CUDA_MAX_DEVICES : (int32_t)n;
}

int32_t ada_cuda_device_count(void) {
  pthread_once(&count_once, count_devices);
  return n_devices;
}

const char *ada_cuda_unavailable_reason(void) {
  return ada_cuda_device_count() > 0 ? "" : no_device_reason;
}

ada_status ada_cuda_error(cudaError_t e, const char *op, const char *call) {
  (void)cudaGetLastError();
  const char *paren = strchr(call, '(');
  int len = paren ? (int)(paren - call) : (int)strlen(call);
  return ada_fail(e == cudaErrorMemoryAllocation ? ADA_ENOMEM : ADA_EDEVICE, "%s: %.*s: %s (%s)",
                  op, len, call, cudaGetErrorString(e), cudaGetErrorName(e));
}

ada_status ada_cuda_enter(int32_t dev, const char *op) {
  int32_t n = ada_cuda_device_count();
  if (n == 0)
    return ada_fail(ADA_EDEVICE, "%s: cuda:%d requested but no GPU is available (%s)", op,
                    (int)dev, no_device_reason);
  if (dev < 0 || dev >= n)
    return ada_fail(ADA_EDEVICE, "%s: device cuda:%d does not exist (%d GPU%s)", op, (int)dev,
                    (int)n, n == 1 ? "" : "s");
  ADA_CUDA_CHECK(op, cudaSetDevice(dev));
  return ADA_OK;
}

ada_status ada_cuda_device_info_get(int32_t dev, ada_device_info *out) {
  const char *op = "cuda device info";
  if (!out) return ada_fail(ADA_EINVAL, "%s: no output given", op);
  ada_status s = ada_cuda_enter(dev, op);
  if (s) return s;
  struct cudaDeviceProp p;
  size_t free_b = 0, total_b = 0;
  ADA_CUDA_CHECK(op, cudaGetDeviceProperties(&p, dev));
  ADA_CUDA_CHECK(op, cudaMemGetInfo(&free_b, &total_b));
  memset(out, 0, sizeof *out);
  out->index = dev;
  snprintf(out->name, sizeof out->name, "%.*s", (int)sizeof p.name, p.name);
  out->total_bytes = total_b;
  out->free_bytes = free_b;
  out->cc_major = p.major;
  out->cc_minor = p.minor;
  out->sm_count = p.multiProcessorCount;
  return ADA_OK;
}

/* Asked once per device: the properties do not change. */
static pthread_mutex_t props_mu = PTHREAD_MUTEX_INITIALIZER;
static int32_t props[ADA_CUDA_MAX_DEVICES][3]; /* cc major, cc minor, SMs; major 0: not asked yet */

ada_status ada_cuda_props(int32_t dev, int32_t *cc_major, int32_t *cc_minor, int32_t *sm_count) {
  const char *op = "cuda device properties";
  ada_status s = ada_cuda_enter(dev, op);
  if (s) return s;
  pthread_mutex_lock(&props_mu);
  if (props[dev][0] == 0) {
    int v[3] = {0, 0, 0};
    cudaError_t e = cudaDeviceGetAttribute(&v[0], cudaDevAttrComputeCapabilityMajor, dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&v[1], cudaDevAttrComputeCapabilityMinor, dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&v[2], cudaDevAttrMultiProcessorCount, dev);
    if (e != cudaSuccess) {
      pthread_mutex_unlock(&props_mu);
      return ada_cuda_error(e, op, "cudaDeviceGetAttribute");
    }
    for (int i = 0; i < 3; i++) props[dev][i] = v[i];
  }
  *cc_major = props[dev][0];
  *cc_minor = props[dev][1];
  *sm_count = props[dev][2];
  pthread_mutex_unlock(&props_mu);
  return ADA_OK;
}

/* ---- streams ---------------------------------------------------------------------------- */

static pthread_mutex_t stream_mu = PTHREAD_MUTEX_INITIALIZER;
static cudaStream_t streams[ADA_CUDA_MAX_DEVICES];

ada_status ada_cuda_stream(int32_t dev, const char *op, cudaStream_t *out) {
  pthread_mutex_lock(&stream_mu);
  cudaStream_t st = streams[dev];
  if (!st) {
    cudaError_t e = cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
      pthread_mutex_unlock(&stream_mu);
      return ada_cuda_error(e, op, "cudaStreamCreateWithFlags");
    }
    streams[dev] = st;
  }
  pthread_mutex_unlock(&stream_mu);
  *out = st;
  return ADA_OK;
}

/* ada_cuda_enter + ada_cuda_stream. */
static ada_status begin(int32_t dev, const char *op, cudaStream_t *st) {
  ada_status s = ada_cuda_enter(dev, op);
  return s ? s : ada_cuda_stream(dev, op, st);
}

static ada_status launched(int e, const char *op) {
  if (e == 0) return ADA_OK;
  (void)cudaGetLastError();
  return ada_fail(ADA_EDEVICE, "%s: kernel launch failed: %s (%s)", op,
                  cudaGetErrorString((cudaError_t)e), cudaGetErrorName((cudaError_t)e));
}

ada_status ada_cuda_synchronize(int32_t dev) {
  const char *op = "cuda synchronize";
  cudaStream_t st;
  ada_status s = begin(dev, op, &st);
  if (s) return s;
  ADA_CUDA_CHECK(op, cudaStreamSynchronize(st));
  return ADA_OK;
}

/* ---- copies ----------------------------------------------------------------------------- */

/* Device->host copies of STAGE_MIN bytes or more go through two pinned buffers of STAGE_CHUNK
 * bytes (allocated once, on first use): the DMA of chunk i+1 overlaps the host memcpy of chunk
 * i out of the other buffer, instead of the driver's slower pageable path. One copy at a time
 * (a mutex). Returns false (nothing done) when the pinned buffers cannot be had; else *s is
 * the status. The stream is synchronized when it returns true. */
#define STAGE_MIN ((size_t)1 << 20)
#define STAGE_CHUNK ((size_t)8 << 20)
static pthread_mutex_t stage_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *stage_buf[2];
static cudaEvent_t stage_ev[2];
static int stage_state; /* 0: not tried, 1: ready, -1: unavailable */

static bool staged_d2h(void *dst, const void *src, size_t n, cudaStream_t st, ada_status *s) {
  const char *op = "cuda memcpy device->host";
  pthread_mutex_lock(&stage_mu);
  if (stage_state == 0) {
    stage_state = -1;
    if (cudaHostAlloc((void **)&stage_buf[0], 2 * STAGE_CHUNK, cudaHostAllocPortable) == cudaSuccess) {
      stage_buf[1] = stage_buf[0] + STAGE_CHUNK;
      const bool ev0 = cudaEventCreateWithFlags(&stage_ev[0], cudaEventDisableTiming) == cudaSuccess;
      if (ev0 && cudaEventCreateWithFlags(&stage_ev[1], cudaEventDisableTiming) == cudaSuccess) {
        stage_state = 1;
      } else { /* give back what was made: the direct copy serves from now on */
        if (ev0) (void)cudaEventDestroy(stage_ev[0]);
        (void)cudaFreeHost(stage_buf[0]);
        stage_buf[0] = stage_buf[1] = NULL;
      }
    }
    (void)cudaGetLastError(); /* unavailable: the direct copy below */
  }
  if (stage_state != 1) {
    pthread_mutex_unlock(&stage_mu);
    return false;
  }
  const size_t chunks = (n + STAGE_CHUNK - 1) / STAGE_CHUNK;
  cudaError_t e = cudaSuccess;
  for (size_t i = 0; i <= chunks && e == cudaSuccess; i++) {
    if (i < chunks) { /* start chunk i into buffer i & 1 (its previous chunk was copied out) */
      const size_t off = i * STAGE_CHUNK, len = n - off < STAGE_CHUNK ? n - off : STAGE_CHUNK;
      e = cudaMemcpyAsync(stage_buf[i & 1], (const unsigned char *)src + off, len, cudaMemcpyDeviceToHost, st);
      if (e == cudaSuccess) e = cudaEventRecord(stage_ev[i & 1], st);
    }
    if (i > 0 && e == cudaSuccess) { /* finish chunk i - 1 */
      const size_t j = i - 1, off = j * STAGE_CHUNK, len = n - off < STAGE_CHUNK ? n - off : STAGE_CHUNK;
      e = cudaEventSynchronize(stage_ev[j & 1]);
      if (e == cudaSuccess) memcpy((unsigned char *)dst + off, stage_buf[j & 1], len);
    }
  }
  if (e == cudaSuccess) e = cudaStreamSynchronize(st);
  pthread_mutex_unlock(&stage_mu);
  *s = e == cudaSuccess ? ADA_OK : ada_cuda_error(e, op, "staged copy");
  return true;
}

ada_status ada_cuda_memcpy(void *dst, const void *src, size_t n, int32_t kind, int32_t dev) {
  static const char *const ops[3] = {"cuda memcpy host->device", "cuda memcpy device->host",
                                     "cuda memcpy device->device"};
  if (kind < 0 || kind > 2) return ada_fail(ADA_EINVAL, "cuda memcpy: invalid kind %d", (int)kind);
  const char *op = ops[kind];
  if (n == 0) return ADA_OK;
  if (!dst || !src) return ada_fail(ADA_EINVAL, "%s: NULL pointer", op);
  static const enum cudaMemcpyKind kinds[3] = {cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
                                               cudaMemcpyDeviceToDevice};
  cudaStream_t st;
  ada_status s = begin(dev, op, &st);
  if (s) return s;
  if (kind == 1 && n >= STAGE_MIN && staged_d2h(dst, src, n, st, &s)) return s;
  ADA_CUDA_CHECK(op, cudaMemcpyAsync(dst, src, n, kinds[kind], st));
  if (kind == 1) ADA_CUDA_CHECK(op, cudaStreamSynchronize(st));
  return ADA_OK;
}

static bool dtype_ok(ada_dtype t) { return (unsigned)t < (unsigned)ADA_NDTYPES; }

/* Validates a view; *n gets its element count. */
static ada_status check_view(const ada_strided *l, const char *op, const char *what, int64_t *n) {
  if (!l) return ada_fail(ADA_EINVAL, "%s: no %s layout given", op, what);
  if (l->ndim < 0 || l->ndim > ADA_MAX_DIMS)
    return ada_fail(ADA_EINVAL, "%s: %s has %d dimensions (0 to %d allowed)", op, what,
                    (int)l->ndim, ADA_MAX_DIMS);
  *n = 1;
  for (int32_t d = 0; d < l->ndim; d++) {
    if (l->shape[d] < 0)
      return ada_fail(ADA_EINVAL, "%s: %s has size %lld in dimension %d", op, what,
                      (long long)l->shape[d], (int)d + 1);
    *n *= l->shape[d];
  }
  return ADA_OK;
}

ada_status ada_cuda_copy(void *dst, ada_dtype ddt, const ada_strided *dl, const void *src,
                         ada_dtype sdt, const ada_strided *sl, int32_t dev) {
  const char *op = "cuda copy";
  int64_t n, sn;
  ada_status s;
  if (!dtype_ok(ddt) || !dtype_ok(sdt))
    return ada_fail(ADA_EINVAL, "%s: invalid dtype %d", op, (int)(dtype_ok(ddt) ? sdt : ddt));
  if ((s = check_view(dl, op, "destination", &n)) || (s = check_view(sl, op, "source", &sn)))
    return s;
  if (dl->ndim != sl->ndim || memcmp(dl->shape, sl->shape, sizeof(int64_t) * (size_t)dl->ndim))
    return ada_fail(ADA_EINVAL, "%s: destination and source shapes differ", op);
  if (n == 0) return ADA_OK;
  if (!dst || !src) return ada_fail(ADA_EINVAL, "%s: NULL pointer", op);
  cudaStream_t st;
  if ((s = begin(dev, op, &st))) return s;
  return launched(ada_launch_copy(dst, ddt, dl, src, sdt, sl, (void *)st), op);
}

ada_status ada_cuda_fill(void *dst, ada_dtype ddt, const ada_strided *dl, double value,
                         int32_t dev) {
  const char *op = "cuda fill";
  int64_t n;
  ada_status s;
  if (!dtype_ok(ddt)) return ada_fail(ADA_EINVAL, "%s: invalid dtype %d", op, (int)ddt);
  if ((s = check_view(dl, op, "destination", &n))) return s;
  if (n == 0) return ADA_OK;
  if (!dst) return ada_fail(ADA_EINVAL, "%s: NULL pointer", op);
  cudaStream_t st;
  if ((s = begin(dev, op, &st))) return s;
  return launched(ada_launch_fill(dst, ddt, dl, value, (void *)st), op);
}

ada_status ada_cuda_arange(void *dst, ada_dtype ddt, int64_t n, double start, double step,
                           int32_t dev) {
  const char *op = "cuda arange";
  if (!dtype_ok(ddt)) return ada_fail(ADA_EINVAL, "%s: invalid dtype %d", op, (int)ddt);
  if (n < 0) return ada_fail(ADA_EINVAL, "%s: %lld elements", op, (long long)n);
  if (n == 0) return ADA_OK;
  if (!dst) return ada_fail(ADA_EINVAL, "%s: NULL pointer", op);
  cudaStream_t st;
  ada_status s = begin(dev, op, &st);
  if (s) return s;
  return launched(ada_launch_arange(dst, ddt, n, start, step, (void *)st), op);
}

ada_status ada_cuda_randn(void *dst, ada_dtype ddt, int64_t n, uint64_t seed, int32_t dev) {
  const char *op = "cuda randn";
  if (!dtype_ok(ddt) || !ada_dtype_is_float(ddt))
    return ada_fail(ADA_EINVAL, "%s: dtype %d is not a float dtype (f32, bf16, f16)", op, (int)ddt);
  if (n < 0) return ada_fail(ADA_EINVAL, "%s: %lld elements", op, (long long)n);
  if (n == 0) return ADA_OK;
  if (!dst) return ada_fail(ADA_EINVAL, "%s: NULL pointer", op);
  cudaStream_t st;
  ada_status s = begin(dev, op, &st);
  if (s) return s;
  return launched(ada_launch_randn(dst, ddt, n, seed, (void *)st), op);
}

/* ---- events ------------------------------------------------------------------------------------ */

ada_status ada_cuda_event_new(void **out, int32_t dev) {
  const char *op = "cuda event";
  ada_status s = ada_cuda_enter(dev, op);
  if (s) return s;
  cudaEvent_t ev;
  ADA_CUDA_CHECK(op, cudaEventCreate(&ev));
  *out = (void *)ev;
  return ADA_OK;
}

ada_status ada_cuda_event_record(void *ev, int32_t dev) {
  const char *op = "cuda event record";
  cudaStream_t st;
  ada_status s = begin(dev, op, &st);
  if (s) return s;
  ADA_CUDA_CHECK(op, cudaEventRecord((cudaEvent_t)ev, st));
  return ADA_OK;
}

ada_status ada_cuda_event_elapsed(void *start, void *stop, int32_t dev, double *seconds) {
  const char *op = "cuda event elapsed";
  ada_status s = ada_cuda_enter(dev, op);
  if (s) return s;
  float ms = 0;
  ADA_CUDA_CHECK(op, cudaEventSynchronize((cudaEvent_t)stop));
  ADA_CUDA_CHECK(op, cudaEventElapsedTime(&ms, (cudaEvent_t)start, (cudaEvent_t)stop));
  *seconds = (double)ms * 1e-3;
  return ADA_OK;
}

void ada_cuda_event_free(void *ev, int32_t dev) {
  (void)dev;
  if (ev && cudaEventDestroy((cudaEvent_t)ev) != cudaSuccess) (void)cudaGetLastError();
}
