/* alloc.c: the caching device allocator of the CUDA backend (ada_cuda_malloc and friends).
 *
 * - Sizes are rounded up to a block size: a multiple of 512 bytes up to 1 MiB, of 2 MiB above
 *   (0 counts as 1, so every call returns a real block). cudaMalloc gives 256-byte alignment.
 * - Freed blocks go to a per-device free list sorted by (size, address). A request takes the
 *   smallest cached block that fits: of exactly its size up to 1 MiB, of at most 1.25 times
 *   its size above. Otherwise cudaMalloc.
 * - Live blocks are kept in one open-addressing hash table pointer -> (size, device), so
 *   ada_cuda_free needs no size and ignores pointers it does not know (and uses the device
 *   recorded at allocation, not its argument).
 * - Freeing into the cache needs no synchronization for a block used only on the stream it was
 *   allocated on: a reused block's new work is ordered after the old on that stream. A block
 *   also used on other streams (ada_cuda_record_stream: a communication stream, later) gets an
 *   event recorded on each of them when it is freed and waits in a pending list; a request first
 *   moves the pending blocks whose events have all completed (cudaEventQuery, no waiting) into
 *   the cache. So a block freed while another stream still reads it is not handed out early.
 *   Events come from a per-device pool. cudaFree (empty_cache) synchronizes (it first waits for
 *   the pending events).
 * - Out of memory: clear the error, release the cache and retry; if that fails too, call the
 *   OOM hook once (mutex released meanwhile: the hook frees tensors into the cache), take a
 *   fitting block from the cache or release it and retry cudaMalloc; then fail with ADA_ENOMEM
 *   and the numbers. (A full GC only when emptying the cache was not enough.)
 * - Collector pressure: Lua's collector sees a tensor as a few bytes of userdata, so garbage
 *   holding gigabytes of device memory (views, dropped results) would pile up until an
 *   out-of-memory retry. Whenever a device's allocated bytes have grown by the pressure step
 *   (1/16 of the device's memory, ADASPA_GC_STEP_MB overrides, 0 turns it off) since the last
 *   collection (or since the lowest point after it), the same hook runs after the allocation;
 *   the allocated bytes after it become the new mark. So the peak counts live tensors plus at
 *   most one step of garbage.
 * - One mutex for everything. ada_cuda_free makes no CUDA call; ada_cuda_empty_cache treats
 *   cudaErrorCudartUnloading (process exit) as success.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define SMALL_LIMIT ((size_t)1 << 20) /* up to here: 512-byte rounding, exact reuse */
#define SMALL_ROUND ((size_t)512)
#define LARGE_ROUND ((size_t)2 << 20)

typedef struct block {
  void *p;
  size_t size;
} block;

#define MAX_USES 4 /* streams besides its own a block may be used on */

/* A freed block waiting for the events recorded on the other streams that used it. */
typedef struct pending {
  block b;
  cudaEvent_t ev[MAX_USES];
  int32_t n_ev;
} pending;

typedef struct pool {
  block *free; /* cached blocks, sorted by (size, address) */
  size_t n_free, cap_free;
  pending *wait; /* freed blocks not yet reusable */
  size_t n_wait, cap_wait;
  cudaEvent_t *events; /* idle events for pending blocks */
  size_t n_events, cap_events;
  ada_mem_stats st; /* reserved is computed on read; cached includes the pending blocks */
} pool;

typedef struct live_entry {
  void *p; /* NULL: empty slot */
  size_t size;
  int32_t dev;
  cudaStream_t stream;          /* the stream it was allocated on */
  cudaStream_t uses[MAX_USES];  /* other streams it was used on */
  int32_t n_uses;
} live_entry;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pool pools[ADA_CUDA_MAX_DEVICES];
static live_entry *live;
static size_t live_cap, live_n; /* live_cap: 0 or a power of two, at most half full */
static void (*oom_hook)(void *ud);
static void *oom_ud;
static _Thread_local int in_oom_hook;
static size_t gc_mark[ADA_CUDA_MAX_DEVICES]; /* allocated bytes after the last collection */
static size_t gc_step[ADA_CUDA_MAX_DEVICES]; /* 0: not yet computed */
static int gc_off = -1;                      /* -1: not yet read from the environment */

/* ---- live table ------------------------------------------------------------------------- */

static size_t slot_of(const void *p, size_t cap) {
  uint64_t x = (uint64_t)(uintptr_t)p >> 8;
  x *= 0x9E3779B97F4A7C15ull;
  return (size_t)(x >> 20) & (cap - 1);
}

