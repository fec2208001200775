/* comm.c: the communicator (comm.h): single-rank and shared-memory transports. */
#define _DEFAULT_SOURCE
#include "comm.h"
#include "layout.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define COMM_MAGIC 0x61646173706131ULL /* "adaspa1" */
#define COMM_MAX_WORLD 64
#define COMM_HEADER 8192
#define COMM_META(world) ((((size_t)(world) * 2 * sizeof(uint64_t)) + 63) / 64 * 64)

typedef struct shm_header {
  uint64_t magic;
  int32_t world, pad;
  uint64_t slot_bytes;
  _Atomic int32_t aborted; /* rank + 1 of the rank that aborted, 0: none */
  _Atomic int32_t pids[COMM_MAX_WORLD];
  _Atomic uint64_t seq[COMM_MAX_WORLD];
} shm_header;

_Static_assert(sizeof(shm_header) <= COMM_HEADER, "comm header fits");

struct ada_comm {
  int32_t rank, world, local_rank;
  double timeout;
  bool broken;
  uint64_t seq;
  shm_header *h;   /* NULL: single */
  size_t map_size; /* bytes mapped */
  char *scratch;   /* single-rank all_to_all source copy */
  const ada_comm_device_ops *dops; /* the device transport, NULL: none */
  void *dstate;
  int32_t gpu;
  double dead_since[COMM_MAX_WORLD]; /* ada_comm_poll: when a peer's pid was first seen gone */
};

static const ada_comm_device_ops *device_ops; /* registered at start-up by a build that has one */
void ada_comm_register_device(const ada_comm_device_ops *ops) { device_ops = ops; }

size_t ada_comm_shm_size(int32_t world, size_t slot_bytes) {
  if (world < 1 || world > COMM_MAX_WORLD || slot_bytes <= COMM_META(world) || slot_bytes > ((size_t)1 << 40)) return 0;
  return COMM_HEADER + (size_t)world * slot_bytes;
}

ada_status ada_comm_shm_create(const char *path, int32_t world, size_t slot_bytes) {
  size_t size = ada_comm_shm_size(world, slot_bytes);
  if (!size) return ada_fail(ADA_EINVAL, "comm: world size %d (1..%d) or slot of %zu bytes out of range", world, COMM_MAX_WORLD, slot_bytes);
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) return ada_fail(ADA_EIO, "comm: cannot create %s: %s", path, strerror(errno));
  if (ftruncate(fd, (off_t)size) != 0) {
    int e = errno;
    close(fd);
    unlink(path);
    return ada_fail(ADA_EIO, "comm: cannot size %s to %zu bytes: %s", path, size, strerror(e));
  }
  shm_header hd;
  memset(&hd, 0, sizeof hd);
  hd.magic = COMM_MAGIC;
  hd.world = world;
  hd.slot_bytes = slot_bytes;
  ssize_t w = pwrite(fd, &hd, sizeof hd, 0);
  int e = errno;
  close(fd);
  if (w != (ssize_t)sizeof hd) {
    unlink(path);
    return ada_fail(ADA_EIO, "comm: cannot write the header of %s: %s", path, w < 0 ? strerror(e) : "short write");
  }
  return ADA_OK;
}

double ada_comm_now(void);
static double now_s(void) { return ada_comm_now(); }
double ada_comm_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char *slot(const ada_comm *c, int32_t r) { return (char *)c->h + COMM_HEADER + (size_t)r * c->h->slot_bytes; }
static uint64_t *meta(const ada_comm *c, int32_t r) { return (uint64_t *)slot(c, r); }
static char *data(const ada_comm *c, int32_t r) { return slot(c, r) + COMM_META(c->world); }

static ada_status broken(ada_comm *c, ada_status s) {
  c->broken = true;
  return s;
}

/* Waits until every rank's sequence reached mine; bounded (abort word, dead pids, timeout). */
static ada_status barrier(ada_comm *c, const char *op) {
  if (c->broken) return ada_fail(ADA_EIO, "comm %s: rank %d: the communicator failed earlier", op, c->rank);
  if (!c->h) return ADA_OK;
  uint64_t target = ++c->seq;
  atomic_store(&c->h->seq[c->rank], target);
  double t0 = now_s(), last_check = t0;
  for (uint32_t spin = 0;; spin++) {
    int32_t late = -1;
    for (int32_t r = 0; r < c->world; r++)
      if (atomic_load(&c->h->seq[r]) < target) { late = r; break; }
    if (late < 0) return ADA_OK;
    int32_t ab = atomic_load(&c->h->aborted);
    if (ab > 0)
      return broken(c, ada_fail(ADA_EIO, "comm %s: rank %d: rank %d failed (aborted the communicator)", op, c->rank, ab - 1));
    double t = now_s();
    if (t - last_check > 0.005) {
      last_check = t;
      for (int32_t r = 0; r < c->world; r++) {
        int32_t pid = atomic_load(&c->h->pids[r]);
        if (r == c->rank || pid <= 0 || atomic_load(&c->h->seq[r]) >= target) continue;
        if (kill((pid_t)pid, 0) != 0 && errno == ESRCH && atomic_load(&c->h->seq[r]) < target)
          return broken(c, ada_fail(ADA_EIO, "comm %s: rank %d: rank %d (pid %d) died before reaching call %llu", op, c->rank,
                                    r, pid, (unsigned long long)target));
      }
      if (t - t0 > c->timeout)
        return broken(c, ada_fail(ADA_EIO, "comm %s: rank %d: rank %d did not arrive within %.3g s (ADASPA_COMM_TIMEOUT)", op,
                                  c->rank, late, c->timeout));
    }
    if (spin < 256) continue;
    struct timespec ts = {0, spin < 4096 ? 20000 : 200000};
    nanosleep(&ts, NULL);
  }
}

