/* status.h: error reporting for the adaspa runtime (prefix ada_).
 *
 * Every runtime function that can fail returns an ada_status. On failure it also
 * leaves a human-readable message, retrievable with ada_last_error() on the same
 * thread until the next failure overwrites it. Nothing in the runtime exits or aborts.
 */
#ifndef ADA_STATUS_H
#define ADA_STATUS_H

#include <stddef.h>

typedef enum ada_status {
  ADA_OK = 0,
  ADA_EINVAL,   /* bad argument: shape, dtype, index, option */
  ADA_ENOMEM,   /* host or device allocation failed */
  ADA_EDEVICE,  /* no such device, no GPU, driver or kernel failure */
  ADA_EIO,      /* file or stream failure */
  ADA_EUNSUPPORTED /* valid request this build or device cannot do */
} ada_status;

#if defined(__GNUC__)
#define ADA_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define ADA_PRINTF(a, b)
#endif

/* Records a message and returns code, so callers write: return ada_fail(ADA_EINVAL, "..."). */
ada_status ada_fail(ada_status code, const char *fmt, ...) ADA_PRINTF(2, 3);
/* The message of the last failure on this thread ("" if none). */
const char *ada_last_error(void);
/* A short name of a status code ("invalid argument", ...). */
const char *ada_status_name(ada_status s);

#endif
