/* fuzz_common.h: what the libFuzzer harnesses share.
 *
 * Memory per input: ASan's malloc/free hooks keep the live heap bytes; each input's peak above
 * what was live before it must stay within 4 x the input's size + a fixed bound, or the harness
 * aborts (libFuzzer then saves the input as a crash). At exit the largest figures are printed.
 *
 * Files: the readers take paths, so each input is written to one memfd (memory, not disk) and
 * read back through /proc/self/fd/N: the same open/stat/mmap path a real file takes. */
#ifndef ADASPA_FUZZ_COMMON_H
#define ADASPA_FUZZ_COMMON_H

#define _GNU_SOURCE
#include <sanitizer/allocator_interface.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static size_t fz_live, fz_peak, fz_base;
static size_t fz_max_used, fz_max_used_size, fz_max_excess = 0, fz_inputs;
static const char *fz_name = "fuzz";

static void fz_on_malloc(const volatile void *p, size_t n) {
  size_t live = __atomic_add_fetch(&fz_live, n, __ATOMIC_RELAXED);
  if (live > fz_peak) fz_peak = live;
}

static void fz_on_free(const volatile void *p) {
  if (p) __atomic_sub_fetch(&fz_live, __sanitizer_get_allocated_size((const void *)p), __ATOMIC_RELAXED);
}

static void fz_report(void) {
  fprintf(stderr, "%s: memory: %zu inputs checked; largest heap peak of one input %zu bytes (input of %zu bytes); "
          "largest peak beyond 4x its input %zu bytes\n", fz_name, fz_inputs, fz_max_used, fz_max_used_size,
          fz_max_excess);
}

static void fz_init(const char *name) {
  fz_name = name;
  __sanitizer_install_malloc_and_free_hooks(fz_on_malloc, fz_on_free);
  atexit(fz_report);
}

static void fz_mem_begin(void) { fz_base = fz_peak = fz_live; }

/* Checks the input's peak against 4 * size + fixed. */
static void fz_mem_end(size_t size, size_t fixed) {
  size_t used = fz_peak - fz_base, excess = used > 4 * size ? used - 4 * size : 0;
  fz_inputs++;
  if (used > fz_max_used) { fz_max_used = used; fz_max_used_size = size; }
  if (excess > fz_max_excess) fz_max_excess = excess;
  if (excess > fixed) {
    fprintf(stderr, "%s: an input of %zu bytes took %zu bytes of heap, over 4 x its size + %zu\n", fz_name, size,
            used, fixed);
    abort();
  }
}

/* A reader's failure must be a clean message "<reader>: <path>: ..." (ada_last_error()). */
static void fz_check_failure(const char *reader, const char *path, const char *message) {
  char prefix[96];
  int n = snprintf(prefix, sizeof prefix, "%s: %s: ", reader, path);
  if (n < 0 || strncmp(message, prefix, (size_t)n) != 0) {
    fprintf(stderr, "%s: failure without the \"%s\" prefix: %s\n", fz_name, prefix, message);
    abort();
  }
}

/* The input as a file: its path (/proc/self/fd/N of one memfd, rewritten for each input). */
static const char *fz_file(const uint8_t *data, size_t size) {
  static int fd = -1;
  static char path[64];
  if (fd < 0) {
    fd = memfd_create("adaspa-fuzz", MFD_CLOEXEC);
    if (fd < 0) { perror("memfd_create"); abort(); }
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  }
  if (ftruncate(fd, 0) != 0) { perror("ftruncate"); abort(); }
  size_t done = 0;
  while (done < size) {
    ssize_t w = pwrite(fd, data + done, size - done, (off_t)done);
    if (w <= 0) { perror("pwrite"); abort(); }
    done += (size_t)w;
  }
  return path;
}

#endif