ada_status ada_comm_init(ada_comm **out, int32_t rank, int32_t world, int32_t local_rank, const char *path,
                         double timeout_s) {
  *out = NULL;
  if (world < 1 || world > COMM_MAX_WORLD) return ada_fail(ADA_EINVAL, "comm init: world size %d out of range 1..%d", world, COMM_MAX_WORLD);
  if (rank < 0 || rank >= world) return ada_fail(ADA_EINVAL, "comm init: rank %d out of range 0..%d", rank, world - 1);
  if (!(timeout_s > 0)) return ada_fail(ADA_EINVAL, "comm init: timeout must be > 0 s, got %g", timeout_s);
  ada_comm *c = calloc(1, sizeof *c);
  if (!c) return ada_fail(ADA_ENOMEM, "comm init: out of memory");
  c->rank = rank;
  c->world = world;
  c->local_rank = local_rank;
  c->timeout = timeout_s;
  c->gpu = -1;
  if (world == 1) {
    *out = c;
    return ADA_OK;
  }
  if (!path || !*path) {
    free(c);
    return ada_fail(ADA_EINVAL, "comm init: world size %d needs the shared file (ADASPA_COMM, set by `adaspa launch`)", world);
  }
  int fd = open(path, O_RDWR);
  if (fd < 0) {
    free(c);
    return ada_fail(ADA_EIO, "comm init: rank %d: cannot open %s: %s", rank, path, strerror(errno));
  }
  struct stat st;
  shm_header hd;
  ssize_t got = pread(fd, &hd, sizeof hd, 0);
  if (fstat(fd, &st) != 0 || got != (ssize_t)sizeof hd || hd.magic != COMM_MAGIC || hd.world != world ||
      (size_t)st.st_size != ada_comm_shm_size(world, hd.slot_bytes)) {
    close(fd);
    free(c);
    return ada_fail(ADA_EIO, "comm init: rank %d: %s is not a communicator file of world size %d", rank, path, world);
  }
  void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int e = errno;
  close(fd);
  if (p == MAP_FAILED) {
    free(c);
    return ada_fail(ADA_EIO, "comm init: rank %d: cannot map %s: %s", rank, path, strerror(e));
  }
  c->h = p;
  c->map_size = (size_t)st.st_size;
  if (atomic_load(&c->h->pids[rank]) != 0) {
    ada_comm_free(c);
    return ada_fail(ADA_EINVAL, "comm init: rank %d of %s is taken already (two processes with the same rank?)", rank, path);
  }
  atomic_store(&c->h->pids[rank], (int32_t)getpid());
  ada_status s = barrier(c, "init");
  if (s != ADA_OK) {
    ada_comm_free(c);
    return s;
  }
  *out = c;
  return ADA_OK;
}

static int32_t env_int(const char *a, const char *b, int32_t def, bool *bad) {
  const char *s = getenv(a);
  if (!s || !*s) s = getenv(b);
  if (!s || !*s) return def;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < 0 || v > 1 << 20) *bad = true;
  return (int32_t)v;
}

ada_status ada_comm_init_env(ada_comm **out) {
  bool bad = false;
  int32_t world = env_int("ADASPA_WORLD_SIZE", "WORLD_SIZE", 1, &bad);
  int32_t rank = env_int("ADASPA_RANK", "RANK", 0, &bad);
  int32_t local = env_int("ADASPA_LOCAL_RANK", "LOCAL_RANK", rank, &bad);
  if (bad) return ada_fail(ADA_EINVAL, "comm init: RANK / WORLD_SIZE / LOCAL_RANK (or ADASPA_*) must be integers >= 0");
  double timeout = 600;
  const char *t = getenv("ADASPA_COMM_TIMEOUT");
  if (t && *t) {
    char *end;
    timeout = strtod(t, &end);
    if (*end || !(timeout > 0)) return ada_fail(ADA_EINVAL, "comm init: ADASPA_COMM_TIMEOUT must be seconds > 0, got %s", t);
  }
  const char *dev = getenv("ADASPA_COMM_DEVICE");
  bool nccl = dev && !strcmp(dev, "nccl");
  if (dev && *dev && !nccl && strcmp(dev, "host"))
    return ada_fail(ADA_EINVAL, "comm init: ADASPA_COMM_DEVICE must be \"host\" or \"nccl\", got \"%s\"", dev);
  ada_comm *c;
  ada_status s = ada_comm_init(&c, rank, world, local, getenv("ADASPA_COMM"), timeout);
  if (s || !nccl) {
    *out = s ? NULL : c;
    return s;
  }
  /* the device transport, once every rank is in (a failure here aborts: the peers end at once) */
  int32_t gpu = -1, n = 0;
  if (!device_ops || strcmp(device_ops->name, "nccl"))
    s = ada_fail(ADA_EUNSUPPORTED, "comm init: ADASPA_COMM_DEVICE=nccl, but this build has no NCCL transport "
                                   "(it needs CUDA=1 and nccl.h at build time; `make` prints what it found)");
  else if ((n = device_ops->gpu_count()) < 1)
    s = ada_fail(ADA_EDEVICE, "comm init: ADASPA_COMM_DEVICE=nccl, but rank %d sees no GPU", rank);
  else if ((gpu = env_int("ADASPA_COMM_GPU", "ADASPA_COMM_GPU", local % n, &bad)), bad || gpu >= n)
    s = ada_fail(ADA_EINVAL, "comm init: rank %d: ADASPA_COMM_GPU must be a GPU index 0..%d", rank, n - 1);
  else
    s = device_ops->open(&c->dstate, c, gpu);
  if (s) {
    ada_comm_abort(c);
    ada_comm_free(c);
    return s;
  }
  c->dops = device_ops;
  c->gpu = gpu;
  *out = c;
  return ADA_OK;
}

