/* png.h: 8-bit PNG pictures to and from u8 tensors (prefix ada_png_), through libpng.
 *
 * Pictures are u8 tensors [H, W] or [H, W, 1] (gray), [H, W, 3] (RGB) or [H, W, 4] (RGBA),
 * row-major, channels last. Errors fail with "png: <path>: <problem>"; libpng's own errors are
 * caught (no output, nothing leaked).
 */
#ifndef ADA_PNG_H
#define ADA_PNG_H

#include "../tensor.h"

/* Writes img (u8 of one of the shapes above; any strides and device: staged to a contiguous
 * CPU copy when needed) as an 8-bit PNG. The file is written under a new temporary name next
 * to path (O_EXCL, no link followed) and renamed to path once complete: on failure no file is
 * left at path (an existing one is kept). While a recipe runs, path must lie inside the run's
 * output folder, and reading is limited likewise (outdir.h). */
ada_status ada_png_write(const char *path, const ada_tensor *img);

/* Reading limits: each side at most ADA_PNG_MAX_SIDE pixels (checked on the header, before any
 * pixel memory), the decoded image (plus its row table) at most ADA_PNG_MAX_BYTES, a chunk at
 * most ADA_PNG_MAX_CHUNK, and no more pixel data than the file can hold compressed (deflate
 * expands at most 1032 times); text, ICC and suggested-palette chunks are skipped, never inflated.
 * A file over a limit fails with "png: <path>: ..." naming the sizes and the limit. */
#define ADA_PNG_MAX_SIDE 65535
#define ADA_PNG_MAX_BYTES ((uint64_t)1 << 30)
#define ADA_PNG_MAX_CHUNK (8u << 20)

/* Reads path into a new contiguous CPU u8 tensor [H, W, C] (the caller owns *out): C = 1 for
 * gray, 3 for RGB, 4 for RGBA. Palette pictures become RGB (RGBA with transparency), gray with
 * alpha or transparency becomes RGBA, 16-bit samples are scaled to 8 bits (v / 257, rounded), 1/2/4-bit ones expanded. */
ada_status ada_png_read(const char *path, ada_tensor **out);
/* ada_png_read with another limit on the decoded bytes (the fuzz harness uses a small one). */
ada_status ada_png_read_limited(const char *path, uint64_t max_bytes, ada_tensor **out);

#endif
