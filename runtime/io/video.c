/* video.c: RGB frames to an mp4 through an ffmpeg child process (video.h). */
#define _GNU_SOURCE /* pipe2, posix_spawn_file_actions_addclosefrom_np / addchdir_np */
#include "video.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *const candidates[] = {"/usr/bin/ffmpeg", "/usr/local/bin/ffmpeg", NULL};

static int executable_file(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, X_OK) == 0;
}

ada_status ada_video_find_ffmpeg(char *path, size_t n) {
  const char *env = getenv("ADASPA_FFMPEG");
  if (env && *env) {
    if (env[0] != '/')
      return ada_fail(ADA_EUNSUPPORTED, "ffmpeg: ADASPA_FFMPEG=%.200s is not an absolute path", env);
    if (strlen(env) >= n) return ada_fail(ADA_EUNSUPPORTED, "ffmpeg: ADASPA_FFMPEG=%.200s...: too long", env);
    if (!executable_file(env))
      return ada_fail(ADA_EUNSUPPORTED, "ffmpeg: ADASPA_FFMPEG=%.200s is not an executable file", env);
    memcpy(path, env, strlen(env) + 1);
    return ADA_OK;
  }
  for (int i = 0; candidates[i]; i++) {
    if (executable_file(candidates[i]) && strlen(candidates[i]) < n) {
      memcpy(path, candidates[i], strlen(candidates[i]) + 1);
      return ADA_OK;
    }
  }
  return ada_fail(ADA_EUNSUPPORTED, "ffmpeg: not found (looked for /usr/bin/ffmpeg and /usr/local/bin/ffmpeg; "
                  "Debian's package is ffmpeg; ADASPA_FFMPEG=PATH names another)");
}

/* ---- SIGINT and SIGPIPE while encoding ---------------------------------------------------------- */

static volatile sig_atomic_t g_sigint;
static struct sigaction g_old_int, g_old_pipe;

/* Stops the encoding and runs the handler that was installed before (the host's). */
static void on_sigint(int sig, siginfo_t *si, void *ctx) {
  g_sigint = 1;
  if (g_old_int.sa_flags & SA_SIGINFO) {
    if (g_old_int.sa_sigaction) g_old_int.sa_sigaction(sig, si, ctx);
  } else if (g_old_int.sa_handler != SIG_DFL && g_old_int.sa_handler != SIG_IGN) {
    g_old_int.sa_handler(sig);
  }
}

typedef struct signals {
  int int_set, pipe_set, int_was_default;
} signals;

static void signals_begin(signals *s) {
  memset(s, 0, sizeof *s);
  g_sigint = 0;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = SIG_IGN; /* a write to a pipe ffmpeg closed fails with EPIPE instead of killing us */
  if (sigaction(SIGPIPE, &sa, &g_old_pipe) == 0) s->pipe_set = 1;
  struct sigaction old;
  if (sigaction(SIGINT, NULL, &old) != 0) return;
  if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_IGN) return;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_sigaction = on_sigint;
  sa.sa_flags = SA_SIGINFO; /* no SA_RESTART */
  g_old_int = old;
  if (sigaction(SIGINT, &sa, NULL) == 0) {
    s->int_set = 1;
    s->int_was_default = !(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL;
  }
}

/* Restores the handlers; a SIGINT caught in place of the default action is raised again. */
static void signals_end(signals *s) {
  if (s->pipe_set) sigaction(SIGPIPE, &g_old_pipe, NULL);
  if (s->int_set) {
    sigaction(SIGINT, &g_old_int, NULL);
    if (s->int_was_default && g_sigint) raise(SIGINT);
  }
}

/* ---- the child ---------------------------------------------------------------------------------- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* ffmpeg's messages in[0..n) as one line of printable ASCII in out (cap >= 3n + 1): line breaks
 * become " | ", other control and non-ASCII bytes '?'. */
static void clean_messages(const char *in, size_t n, char *out) {
  size_t j = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)in[i];
    if (c == '\n' || c == '\r') {
      if (j > 0 && out[j - 1] != ' ') { out[j++] = ' '; out[j++] = '|'; out[j++] = ' '; }
    } else {
      out[j++] = (c >= 32 && c < 127) ? (char)c : '?';
    }
  }
  while (j > 0 && (out[j - 1] == ' ' || out[j - 1] == '|')) j--;
  out[j] = '\0';
}

typedef struct job {
  pid_t pid;
  int in, out, err; /* our ends */
  uint8_t *buf;
  size_t n, cap;
  char msg[ADA_VIDEO_STDERR];
  size_t msg_n;
} job;