void ada_comm_free(ada_comm *c) {
  if (!c) return;
  if (c->dops) c->dops->close(c->dstate);
  if (c->h) munmap(c->h, c->map_size);
  free(c->scratch);
  free(c);
}

int32_t ada_comm_rank(const ada_comm *c) { return c->rank; }
int32_t ada_comm_size(const ada_comm *c) { return c->world; }
int32_t ada_comm_local_rank(const ada_comm *c) { return c->local_rank; }
const char *ada_comm_transport(const ada_comm *c) { return c->h ? "shm" : "single"; }
size_t ada_comm_max_bytes(const ada_comm *c) {
  return c->h ? c->h->slot_bytes - COMM_META(c->world) : (size_t)1 << 40;
}

void ada_comm_abort(ada_comm *c) {
  c->broken = true;
  if (c->dops && c->dstate) c->dops->abort(c->dstate);
  if (c->h) {
    int32_t none = 0;
    atomic_compare_exchange_strong(&c->h->aborted, &none, c->rank + 1);
  }
}

ada_status ada_comm_barrier(ada_comm *c) { return barrier(c, "barrier"); }

static ada_status too_big(ada_comm *c, const char *op, size_t n) {
  return ada_fail(ADA_EINVAL, "comm %s: rank %d: a message of %zu bytes exceeds the communicator's %zu (the launcher's slot: ADASPA_COMM_MB)",
                  op, c->rank, n, ada_comm_max_bytes(c));
}

ada_status ada_comm_all_gather(ada_comm *c, const void *send, size_t n, void *recv) {
  if (c->broken) return barrier(c, "all_gather");
  if (!c->h) {
    if (n) memmove(recv, send, n);
    return ADA_OK;
  }
  if (n > ada_comm_max_bytes(c)) return too_big(c, "all_gather", n);
  if (n) memcpy(data(c, c->rank), send, n);
  meta(c, c->rank)[0] = n;
  ada_status s = barrier(c, "all_gather");
  if (s) return s;
  for (int32_t r = 0; r < c->world; r++) {
    if (meta(c, r)[0] != n) {
      (void)barrier(c, "all_gather");
      return broken(c, ada_fail(ADA_EINVAL, "comm all_gather: rank %d sends %zu bytes, rank %d %llu", c->rank, n, r,
                                (unsigned long long)meta(c, r)[0]));
    }
    if (n) memcpy((char *)recv + (size_t)r * n, data(c, r), n);
  }
  return barrier(c, "all_gather");
}

ada_status ada_comm_all_reduce(ada_comm *c, void *buf, int64_t count, ada_comm_dtype dt, ada_comm_op op) {
  if (c->broken) return barrier(c, "all_reduce");
  if (count < 0) return ada_fail(ADA_EINVAL, "comm all_reduce: count %lld < 0", (long long)count);
  if (!c->h || count == 0) return c->h ? barrier(c, "all_reduce") : ADA_OK;
  size_t es = dt == ADA_COMM_F64 ? 8 : 4, n = (size_t)count * es;
  if (n > ada_comm_max_bytes(c)) return too_big(c, "all_reduce", n);
  memcpy(data(c, c->rank), buf, n);
  meta(c, c->rank)[0] = n;
  ada_status s = barrier(c, "all_reduce");
  if (s) return s;
  for (int32_t r = 0; r < c->world; r++)
    if (meta(c, r)[0] != n) {
      (void)barrier(c, "all_reduce");
      return broken(c, ada_fail(ADA_EINVAL, "comm all_reduce: rank %d reduces %zu bytes, rank %d %llu", c->rank, n, r,
                                (unsigned long long)meta(c, r)[0]));
    }
  /* rank order from rank 0's values: every rank computes the same bits */
  for (int64_t i = 0; i < count; i++) {
    if (dt == ADA_COMM_F64) {
      double a = ((const double *)data(c, 0))[i];
      for (int32_t r = 1; r < c->world; r++) {
        double b = ((const double *)data(c, r))[i];
        a = op == ADA_COMM_SUM ? a + b : (b > a || b != b ? b : a);
      }
      ((double *)buf)[i] = a;
    } else {
      float a = ((const float *)data(c, 0))[i];
      for (int32_t r = 1; r < c->world; r++) {
        float b = ((const float *)data(c, r))[i];
        a = op == ADA_COMM_SUM ? a + b : (b > a || b != b ? b : a);
      }
      ((float *)buf)[i] = a;
    }
  }
  return barrier(c, "all_reduce");
}

