/* png.c: PNG read and write over libpng. libpng reports errors by longjmp: each setjmp lives
 * in a small function whose state sits in a caller-owned job struct, so the caller frees
 * whatever was allocated, whether libpng returned or jumped. */
#include "png.h"

#include <errno.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "outdir.h"

typedef struct png_job {
  const char *path;
  FILE *fp;
  png_structp png;
  png_infop info;
  png_bytep *rows;
  uint64_t file_size;
  ada_tensor *img;
  char msg[200];  /* libpng's message after a jump */
  char warn[200]; /* its last warning, which often says why ("Invalid IHDR data" does not) */
} png_job;

static void on_error(png_structp png, png_const_charp msg) {
  png_job *j = png_get_error_ptr(png);
  snprintf(j->msg, sizeof j->msg, "%s", msg);
  png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
  png_job *j = png_get_error_ptr(png);
  snprintf(j->warn, sizeof j->warn, "%s", msg);
}

static ada_status nomem(const char *path) { return ada_fail(ADA_ENOMEM, "png: %s: out of memory", path); }

/* ---- read ------------------------------------------------------------------------------------ */

/* Ancillary chunks adaspa has no use for: never decoded (iCCP and zTXt would be inflated). */
static const png_byte ignored_chunks[] = "iCCP\0iTXt\0tEXt\0zTXt\0sPLT\0eXIf\0";

static ada_status read_body(png_job *j, uint64_t max_bytes) {
  if (setjmp(png_jmpbuf(j->png)))
    return ada_fail(ADA_EIO, "png: %s: %s%s%s%s", j->path, j->msg, j->warn[0] ? " (" : "", j->warn,
                    j->warn[0] ? ")" : "");
  png_init_io(j->png, j->fp);
  png_set_sig_bytes(j->png, 8);
  png_set_user_limits(j->png, ADA_PNG_MAX_SIDE, ADA_PNG_MAX_SIDE);
  png_set_chunk_malloc_max(j->png, ADA_PNG_MAX_CHUNK);
  png_set_keep_unknown_chunks(j->png, PNG_HANDLE_CHUNK_NEVER, ignored_chunks,
                              (int)(sizeof ignored_chunks - 1) / 5);
  png_read_info(j->png, j->info);
  /* Deflate expands at most 1032 times: pixel data the file cannot hold is refused before any
   * memory is set aside for it (a 100-byte file claiming 1 GiB) */
  uint64_t raw = (uint64_t)png_get_rowbytes(j->png, j->info) * png_get_image_height(j->png, j->info);
  if (raw > j->file_size * 1040 + 65536)
    return ada_fail(ADA_EINVAL, "png: %s: a %u x %u image holds %llu bytes of pixel data, more than a %llu-byte "
                    "file can (deflate expands at most 1032 times): truncated or corrupt", j->path,
                    (unsigned)png_get_image_width(j->png, j->info), (unsigned)png_get_image_height(j->png, j->info),
                    (unsigned long long)raw, (unsigned long long)j->file_size);
  int color = png_get_color_type(j->png, j->info);
  int trns = png_get_valid(j->png, j->info, PNG_INFO_tRNS) != 0;
  png_set_expand(j->png); /* palette -> RGB, 1/2/4-bit gray -> 8-bit, tRNS -> alpha */
  png_set_scale_16(j->png); /* 16-bit -> 8-bit: v / 257, rounded */
  if (color == PNG_COLOR_TYPE_GRAY_ALPHA || (color == PNG_COLOR_TYPE_GRAY && trns))
    png_set_gray_to_rgb(j->png);
  png_set_interlace_handling(j->png);
  png_read_update_info(j->png, j->info);
  int64_t shape[3] = {png_get_image_height(j->png, j->info), png_get_image_width(j->png, j->info),
                      png_get_channels(j->png, j->info)};
  if (shape[2] != 1 && shape[2] != 3 && shape[2] != 4)
    return ada_fail(ADA_EUNSUPPORTED, "png: %s: %lld channels after expansion (expected 1, 3 or 4)",
                    j->path, (long long)shape[2]);
  /* sides are at most ADA_PNG_MAX_SIDE (libpng checked the header): no overflow below */
  uint64_t bytes = (uint64_t)shape[0] * (uint64_t)shape[1] * (uint64_t)shape[2];
  if (shape[0] < 1 || shape[1] < 1 || bytes + (uint64_t)shape[0] * sizeof *j->rows > max_bytes)
    return ada_fail(ADA_EINVAL, "png: %s: image of %lld x %lld pixels x %lld channels needs %llu bytes, over "
                    "the limit of %llu", j->path, (long long)shape[1], (long long)shape[0], (long long)shape[2],
                    (unsigned long long)bytes, (unsigned long long)max_bytes);
  if ((uint64_t)png_get_rowbytes(j->png, j->info) != (uint64_t)shape[1] * (uint64_t)shape[2])
    return ada_fail(ADA_EUNSUPPORTED, "png: %s: rows of %llu bytes after expansion (expected %lld)", j->path,
                    (unsigned long long)png_get_rowbytes(j->png, j->info), (long long)(shape[1] * shape[2]));
  ada_device cpu = {ADA_CPU, 0};
  ada_status s = ada_tensor_empty(&j->img, 3, shape, ADA_U8, cpu);
  if (s) return s;
  if (!(j->rows = malloc((size_t)shape[0] * sizeof *j->rows))) return nomem(j->path);
  png_bytep data = ada_tensor_data(j->img);
  for (int64_t y = 0; y < shape[0]; y++) j->rows[y] = data + y * shape[1] * shape[2];
  png_read_image(j->png, j->rows);
  png_read_end(j->png, NULL);
  return ADA_OK;
}

