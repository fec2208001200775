/* comm.h: the communicator of several processes (prefix ada_comm_), one per rank.
 *
 * A backend service (DESIGN.md: "Communication is a backend service too"): the collectives the
 * sequence-parallel attention needs, over a transport chosen at init. Transports:
 *   - "single": world size 1 (no environment): every collective is a local copy;
 *   - "shm": CPU processes of one host sharing a file under /dev/shm that the launcher
 *     (`adaspa launch -n N`) creates and sizes: a header (per-rank pids, sequence counters, an
 *     abort word) and one slot of slot_bytes per rank. A collective writes the rank's part into
 *     its own slot, passes a barrier, reads the others' slots, and passes a second barrier.
 *   - a device transport for GPU buffers (the ada_comm_dev_* calls below): NCCL, in a build that
 *     has it, when ADASPA_COMM_DEVICE=nccl. Host buffers keep using the host transport.
 * Buffers are host memory, sizes in bytes. Every call is bounded: a wait polls the peers, and a
 * peer that died (its pid gone), that called ada_comm_abort, or that did not arrive within the
 * timeout makes the call fail with ADA_EIO naming the rank. After a failure the communicator
 * is broken (every later call fails at once).
 *
 * Environment read by ada_comm_init_env (ADASPA_* first, then the usual names):
 *   ADASPA_RANK | RANK, ADASPA_WORLD_SIZE | WORLD_SIZE, ADASPA_LOCAL_RANK | LOCAL_RANK,
 *   ADASPA_COMM (the shm file; required when the world size is > 1),
 *   ADASPA_COMM_TIMEOUT (seconds a call waits for a peer; default 600),
 *   ADASPA_COMM_DEVICE: "host" (default: no device transport; GPU tensors go through host copies)
 *     or "nccl" (the NCCL transport; an error when this build has none or there is no GPU),
 *   ADASPA_COMM_GPU (the GPU the device transport uses; default LOCAL_RANK modulo the GPU count,
 *     so 0 when the launcher pinned one GPU per rank with CUDA_VISIBLE_DEVICES).
 */
#ifndef ADA_COMM_H
#define ADA_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct ada_comm ada_comm;

typedef enum ada_comm_dtype { ADA_COMM_F32, ADA_COMM_F64 } ada_comm_dtype;
typedef enum ada_comm_op { ADA_COMM_SUM, ADA_COMM_MAX } ada_comm_op;

/* The shm file's layout for world ranks with slot bytes each: its size (the launcher creates it
 * with this size, zero-filled). 0 when world or slot is out of range. */
size_t ada_comm_shm_size(int32_t world, size_t slot_bytes);
/* Writes the header of a new shm file (zero-filled, of ada_comm_shm_size bytes) at path. */
ada_status ada_comm_shm_create(const char *path, int32_t world, size_t slot_bytes);

/* A communicator from the environment (world size 1 when none is set). */
ada_status ada_comm_init_env(ada_comm **out);
/* A communicator of rank in world over the shm file at path (world 1: path may be NULL). */
ada_status ada_comm_init(ada_comm **out, int32_t rank, int32_t world, int32_t local_rank, const char *path,
                         double timeout_s);
void ada_comm_free(ada_comm *c);

int32_t ada_comm_rank(const ada_comm *c);
int32_t ada_comm_size(const ada_comm *c);
int32_t ada_comm_local_rank(const ada_comm *c);
const char *ada_comm_transport(const ada_comm *c);
/* The largest message one rank may put in a collective (the slot size). */
size_t ada_comm_max_bytes(const ada_comm *c);

ada_status ada_comm_barrier(ada_comm *c);
/* recv[r * n .. (r + 1) * n) = rank r's send (n bytes from every rank). */
ada_status ada_comm_all_gather(ada_comm *c, const void *send, size_t n, void *recv);
/* buf (count elements) = the reduction over ranks, in rank order (the same bits on every rank). */
ada_status ada_comm_all_reduce(ada_comm *c, void *buf, int64_t count, ada_comm_dtype dt, ada_comm_op op);
/* Rank r's bytes send[sdispl[d] .. + scount[d]) go to rank d at recv[rdispl[r] .. + rcount[r]);
 * scount[d] on rank r must equal rcount[r] on rank d (checked: a mismatch names both ranks). */
ada_status ada_comm_all_to_all(ada_comm *c, const void *send, const size_t *scount, const size_t *sdispl,
                               void *recv, const size_t *rcount, const size_t *rdispl);
/* Marks the communicator failed for every rank (their waits fail naming this rank). */
void ada_comm_abort(ada_comm *c);

/* ---- Ulysses exchange -------------------------------------------------------------------------
 * tokens: the token count of each rank's contiguous slice (world entries, summing to S);
 * heads: per rank its head indices (heads[off[r] .. off[r + 1]) with off[r] the prefix sum of
 * nheads), a partition of 0..H-1 (any order; the rank's output keeps its order).
 * seq_to_heads: x [tokens[me], H, row] -> y [S, nheads[me], row];
 * heads_to_seq: y [S, nheads[me], row] -> x [tokens[me], H, row]. row: bytes of one (token, head). */
ada_status ada_comm_seq_to_heads(ada_comm *c, const void *x, void *y, const int64_t *tokens, const int32_t *nheads,
                                 const int32_t *heads, int32_t H, size_t row);