static void live_insert_raw(live_entry *tab, size_t cap, live_entry e) {
  size_t i = slot_of(e.p, cap);
  while (tab[i].p) i = (i + 1) & (cap - 1);
  tab[i] = e;
}

static bool live_put(void *p, size_t size, int32_t dev, cudaStream_t stream) {
  if ((live_n + 1) * 2 > live_cap) {
    size_t cap = live_cap ? live_cap * 2 : 1024;
    live_entry *tab = calloc(cap, sizeof *tab);
    if (!tab) return false;
    for (size_t i = 0; i < live_cap; i++)
      if (live[i].p) live_insert_raw(tab, cap, live[i]);
    free(live);
    live = tab;
    live_cap = cap;
  }
  live_insert_raw(live, live_cap, (live_entry){.p = p, .size = size, .dev = dev, .stream = stream});
  live_n++;
  return true;
}

/* The entry of p, or NULL. */
static live_entry *live_find(const void *p) {
  if (!live_cap) return NULL;
  size_t i = slot_of(p, live_cap);
  while (live[i].p != p) {
    if (!live[i].p) return NULL;
    i = (i + 1) & (live_cap - 1);
  }
  return &live[i];
}

/* Removes p; false if unknown. Backward-shift deletion keeps probe chains intact. */
static bool live_take(void *p, live_entry *out) {
  if (!live_cap) return false;
  const size_t mask = live_cap - 1;
  size_t i = slot_of(p, live_cap);
  while (live[i].p != p) {
    if (!live[i].p) return false;
    i = (i + 1) & mask;
  }
  *out = live[i];
  for (size_t j = i;;) {
    j = (j + 1) & mask;
    if (!live[j].p) break;
    size_t k = slot_of(live[j].p, live_cap);
    /* move j back to the hole at i unless its home slot k lies cyclically in (i, j] */
    bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (!stays) {
      live[i] = live[j];
      i = j;
    }
  }
  live[i].p = NULL;
  live_n--;
  return true;
}

/* ---- free lists ------------------------------------------------------------------------- */

