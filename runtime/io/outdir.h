/* outdir.h: where adaspa writes, and what it may read while a recipe runs.
 *
 * ada_outdir_*: a run's output folder as an open directory handle. Every file and subfolder is
 * created relative to that handle, one path component at a time, never following a symbolic
 * link (openat/mkdirat with O_NOFOLLOW; a file is written under a fresh temporary name opened
 * with O_CREAT | O_EXCL and renamed over its final name, so an existing file or symbolic link of
 * that name is replaced, never written through). Names inside the folder are relative paths of
 * at most 16 components and 1024 bytes; a component is 1 to 255 characters from A-Z a-z 0-9 and
 * . _ - + = , @, and starts with a letter, a digit or _ (so no "..", no hidden files, no
 * absolute paths); a file's name ends in .png, .safetensors, .json, .txt, .csv, .md or .mp4 (so a
 * recipe cannot plant a .pth, .so, .desktop or shell profile even in a folder it chose).
 * Opening a folder writes a marker file (ADA_OUTDIR_MARKER) into it; a folder holding the
 * marker and nothing but files of the names above is "a previous adaspa run's folder".
 *
 * ada_wfile_*: one file being written by a path-based writer (ada_st_write, ada_png_write):
 * through the confined output folder while a confinement is active, else next to path (the
 * same temporary name and rename, in path's own folder).
 *
 * ada_confine_*: the process's confinement while a recipe runs. At most one is active. While
 * it is, path-based writers accept only paths inside its output folder (none: every write
 * fails), and readers (ada_confine_check_read, called by ada_st_open and ada_png_read) accept
 * only the files and folders it allows. Failures say "<who>: <path>: <problem>".
 */
#ifndef ADA_OUTDIR_H
#define ADA_OUTDIR_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../status.h"

#define ADA_OUTDIR_MARKER ".adaspa-run"
#define ADA_OUTDIR_MAX_NAME 1024   /* bytes of a name inside the folder */
#define ADA_OUTDIR_MAX_DEPTH 16    /* components of a name */
#define ADA_OUTDIR_MAX_PATH 4095   /* bytes of a path given to any function here */

typedef struct ada_outdir ada_outdir;

typedef enum ada_outdir_mode {
  ADA_OUTDIR_FRESH,        /* must not exist; created (missing parents too) */
  ADA_OUTDIR_NEW_OR_EMPTY, /* created, or an existing empty folder */
  ADA_OUTDIR_REUSE         /* created, an existing empty folder, or a previous adaspa run's folder
                              (whose files and subfolders are removed first) */
} ada_outdir_mode;

/* Opens (creating as mode allows) the folder path and writes the marker. *cleared (may be NULL)
 * gets the number of files a previous run left and that were removed (REUSE). A folder holding
 * anything else is refused, naming the first such entry. */
ada_status ada_outdir_open(ada_outdir **out, const char *path, ada_outdir_mode mode, int64_t *cleared);
/* Closes the handle (the folder stays). NULL is ignored. */
void ada_outdir_close(ada_outdir *d);
/* The path as given to open (trailing slashes removed), and its canonical absolute form. */
const char *ada_outdir_path(const ada_outdir *d);
const char *ada_outdir_realpath(const ada_outdir *d);
/* Whether open created the folder. */
int ada_outdir_created(const ada_outdir *d);
/* Checks a name inside the folder (rules above); is_file: a file (its extension is checked). */
ada_status ada_outdir_check_name(const char *name, int is_file, const char *who);
/* Creates the subfolder name and its missing parents inside the folder. */
ada_status ada_outdir_mkdir(ada_outdir *d, const char *name, const char *who);
/* Writes n bytes as the file name (replacing an existing file atomically). */
ada_status ada_outdir_write(ada_outdir *d, const char *name, const void *data, size_t n, const char *who);
/* Number of entries in the folder besides the marker. */
ada_status ada_outdir_count(ada_outdir *d, int64_t *n);
/* When open created the folder and it holds nothing but the marker: removes both (*removed = 1);
 * else leaves it (*removed = 0). */
ada_status ada_outdir_discard(ada_outdir *d, int *removed);

/* A file being written (see above). fp is open for writing between begin and commit/abort. */
typedef struct ada_wfile {
  FILE *fp;
  int dirfd;
  char leaf[256];
  char tmp[320];
} ada_wfile;

/* Starts writing the file path; who prefixes messages ("png", "safetensors"). */
ada_status ada_wfile_begin(ada_wfile *w, const char *path, const char *who);
/* Closes the temporary file and renames it to its name; on failure nothing is left. */
ada_status ada_wfile_commit(ada_wfile *w, const char *path, const char *who);
/* Closes and removes the temporary file. */
void ada_wfile_abort(ada_wfile *w);

typedef struct ada_confinement ada_confinement;

/* Starts a confinement (fails when one is active): no writes, no reads until allowed. */
ada_status ada_confine_begin(ada_confinement **out);
/* Sets the output folder writes go to (NULL: none). The confinement does not own d; d must stay
 * open until the confinement ends or another folder is set. Reading inside it is allowed. */
void ada_confine_set_outdir(ada_confinement *c, ada_outdir *d);
/* Allows reading the file path (tree = 0), or every .safetensors and .png file directly in the
 * folder path (tree = 1; not in its subfolders). Paths are compared after resolving links. A
 * path that does not exist is ignored (reading it fails anyway). */
ada_status ada_confine_allow_read(ada_confinement *c, const char *path, int tree);
/* Ends the confinement and frees it. */
void ada_confine_end(ada_confinement *c);
/* Whether a confinement is active; its output folder (NULL when none or no folder). */
int ada_confine_active(void);
ada_outdir *ada_confine_outdir(void);
/* ADA_OK when no confinement is active or it allows reading path; else a message. */
ada_status ada_confine_check_read(const char *path, const char *who);
/* adaspa.mkdir while confined: path must lie inside the output folder. */
ada_status ada_confine_mkdir(const char *path, const char *who);

#endif