ada_status ada_comm_heads_to_seq(ada_comm *c, const void *y, void *x, const int64_t *tokens, const int32_t *nheads,
                                 const int32_t *heads, int32_t H, size_t row);

/* ---- moving heads' layouts -------------------------------------------------------------------
 * old: per rank its heads (n_old[r] of old_heads, as `heads` above: a partition of 0..H-1);
 * mine: this rank's layout, old[me]'s heads in that order. new: per rank the heads it is to
 * hold (n_new[r] of new_heads, each in 0..H-1; a head may go to several ranks). *out: a layout
 * of new[me]'s heads in that order. Heads travel as compact messages (ada_layout_encode), not
 * masks: the ranks first agree on the message sizes, then exchange the messages; what arrives
 * is checked (ada_layout_decode). *sent: the bytes this rank sent (its messages to the others). */
struct ada_layout;
ada_status ada_comm_move_layout(ada_comm *c, const struct ada_layout *mine, const int32_t *n_old, const int32_t *old_heads,
                                const int32_t *n_new, const int32_t *new_heads, int32_t H, struct ada_layout **out,
                                uint64_t *sent);

/* ---- device transport -------------------------------------------------------------------------
 * With a device transport (ada_comm_dev_transport not NULL) the ada_comm_dev_* calls take device
 * pointers on the communicator's GPU (ada_comm_gpu) and work as their host namesakes above. They
 * are ordered after the work already queued on the CUDA backend's stream of that GPU and return
 * when the collective has finished. Their sizes are agreed over the host transport first (a
 * mismatch is an error naming both ranks, not a hang). Every wait is bounded as the host calls':
 * the transport's asynchronous error, the abort word, peers' pids and ADASPA_COMM_TIMEOUT are
 * polled; on a failure the device communicator is aborted, this communicator broken and the peers
 * told (ada_comm_abort). all_reduce's result is the same on every rank but not summed in rank
 * order (unlike the host transport's). Without a device transport they fail (ADA_EUNSUPPORTED). */
const char *ada_comm_dev_transport(const ada_comm *c); /* "nccl" or NULL */
const char *ada_comm_dev_built(void);                    /* the device transport this build has, or NULL */
int32_t ada_comm_gpu(const ada_comm *c);                 /* -1 without a device transport */
ada_status ada_comm_dev_all_gather(ada_comm *c, const void *send, size_t n, void *recv);
ada_status ada_comm_dev_all_reduce(ada_comm *c, void *buf, int64_t count, ada_comm_dtype dt, ada_comm_op op);
ada_status ada_comm_dev_all_to_all(ada_comm *c, const void *send, const size_t *scount, const size_t *sdispl,
                                   void *recv, const size_t *rcount, const size_t *rdispl);
ada_status ada_comm_dev_seq_to_heads(ada_comm *c, const void *x, void *y, const int64_t *tokens, const int32_t *nheads,
                                     const int32_t *heads, int32_t H, size_t row);
ada_status ada_comm_dev_heads_to_seq(ada_comm *c, const void *y, void *x, const int64_t *tokens, const int32_t *nheads,
                                     const int32_t *heads, int32_t H, size_t row);

/* The seam a device transport implements (runtime/cuda/nccl.c registers NCCL's at start-up).
 * Each call gets the communicator for ada_comm_poll and its rank, size and timeout; it returns a
 * status with a message naming the op; the generic layer (comm.c) checks the arguments and sizes
 * before, and aborts after a failure. */
typedef struct ada_comm_device_ops {
  const char *name;
  int32_t (*gpu_count)(void);
  /* Opens the transport on gpu for every rank of c (a collective of c: ids go over the host
   * transport); *state is passed to the others. */
  ada_status (*open)(void **state, ada_comm *c, int32_t gpu);
  void (*close)(void *state); /* frees (after abort too) */
  void (*abort)(void *state); /* aborts outstanding work; only close may follow */
  ada_status (*all_gather)(void *state, ada_comm *c, const void *send, size_t n, void *recv);
  ada_status (*all_reduce)(void *state, ada_comm *c, void *buf, int64_t count, ada_comm_dtype dt, ada_comm_op op);
  ada_status (*all_to_all)(void *state, ada_comm *c, const void *send, const size_t *scount, const size_t *sdispl,
                           void *recv, const size_t *rcount, const size_t *rdispl);
  /* height rows of width bytes from src (rows spitch apart) to dst (dpitch apart), on the device */
  ada_status (*copy2d)(void *state, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                       size_t height);
  ada_status (*alloc)(void *state, void **p, size_t n); /* device scratch */
  void (*release)(void *state, void *p);
} ada_comm_device_ops;
void ada_comm_register_device(const ada_comm_device_ops *ops);
/* For a device transport's waits: fails (ADA_EIO, naming op and the rank) when another rank
 * aborted, a peer's process is gone (dead for over a second: a peer that finished and exited is
 * given time to be seen finished), or more than the timeout has passed since t0 (ada_comm_now). */
ada_status ada_comm_poll(ada_comm *c, const char *op, double t0);
double ada_comm_now(void);
/* After a device transport's failure: a peer that aborted or whose process is gone, looked for
 * during up to wait_s seconds (a killed peer's pid lingers until it is reaped); -1 when none.
 * *pid: its pid (0 when it aborted). */
int32_t ada_comm_gone(ada_comm *c, double wait_s, int32_t *pid);
double ada_comm_timeout(const ada_comm *c);

#endif
