/* outdir.c: the output folder handle, path-based file writing and the recipe confinement
 * (outdir.h). Everything inside an output folder is reached with *at() calls from its directory
 * descriptor, one component at a time, with O_NOFOLLOW. */
#define _XOPEN_SOURCE 700 /* realpath */
#include "outdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

struct ada_outdir {
  int fd;
  int created;
  char *path; /* as given, trailing slashes removed */
  char *real; /* canonical */
};

struct ada_confinement {
  ada_outdir *out;
  char **files, **trees;
  size_t n_files, n_trees;
};

static ada_confinement *g_active;
static unsigned g_tmp_counter;

static const char *const file_exts[] = {".png", ".safetensors", ".json", ".txt", ".csv", ".md", ".mp4", NULL};

/* ---- names ---------------------------------------------------------------------------------- */

static int name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == '+' || c == '=' || c == ',' || c == '@';
}

static int first_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static int ends_with(const char *s, size_t n, const char *suffix) {
  size_t k = strlen(suffix);
  return n > k && memcmp(s + n - k, suffix, k) == 0;
}

static int data_ext(const char *s, size_t n) {
  for (int i = 0; file_exts[i]; i++)
    if (ends_with(s, n, file_exts[i])) return 1;
  return 0;
}

/* Checks one component c[0..n). */
static ada_status check_component(const char *name, const char *c, size_t n, int is_file, const char *who) {
  if (n == 0)
    return ada_fail(ADA_EINVAL, "%s: %s: empty path component (a doubled or trailing /)", who, name);
  if (n > 255)
    return ada_fail(ADA_EINVAL, "%s: %s: a path component is %zu characters (at most 255)", who, name, n);
  if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
    return ada_fail(ADA_EINVAL, "%s: %s: '%.*s' is not allowed in a name inside the output folder", who,
                    name, (int)n, c);
  if (!first_char(c[0]))
    return ada_fail(ADA_EINVAL, "%s: %s: a name inside the output folder starts with a letter, a digit or _ "
                    "(no hidden files), got '%.*s'", who, name, (int)n, c);
  for (size_t i = 0; i < n; i++)
    if (!name_char(c[i]))
      return ada_fail(ADA_EINVAL, "%s: %s: character 0x%02x is not allowed in a name inside the output "
                      "folder (letters, digits and . _ - + = , @)", who, name, (unsigned char)c[i]);
  if (is_file && !data_ext(c, n))
    return ada_fail(ADA_EINVAL, "%s: %s: files in the output folder end in .png, .safetensors, .json, "
                    ".txt, .csv, .md or .mp4", who, name);
  return ADA_OK;
}

ada_status ada_outdir_check_name(const char *name, int is_file, const char *who) {
  size_t len = strlen(name);
  if (len == 0) return ada_fail(ADA_EINVAL, "%s: empty name inside the output folder", who);
  if (len > ADA_OUTDIR_MAX_NAME)
    return ada_fail(ADA_EINVAL, "%s: %.64s...: a name inside the output folder is %zu bytes (at most %d)", who,
                    name, len, ADA_OUTDIR_MAX_NAME);
  if (name[0] == '/')
    return ada_fail(ADA_EINVAL, "%s: %s: an absolute path is not a name inside the output folder", who, name);
  int depth = 0;
  const char *c = name;
  for (;;) {
    const char *slash = strchr(c, '/');
    size_t n = slash ? (size_t)(slash - c) : strlen(c);
    if (++depth > ADA_OUTDIR_MAX_DEPTH)
      return ada_fail(ADA_EINVAL, "%s: %s: more than %d path components", who, name, ADA_OUTDIR_MAX_DEPTH);
    ada_status s = check_component(name, c, n, is_file && !slash, who);
    if (s) return s;
    if (!slash) break;
    c = slash + 1;
  }
  return ADA_OK;
}

/* Opens the folder holding the last component of name (relative to root), creating missing
 * folders when create; *leaf points into name. The caller closes *dirfd. */
