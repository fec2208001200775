/* launch.c: `adaspa launch -n N [options] [--] ARGS...` (the CLI host's launcher; see launch.h). */
#define _DEFAULT_SOURCE
#include "launch.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "comm.h"

#define MAX_RANKS 64

static volatile sig_atomic_t got_signal = 0;
static void on_signal(int sig) { got_signal = sig; }

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct rank_io {
  int fd; /* the rank's output pipe, -1: none or closed */
  char buf[4096];
  size_t len;
} rank_io;

/* Writes one line of a rank's output with its prefix in a single write(2), so that it does not
 * interleave with the lines rank 0 writes to the same stderr. */
static void emit(int rank, const char *s, size_t n) {
  char line[32 + sizeof ((rank_io *)0)->buf + 1];
  int k = snprintf(line, 32, "[rank %d] ", rank);
  if (k < 0) return;
  size_t len = (size_t)k;
  if (n > sizeof ((rank_io *)0)->buf) n = sizeof ((rank_io *)0)->buf;
  memcpy(line + len, s, n);
  len += n;
  if (n == 0 || s[n - 1] != '\n') line[len++] = '\n';
  fflush(stdout);
  fflush(stderr);
  size_t off = 0;
  while (off < len) {
    ssize_t w = write(STDERR_FILENO, line + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    off += (size_t)w;
  }
}

/* Reads what the pipe holds; writes whole lines with the rank's prefix. Closes it at EOF. */
static void drain(rank_io *io, int rank) {
  for (;;) {
    ssize_t n = read(io->fd, io->buf + io->len, sizeof io->buf - io->len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {
      if (io->len) emit(rank, io->buf, io->len);
      io->len = 0;
      close(io->fd);
      io->fd = -1;
      return;
    }
    io->len += (size_t)n;
    size_t start = 0;
    for (size_t i = 0; i < io->len; i++)
      if (io->buf[i] == '\n') {
        emit(rank, io->buf + start, i + 1 - start);
        start = i + 1;
      }
    if (start == 0 && io->len == sizeof io->buf) { /* a line longer than the buffer */
      emit(rank, io->buf, io->len);
      start = io->len;
    }
    memmove(io->buf, io->buf + start, io->len - start);
    io->len -= start;
  }
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: adaspa launch -n N [--nccl] [--all-output] [--grace S] [--] ARGS...\n"
          "  starts N processes of adaspa ARGS (a recipe, a script, a subcommand), rank 0..N-1, with\n"
          "  ADASPA_RANK / ADASPA_WORLD_SIZE / ADASPA_LOCAL_RANK (and RANK, WORLD_SIZE, LOCAL_RANK) and\n"
          "  ADASPA_COMM (their shared communicator file under /dev/shm, slots of ADASPA_COMM_MB MiB, 256\n"
          "  by default) set, and OMP_NUM_THREADS (cores / N) unless set. Rank 0's output passes through; the others' standard output is dropped\n"
          "  (--all-output: kept) and their standard error is prefixed \"[rank r] \". Ctrl-C is forwarded;\n"
          "  when a rank fails the others get --grace seconds (10) to stop on their own, then SIGTERM.\n"
          "  The exit status is the first failing rank's (0 when every rank succeeds).\n"
          "  --nccl (or ADASPA_COMM_DEVICE=nccl): GPU tensors' collectives go by NCCL (ADASPA_COMM_DEVICE=nccl in\n"
          "  every rank), and rank r gets one GPU: CUDA_VISIBLE_DEVICES = the r-th entry of the launcher's\n"
          "  CUDA_VISIBLE_DEVICES, or r when it is unset.\n");
}

int ada_launch_main(int argc, char **argv, int first) {
  int n = 0, all_output = 0, nccl = 0, i = first;
  double grace = 10;
  for (; i < argc; i++) {
    if (!strcmp(argv[i], "-n") && i + 1 < argc) {
      char *end;
      long v = strtol(argv[++i], &end, 10);
      if (*end || v < 1 || v > MAX_RANKS) {
        fprintf(stderr, "adaspa launch: -n must be 1..%d, got %s\n", MAX_RANKS, argv[i]);
        return 2;
      }
      n = (int)v;
    } else if (!strcmp(argv[i], "--grace") && i + 1 < argc) {
      char *end;
      grace = strtod(argv[++i], &end);
      if (*end || !(grace >= 0)) {
        fprintf(stderr, "adaspa launch: --grace must be seconds >= 0, got %s\n", argv[i]);
        return 2;
      }
    } else if (!strcmp(argv[i], "--all-output")) {
      all_output = 1;
    } else if (!strcmp(argv[i], "--nccl")) {
      nccl = 1;
    } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(argv[i], "--")) {
      i++;
      break;
    } else {
      break;
    }
  }
  if (n == 0 || i >= argc) {
    fprintf(stderr, "adaspa launch: %s\n", n == 0 ? "-n N is required" : "nothing to run (ARGS...)");
    usage(stderr);
    return 2;
  }
  const char *cd = getenv("ADASPA_COMM_DEVICE");
  if (cd && !strcmp(cd, "nccl")) nccl = 1;
  /* --nccl: one GPU a rank, the r-th of the launcher's CUDA_VISIBLE_DEVICES (or r) */
  char gpus[MAX_RANKS][32];
  if (nccl) {
    const char *vis = getenv("CUDA_VISIBLE_DEVICES");
    int k = 0;
    if (vis && *vis) {
      const char *p = vis;
      while (*p && k < MAX_RANKS) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof gpus[0]) break;
        memcpy(gpus[k], p, len), gpus[k][len] = 0, k++;
        p += len + (p[len] == ',');
      }
      if (k < n) {
        fprintf(stderr, "adaspa launch: --nccl: %d ranks need %d GPUs, CUDA_VISIBLE_DEVICES=%s lists %d\n", n, n, vis, k);
        return 2;
      }
    } else
      for (k = 0; k < n; k++) snprintf(gpus[k], sizeof gpus[k], "%d", k);
  }
  char self[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) {
    fprintf(stderr, "adaspa launch: cannot find this program (/proc/self/exe): %s\n", strerror(errno));
    return 1;
  }
  self[len] = 0;
  size_t slot_mb = 256;
  const char *mb = getenv("ADASPA_COMM_MB");
  if (mb && *mb) {
    char *end;
    long v = strtol(mb, &end, 10);
    if (*end || v < 1 || v > 65536) {
      fprintf(stderr, "adaspa launch: ADASPA_COMM_MB must be 1..65536, got %s\n", mb);
      return 2;
    }
    slot_mb = (size_t)v;
  }
  struct stat st;
  const char *dir = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/adaspa-comm-%d-%lld", dir, (int)getpid(), (long long)time(NULL));
  if (ada_comm_shm_create(path, n, slot_mb << 20) != ADA_OK) {
    fprintf(stderr, "adaspa launch: %s\n", ada_last_error());
    return 1;
  }

  struct sigaction sa, old_int, old_term;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  pid_t pids[MAX_RANKS];
  int status[MAX_RANKS], done[MAX_RANKS] = {0}, running = 0, first_fail = -1, rc = 0;
  rank_io io[MAX_RANKS];
  char nbuf[16];
  snprintf(nbuf, sizeof nbuf, "%d", n);
  for (int r = 0; r < n; r++) {
    io[r].fd = -1;
    io[r].len = 0;
    int pfd[2] = {-1, -1};
    if (r > 0 && pipe(pfd) != 0) {
      fprintf(stderr, "adaspa launch: pipe: %s\n", strerror(errno));
      rc = 1;
      break;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
      fprintf(stderr, "adaspa launch: fork of rank %d: %s\n", r, strerror(errno));
      if (pfd[0] >= 0) close(pfd[0]), close(pfd[1]);
      rc = 1;
      break;
    }
    if (pid == 0) {
      char rb[16];
      snprintf(rb, sizeof rb, "%d", r);
      /* its own process group: a terminal's Ctrl-C reaches the launcher, which forwards it once */
      setpgid(0, 0);
      sigaction(SIGINT, &old_int, NULL);
      sigaction(SIGTERM, &old_term, NULL);
      setenv("ADASPA_RANK", rb, 1), setenv("RANK", rb, 1);
      setenv("ADASPA_LOCAL_RANK", rb, 1), setenv("LOCAL_RANK", rb, 1);
      setenv("ADASPA_WORLD_SIZE", nbuf, 1), setenv("WORLD_SIZE", nbuf, 1);
      setenv("ADASPA_COMM", path, 1);
      if (nccl) setenv("ADASPA_COMM_DEVICE", "nccl", 1), setenv("CUDA_VISIBLE_DEVICES", gpus[r], 1);
      if (!getenv("OMP_NUM_THREADS")) { /* the host's cores shared by the ranks (waits spin) */
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        char tb[24];
        snprintf(tb, sizeof tb, "%ld", cores / n > 1 ? cores / n : 1);
        setenv("OMP_NUM_THREADS", tb, 1);
      }
      if (r > 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (dup2(all_output ? pfd[1] : devnull, STDOUT_FILENO) < 0 || dup2(pfd[1], STDERR_FILENO) < 0) _exit(127);
        close(pfd[0]), close(pfd[1]);
        if (devnull >= 0) close(devnull);
      }
      for (int k = 0; k < r; k++)
        if (io[k].fd >= 0) close(io[k].fd);
      char **args = calloc((size_t)(argc - i + 2), sizeof *args);
      if (!args) _exit(127);
      args[0] = self;
      for (int k = i; k < argc; k++) args[k - i + 1] = argv[k];
      execv(self, args);
      fprintf(stderr, "adaspa launch: exec %s: %s\n", self, strerror(errno));
      _exit(127);
    }
    pids[r] = pid;
    running++;
    if (r > 0) {
      close(pfd[1]);
      io[r].fd = pfd[0];
      fcntl(io[r].fd, F_SETFL, fcntl(io[r].fd, F_GETFL) | O_NONBLOCK);
    }
  }
  int started = running;
  double fail_at = rc ? now_s() : -1, term_at = -1;
  if (rc) first_fail = -2;
  for (;;) {
    int open_fds = 0;
    struct pollfd pf[MAX_RANKS];
    int who[MAX_RANKS];
    for (int r = 0; r < started; r++)
      if (io[r].fd >= 0) pf[open_fds].fd = io[r].fd, pf[open_fds].events = POLLIN, who[open_fds++] = r;
    if (running == 0 && open_fds == 0) break;
    int k = poll(pf, (nfds_t)open_fds, 50);
    if (k > 0)
      for (int j = 0; j < open_fds; j++)
        if (pf[j].revents) drain(&io[who[j]], who[j]);
    if (got_signal) { /* forward Ctrl-C (or TERM) to every running rank */
      int sig = got_signal;
      got_signal = 0;
      for (int r = 0; r < started; r++)
        if (!done[r]) kill(pids[r], sig);
    }
    for (;;) {
      int ws;
      pid_t p = waitpid(-1, &ws, WNOHANG);
      if (p <= 0) break;
      for (int r = 0; r < started; r++)
        if (pids[r] == p && !done[r]) {
          done[r] = 1;
          running--;
          status[r] = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
          if (status[r] != 0) {
            if (WIFSIGNALED(ws))
              fprintf(stderr, "adaspa launch: rank %d (pid %d) was killed by signal %d\n", r, (int)p, WTERMSIG(ws));
            else
              fprintf(stderr, "adaspa launch: rank %d (pid %d) failed with status %d\n", r, (int)p, status[r]);
            if (first_fail == -1) first_fail = r, fail_at = now_s();
          }
        }
    }
    double t = now_s();
    if (fail_at >= 0 && running > 0 && term_at < 0 && t - fail_at > grace) {
      fprintf(stderr, "adaspa launch: stopping the ranks still running %.3g s after the first failure\n", grace);
      for (int r = 0; r < started; r++)
        if (!done[r]) kill(pids[r], SIGTERM);
      term_at = t;
    }
    if (term_at >= 0 && running > 0 && t - term_at > 5) {
      for (int r = 0; r < started; r++)
        if (!done[r]) kill(pids[r], SIGKILL);
      term_at = t + 1e9;
    }
  }
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  if (unlink(path) != 0 && errno != ENOENT)
    fprintf(stderr, "adaspa launch: cannot remove %s: %s\n", path, strerror(errno));
  if (rc) return rc;
  return first_fail >= 0 ? status[first_fail] : 0;
}
