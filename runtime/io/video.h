/* video.h: RGB frames to an H.264 mp4 through ffmpeg, run as a child process.
 *
 * The program is never chosen by a caller: it is $ADASPA_FFMPEG when that is set (read from the
 * host's environment; an absolute path to an executable regular file), else the first of
 * /usr/bin/ffmpeg and /usr/local/bin/ffmpeg that exists. It runs with a fixed argument vector
 * (only the frame size and the rate, formatted from checked integers, vary), an empty
 * environment, the root folder as its working folder, its own process group (a terminal's Ctrl-C
 * reaches adaspa only), default signal handling and no file descriptors but three pipes: raw
 * rgb24 frames on its stdin, a fragmented mp4 (moov first, fragments at keyframes: written
 * without seeking) from its stdout, messages from its stderr (the first ADA_VIDEO_STDERR bytes
 * are kept for errors). It is started with posix_spawn (no shell) and always reaped: after the
 * timeout, when the mp4 grows past its cap, or on SIGINT (while encoding, the process's own
 * SIGINT handler still runs: it is called from a wrapper that also stops the encoding) it is
 * killed (SIGKILL) and waited for. Nothing is written to disk here: the caller writes the bytes
 * (through its output folder's rules, io/outdir.h).
 */
#ifndef ADA_VIDEO_H
#define ADA_VIDEO_H

#include <stddef.h>
#include <stdint.h>

#include "../status.h"
#include "../tensor.h"

#define ADA_VIDEO_MAX_SIDE 8192           /* pixels per side */
#define ADA_VIDEO_MAX_FRAMES 100000
#define ADA_VIDEO_MAX_INPUT (16ull << 30) /* bytes of raw frames */
#define ADA_VIDEO_MAX_OUTPUT (4ull << 30) /* the largest max_bytes */
#define ADA_VIDEO_MAX_TIMEOUT 86400.0     /* seconds */
#define ADA_VIDEO_STDERR 4096             /* bytes of ffmpeg's messages kept */

typedef struct ada_video_opts {
  int32_t fps_num, fps_den; /* frame rate num/den: each 1..1000 */
  double timeout;           /* seconds for the whole encoding, (0, ADA_VIDEO_MAX_TIMEOUT] */
  uint64_t max_bytes;       /* cap of the mp4, 1..ADA_VIDEO_MAX_OUTPUT */
} ada_video_opts;

/* Finds the ffmpeg program (rules above) into path (n bytes). ADA_EUNSUPPORTED with a message
 * naming where it looked when there is none. */
ada_status ada_video_find_ffmpeg(char *path, size_t n);

/* Encodes frames, a u8 tensor [T, H, W, 3] (any device or strides; 1 <= T <= ADA_VIDEO_MAX_FRAMES,
 * 2 <= H, W <= ADA_VIDEO_MAX_SIDE), into an mp4 held in *out (malloc'd, *n bytes; the caller
 * frees it). An odd side is padded by one black pixel (H.264 with 4:2:0 chroma needs even sides).
 * who prefixes messages. A SIGINT during the encoding fails with a message ending in
 * "interrupted". */
ada_status ada_video_encode_mp4(const ada_tensor *frames, const ada_video_opts *opts, uint8_t **out, size_t *n,
                                const char *who);

#endif