static ada_status spawn(job *j, const char *prog, char *const argv[], const char *who) {
  int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
  if (pipe2(pin, O_CLOEXEC) != 0 || pipe2(pout, O_CLOEXEC) != 0 || pipe2(perr, O_CLOEXEC) != 0) {
    int e = errno;
    close_fd(&pin[0]); close_fd(&pin[1]); close_fd(&pout[0]); close_fd(&pout[1]);
    return ada_fail(ADA_EIO, "%s: ffmpeg: cannot make a pipe: %s", who, strerror(e));
  }
  ada_status s = ADA_OK;
  int fds[6] = {pin[0], pin[1], pout[0], pout[1], perr[0], perr[1]};
  for (int i = 0; i < 6; i++)
    if (fds[i] < 3) s = ada_fail(ADA_EIO, "%s: ffmpeg: stdin, stdout or stderr of adaspa is closed", who);
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  int fa_ok = 0, at_ok = 0;
  if (!s) {
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    int rc = posix_spawn_file_actions_init(&fa);
    fa_ok = rc == 0;
    if (!rc) rc = posix_spawn_file_actions_adddup2(&fa, pin[0], 0);
    if (!rc) rc = posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
    if (!rc) rc = posix_spawn_file_actions_adddup2(&fa, perr[1], 2);
    if (!rc) rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    if (!rc) rc = posix_spawn_file_actions_addchdir_np(&fa, "/");
    if (!rc) {
      rc = posix_spawnattr_init(&at);
      at_ok = rc == 0;
    }
    if (!rc) rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (!rc) rc = posix_spawnattr_setpgroup(&at, 0);
    if (!rc) rc = posix_spawnattr_setsigmask(&at, &none);
    if (!rc) rc = posix_spawnattr_setsigdefault(&at, &all);
    char *const envp[] = {NULL};
    if (!rc) rc = posix_spawn(&j->pid, prog, &fa, &at, argv, envp);
    if (rc) s = ada_fail(ADA_EIO, "%s: ffmpeg: cannot start %s: %s", who, prog, strerror(rc));
  }
  if (fa_ok) posix_spawn_file_actions_destroy(&fa);
  if (at_ok) posix_spawnattr_destroy(&at);
  close_fd(&pin[0]); close_fd(&pout[1]); close_fd(&perr[1]);
  if (s) {
    close_fd(&pin[1]); close_fd(&pout[0]); close_fd(&perr[0]);
    return s;
  }
  j->in = pin[1];
  j->out = pout[0];
  j->err = perr[0];
  for (int i = 0; i < 3; i++) {
    int fd = i == 0 ? j->in : i == 1 ? j->out : j->err;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
      s = ada_fail(ADA_EIO, "%s: ffmpeg: cannot set a pipe non-blocking: %s", who, strerror(errno));
      break;
    }
  }
  return s;
}

/* Waits for the child until deadline (killing it first when kill_now or past the deadline);
 * returns its wait status. */