ada_status ada_png_read_limited(const char *path, uint64_t max_bytes, ada_tensor **out) {
  ada_status cs = ada_confine_check_read(path, "png"); /* while a recipe runs (outdir.h) */
  if (cs) return cs;
  png_job j = {0};
  j.path = path;
  unsigned char sig[8];
  if (!(j.fp = fopen(path, "rb"))) return ada_fail(ADA_EIO, "png: %s: cannot open: %s", path, strerror(errno));
  ada_status s = ADA_OK;
  struct stat sb;
  if (fstat(fileno(j.fp), &sb) != 0)
    s = ada_fail(ADA_EIO, "png: %s: cannot stat: %s", path, strerror(errno));
  else if (!S_ISREG(sb.st_mode))
    s = ada_fail(ADA_EINVAL, "png: %s: not a regular file", path);
  else if ((j.file_size = (uint64_t)sb.st_size), fread(sig, 1, 8, j.fp) != 8 || png_sig_cmp(sig, 0, 8) != 0)
    s = ada_fail(ADA_EINVAL, "png: %s: not a PNG file (no PNG signature)", path);
  else if (!(j.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &j, on_error, on_warning)) ||
           !(j.info = png_create_info_struct(j.png)))
    s = nomem(path);
  else
    s = read_body(&j, max_bytes);
  png_destroy_read_struct(j.png ? &j.png : NULL, j.info ? &j.info : NULL, NULL);
  if (fclose(j.fp) != 0 && !s) s = ada_fail(ADA_EIO, "png: %s: cannot close: %s", path, strerror(errno));
  free(j.rows);
  if (s) {
    ada_tensor_free(j.img);
    return s;
  }
  *out = j.img;
  return ADA_OK;
}

ada_status ada_png_read(const char *path, ada_tensor **out) {
  return ada_png_read_limited(path, ADA_PNG_MAX_BYTES, out);
}

/* ---- write ------------------------------------------------------------------------------------ */

static ada_status write_body(png_job *j, const ada_tensor *img) {
  if (setjmp(png_jmpbuf(j->png))) return ada_fail(ADA_EIO, "png: %s: %s", j->path, j->msg);
  static const int types[5] = {0, PNG_COLOR_TYPE_GRAY, 0, PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGBA};
  int64_t h = img->shape[0], w = img->shape[1], c = img->ndim == 3 ? img->shape[2] : 1;
  png_init_io(j->png, j->fp);
  png_set_IHDR(j->png, j->info, (png_uint_32)w, (png_uint_32)h, 8, types[c], PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(j->png, j->info);
  png_bytep data = ada_tensor_data(img);
  for (int64_t y = 0; y < h; y++) j->rows[y] = data + y * w * c;
  png_write_image(j->png, j->rows);
  png_write_end(j->png, NULL);
  return ADA_OK;
}

static ada_status check_image(const char *path, const ada_tensor *img) {
  if (img->dtype != ADA_U8)
    return ada_fail(ADA_EINVAL, "png: %s: image must be a u8 tensor, got %s", path, ada_dtype_name(img->dtype));
  int64_t c = img->ndim == 3 ? img->shape[2] : 1;
  if ((img->ndim != 2 && img->ndim != 3) || (c != 1 && c != 3 && c != 4)) {
    char shp[96];
    ada_shape_format(img->ndim, img->shape, shp, sizeof shp);
    return ada_fail(ADA_EINVAL, "png: %s: image must have shape [H, W], [H, W, 1], [H, W, 3] or "
                    "[H, W, 4], got %s", path, shp);
  }
  if (img->shape[0] > 0x7fffffff || img->shape[1] > 0x7fffffff)
    return ada_fail(ADA_EINVAL, "png: %s: image of %lld x %lld pixels is larger than PNG allows", path,
                    (long long)img->shape[1], (long long)img->shape[0]);
  return ADA_OK;
}

ada_status ada_png_write(const char *path, const ada_tensor *img) {
  ada_status s = check_image(path, img);
  if (s) return s;
  ada_tensor *staged = NULL;
  ada_device cpu = {ADA_CPU, 0};
  if (img->storage->device.type != ADA_CPU || !ada_tensor_is_contiguous(img)) {
    if ((s = ada_tensor_to(&staged, img, ADA_U8, cpu))) return s;
    img = staged;
  }
  png_job j = {0};
  j.path = path;
  ada_wfile w;
  j.rows = malloc((size_t)img->shape[0] * sizeof *j.rows);
  if (!j.rows) {
    s = nomem(path);
  } else if (!(s = ada_wfile_begin(&w, path, "png"))) {
    j.fp = w.fp;
    if (!(j.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &j, on_error, on_warning)) ||
        !(j.info = png_create_info_struct(j.png)))
      s = nomem(path);
    else
      s = write_body(&j, img);
    png_destroy_write_struct(j.png ? &j.png : NULL, j.info ? &j.info : NULL);
    if (s) ada_wfile_abort(&w);
    else s = ada_wfile_commit(&w, path, "png");
  }
  free(j.rows);
  ada_tensor_free(staged);
  return s;
}