ada_status ada_comm_all_to_all(ada_comm *c, const void *send, const size_t *scount, const size_t *sdispl,
                               void *recv, const size_t *rcount, const size_t *rdispl) {
  if (c->broken) return barrier(c, "all_to_all");
  if (!c->h) {
    if (scount[0] != rcount[0])
      return ada_fail(ADA_EINVAL, "comm all_to_all: rank 0 sends %zu bytes to itself but expects %zu", scount[0], rcount[0]);
    if (scount[0]) memmove((char *)recv + rdispl[0], (const char *)send + sdispl[0], scount[0]);
    return ADA_OK;
  }
  /* my slot: the send buffer packed in destination order; meta: per destination offset, count */
  size_t total = 0;
  for (int32_t d = 0; d < c->world; d++) total += scount[d];
  if (total > ada_comm_max_bytes(c)) return too_big(c, "all_to_all", total);
  uint64_t *m = meta(c, c->rank);
  size_t off = 0;
  for (int32_t d = 0; d < c->world; d++) {
    if (scount[d]) memcpy(data(c, c->rank) + off, (const char *)send + sdispl[d], scount[d]);
    m[2 * d] = off;
    m[2 * d + 1] = scount[d];
    off += scount[d];
  }
  ada_status s = barrier(c, "all_to_all");
  if (s) return s;
  ada_status bad = ADA_OK;
  for (int32_t r = 0; r < c->world; r++) {
    const uint64_t *mr = meta(c, r);
    if (mr[2 * c->rank + 1] != rcount[r]) {
      bad = ada_fail(ADA_EINVAL, "comm all_to_all: rank %d sends %llu bytes to rank %d, which expects %zu", r,
                     (unsigned long long)mr[2 * c->rank + 1], c->rank, rcount[r]);
      break;
    }
    if (rcount[r]) memcpy((char *)recv + rdispl[r], data(c, r) + mr[2 * c->rank], rcount[r]);
  }
  s = barrier(c, "all_to_all");
  if (bad) return broken(c, bad);
  return s;
}

/* ---- Ulysses ---------------------------------------------------------------------------------- */

static ada_status check_split(const ada_comm *c, const char *op, const int64_t *tokens, const int32_t *nheads,
                              const int32_t *heads, int32_t H, int64_t *S, int32_t *hoff) {
  *S = 0;
  hoff[0] = 0;
  for (int32_t r = 0; r < c->world; r++) {
    if (tokens[r] < 0 || nheads[r] < 0) return ada_fail(ADA_EINVAL, "comm %s: rank %d has %lld tokens, %d heads", op, r, (long long)tokens[r], nheads[r]);
    *S += tokens[r];
    hoff[r + 1] = hoff[r] + nheads[r];
  }
  if (hoff[c->world] != H) return ada_fail(ADA_EINVAL, "comm %s: the ranks' heads number %d, the tensor has %d", op, hoff[c->world], H);
  uint8_t seen[4096] = {0};
  if (H > 4096) return ada_fail(ADA_EINVAL, "comm %s: %d heads (at most 4096)", op, H);
  for (int32_t i = 0; i < H; i++) {
    if (heads[i] < 0 || heads[i] >= H || seen[heads[i]])
      return ada_fail(ADA_EINVAL, "comm %s: head list entry %d (%d) is out of range 0..%d or repeated", op, i, heads[i], H - 1);
    seen[heads[i]] = 1;
  }
  return ADA_OK;
}

/* The byte counts and offsets of a Ulysses exchange with every rank d. Sequence side (this rank's
 * [tokens[me], H, row] regrouped by destination): tokens[me] x nheads[d] rows at tokens[me] x
 * hoff[d]; head side ([S, nheads[me], row]): tokens[d] x nheads[me] rows at the prefix of tokens. */
static void ulysses_counts(const ada_comm *c, const int64_t *tokens, const int32_t *nheads, const int32_t *hoff,
                           size_t row, size_t *seq_c, size_t *seq_d, size_t *head_c, size_t *head_d) {
  const int32_t me = c->rank;
  int64_t toff = 0;
  for (int32_t d = 0; d < c->world; d++) {
    seq_c[d] = (size_t)tokens[me] * (size_t)nheads[d] * row;
    seq_d[d] = (size_t)tokens[me] * (size_t)hoff[d] * row;
    head_c[d] = (size_t)tokens[d] * (size_t)nheads[me] * row;
    head_d[d] = (size_t)toff * (size_t)nheads[me] * row;
    toff += tokens[d];
  }
}