static ada_status walk(int root, const char *name, int create, int *dirfd, const char **leaf, const char *who) {
  int cur = openat(root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cur < 0) return ada_fail(ADA_EIO, "%s: %s: cannot open the output folder: %s", who, name, strerror(errno));
  const char *c = name;
  char comp[256];
  for (;;) {
    const char *slash = strchr(c, '/');
    if (!slash) break;
    size_t n = (size_t)(slash - c);
    if (n >= sizeof comp) {
      close(cur);
      return ada_fail(ADA_EINVAL, "%s: %s: a path component is %zu characters (at most 255)", who, name, n);
    }
    memcpy(comp, c, n);
    comp[n] = '\0';
    int next = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0 && errno == ENOENT && create) {
      if (mkdirat(cur, comp, 0777) != 0 && errno != EEXIST) {
        int e = errno;
        close(cur);
        return ada_fail(ADA_EIO, "%s: %s: cannot create the folder %s: %s", who, name, comp, strerror(e));
      }
      next = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (next < 0) {
      int e = errno;
      close(cur);
      if (e == ELOOP || e == ENOTDIR)
        return ada_fail(ADA_EIO, "%s: %s: %s is a symbolic link or not a folder (links are never followed "
                        "inside the output folder)", who, name, comp);
      return ada_fail(ADA_EIO, "%s: %s: cannot open the folder %s: %s", who, name, comp, strerror(e));
    }
    close(cur);
    cur = next;
    c = slash + 1;
  }
  *dirfd = cur;
  *leaf = c;
  return ADA_OK;
}

/* ---- writing one file ------------------------------------------------------------------------- */

/* Creates w->tmp in w->dirfd for w->leaf and opens w->fp. */
static ada_status open_tmp(ada_wfile *w, const char *path, const char *who) {
  for (int attempt = 0; attempt < 64; attempt++) {
    snprintf(w->tmp, sizeof w->tmp, ".%.200s.%ld-%u.tmp", w->leaf, (long)getpid(), g_tmp_counter++);
    int fd = openat(w->dirfd, w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0 && errno == EEXIST) continue;
    if (fd < 0) return ada_fail(ADA_EIO, "%s: %s: cannot create %s: %s", who, path, w->tmp, strerror(errno));
    if (!(w->fp = fdopen(fd, "wb"))) {
      int e = errno;
      close(fd);
      unlinkat(w->dirfd, w->tmp, 0);
      return ada_fail(ADA_EIO, "%s: %s: cannot open %s: %s", who, path, w->tmp, strerror(e));
    }
    return ADA_OK;
  }
  return ada_fail(ADA_EIO, "%s: %s: cannot find a free temporary name next to it", who, path);
}

/* The name inside the confined output folder that path denotes. */
static ada_status confined_name(const char *path, int is_file, const char **name, const char *who) {
  ada_outdir *d = g_active->out;
  if (!d)
    return ada_fail(ADA_EINVAL, "%s: %s: while a recipe runs, files are written only into the run's output "
                    "folder, and none is open yet", who, path);
  const char *roots[2] = {d->path, d->real};
  for (int i = 0; i < 2; i++) {
    size_t n = strlen(roots[i]);
    int root_is_slash = n == 1 && roots[i][0] == '/';
    if (strncmp(path, roots[i], n) == 0 && (root_is_slash || path[n] == '/')) {
      *name = path + (root_is_slash ? 1 : n + 1);
      return ada_outdir_check_name(*name, is_file, who);
    }
  }
  return ada_fail(ADA_EINVAL, "%s: %s: while a recipe runs, files are written only into the run's output "
                  "folder %s (name them %s/NAME)", who, path, d->path, d->path);
}

ada_status ada_wfile_begin(ada_wfile *w, const char *path, const char *who) {
  memset(w, 0, sizeof *w);
  w->dirfd = -1;
  size_t len = path ? strlen(path) : 0;
  if (len == 0 || len > ADA_OUTDIR_MAX_PATH)
    return ada_fail(ADA_EINVAL, "%s: the path must be 1 to %d bytes, got %zu", who, ADA_OUTDIR_MAX_PATH, len);
  ada_status s;
  if (g_active) {
    const char *name, *leaf;
    if ((s = confined_name(path, 1, &name, who))) return s;
    if ((s = walk(g_active->out->fd, name, 0, &w->dirfd, &leaf, who))) return s;
    snprintf(w->leaf, sizeof w->leaf, "%s", leaf);
  } else {
    const char *slash = strrchr(path, '/');
    const char *leaf = slash ? slash + 1 : path;
    size_t ln = strlen(leaf);
    if (ln == 0 || ln > 255 || strcmp(leaf, ".") == 0 || strcmp(leaf, "..") == 0)
      return ada_fail(ADA_EINVAL, "%s: %s: does not name a file", who, path);
    char parent[ADA_OUTDIR_MAX_PATH + 1];
    if (!slash) snprintf(parent, sizeof parent, ".");
    else if (slash == path) snprintf(parent, sizeof parent, "/");
    else snprintf(parent, sizeof parent, "%.*s", (int)(slash - path), path);
    w->dirfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->dirfd < 0) return ada_fail(ADA_EIO, "%s: %s: cannot create it in %s: %s", who, path, parent, strerror(errno));
    memcpy(w->leaf, leaf, ln + 1);
  }
  if ((s = open_tmp(w, path, who))) {
    close(w->dirfd);
    w->dirfd = -1;
  }
  return s;
}

