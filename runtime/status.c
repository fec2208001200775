#include "status.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[1024];

ada_status ada_fail(ada_status code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return code;
}

const char *ada_last_error(void) { return last_error; }

const char *ada_status_name(ada_status s) {
  switch (s) {
  case ADA_OK: return "ok";
  case ADA_EINVAL: return "invalid argument";
  case ADA_ENOMEM: return "out of memory";
  case ADA_EDEVICE: return "device error";
  case ADA_EIO: return "i/o error";
  case ADA_EUNSUPPORTED: return "unsupported";
  }
  return "unknown status";
}