/* Between this rank's x [tokens[me], H, row] and the sequence side grouped by rank (rank d's part:
 * [tokens[me], nheads[d], row] in d's head order, at seq_d[d]): pack (x -> buf) or unpack. */
static void ulysses_permute(const ada_comm *c, int pack, char *x, char *buf, const int64_t *tokens,
                            const int32_t *nheads, const int32_t *heads, const int32_t *hoff, int32_t H, size_t row,
                            const size_t *seq_d) {
  for (int32_t d = 0; d < c->world; d++)
    for (int64_t t = 0; t < tokens[c->rank]; t++)
      for (int32_t j = 0; j < nheads[d]; j++) {
        char *a = x + ((size_t)t * (size_t)H + (size_t)heads[hoff[d] + j]) * row;
        char *b = buf + seq_d[d] + ((size_t)t * (size_t)nheads[d] + (size_t)j) * row;
        if (pack) memcpy(b, a, row);
        else memcpy(a, b, row);
      }
}

ada_status ada_comm_seq_to_heads(ada_comm *c, const void *x, void *y, const int64_t *tokens, const int32_t *nheads,
                                 const int32_t *heads, int32_t H, size_t row) {
  int32_t hoff[COMM_MAX_WORLD + 1];
  int64_t S;
  ada_status s = check_split(c, "seq_to_heads", tokens, nheads, heads, H, &S, hoff);
  if (s) return s;
  size_t n_me = (size_t)tokens[c->rank] * (size_t)H * row;
  char *pack = malloc(n_me ? n_me : 1);
  if (!pack) return ada_fail(ADA_ENOMEM, "comm seq_to_heads: out of memory (%zu bytes)", n_me);
  size_t sc[COMM_MAX_WORLD], sd[COMM_MAX_WORLD], hc[COMM_MAX_WORLD], hd[COMM_MAX_WORLD];
  ulysses_counts(c, tokens, nheads, hoff, row, sc, sd, hc, hd);
  ulysses_permute(c, 1, (char *)(uintptr_t)x, pack, tokens, nheads, heads, hoff, H, row, sd);
  s = ada_comm_all_to_all(c, pack, sc, sd, y, hc, hd);
  free(pack);
  return s;
}

ada_status ada_comm_heads_to_seq(ada_comm *c, const void *y, void *x, const int64_t *tokens, const int32_t *nheads,
                                 const int32_t *heads, int32_t H, size_t row) {
  int32_t hoff[COMM_MAX_WORLD + 1];
  int64_t S;
  ada_status s = check_split(c, "heads_to_seq", tokens, nheads, heads, H, &S, hoff);
  if (s) return s;
  size_t n_me = (size_t)tokens[c->rank] * (size_t)H * row;
  char *recv = malloc(n_me ? n_me : 1);
  if (!recv) return ada_fail(ADA_ENOMEM, "comm heads_to_seq: out of memory (%zu bytes)", n_me);
  size_t sc[COMM_MAX_WORLD], sd[COMM_MAX_WORLD], hc[COMM_MAX_WORLD], hd[COMM_MAX_WORLD];
  ulysses_counts(c, tokens, nheads, hoff, row, sc, sd, hc, hd);
  s = ada_comm_all_to_all(c, y, hc, hd, recv, sc, sd);
  if (s == ADA_OK) ulysses_permute(c, 0, x, recv, tokens, nheads, heads, hoff, H, row, sd);
  free(recv);
  return s;
}

/* ---- moving heads' layouts -------------------------------------------------------------------- */