/* First index whose block is >= (size, p). */
static size_t lower_bound(const pool *pl, size_t size, const void *p) {
  size_t lo = 0, hi = pl->n_free;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const block *b = &pl->free[mid];
    if (b->size < size || (b->size == size && (uintptr_t)b->p < (uintptr_t)p)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static bool cache_put(pool *pl, void *p, size_t size) {
  if (pl->n_free == pl->cap_free) {
    size_t cap = pl->cap_free ? pl->cap_free * 2 : 64;
    block *nb = realloc(pl->free, cap * sizeof *nb);
    if (!nb) return false;
    pl->free = nb;
    pl->cap_free = cap;
  }
  size_t i = lower_bound(pl, size, p);
  memmove(&pl->free[i + 1], &pl->free[i], (pl->n_free - i) * sizeof *pl->free);
  pl->free[i] = (block){p, size};
  pl->n_free++;
  pl->st.cached += size;
  return true;
}

/* Takes the best cached block for a rounded request r; false if none fits. */
static bool cache_take(pool *pl, size_t r, block *out) {
  size_t i = lower_bound(pl, r, NULL);
  if (i == pl->n_free) return false;
  size_t s = pl->free[i].size;
  if (r <= SMALL_LIMIT ? s != r : s - r > r / 4) return false;
  *out = pl->free[i];
  memmove(&pl->free[i], &pl->free[i + 1], (pl->n_free - i - 1) * sizeof *pl->free);
  pl->n_free--;
  pl->st.cached -= s;
  return true;
}

/* An idle event of the pool (created when none is idle); NULL when none can be had. */
static cudaEvent_t event_get(pool *pl) {
  if (pl->n_events) return pl->events[--pl->n_events];
  cudaEvent_t ev = NULL;
  if (cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) != cudaSuccess) {
    (void)cudaGetLastError();
    return NULL;
  }
  return ev;
}

static void event_put(pool *pl, cudaEvent_t ev) {
  if (pl->n_events == pl->cap_events) {
    size_t cap = pl->cap_events ? pl->cap_events * 2 : 16;
    cudaEvent_t *ne = realloc(pl->events, cap * sizeof *ne);
    if (!ne) {
      (void)cudaEventDestroy(ev);
      (void)cudaGetLastError();
      return;
    }
    pl->events = ne;
    pl->cap_events = cap;
  }
  pl->events[pl->n_events++] = ev;
}

/* Moves pending blocks whose events have completed (all of them when wait) into the cache. */
static void collect_pending(pool *pl, bool wait) {
  size_t kept = 0;
  for (size_t i = 0; i < pl->n_wait; i++) {
    pending *w = &pl->wait[i];
    bool done = true;
    for (int32_t e = 0; e < w->n_ev && done; e++) {
      cudaError_t r = wait ? cudaEventSynchronize(w->ev[e]) : cudaEventQuery(w->ev[e]);
      if (r == cudaErrorNotReady) done = false;
      else if (r != cudaSuccess) (void)cudaGetLastError(); /* a failed event: its work is over */
    }
    if (!done) {
      pl->wait[kept++] = *w;
      continue;
    }
    for (int32_t e = 0; e < w->n_ev; e++) event_put(pl, w->ev[e]);
    pl->st.cached -= w->b.size;
    if (!cache_put(pl, w->b.p, w->b.size)) { /* no host memory for the list: give it back */
      (void)cudaFree(w->b.p);
      (void)cudaGetLastError();
    }
  }
  pl->n_wait = kept;
}

/* Parks a freed block that other streams used until events recorded on them now complete; false
 * when that cannot be arranged (then the caller waits for those streams instead). */
static bool park(pool *pl, const live_entry *e) {
  if (pl->n_wait == pl->cap_wait) {
    size_t cap = pl->cap_wait ? pl->cap_wait * 2 : 16;
    pending *nw = realloc(pl->wait, cap * sizeof *nw);
    if (!nw) return false;
    pl->wait = nw;
    pl->cap_wait = cap;
  }
  pending w = {.b = {e->p, e->size}, .n_ev = 0};
  for (int32_t i = 0; i < e->n_uses; i++) {
    cudaEvent_t ev = event_get(pl);
    if (!ev || cudaEventRecord(ev, e->uses[i]) != cudaSuccess) {
      (void)cudaGetLastError();
      if (ev) event_put(pl, ev);
      for (int32_t j = 0; j < w.n_ev; j++) event_put(pl, w.ev[j]);
      return false;
    }
    w.ev[w.n_ev++] = ev;
  }
  pl->wait[pl->n_wait++] = w;
  pl->st.cached += e->size;
  return true;
}

/* cudaFree of every cached block of dev (dev current). Keeps going after an error and returns
 * the first one; cudaErrorCudartUnloading (process exit) counts as success. */
static cudaError_t release_cached(int32_t dev) {
  pool *pl = &pools[dev];
  cudaError_t first = cudaSuccess;
  collect_pending(pl, true);
  for (size_t i = 0; i < pl->n_free; i++) {
    cudaError_t e = cudaFree(pl->free[i].p);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      if (e != cudaErrorCudartUnloading && first == cudaSuccess) first = e;
    }
  }
  pl->n_free = 0;
  pl->st.cached = 0;
  return first;
}

/* ---- public ----------------------------------------------------------------------------- */

static size_t round_size(size_t n) {
  if (n == 0) n = 1;
  if (n <= SMALL_LIMIT) return (n + SMALL_ROUND - 1) & ~(SMALL_ROUND - 1);
  if (n > SIZE_MAX - LARGE_ROUND) return 0;
  return (n + LARGE_ROUND - 1) & ~(LARGE_ROUND - 1);
}

static void fmt_bytes(char *buf, size_t len, size_t n) {
  const double k = 1024.0;
  if (n < 1024) snprintf(buf, len, "%zu bytes", n);
  else if (n < (size_t)1 << 20) snprintf(buf, len, "%.1f KiB", (double)n / k);
  else if (n < (size_t)1 << 30) snprintf(buf, len, "%.1f MiB", (double)n / (k * k));
  else snprintf(buf, len, "%.2f GiB", (double)n / (k * k * k));
}

/* Records block b of dev (allocated for work on stream) as handed out and unlocks mu. */
static ada_status hand_out(pool *pl, block b, int32_t dev, cudaStream_t stream, bool reused, void **out) {
  if (!live_put(b.p, b.size, dev, stream)) {
    if (reused) (void)cache_put(pl, b.p, b.size); /* room exists: it was just taken out */
    else { (void)cudaFree(b.p); (void)cudaGetLastError(); }
    pthread_mutex_unlock(&mu);
    return ada_fail(ADA_ENOMEM, "cuda malloc: out of host memory for the block table");
  }
  if (reused) pl->st.n_reuse++;
  else pl->st.n_malloc++;
  pl->st.allocated += b.size;
  if (pl->st.allocated > pl->st.peak) pl->st.peak = pl->st.allocated;
  pthread_mutex_unlock(&mu);
  *out = b.p;
  return ADA_OK;
}

