/* nccl.c: the NCCL device transport of the communicator (comm.h: ada_comm_device_ops), registered
 * at start-up. Built only when CUDA=1 and the Makefile found nccl.h (ADA_HAVE_NCCL); used only
 * when a communicator is asked for it (ADASPA_COMM_DEVICE=nccl).
 *
 * libnccl is loaded with dlopen when a communicator first opens the transport, from
 * ADASPA_NCCL_LIB when set, else libnccl.so.2 on the library path, else the directory the build
 * found it in (ADA_NCCL_LIBDIR): a binary with this file runs unchanged where there is no NCCL
 * until NCCL is asked for, and then fails naming what it tried.
 *
 * The communicator is made in NCCL's nonblocking mode (config.blocking = 0), so no NCCL call
 * blocks: a call that answers ncclInProgress is waited for by polling ncclCommGetAsyncError, and a
 * collective by polling its stream (cudaStreamQuery) and the asynchronous error, each wait also
 * polling the host communicator (ada_comm_poll: another rank's abort, a dead peer, the timeout).
 * On any failure the NCCL communicator is aborted (ncclCommAbort). The unique id goes from rank 0
 * to the others over the host transport, together with every rank's readiness, so a rank that
 * cannot load NCCL fails every rank at once naming it. NVLink multicast (NVLS) is left off
 * (NCCL_NVLS_ENABLE=0 unless set). Work is ordered on the CUDA backend's stream of the GPU. */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nccl.h>

#include "../comm.h"
#include "internal.h"

#ifndef ADA_NCCL_LIBDIR
#define ADA_NCCL_LIBDIR ""
#endif

/* ---- the library, loaded once ---------------------------------------------------------------- */

static struct {
  bool tried, ok;
  char why[1024];
  void *so;
  __typeof__(&ncclGetVersion) GetVersion;
  __typeof__(&ncclGetUniqueId) GetUniqueId;
  __typeof__(&ncclCommInitRankConfig) CommInitRankConfig;
  __typeof__(&ncclCommGetAsyncError) CommGetAsyncError;
  __typeof__(&ncclCommFinalize) CommFinalize;
  __typeof__(&ncclCommDestroy) CommDestroy;
  __typeof__(&ncclCommAbort) CommAbort;
  __typeof__(&ncclGetErrorString) GetErrorString;
  __typeof__(&ncclGetLastError) GetLastError;
  __typeof__(&ncclAllGather) AllGather;
  __typeof__(&ncclAllReduce) AllReduce;
  __typeof__(&ncclSend) Send;
  __typeof__(&ncclRecv) Recv;
  __typeof__(&ncclGroupStart) GroupStart;
  __typeof__(&ncclGroupEnd) GroupEnd;
} nc;