ada_status ada_comm_move_layout(ada_comm *c, const ada_layout *mine, const int32_t *n_old, const int32_t *old_heads,
                                const int32_t *n_new, const int32_t *new_heads, int32_t H, ada_layout **out,
                                uint64_t *sent) {
  const char *op = "comm move_layout";
  *out = NULL;
  *sent = 0;
  const int32_t W = c->world, me = c->rank;
  int32_t hoff[COMM_MAX_WORLD + 1], noff[COMM_MAX_WORLD + 1];
  int64_t S;
  int64_t zeros[COMM_MAX_WORLD] = {0};
  ada_status s = check_split(c, op, zeros, n_old, old_heads, H, &S, hoff);
  if (s) return s;
  if (!mine || mine->heads != n_old[me])
    return ada_fail(ADA_EINVAL, "%s: rank %d holds a layout of %d heads, its old list has %d", op, me, mine ? mine->heads : 0,
                    n_old[me]);
  noff[0] = 0;
  for (int32_t r = 0; r < W; r++) {
    if (n_new[r] < 0) return ada_fail(ADA_EINVAL, "%s: rank %d is to hold %d heads", op, r, n_new[r]);
    noff[r + 1] = noff[r] + n_new[r];
  }
  if (n_new[me] < 1) return ada_fail(ADA_EINVAL, "%s: rank %d is to hold no head (every rank needs one)", op, me);
  for (int32_t i = 0; i < noff[W]; i++)
    if (new_heads[i] < 0 || new_heads[i] >= H)
      return ada_fail(ADA_EINVAL, "%s: new head list entry %d (%d) is out of range 0..%d", op, i, new_heads[i], H - 1);
  int32_t *owner = malloc(sizeof(int32_t) * 2 * (size_t)H), *pos = owner + H; /* old owner, position there */
  int32_t *local = malloc(sizeof(int32_t) * (size_t)(noff[W] > 0 ? noff[W] : 1));
  uint64_t *sizes = malloc(sizeof(uint64_t) * (size_t)W * (size_t)W);
  size_t sc[COMM_MAX_WORLD], sd[COMM_MAX_WORLD], rc[COMM_MAX_WORLD], rd[COMM_MAX_WORLD];
  int32_t nloc[COMM_MAX_WORLD], loff[COMM_MAX_WORLD + 1];
  char *sbuf = NULL, *rbuf = NULL;
  ada_layout *got = NULL;
  if (!owner || !local || !sizes) {
    s = ada_fail(ADA_ENOMEM, "%s: out of memory", op);
    goto done;
  }
  for (int32_t r = 0; r < W; r++)
    for (int32_t j = hoff[r]; j < hoff[r + 1]; j++) owner[old_heads[j]] = r, pos[old_heads[j]] = j - hoff[r];
  /* my messages: to rank d, my old heads that new[d] lists, in new[d]'s order */
  size_t total = 0;
  loff[0] = 0;
  for (int32_t d = 0; d < W; d++) {
    nloc[d] = 0;
    for (int32_t i = noff[d]; i < noff[d + 1]; i++)
      if (owner[new_heads[i]] == me) local[loff[d] + nloc[d]++] = pos[new_heads[i]];
    loff[d + 1] = loff[d] + nloc[d];
    sc[d] = nloc[d] ? ada_layout_msg_size(mine, local + loff[d], nloc[d]) : 0;
    sd[d] = total;
    total += sc[d];
  }
  sbuf = malloc(total ? total : 1);
  if (!sbuf) {
    s = ada_fail(ADA_ENOMEM, "%s: out of memory for %zu bytes of messages", op, total);
    goto done;
  }
  for (int32_t d = 0; d < W && !s; d++) {
    size_t n = 0;
    if (nloc[d]) s = ada_layout_encode(mine, local + loff[d], nloc[d], sbuf + sd[d], sc[d], &n);
  }
  if (s) goto done;
  /* the sizes every rank sends every rank: rank r's row of W */
  uint64_t row[COMM_MAX_WORLD];
  for (int32_t d = 0; d < W; d++) row[d] = sc[d];
  if ((s = ada_comm_all_gather(c, row, sizeof(uint64_t) * (size_t)W, sizes))) goto done;
  size_t rtotal = 0;
  for (int32_t r = 0; r < W; r++) {
    rc[r] = (size_t)sizes[(size_t)r * (size_t)W + (size_t)me];
    rd[r] = rtotal;
    if (rc[r] > ada_comm_max_bytes(c) || rtotal + rc[r] < rtotal) {
      s = ada_fail(ADA_EINVAL, "%s: rank %d says it sends rank %d %zu bytes (at most %zu)", op, r, me, rc[r],
                   ada_comm_max_bytes(c));
      goto done;
    }
    rtotal += rc[r];
  }
  rbuf = malloc(rtotal ? rtotal : 1);
  if (!rbuf) {
    s = ada_fail(ADA_ENOMEM, "%s: out of memory for %zu bytes of messages", op, rtotal);
    goto done;
  }
  if ((s = ada_comm_all_to_all(c, sbuf, sc, sd, rbuf, rc, rd))) goto done;
  for (int32_t d = 0; d < W; d++)
    if (d != me) *sent += sc[d];
  if ((s = ada_layout_decode(&got, rbuf, rtotal, op))) goto done;
  /* got holds, source by source (rank order), the heads of new[me] each source owned, in new[me]'s
   * order: the position of each of new[me]'s heads in got */
  int32_t seen[COMM_MAX_WORLD] = {0}, at[COMM_MAX_WORLD + 1];
  at[0] = 0;
  for (int32_t r = 0; r < W; r++) {
    int32_t k = 0;
    for (int32_t i = noff[me]; i < noff[me + 1]; i++) k += owner[new_heads[i]] == r;
    at[r + 1] = at[r] + k;
  }
  if (got->heads != at[W]) {
    s = ada_fail(ADA_EINVAL, "%s: rank %d received %d heads, expected %d", op, me, got->heads, at[W]);
    goto done;
  }
  bool in_order = true;
  for (int32_t i = noff[me]; i < noff[me + 1]; i++) {
    int32_t r = owner[new_heads[i]];
    local[i - noff[me]] = at[r] + seen[r]++;
    in_order = in_order && local[i - noff[me]] == i - noff[me];
  }
  if (in_order) {
    *out = got;
    got = NULL;
  } else {
    int32_t *part = calloc((size_t)n_new[me], sizeof(int32_t));
    if (!part) s = ada_fail(ADA_ENOMEM, "%s: out of memory", op);
    else {
      const ada_layout *parts[1] = {got};
      s = ada_layout_pick(out, parts, 1, part, local, n_new[me], op);
      free(part);
    }
  }
done:
  ada_layout_free(got);
  free(owner);
  free(local);
  free(sizes);
  free(sbuf);
  free(rbuf);
  return s;
}