/* The out-of-memory failure; unlocks mu. */
static ada_status oom_fail(const pool *pl, size_t n, int32_t dev) {
  size_t free_b = 0, total_b = 0;
  const bool info = cudaMemGetInfo(&free_b, &total_b) == cudaSuccess;
  (void)cudaGetLastError();
  const size_t held = pl->st.allocated + pl->st.cached;
  pthread_mutex_unlock(&mu);
  const double g = 1024.0 * 1024.0 * 1024.0;
  char want[32];
  fmt_bytes(want, sizeof want, n);
  if (info)
    return ada_fail(ADA_ENOMEM,
                    "cuda: out of memory allocating %s on cuda:%d (free %.2f GiB of %.1f GiB, "
                    "adaspa holds %.2f GiB)",
                    want, (int)dev, (double)free_b / g, (double)total_b / g, (double)held / g);
  return ada_fail(ADA_ENOMEM, "cuda: out of memory allocating %s on cuda:%d (adaspa holds %.2f GiB)",
                  want, (int)dev, (double)held / g);
}

static ada_status malloc_impl(void **out, size_t n, int32_t dev);

/* The pressure step of dev (see the top): computed once from the device's memory. Under mu. */
static size_t pressure_step(int32_t dev) {
  if (gc_off < 0) {
    const char *env = getenv("ADASPA_GC_STEP_MB");
    gc_off = env && atof(env) <= 0.0 ? 1 : 0;
    if (env && !gc_off)
      for (int32_t d = 0; d < ADA_CUDA_MAX_DEVICES; d++) gc_step[d] = (size_t)(atof(env) * 1024.0 * 1024.0);
  }
  if (gc_off) return 0;
  if (!gc_step[dev]) {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
      (void)cudaGetLastError();
      total_b = (size_t)16 << 30;
    }
    gc_step[dev] = total_b / 16;
  }
  return gc_step[dev];
}

ada_status ada_cuda_malloc(void **out, size_t n, int32_t dev) {
  ada_status s = malloc_impl(out, n, dev);
  if (s || in_oom_hook) return s;
  pthread_mutex_lock(&mu);
  const size_t step = oom_hook ? pressure_step(dev) : 0;
  const bool collect = step && pools[dev].st.allocated > gc_mark[dev] + step;
  void (*hook)(void *) = oom_hook;
  void *ud = oom_ud;
  if (collect) gc_mark[dev] = pools[dev].st.allocated; /* no second trigger while it runs */
  pthread_mutex_unlock(&mu);
  if (!collect) return ADA_OK;
  in_oom_hook = 1;
  hook(ud); /* *out is live and owned by the caller: the collector cannot free it */
  in_oom_hook = 0;
  (void)cudaSetDevice(dev);
  pthread_mutex_lock(&mu);
  gc_mark[dev] = pools[dev].st.allocated;
  pthread_mutex_unlock(&mu);
  return ADA_OK;
}

static ada_status malloc_impl(void **out, size_t n, int32_t dev) {
  const char *op = "cuda malloc";
  if (!out) return ada_fail(ADA_EINVAL, "%s: no output given", op);
  *out = NULL;
  ada_status s = ada_cuda_enter(dev, op);
  if (s) return s;
  cudaStream_t stream;
  if ((s = ada_cuda_stream(dev, op, &stream))) return s;
  block b = {NULL, round_size(n)};
  if (!b.size) return ada_fail(ADA_ENOMEM, "cuda: out of memory allocating %zu bytes on cuda:%d", n, (int)dev);

  pthread_mutex_lock(&mu);
  pool *pl = &pools[dev];
  if (pl->n_wait) collect_pending(pl, false);
  if (cache_take(pl, b.size, &b)) return hand_out(pl, b, dev, stream, true, out);
  cudaError_t e = cudaMalloc(&b.p, b.size);
  if (e == cudaErrorMemoryAllocation) { /* release the cache and retry */
    (void)cudaGetLastError();
    (void)release_cached(dev);
    e = cudaMalloc(&b.p, b.size);
  }
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    if (oom_hook && !in_oom_hook) { /* once, without the lock: the hook frees tensors */
      void (*hook)(void *) = oom_hook;
      void *ud = oom_ud;
      in_oom_hook = 1;
      pthread_mutex_unlock(&mu);
      hook(ud);
      pthread_mutex_lock(&mu);
      in_oom_hook = 0;
      (void)cudaSetDevice(dev); /* in case the hook switched devices */
      (void)cudaGetLastError();
      if (cache_take(pl, b.size, &b)) return hand_out(pl, b, dev, stream, true, out);
      (void)release_cached(dev);
      e = cudaMalloc(&b.p, b.size);
    }
  }
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    return oom_fail(pl, n, dev);
  }
  if (e != cudaSuccess) {
    pthread_mutex_unlock(&mu);
    return ada_cuda_error(e, op, "cudaMalloc");
  }
  return hand_out(pl, b, dev, stream, false, out);
}