ada_status ada_wfile_commit(ada_wfile *w, const char *path, const char *who) {
  ada_status s = ADA_OK;
  if (fclose(w->fp) != 0) s = ada_fail(ADA_EIO, "%s: %s: writing %s failed: %s", who, path, w->tmp, strerror(errno));
  w->fp = NULL;
  if (!s && renameat(w->dirfd, w->tmp, w->dirfd, w->leaf) != 0)
    s = ada_fail(ADA_EIO, "%s: %s: cannot rename %s to it: %s", who, path, w->tmp, strerror(errno));
  if (s) unlinkat(w->dirfd, w->tmp, 0);
  close(w->dirfd);
  w->dirfd = -1;
  return s;
}

void ada_wfile_abort(ada_wfile *w) {
  if (w->fp) fclose(w->fp);
  w->fp = NULL;
  if (w->dirfd >= 0) {
    unlinkat(w->dirfd, w->tmp, 0);
    close(w->dirfd);
  }
  w->dirfd = -1;
}

/* ---- the output folder ------------------------------------------------------------------------ */

/* Whether an entry of a previous run's folder is one adaspa writes: a data file, a folder of a
 * valid name, the marker, or a temporary file left by an interrupted write. */
static int ours(const char *name, int is_dir) {
  size_t n = strlen(name);
  if (!is_dir && name[0] == '.' && ends_with(name, n, ".tmp")) return 1;
  ada_status s = ada_outdir_check_name(name, !is_dir, "");
  return s == ADA_OK;
}

/* Walks the folder dfd (consumed); counts files; with remove, deletes them and the subfolders.
 * Without remove, stops at the first entry adaspa does not write, copied to bad. */
static ada_status scan(int dfd, int depth, int remove, int top, int64_t *files, char *bad, size_t nbad,
                       const char *path) {
  DIR *dir = fdopendir(dfd);
  if (!dir) {
    int e = errno;
    close(dfd);
    return ada_fail(ADA_EIO, "output folder %s: cannot list: %s", path, strerror(e));
  }
  rewinddir(dir); /* a dup shares its offset with the descriptor it copies */
  ada_status s = ADA_OK;
  struct dirent *e;
  while (!s && (e = readdir(dir)) != NULL) {
    const char *nm = e->d_name;
    if (!strcmp(nm, ".") || !strcmp(nm, "..")) continue;
    if (top && !strcmp(nm, ADA_OUTDIR_MARKER)) continue;
    struct stat st;
    if (fstatat(dirfd(dir), nm, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      s = ada_fail(ADA_EIO, "output folder %s: cannot stat %s: %s", path, nm, strerror(errno));
      break;
    }
    int is_dir = S_ISDIR(st.st_mode);
    if ((!is_dir && !S_ISREG(st.st_mode)) || !ours(nm, is_dir) || (is_dir && depth >= ADA_OUTDIR_MAX_DEPTH)) {
      snprintf(bad, nbad, "%s%s", nm, S_ISLNK(st.st_mode) ? " (a symbolic link)" : is_dir ? " (a folder)" : "");
      if (!remove) break;
      s = ada_fail(ADA_EIO, "output folder %s: %s changed while it was being cleared", path, nm);
      break;
    }
    if (is_dir) {
      int sub = openat(dirfd(dir), nm, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0) {
        s = ada_fail(ADA_EIO, "output folder %s: cannot open %s: %s", path, nm, strerror(errno));
        break;
      }
      s = scan(sub, depth + 1, remove, 0, files, bad, nbad, path);
      if (!s && bad[0]) break;
      if (!s && remove && unlinkat(dirfd(dir), nm, AT_REMOVEDIR) != 0)
        s = ada_fail(ADA_EIO, "output folder %s: cannot remove %s: %s", path, nm, strerror(errno));
    } else {
      (*files)++;
      if (remove && unlinkat(dirfd(dir), nm, 0) != 0)
        s = ada_fail(ADA_EIO, "output folder %s: cannot remove %s: %s", path, nm, strerror(errno));
    }
  }
  closedir(dir);
  return s;
}

/* mkdir -p of path's parents (the path the user gave: links in it are followed). */
static ada_status make_parents(const char *path) {
  char buf[ADA_OUTDIR_MAX_PATH + 1];
  size_t n = strlen(path);
  memcpy(buf, path, n + 1);
  for (size_t i = 1; i < n; i++) {
    if (buf[i] != '/') continue;
    buf[i] = '\0';
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
      int e = errno;
      return ada_fail(ADA_EIO, "output folder %s: cannot create %s: %s", path, buf, strerror(e));
    }
    buf[i] = '/';
  }
  return ADA_OK;
}