/* ---- device transport ------------------------------------------------------------------------- */

const char *ada_comm_dev_transport(const ada_comm *c) { return c->dops ? c->dops->name : NULL; }
const char *ada_comm_dev_built(void) { return device_ops ? device_ops->name : NULL; }
int32_t ada_comm_gpu(const ada_comm *c) { return c->dops ? c->gpu : -1; }
double ada_comm_timeout(const ada_comm *c) { return c->timeout; }

ada_status ada_comm_poll(ada_comm *c, const char *op, double t0) {
  double t = now_s();
  if (c->h) {
    int32_t ab = atomic_load(&c->h->aborted);
    if (ab > 0 && ab - 1 != c->rank)
      return ada_fail(ADA_EIO, "comm %s: rank %d: rank %d failed (aborted the communicator)", op, c->rank, ab - 1);
    for (int32_t r = 0; r < c->world; r++) {
      int32_t pid = atomic_load(&c->h->pids[r]);
      if (r == c->rank || pid <= 0) continue;
      if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
        if (c->dead_since[r] == 0) c->dead_since[r] = t;
        else if (t - c->dead_since[r] > 1.0)
          return ada_fail(ADA_EIO, "comm %s: rank %d: rank %d (pid %d) died during the call", op, c->rank, r, pid);
      }
    }
  }
  if (t - t0 > c->timeout)
    return ada_fail(ADA_EIO, "comm %s: rank %d: the device collective did not finish within %.3g s (ADASPA_COMM_TIMEOUT)", op,
                    c->rank, c->timeout);
  return ADA_OK;
}

int32_t ada_comm_gone(ada_comm *c, double wait_s, int32_t *pid) {
  *pid = 0;
  if (!c->h) return -1;
  double t0 = now_s();
  for (;;) {
    int32_t ab = atomic_load(&c->h->aborted);
    if (ab > 0 && ab - 1 != c->rank) return ab - 1;
    for (int32_t r = 0; r < c->world; r++) {
      int32_t p = atomic_load(&c->h->pids[r]);
      if (r != c->rank && p > 0 && kill((pid_t)p, 0) != 0 && errno == ESRCH) {
        *pid = p;
        return r;
      }
    }
    if (now_s() - t0 >= wait_s) return -1;
    struct timespec ts = {0, 10000000};
    nanosleep(&ts, NULL);
  }
}

/* Before a device call: a transport, not broken. */
static ada_status dev_ready(ada_comm *c, const char *op) {
  if (!c->dops)
    return ada_fail(ADA_EUNSUPPORTED, "comm %s: rank %d: no device transport (ADASPA_COMM_DEVICE=nccl opens one)", op, c->rank);
  if (c->broken) return ada_fail(ADA_EIO, "comm %s: rank %d: the communicator failed earlier", op, c->rank);
  return ADA_OK;
}

/* After a device call: a failure aborts the device transport and tells the peers. */
static ada_status dev_done(ada_comm *c, ada_status s) {
  if (s) ada_comm_abort(c);
  return s;
}

/* Every rank's v (world entries of `each` u64 from each rank) over the host transport: the sizes a
 * device collective is about to use, so a mismatch is an error rather than a hang. */
static ada_status agree_sizes(ada_comm *c, const uint64_t *mine, int32_t each, uint64_t *all) {
  return ada_comm_all_gather(c, mine, sizeof(uint64_t) * (size_t)each, all);
}

ada_status ada_comm_dev_all_gather(ada_comm *c, const void *send, size_t n, void *recv) {
  const char *op = "dev_all_gather";
  ada_status s = dev_ready(c, op);
  if (s) return s;
  uint64_t mine = n, all[COMM_MAX_WORLD];
  if ((s = agree_sizes(c, &mine, 1, all))) return s;
  for (int32_t r = 0; r < c->world; r++)
    if (all[r] != mine)
      return dev_done(c, ada_fail(ADA_EINVAL, "comm %s: rank %d sends %zu bytes, rank %d %llu", op, c->rank, n, r,
                                (unsigned long long)all[r]));
  if (!n) return ADA_OK;
  return dev_done(c, c->dops->all_gather(c->dstate, c, send, n, recv));
}

ada_status ada_comm_dev_all_reduce(ada_comm *c, void *buf, int64_t count, ada_comm_dtype dt, ada_comm_op op_) {
  const char *op = "dev_all_reduce";
  ada_status s = dev_ready(c, op);
  if (s) return s;
  if (count < 0) return ada_fail(ADA_EINVAL, "comm %s: count %lld < 0", op, (long long)count);
  uint64_t mine[2] = {(uint64_t)count, (uint64_t)dt * 2 + (uint64_t)op_}, all[2 * COMM_MAX_WORLD];
  if ((s = agree_sizes(c, mine, 2, all))) return s;
  for (int32_t r = 0; r < c->world; r++)
    if (all[2 * r] != mine[0] || all[2 * r + 1] != mine[1])
      return dev_done(c, ada_fail(ADA_EINVAL, "comm %s: rank %d reduces %lld values (type/op %llu), rank %d %llu (%llu)", op,
                                c->rank, (long long)count, (unsigned long long)mine[1], r, (unsigned long long)all[2 * r],
                                (unsigned long long)all[2 * r + 1]));
  if (!count) return ADA_OK;
  return dev_done(c, c->dops->all_reduce(c->dstate, c, buf, count, dt, op_));
}