void ada_cuda_free(void *p, int32_t dev) {
  (void)dev; /* the device recorded at allocation is used */
  if (!p) return;
  pthread_mutex_lock(&mu);
  live_entry e;
  if (live_take(p, &e)) {
    pool *pl = &pools[e.dev];
    pl->st.allocated -= e.size;
    if (pl->st.allocated < gc_mark[e.dev]) gc_mark[e.dev] = pl->st.allocated; /* growth counts from the low */
    if (e.n_uses > 0) {
      int cur = -1;
      (void)cudaGetDevice(&cur);
      (void)cudaSetDevice(e.dev);
      bool parked = park(pl, &e);
      for (int32_t i = 0; !parked && i < e.n_uses; i++) /* no event: wait for those streams */
        if (cudaStreamSynchronize(e.uses[i]) != cudaSuccess) (void)cudaGetLastError();
      if (cur >= 0) (void)cudaSetDevice(cur);
      if (parked) {
        pthread_mutex_unlock(&mu);
        return;
      }
    }
    if (!cache_put(pl, p, e.size)) { /* no host memory for the list: give it back now */
      int cur = -1;
      (void)cudaGetDevice(&cur);
      (void)cudaSetDevice(e.dev);
      (void)cudaFree(p);
      if (cur >= 0) (void)cudaSetDevice(cur);
      (void)cudaGetLastError();
    }
  }
  pthread_mutex_unlock(&mu);
}

ada_status ada_cuda_empty_cache(int32_t dev) {
  const char *op = "cuda empty_cache";
  int32_t n = ada_cuda_device_count();
  if (dev < 0 || dev >= n) return ada_cuda_enter(dev, op); /* for its message */
  pthread_mutex_lock(&mu);
  cudaError_t e = cudaSetDevice(dev);
  if (e == cudaSuccess) e = release_cached(dev);
  else if (e == cudaErrorCudartUnloading) { /* exit: the driver frees everything */
    pools[dev].n_free = 0;
    pools[dev].st.cached = 0;
    e = cudaSuccess;
  }
  pthread_mutex_unlock(&mu);
  if (e != cudaSuccess) return ada_cuda_error(e, op, "cudaFree");
  return ADA_OK;
}

void ada_cuda_set_oom_hook(void (*hook)(void *ud), void *ud) {
  pthread_mutex_lock(&mu);
  oom_hook = hook;
  oom_ud = ud;
  pthread_mutex_unlock(&mu);
}

ada_status ada_cuda_record_stream(void *p, void *stream) {
  if (!p) return ADA_OK;
  ada_status s = ADA_OK;
  pthread_mutex_lock(&mu);
  live_entry *e = live_find(p);
  cudaStream_t st = (cudaStream_t)stream;
  if (e && st != e->stream) {
    int32_t i = 0;
    while (i < e->n_uses && e->uses[i] != st) i++;
    if (i == e->n_uses) {
      if (e->n_uses == MAX_USES) s = ada_fail(ADA_EINVAL, "cuda record_stream: a block is used on more than %d other streams", MAX_USES);
      else e->uses[e->n_uses++] = st;
    }
  }
  pthread_mutex_unlock(&mu);
  return s;
}

ada_status ada_cuda_memory(int32_t dev, ada_mem_stats *out) {
  if (!out) return ada_fail(ADA_EINVAL, "cuda memory: no output given");
  int32_t n = ada_cuda_device_count();
  if (dev < 0 || dev >= n) return ada_cuda_enter(dev, "cuda memory"); /* for its message */
  pthread_mutex_lock(&mu);
  *out = pools[dev].st;
  out->reserved = out->allocated + out->cached;
  pthread_mutex_unlock(&mu);
  return ADA_OK;
}

void ada_cuda_reset_peak(int32_t dev) {
  if (dev < 0 || dev >= ada_cuda_device_count()) return;
  pthread_mutex_lock(&mu);
  pools[dev].st.peak = pools[dev].st.allocated;
  pthread_mutex_unlock(&mu);
}