static bool load(void) {
  if (nc.tried) return nc.ok;
  nc.tried = true;
  const char *env = getenv("ADASPA_NCCL_LIB");
  char dirlib[256];
  snprintf(dirlib, sizeof dirlib, "%s/libnccl.so.2", ADA_NCCL_LIBDIR);
  const char *tries[3] = {env && *env ? env : NULL, env && *env ? NULL : "libnccl.so.2", *ADA_NCCL_LIBDIR ? dirlib : NULL};
  const char *err = "no candidate";
  for (int i = 0; i < 3 && !nc.so; i++) {
    if (!tries[i]) continue;
    nc.so = dlopen(tries[i], RTLD_NOW | RTLD_LOCAL);
    if (!nc.so) err = dlerror();
  }
  if (!nc.so) {
    snprintf(nc.why, sizeof nc.why, "cannot load libnccl (%s%s%s): %s", env && *env ? env : "libnccl.so.2",
             *ADA_NCCL_LIBDIR && !(env && *env) ? ", " : "", *ADA_NCCL_LIBDIR && !(env && *env) ? dirlib : "", err);
    return false;
  }
#define SYM(name)                                                                         \
  if (!(nc.name = (__typeof__(nc.name))dlsym(nc.so, "nccl" #name))) {                     \
    snprintf(nc.why, sizeof nc.why, "libnccl lacks nccl%s (too old? %s)", #name, dlerror()); \
    return false;                                                                         \
  }
  SYM(GetVersion) SYM(GetUniqueId) SYM(CommInitRankConfig) SYM(CommGetAsyncError) SYM(CommFinalize)
  SYM(CommDestroy) SYM(CommAbort) SYM(GetErrorString) SYM(GetLastError) SYM(AllGather) SYM(AllReduce)
  SYM(Send) SYM(Recv) SYM(GroupStart) SYM(GroupEnd)
#undef SYM
  int v = 0;
  if (nc.GetVersion(&v) != ncclSuccess || v < 21400) {
    snprintf(nc.why, sizeof nc.why, "libnccl version %d is too old (2.14 or newer: nonblocking communicators)", v);
    return false;
  }
  nc.ok = true;
  return true;
}

/* ---- the transport's state and its waits ------------------------------------------------------ */

typedef struct nstate {
  ncclComm_t comm;
  int32_t gpu;
  cudaStream_t stream;
  bool aborted;
} nstate;

/* src cut to fit dst (n bytes). */
static void copy_msg(char *dst, size_t n, const char *src) {
  size_t k = strnlen(src, n - 1);
  memcpy(dst, src, k);
  dst[k] = 0;
}

static void nap(void) {
  struct timespec ts = {0, 50000};
  nanosleep(&ts, NULL);
}

static void abort_comm(nstate *st) {
  if (st->comm && !st->aborted) {
    st->aborted = true;
    (void)nc.CommAbort(st->comm);
  }
}

/* An NCCL failure of op: names the call, NCCL's error and last message, and the peer that is gone
 * when one is (NCCL's error about a lost connection does not name it); aborts the communicator. */
static ada_status nccl_fail(nstate *st, ada_comm *c, const char *op, const char *call, ncclResult_t r) {
  const char *last = st && st->comm ? nc.GetLastError(st->comm) : NULL;
  char gone[96] = "";
  int32_t pid = 0, who = c && r != ncclInvalidArgument && r != ncclInvalidUsage ? ada_comm_gone(c, 2.0, &pid) : -1;
  if (who >= 0 && pid > 0) snprintf(gone, sizeof gone, "; rank %d (pid %d) is gone", who, pid);
  else if (who >= 0) snprintf(gone, sizeof gone, "; rank %d failed (aborted the communicator)", who);
  ada_status s = ada_fail(ADA_EDEVICE, "comm %s: rank %d: %s: %s%s%s%s", op, c ? ada_comm_rank(c) : -1, call,
                          nc.GetErrorString(r), last && *last ? ": " : "", last && *last ? last : "", gone);
  if (st) abort_comm(st);
  return s;
}

/* After an NCCL call that returned r: waits (bounded) until the communicator is no longer busy
 * with it (nonblocking mode answers ncclInProgress). */
static ada_status settle(nstate *st, ada_comm *c, const char *op, const char *call, ncclResult_t r, double t0) {
  if (r == ncclSuccess) return ADA_OK;
  if (r != ncclInProgress) return nccl_fail(st, c, op, call, r);
  for (;;) {
    ncclResult_t a = ncclInProgress;
    ncclResult_t q = nc.CommGetAsyncError(st->comm, &a);
    if (q != ncclSuccess) return nccl_fail(st, c, op, "ncclCommGetAsyncError", q);
    if (a == ncclSuccess) return ADA_OK;
    if (a != ncclInProgress) return nccl_fail(st, c, op, call, a);
    ada_status s = ada_comm_poll(c, op, t0);
    if (s) {
      abort_comm(st);
      return s;
    }
    nap();
  }
}

#define NCHECK(op, call)                                                      \
  do {                                                                        \
    ada_status s_ = settle(st, c, (op), #call, (call), t0);                   \
    if (s_) return s_;                                                        \
  } while (0)

/* Waits (bounded) until the stream's work, the collective included, has finished. */
static ada_status finish(nstate *st, ada_comm *c, const char *op, double t0) {
  for (;;) {
    cudaError_t e = cudaStreamQuery(st->stream);
    if (e == cudaSuccess) return ADA_OK;
    if (e != cudaErrorNotReady) {
      ada_status s = ada_cuda_error(e, op, "cudaStreamQuery");
      abort_comm(st);
      return s;
    }
    ncclResult_t a = ncclSuccess;
    ncclResult_t q = nc.CommGetAsyncError(st->comm, &a);
    if (q != ncclSuccess) return nccl_fail(st, c, op, "ncclCommGetAsyncError", q);
    if (a != ncclSuccess && a != ncclInProgress) return nccl_fail(st, c, op, "the collective", a);
    ada_status s = ada_comm_poll(c, op, t0);
    if (s) {
      abort_comm(st);
      return s;
    }
    nap();
  }
}

/* Makes st's GPU current (the CUDA backend's device and stream). */
static ada_status enter(nstate *st, const char *op) {
  ada_status s = ada_cuda_enter(st->gpu, op);
  if (s) return s;
  if (st->aborted) return ada_fail(ADA_EIO, "comm %s: the NCCL communicator was aborted earlier", op);
  return ADA_OK;
}

/* ---- the ops ---------------------------------------------------------------------------------- */

static int32_t gpu_count(void) { return ada_cuda_device_count(); }

typedef struct id_msg {
  int32_t ok;
  char why[252];
  ncclUniqueId id;
} id_msg;

static ada_status nccl_open(void **out, ada_comm *c, int32_t gpu) {
  const char *op = "nccl open";
  *out = NULL;
  const int32_t me = ada_comm_rank(c), W = ada_comm_size(c);
  double t0 = ada_comm_now();
  (void)setenv("NCCL_NVLS_ENABLE", "0", 0);
  id_msg mine;
  memset(&mine, 0, sizeof mine);
  mine.ok = load();
  if (!mine.ok) copy_msg(mine.why, sizeof mine.why, nc.why);
  cudaStream_t stream = NULL;
  if (mine.ok) {
    ada_status s = ada_cuda_enter(gpu, op);
    if (!s) s = ada_cuda_stream(gpu, op, &stream);
    if (s) mine.ok = 0, copy_msg(mine.why, sizeof mine.why, ada_last_error());
  }
  if (mine.ok && me == 0) {
    ncclResult_t r = nc.GetUniqueId(&mine.id);
    if (r != ncclSuccess) mine.ok = 0, snprintf(mine.why, sizeof mine.why, "ncclGetUniqueId: %s", nc.GetErrorString(r));
  }
  id_msg *all = malloc(sizeof(id_msg) * (size_t)W);
  if (!all) return ada_fail(ADA_ENOMEM, "comm %s: out of memory", op);
  ada_status s = ada_comm_all_gather(c, &mine, sizeof mine, all);
  for (int32_t r = 0; r < W && !s; r++)
    if (!all[r].ok) s = ada_fail(ADA_EDEVICE, "comm %s: rank %d: rank %d cannot use NCCL: %s", op, me, r, all[r].why);
  ncclUniqueId id = all[0].id;
  free(all);
  if (s) return s;
  nstate *st = calloc(1, sizeof *st);
  if (!st) return ada_fail(ADA_ENOMEM, "comm %s: out of memory", op);
  st->gpu = gpu;
  st->stream = stream;
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  ncclResult_t r = nc.CommInitRankConfig(&st->comm, W, id, me, &cfg);
  if (r != ncclSuccess && r != ncclInProgress) {
    s = nccl_fail(st, c, op, "ncclCommInitRankConfig", r);
  } else {
    if (!st->comm) s = ada_fail(ADA_EDEVICE, "comm %s: ncclCommInitRankConfig gave no communicator", op);
    else s = settle(st, c, op, "ncclCommInitRankConfig", r, t0);
  }
  if (s) {
    if (st->comm) {
      abort_comm(st);
    }
    free(st);
    return s;
  }
  *out = st;
  return ADA_OK;
}

static void nccl_abort(void *state) { abort_comm(state); }

static void nccl_close(void *state) {
  nstate *st = state;
  if (!st) return;
  if (st->comm && !st->aborted && ada_cuda_enter(st->gpu, "nccl close") == ADA_OK) {
    /* finalize flushes outstanding work; bounded: a communicator still busy after 10 s is aborted */
    ncclResult_t r = nc.CommFinalize(st->comm);
    double t0 = ada_comm_now();
    ncclResult_t a = r;
    while (a == ncclInProgress && ada_comm_now() - t0 < 10) {
      if (nc.CommGetAsyncError(st->comm, &a) != ncclSuccess) break;
      if (a == ncclInProgress) nap();
    }
    if (a == ncclSuccess) (void)nc.CommDestroy(st->comm);
    else (void)nc.CommAbort(st->comm);
  } else if (st->comm && !st->aborted) {
    (void)nc.CommAbort(st->comm);
  }
  free(st);
}

static ada_status nccl_all_gather(void *state, ada_comm *c, const void *send, size_t n, void *recv) {
  nstate *st = state;
  const char *op = "dev_all_gather";
  double t0 = ada_comm_now();
  ada_status s = enter(st, op);
  if (s) return s;
  NCHECK(op, nc.AllGather(send, recv, n, ncclUint8, st->comm, st->stream));
  return finish(st, c, op, t0);
}

static ada_status nccl_all_reduce(void *state, ada_comm *c, void *buf, int64_t count, ada_comm_dtype dt, ada_comm_op o) {
  nstate *st = state;
  const char *op = "dev_all_reduce";
  double t0 = ada_comm_now();
  ada_status s = enter(st, op);
  if (s) return s;
  NCHECK(op, nc.AllReduce(buf, buf, (size_t)count, dt == ADA_COMM_F64 ? ncclFloat64 : ncclFloat32,
                          o == ADA_COMM_MAX ? ncclMax : ncclSum, st->comm, st->stream));
  return finish(st, c, op, t0);
}

static ada_status nccl_all_to_all(void *state, ada_comm *c, const void *send, const size_t *scount, const size_t *sdispl,
                                  void *recv, const size_t *rcount, const size_t *rdispl) {
  nstate *st = state;
  const char *op = "dev_all_to_all";
  double t0 = ada_comm_now();
  ada_status s = enter(st, op);
  if (s) return s;
  const int32_t me = ada_comm_rank(c), W = ada_comm_size(c);
  if (scount[me])
    ADA_CUDA_CHECK(op, cudaMemcpyAsync((char *)recv + rdispl[me], (const char *)send + sdispl[me], scount[me],
                                       cudaMemcpyDeviceToDevice, st->stream));
  if (W > 1) {
    NCHECK(op, nc.GroupStart());
    for (int32_t d = 0; d < W; d++) {
      if (d == me) continue;
      if (scount[d]) NCHECK(op, nc.Send((const char *)send + sdispl[d], scount[d], ncclUint8, d, st->comm, st->stream));
      if (rcount[d]) NCHECK(op, nc.Recv((char *)recv + rdispl[d], rcount[d], ncclUint8, d, st->comm, st->stream));
    }
    NCHECK(op, nc.GroupEnd());
  }
  return finish(st, c, op, t0);
}

static ada_status nccl_copy2d(void *state, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                              size_t height) {
  nstate *st = state;
  const char *op = "dev_ulysses copy";
  ada_status s = enter(st, op);
  if (s) return s;
  ADA_CUDA_CHECK(op, cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, cudaMemcpyDeviceToDevice, st->stream));
  return ADA_OK;
}

static ada_status nccl_alloc(void *state, void **p, size_t n) { return ada_cuda_malloc(p, n, ((nstate *)state)->gpu); }
static void nccl_release(void *state, void *p) { ada_cuda_free(p, ((nstate *)state)->gpu); }

static const ada_comm_device_ops nccl_ops = {"nccl",          gpu_count,       nccl_open,   nccl_close,
                                             nccl_abort,      nccl_all_gather, nccl_all_reduce, nccl_all_to_all,
                                             nccl_copy2d,     nccl_alloc,      nccl_release};

__attribute__((constructor)) static void register_nccl(void) { ada_comm_register_device(&nccl_ops); }