ada_status ada_comm_dev_all_to_all(ada_comm *c, const void *send, const size_t *scount, const size_t *sdispl,
                                   void *recv, const size_t *rcount, const size_t *rdispl) {
  const char *op = "dev_all_to_all";
  ada_status s = dev_ready(c, op);
  if (s) return s;
  const int32_t W = c->world;
  uint64_t mine[COMM_MAX_WORLD] = {0}, *all = malloc(sizeof(uint64_t) * (size_t)W * (size_t)W);
  if (!all) return ada_fail(ADA_ENOMEM, "comm %s: out of memory", op);
  for (int32_t d = 0; d < W; d++) mine[d] = scount[d];
  if ((s = agree_sizes(c, mine, W, all))) {
    free(all);
    return s;
  }
  for (int32_t r = 0; r < W && !s; r++)
    if (all[(size_t)r * (size_t)W + (size_t)c->rank] != rcount[r])
      s = dev_done(c, ada_fail(ADA_EINVAL, "comm %s: rank %d sends %llu bytes to rank %d, which expects %zu", op, r,
                             (unsigned long long)all[(size_t)r * (size_t)W + (size_t)c->rank], c->rank, rcount[r]));
  free(all);
  if (s) return s;
  return dev_done(c, c->dops->all_to_all(c->dstate, c, send, scount, sdispl, recv, rcount, rdispl));
}

/* Ulysses on the device: the pack and unpack as 2D copies (one per destination and head). */
static ada_status dev_permute(ada_comm *c, int pack, char *x, char *buf, const int64_t *tokens, const int32_t *nheads,
                              const int32_t *heads, const int32_t *hoff, int32_t H, size_t row, const size_t *seq_d) {
  const size_t t = (size_t)tokens[c->rank];
  if (!t) return ADA_OK;
  for (int32_t d = 0; d < c->world; d++)
    for (int32_t j = 0; j < nheads[d]; j++) {
      char *a = x + (size_t)heads[hoff[d] + j] * row, *b = buf + seq_d[d] + (size_t)j * row;
      size_t ap = (size_t)H * row, bp = (size_t)nheads[d] * row;
      ada_status s = pack ? c->dops->copy2d(c->dstate, b, bp, a, ap, row, t) : c->dops->copy2d(c->dstate, a, ap, b, bp, row, t);
      if (s) return s;
    }
  return ADA_OK;
}

static ada_status dev_ulysses(ada_comm *c, int to_heads, const void *in, void *out, const int64_t *tokens,
                              const int32_t *nheads, const int32_t *heads, int32_t H, size_t row) {
  const char *op = to_heads ? "dev_seq_to_heads" : "dev_heads_to_seq";
  ada_status s = dev_ready(c, op);
  if (s) return s;
  int32_t hoff[COMM_MAX_WORLD + 1];
  int64_t S;
  if ((s = check_split(c, op, tokens, nheads, heads, H, &S, hoff))) return s;
  size_t n_me = (size_t)tokens[c->rank] * (size_t)H * row;
  void *scratch = NULL;
  if ((s = c->dops->alloc(c->dstate, &scratch, n_me ? n_me : 256))) return s;
  size_t sc[COMM_MAX_WORLD], sd[COMM_MAX_WORLD], hc[COMM_MAX_WORLD], hd[COMM_MAX_WORLD];
  ulysses_counts(c, tokens, nheads, hoff, row, sc, sd, hc, hd);
  if (to_heads) {
    s = dev_permute(c, 1, (char *)(uintptr_t)in, scratch, tokens, nheads, heads, hoff, H, row, sd);
    if (!s) s = ada_comm_dev_all_to_all(c, scratch, sc, sd, out, hc, hd);
  } else {
    s = ada_comm_dev_all_to_all(c, in, hc, hd, scratch, sc, sd);
    if (!s) s = dev_permute(c, 0, out, scratch, tokens, nheads, heads, hoff, H, row, sd);
  }
  c->dops->release(c->dstate, scratch);
  return s;
}

ada_status ada_comm_dev_seq_to_heads(ada_comm *c, const void *x, void *y, const int64_t *tokens, const int32_t *nheads,
                                     const int32_t *heads, int32_t H, size_t row) {
  return dev_ulysses(c, 1, x, y, tokens, nheads, heads, H, row);
}

ada_status ada_comm_dev_heads_to_seq(ada_comm *c, const void *y, void *x, const int64_t *tokens, const int32_t *nheads,
                                     const int32_t *heads, int32_t H, size_t row) {
  return dev_ulysses(c, 0, y, x, tokens, nheads, heads, H, row);
}