static int reap(pid_t pid, int kill_now, double deadline) {
  int st = 0;
  if (kill_now) kill(pid, SIGKILL);
  for (;;) {
    pid_t r = waitpid(pid, &st, kill_now ? 0 : WNOHANG);
    if (r == pid) return st;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1; /* ECHILD: somebody else reaped it (never here) */
    if (now_s() >= deadline || g_sigint) {
      kill(pid, SIGKILL);
      kill_now = 1;
      continue;
    }
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

typedef enum { STOP_NONE, STOP_TIMEOUT, STOP_SIZE, STOP_SIGINT, STOP_ERROR } stop_reason;

ada_status ada_video_encode_mp4(const ada_tensor *frames, const ada_video_opts *o, uint8_t **out, size_t *n,
                                const char *who) {
  *out = NULL;
  *n = 0;
  if (!frames || frames->dtype != ADA_U8 || frames->ndim != 4 || frames->shape[3] != 3) {
    char shp[96] = "none";
    if (frames) ada_shape_format(frames->ndim, frames->shape, shp, sizeof shp);
    return ada_fail(ADA_EINVAL, "%s: frames must be a u8 tensor [T, H, W, 3], got %s %s", who,
                    frames ? ada_dtype_name(frames->dtype) : "nothing", shp);
  }
  int64_t T = frames->shape[0], H = frames->shape[1], W = frames->shape[2];
  if (T < 1 || T > ADA_VIDEO_MAX_FRAMES)
    return ada_fail(ADA_EINVAL, "%s: %lld frames (1..%d)", who, (long long)T, ADA_VIDEO_MAX_FRAMES);
  if (H < 2 || W < 2 || H > ADA_VIDEO_MAX_SIDE || W > ADA_VIDEO_MAX_SIDE)
    return ada_fail(ADA_EINVAL, "%s: frames of %lld x %lld pixels (each side 2..%d)", who, (long long)W,
                    (long long)H, ADA_VIDEO_MAX_SIDE);
  uint64_t total = (uint64_t)T * (uint64_t)H * (uint64_t)W * 3u;
  if (total > ADA_VIDEO_MAX_INPUT)
    return ada_fail(ADA_EINVAL, "%s: %llu bytes of frames (at most %llu)", who, (unsigned long long)total,
                    (unsigned long long)ADA_VIDEO_MAX_INPUT);
  if (!o || o->fps_num < 1 || o->fps_num > 1000 || o->fps_den < 1 || o->fps_den > 1000)
    return ada_fail(ADA_EINVAL, "%s: the frame rate must be num/den with each in 1..1000, got %d/%d", who,
                    o ? o->fps_num : 0, o ? o->fps_den : 0);
  if (!(o->timeout > 0 && o->timeout <= ADA_VIDEO_MAX_TIMEOUT))
    return ada_fail(ADA_EINVAL, "%s: timeout must be in (0, %g] seconds, got %g", who, ADA_VIDEO_MAX_TIMEOUT,
                    o->timeout);
  if (o->max_bytes < 1 || o->max_bytes > ADA_VIDEO_MAX_OUTPUT)
    return ada_fail(ADA_EINVAL, "%s: max_bytes must be in 1..%llu, got %llu", who,
                    (unsigned long long)ADA_VIDEO_MAX_OUTPUT, (unsigned long long)o->max_bytes);
  char prog[4096];
  ada_status s = ada_video_find_ffmpeg(prog, sizeof prog);
  if (s) return s;

  ada_tensor *staged = NULL;
  ada_device cpu = {ADA_CPU, 0};
  if (frames->storage->device.type != ADA_CPU || !ada_tensor_is_contiguous(frames)) {
    if ((s = ada_tensor_to(&staged, frames, ADA_U8, cpu))) return s;
    frames = staged;
  }
  const uint8_t *src = ada_tensor_data(frames);
  size_t left = (size_t)total;

  char size[48], rate[32];
  snprintf(size, sizeof size, "%lldx%lld", (long long)W, (long long)H);
  snprintf(rate, sizeof rate, "%d/%d", (int)o->fps_num, (int)o->fps_den);
  /* fixed, but for size and rate; odd sides padded to even for yuv420p */
  char *const argv[] = {"ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
                        "-f", "rawvideo", "-pix_fmt", "rgb24", "-video_size", size, "-framerate", rate,
                        "-i", "pipe:0", "-an", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
                        "-c:v", "libx264", "-preset", "medium", "-crf", "18", "-pix_fmt", "yuv420p",
                        "-movflags", "frag_keyframe+empty_moov+default_base_moof", "-f", "mp4", "pipe:1", NULL};

  job j;
  memset(&j, 0, sizeof j);
  j.in = j.out = j.err = -1;
  signals sig;
  signals_begin(&sig);
  double deadline = now_s() + o->timeout;
  s = spawn(&j, prog, argv, who);
  if (s) {
    if (j.pid > 0) reap(j.pid, 1, deadline);
    close_fd(&j.in); close_fd(&j.out); close_fd(&j.err);
    signals_end(&sig);
    ada_tensor_free(staged);
    return s;
  }
  stop_reason stop = STOP_NONE;
  int stop_errno = 0, input_short = 0;
  if (left == 0) close_fd(&j.in);
  while (j.out >= 0 || j.err >= 0) {
    if (g_sigint) { stop = STOP_SIGINT; break; }
    double rem = deadline - now_s();
    if (rem <= 0) { stop = STOP_TIMEOUT; break; }
    struct pollfd p[3];
    int np = 0, ii = -1, io = -1, ie = -1;
    if (j.in >= 0) { ii = np; p[np++] = (struct pollfd){j.in, POLLOUT, 0}; }
    if (j.out >= 0) { io = np; p[np++] = (struct pollfd){j.out, POLLIN, 0}; }
    if (j.err >= 0) { ie = np; p[np++] = (struct pollfd){j.err, POLLIN, 0}; }
    int ms = rem > 0.1 ? 100 : (int)(rem * 1000) + 1; /* short: a SIGINT taken by another thread is seen */
    int r = poll(p, (nfds_t)np, ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      stop = STOP_ERROR; stop_errno = errno;
      break;
    }
    if (ii >= 0 && p[ii].revents) {
      size_t chunk = left < (1u << 20) ? left : (1u << 20);
      ssize_t w = write(j.in, src, chunk);
      if (w > 0) {
        src += w;
        left -= (size_t)w;
        if (left == 0) close_fd(&j.in); /* end of input: ffmpeg finishes the file */
      } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        /* try again */
      } else {
        input_short = 1; /* ffmpeg stopped reading (EPIPE): its status and messages say why */
        close_fd(&j.in);
      }
    }
    if (io >= 0 && p[io].revents) {
      if (j.cap - j.n < 65536) {
        size_t want = j.cap ? j.cap * 2 : (1u << 20);
        if (want > o->max_bytes + 65536) want = (size_t)o->max_bytes + 65536;
        if (want - j.n < 65536) { stop = STOP_SIZE; break; }
        uint8_t *nb = realloc(j.buf, want);
        if (!nb) { stop = STOP_ERROR; stop_errno = ENOMEM; break; }
        j.buf = nb;
        j.cap = want;
      }
      ssize_t got = read(j.out, j.buf + j.n, j.cap - j.n);
      if (got > 0) {
        j.n += (size_t)got;
        if (j.n > o->max_bytes) { stop = STOP_SIZE; break; }
      } else if (got == 0) {
        close_fd(&j.out);
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        stop = STOP_ERROR; stop_errno = errno;
        break;
      }
    }
    if (ie >= 0 && p[ie].revents) {
      char tmp[4096];
      ssize_t got = read(j.err, tmp, sizeof tmp);
      if (got > 0) {
        size_t k = (size_t)got;
        if (k > ADA_VIDEO_STDERR - j.msg_n) k = ADA_VIDEO_STDERR - j.msg_n;
        memcpy(j.msg + j.msg_n, tmp, k);
        j.msg_n += k;
      } else if (got == 0) {
        close_fd(&j.err);
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        close_fd(&j.err);
      }
    }
  }
  close_fd(&j.in); close_fd(&j.out); close_fd(&j.err);
  int st = reap(j.pid, stop != STOP_NONE, deadline);
  if (stop == STOP_NONE && g_sigint) stop = STOP_SIGINT;
  signals_end(&sig);
  ada_tensor_free(staged);
  char clean[3 * ADA_VIDEO_STDERR + 1];
  clean_messages(j.msg, j.msg_n, clean);
  const char *m = clean[0] ? clean : "(no message)";
  switch (stop) {
  case STOP_SIGINT: s = ada_fail(ADA_EIO, "%s: ffmpeg stopped: interrupted", who); break;
  case STOP_TIMEOUT:
    s = ada_fail(ADA_EIO, "%s: ffmpeg did not finish within %g s (killed); its messages: %s", who, o->timeout, m);
    break;
  case STOP_SIZE:
    s = ada_fail(ADA_EIO, "%s: the mp4 grew past %llu bytes (ffmpeg killed)", who, (unsigned long long)o->max_bytes);
    break;
  case STOP_ERROR: s = ada_fail(ADA_EIO, "%s: ffmpeg: %s", who, strerror(stop_errno)); break;
  case STOP_NONE:
    if (st == -1)
      s = ada_fail(ADA_EIO, "%s: ffmpeg: its exit status was lost", who);
    else if (WIFSIGNALED(st))
      s = ada_fail(ADA_EIO, "%s: ffmpeg was killed by signal %d; its messages: %s", who, WTERMSIG(st), m);
    else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      s = ada_fail(ADA_EIO, "%s: ffmpeg failed (exit status %d): %s", who, WIFEXITED(st) ? WEXITSTATUS(st) : -1, m);
    else if (input_short || left > 0)
      s = ada_fail(ADA_EIO, "%s: ffmpeg exited before reading all frames (%zu of %llu bytes left): %s", who, left,
                   (unsigned long long)total, m);
    else if (j.n == 0)
      s = ada_fail(ADA_EIO, "%s: ffmpeg wrote nothing: %s", who, m);
    break;
  }
  if (s) {
    free(j.buf);
    return s;
  }
  *out = j.buf;
  *n = j.n;
  return ADA_OK;
}