static const char marker_text[] =
  "This folder holds the outputs of an adaspa run. A later run given this folder on the command\n"
  "line (output.dir=...) removes them first; adaspa refuses folders without this file.\n";

ada_status ada_outdir_open(ada_outdir **out, const char *path, ada_outdir_mode mode, int64_t *cleared) {
  if (cleared) *cleared = 0;
  size_t len = path ? strlen(path) : 0;
  if (len == 0 || len > ADA_OUTDIR_MAX_PATH - 8)
    return ada_fail(ADA_EINVAL, "output folder: the path must be 1 to %d bytes, got %zu", ADA_OUTDIR_MAX_PATH - 8, len);
  while (len > 1 && path[len - 1] == '/') len--;
  if (len == 1 && path[0] == '/') return ada_fail(ADA_EINVAL, "output folder: / cannot be an output folder");
  ada_outdir *d = calloc(1, sizeof *d);
  if (!d || !(d->path = malloc(len + 16))) {
    free(d);
    return ada_fail(ADA_ENOMEM, "output folder %s: out of memory", path);
  }
  d->fd = -1;
  memcpy(d->path, path, len);
  d->path[len] = '\0';
  ada_status s = make_parents(d->path);
  for (int k = 1; !s; k++) { /* FRESH: path, path-2, path-3, ... */
    if (mkdir(d->path, 0777) == 0) {
      d->created = 1;
      break;
    }
    if (errno != EEXIST) {
      s = ada_fail(ADA_EIO, "output folder %s: cannot create: %s", d->path, strerror(errno));
      break;
    }
    if (mode != ADA_OUTDIR_FRESH) break;
    if (k >= 1000) {
      s = ada_fail(ADA_EIO, "output folder %.*s: 1000 folders of that name exist already", (int)len, path);
      break;
    }
    snprintf(d->path + len, 16, "-%d", k + 1);
  }
  if (!s && (d->fd = open(d->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
    s = ada_fail(ADA_EIO, "output folder %s: cannot open: %s", d->path,
                 errno == ENOTDIR ? "it exists and is not a folder" : strerror(errno));
  if (!s && !d->created) {
    struct stat st;
    int marked = fstatat(d->fd, ADA_OUTDIR_MARKER, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
    char bad[300] = "";
    int64_t files = 0;
    int dup_fd = dup(d->fd);
    s = dup_fd < 0 ? ada_fail(ADA_EIO, "output folder %s: %s", d->path, strerror(errno))
                   : scan(dup_fd, 0, 0, 1, &files, bad, sizeof bad, d->path);
    if (!s && bad[0] && marked)
      s = ada_fail(ADA_EINVAL, "output folder %s holds %s, which an adaspa run does not write: name a new "
                   "or empty folder, or remove it yourself", d->path, bad);
    else if (!s && bad[0])
      s = ada_fail(ADA_EINVAL, "output folder %s is not empty and not an adaspa output folder (it holds %s): "
                   "name a new or empty folder", d->path, bad);
    else if (!s && files > 0 && !marked)
      s = ada_fail(ADA_EINVAL, "output folder %s is not empty and not an adaspa output folder (no %s file): "
                   "name a new or empty folder", d->path, ADA_OUTDIR_MARKER);
    else if (!s && files > 0 && mode != ADA_OUTDIR_REUSE)
      s = ada_fail(ADA_EINVAL, "output folder %s holds a previous adaspa run (%lld files): a recipe may name "
                   "only a new or empty folder (give output.dir=%s on the command line to replace that run)",
                   d->path, (long long)files, d->path);
    else if (!s && files > 0) {
      int64_t removed = 0;
      bad[0] = '\0';
      if ((dup_fd = dup(d->fd)) < 0) s = ada_fail(ADA_EIO, "output folder %s: %s", d->path, strerror(errno));
      else s = scan(dup_fd, 0, 1, 1, &removed, bad, sizeof bad, d->path);
      if (cleared) *cleared = removed;
    }
  }
  if (!s) s = ada_outdir_write(d, ADA_OUTDIR_MARKER, marker_text, sizeof marker_text - 1, "output folder");
  char real[PATH_MAX];
  if (!s && !realpath(d->path, real))
    s = ada_fail(ADA_EIO, "output folder %s: cannot resolve: %s", d->path, strerror(errno));
  if (!s && !(d->real = strdup(real))) s = ada_fail(ADA_ENOMEM, "output folder %s: out of memory", d->path);
  if (s) {
    if (d->created && d->fd >= 0) { /* leave nothing behind */
      unlinkat(d->fd, ADA_OUTDIR_MARKER, 0);
      rmdir(d->path);
    }
    ada_outdir_close(d);
    return s;
  }
  *out = d;
  return ADA_OK;
}

void ada_outdir_close(ada_outdir *d) {
  if (!d) return;
  if (d->fd >= 0) close(d->fd);
  if (g_active && g_active->out == d) g_active->out = NULL;
  free(d->path);
  free(d->real);
  free(d);
}

const char *ada_outdir_path(const ada_outdir *d) { return d->path; }
const char *ada_outdir_realpath(const ada_outdir *d) { return d->real; }
int ada_outdir_created(const ada_outdir *d) { return d->created; }

ada_status ada_outdir_mkdir(ada_outdir *d, const char *name, const char *who) {
  ada_status s = ada_outdir_check_name(name, 0, who);
  if (s) return s;
  int dirfd;
  const char *leaf;
  if ((s = walk(d->fd, name, 1, &dirfd, &leaf, who))) return s;
  if (mkdirat(dirfd, leaf, 0777) != 0 && errno != EEXIST)
    s = ada_fail(ADA_EIO, "%s: %s: cannot create: %s", who, name, strerror(errno));
  if (!s) {
    struct stat st;
    if (fstatat(dirfd, leaf, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode))
      s = ada_fail(ADA_EIO, "%s: %s: exists and is not a folder (or is a symbolic link)", who, name);
  }
  close(dirfd);
  return s;
}

ada_status ada_outdir_write(ada_outdir *d, const char *name, const void *data, size_t n, const char *who) {
  int marker = strcmp(name, ADA_OUTDIR_MARKER) == 0;
  ada_status s = marker ? ADA_OK : ada_outdir_check_name(name, 1, who);
  if (s) return s;
  ada_wfile w;
  memset(&w, 0, sizeof w);
  const char *leaf;
  if ((s = walk(d->fd, name, 0, &w.dirfd, &leaf, who))) return s;
  snprintf(w.leaf, sizeof w.leaf, "%s", leaf);
  if ((s = open_tmp(&w, name, who))) {
    close(w.dirfd);
    return s;
  }
  if (n > 0 && fwrite(data, 1, n, w.fp) != n) {
    s = ada_fail(ADA_EIO, "%s: %s: writing %s failed: %s", who, name, w.tmp, strerror(errno));
    ada_wfile_abort(&w);
    return s;
  }
  return ada_wfile_commit(&w, name, who);
}

ada_status ada_outdir_count(ada_outdir *d, int64_t *n) {
  *n = 0;
  int fd = dup(d->fd);
  if (fd < 0) return ada_fail(ADA_EIO, "output folder %s: %s", d->path, strerror(errno));
  DIR *dir = fdopendir(fd);
  if (!dir) {
    close(fd);
    return ada_fail(ADA_EIO, "output folder %s: cannot list: %s", d->path, strerror(errno));
  }
  rewinddir(dir);
  struct dirent *e;
  while ((e = readdir(dir)) != NULL)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, ADA_OUTDIR_MARKER)) (*n)++;
  closedir(dir);
  return ADA_OK;
}

ada_status ada_outdir_discard(ada_outdir *d, int *removed) {
  *removed = 0;
  if (!d->created) return ADA_OK;
  int64_t n;
  ada_status s = ada_outdir_count(d, &n);
  if (s || n > 0) return s;
  if (unlinkat(d->fd, ADA_OUTDIR_MARKER, 0) != 0 && errno != ENOENT)
    return ada_fail(ADA_EIO, "output folder %s: cannot remove %s: %s", d->path, ADA_OUTDIR_MARKER, strerror(errno));
  if (rmdir(d->path) != 0) return ada_fail(ADA_EIO, "output folder %s: cannot remove: %s", d->path, strerror(errno));
  *removed = 1;
  return ADA_OK;
}

/* ---- confinement ------------------------------------------------------------------------------ */

ada_status ada_confine_begin(ada_confinement **out) {
  if (g_active) return ada_fail(ADA_EINVAL, "recipe sandbox: a confinement is active already (one recipe runs at a time)");
  ada_confinement *c = calloc(1, sizeof *c);
  if (!c) return ada_fail(ADA_ENOMEM, "recipe sandbox: out of memory");
  g_active = c;
  *out = c;
  return ADA_OK;
}

void ada_confine_set_outdir(ada_confinement *c, ada_outdir *d) { c->out = d; }

static ada_status push(char ***list, size_t *n, const char *s) {
  char **nl = realloc(*list, (*n + 1) * sizeof *nl);
  if (!nl) return ada_fail(ADA_ENOMEM, "recipe sandbox: out of memory");
  *list = nl;
  if (!(nl[*n] = strdup(s))) return ada_fail(ADA_ENOMEM, "recipe sandbox: out of memory");
  (*n)++;
  return ADA_OK;
}

ada_status ada_confine_allow_read(ada_confinement *c, const char *path, int tree) {
  char real[PATH_MAX];
  if (!path || strlen(path) > ADA_OUTDIR_MAX_PATH)
    return ada_fail(ADA_EINVAL, "recipe sandbox: a path to read must be at most %d bytes", ADA_OUTDIR_MAX_PATH);
  if (!realpath(path, real)) return ADA_OK;
  return tree ? push(&c->trees, &c->n_trees, real) : push(&c->files, &c->n_files, real);
}

void ada_confine_end(ada_confinement *c) {
  if (!c) return;
  if (g_active == c) g_active = NULL;
  for (size_t i = 0; i < c->n_files; i++) free(c->files[i]);
  for (size_t i = 0; i < c->n_trees; i++) free(c->trees[i]);
  free(c->files);
  free(c->trees);
  free(c);
}

int ada_confine_active(void) { return g_active != NULL; }
ada_outdir *ada_confine_outdir(void) { return g_active ? g_active->out : NULL; }

static int under(const char *real, const char *dir) {
  size_t n = strlen(dir);
  if (n == 1 && dir[0] == '/') return 1;
  return strncmp(real, dir, n) == 0 && real[n] == '/';
}

/* Whether real names an entry directly in dir (not in a subfolder of it). */
static int directly_in(const char *real, const char *dir) {
  size_t n = strlen(dir);
  if (n == 1 && dir[0] == '/') return strchr(real + 1, '/') == NULL;
  return under(real, dir) && strchr(real + n + 1, '/') == NULL;
}

ada_status ada_confine_check_read(const char *path, const char *who) {
  if (!g_active) return ADA_OK;
  char real[PATH_MAX];
  if (!path || strlen(path) > ADA_OUTDIR_MAX_PATH)
    return ada_fail(ADA_EINVAL, "%s: a path must be at most %d bytes", who, ADA_OUTDIR_MAX_PATH);
  if (!realpath(path, real)) {
    if (errno == ENOENT || errno == ENOTDIR) return ADA_OK; /* the reader says it cannot open it */
    return ada_fail(ADA_EIO, "%s: %s: cannot resolve: %s", who, path, strerror(errno));
  }
  for (size_t i = 0; i < g_active->n_files; i++)
    if (strcmp(real, g_active->files[i]) == 0) return ADA_OK;
  if (g_active->out && under(real, g_active->out->real)) return ADA_OK;
  size_t n = strlen(real);
  if (ends_with(real, n, ".safetensors") || ends_with(real, n, ".png"))
    for (size_t i = 0; i < g_active->n_trees; i++)
      if (directly_in(real, g_active->trees[i])) return ADA_OK;
  return ada_fail(ADA_EINVAL, "%s: %s: while a recipe runs, adaspa reads only the files named by its fields or "
                  "the command line, .safetensors and .png files in the recipe's own folder, and the "
                  "output folder", who, path);
}

ada_status ada_confine_mkdir(const char *path, const char *who) {
  if (!g_active) return ada_fail(ADA_EINVAL, "%s: no confinement is active", who);
  ada_outdir *d = g_active->out;
  if (d && (strcmp(path, d->path) == 0 || strcmp(path, d->real) == 0)) return ADA_OK;
  const char *name;
  ada_status s = confined_name(path, 0, &name, who);
  if (s) return s;
  return ada_outdir_mkdir(d, name, who);
}
