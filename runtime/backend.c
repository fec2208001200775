/* backend.c: the backend registry, the derived cache and timers (backend.h). */
#include "backend.h"

#include <stdio.h>
#include <stdlib.h>

#define MAX_BACKENDS 8

static const ada_backend *registered[MAX_BACKENDS];
static int32_t n_registered;

ada_status ada_backend_register(const ada_backend *b) {
  if (!b || !b->name) return ada_fail(ADA_EINVAL, "backend register: no backend given");
  for (int32_t i = 0; i < n_registered; i++)
    if (registered[i]->type == b->type)
      return ada_fail(ADA_EINVAL, "backend register: %s: device type %d already has backend %s", b->name,
                      (int)b->type, registered[i]->name);
  if (n_registered == MAX_BACKENDS)
    return ada_fail(ADA_EINVAL, "backend register: %s: at most %d backends", b->name, MAX_BACKENDS);
  registered[n_registered++] = b;
  return ADA_OK;
}

const ada_backend *ada_backend_find(ada_devtype type) {
  for (int32_t i = 0; i < n_registered; i++)
    if (registered[i]->type == type) return registered[i];
  return NULL;
}

const ada_backend *ada_backend_of(const ada_tensor *t) { return ada_backend_find(t->storage->device.type); }

int32_t ada_backend_count(void) { return n_registered; }

const ada_backend *ada_backend_at(int32_t i) { return i >= 0 && i < n_registered ? registered[i] : NULL; }

const char *ada_backend_unavailable_reason(ada_devtype type) {
  const ada_backend *b = ada_backend_find(type);
  if (b) return b->unavailable_reason();
  return type == ADA_CUDA ? "this adaspa was built without CUDA" : "this adaspa was built without that backend";
}

ada_status ada_backend_device_check(ada_device dev, const char *op) {
  const ada_backend *b = ada_backend_find(dev.type);
  const int32_t n = b ? b->device_count() : 0;
  if (n == 0)
    return ada_fail(ADA_EDEVICE, "%s: device cuda:%d requested but no GPU is available (%s)", op, (int)dev.index,
                    ada_backend_unavailable_reason(dev.type));
  if (dev.type != ADA_CPU && (dev.index < 0 || dev.index >= n))
    return ada_fail(ADA_EDEVICE, "%s: device cuda:%d does not exist (%d GPU%s)", op, (int)dev.index, (int)n,
                    n == 1 ? "" : "s");
  return ADA_OK;
}

bool ada_backend_supports(const ada_backend *b, ada_op op, const void *args, char *why, size_t n) {
  if (op == ADA_OP_ATTENTION && args && b->ops.attention && b->ops.attention_plan) {
    ada_attn_plan plan; /* the plan that launches answers */
    if (b->ops.attention_plan(args, &plan) == ADA_OK) return true;
    if (why && n) snprintf(why, n, "%s", ada_last_error());
    return false;
  }
  if (b->supports) return b->supports(op, args, why, n);
  const ada_backend_ops *o = &b->ops;
  bool has = false;
  switch (op) {
  case ADA_OP_LINEAR: has = o->linear != NULL; break;
  case ADA_OP_MATMUL: has = o->matmul != NULL; break;
  case ADA_OP_LAYERNORM: has = o->layernorm != NULL; break;
  case ADA_OP_LAYERNORM_MODULATE: has = o->layernorm_modulate != NULL; break;
  case ADA_OP_GATED_ADD_LAYERNORM_MODULATE: has = o->gated_add_layernorm_modulate != NULL; break;
  case ADA_OP_RMSNORM: has = o->rmsnorm != NULL; break;
  case ADA_OP_SOFTMAX: has = o->softmax != NULL; break;
  case ADA_OP_ROWWISE: has = o->rowwise != NULL; break;
  case ADA_OP_UNARY: has = o->unary != NULL; break;
  case ADA_OP_ROPE3D: has = o->rope3d != NULL; break;
  case ADA_OP_RMSNORM_ROPE3D: has = o->rmsnorm_rope3d != NULL; break;
  case ADA_OP_PATCHIFY: has = o->patchify != NULL; break;
  case ADA_OP_UNPATCHIFY: has = o->unpatchify != NULL; break;
  case ADA_OP_TIMESTEP_EMBEDDING: has = o->timestep_embedding != NULL; break;
  case ADA_OP_ATTENTION: has = o->attention != NULL; break;
  case ADA_OP_LAYOUT_SELECT: has = o->layout_select != NULL; break;
  case ADA_OP_LAYOUT_RECALL: has = o->layout_recall != NULL; break;
  default: break;
  }
  if (!has && why && n) snprintf(why, n, "the %s backend does not have this op", b->name);
  return has;
}

/* ---- derived cache ------------------------------------------------------------------------------ */

typedef struct derived_entry {
  const ada_backend *b;
  int32_t dev;
  void *data;
  size_t bytes;
} derived_entry;

struct ada_derived {
  derived_entry *e;
  int32_t n, cap;
};

ada_derived *ada_derived_new(void) { return calloc(1, sizeof(ada_derived)); }

void ada_derived_free(ada_derived *c) {
  if (!c) return;
  for (int32_t i = 0; i < c->n; i++)
    if (c->e[i].b->derived_free) c->e[i].b->derived_free(c->e[i].data, c->e[i].dev);
  free(c->e);
  free(c);
}

void *ada_derived_get(const ada_derived *c, const ada_backend *b, int32_t dev) {
  if (!c) return NULL;
  for (int32_t i = 0; i < c->n; i++)
    if (c->e[i].b == b && c->e[i].dev == dev) return c->e[i].data;
  return NULL;
}

ada_status ada_derived_put(ada_derived *c, const ada_backend *b, int32_t dev, void *data, size_t bytes) {
  if (!c) return ada_fail(ADA_EINVAL, "derived cache: none given");
  for (int32_t i = 0; i < c->n; i++)
    if (c->e[i].b == b && c->e[i].dev == dev) {
      if (b->derived_free && c->e[i].data != data) b->derived_free(c->e[i].data, dev);
      c->e[i].data = data;
      c->e[i].bytes = bytes;
      return ADA_OK;
    }
  if (c->n == c->cap) {
    const int32_t cap = c->cap ? 2 * c->cap : 2;
    derived_entry *e = realloc(c->e, sizeof *e * (size_t)cap);
    if (!e) return ada_fail(ADA_ENOMEM, "derived cache: out of host memory");
    c->e = e;
    c->cap = cap;
  }
  c->e[c->n++] = (derived_entry){b, dev, data, bytes};
  return ADA_OK;
}

int64_t ada_derived_device_bytes(const ada_derived *c) {
  int64_t n = 0;
  for (int32_t i = 0; c && i < c->n; i++)
    if (c->e[i].b->type != ADA_CPU) n += (int64_t)c->e[i].bytes;
  return n;
}

/* ---- timers ------------------------------------------------------------------------------------- */

struct ada_timer {
  const ada_backend *b;
  ada_device dev;
  void *start, *stop;
  bool started, stopped;
};

ada_status ada_timer_new(ada_timer **out, ada_device dev) {
  ada_status s = ada_backend_device_check(dev, "timer");
  if (s) return s;
  const ada_backend *b = ada_backend_find(dev.type);
  if (!b->event_new) return ada_fail(ADA_EUNSUPPORTED, "timer: the %s backend has no events", b->name);
  ada_timer *t = calloc(1, sizeof *t);
  if (!t) return ada_fail(ADA_ENOMEM, "timer: out of host memory");
  t->b = b;
  t->dev = dev;
  if ((s = b->event_new(&t->start, dev.index)) || (s = b->event_new(&t->stop, dev.index))) {
    ada_timer_free(t);
    return s;
  }
  *out = t;
  return ADA_OK;
}

ada_status ada_timer_start(ada_timer *t) {
  ada_status s = t->b->event_record(t->start, t->dev.index);
  t->started = s == ADA_OK;
  t->stopped = false;
  return s;
}

ada_status ada_timer_stop(ada_timer *t) {
  if (!t->started) return ada_fail(ADA_EINVAL, "timer: stop before start");
  ada_status s = t->b->event_record(t->stop, t->dev.index);
  t->stopped = s == ADA_OK;
  return s;
}

ada_status ada_timer_seconds(ada_timer *t, double *out) {
  if (!t->stopped) return ada_fail(ADA_EINVAL, "timer: seconds read before start and stop");
  return t->b->event_elapsed(t->start, t->stop, t->dev.index, out);
}

ada_device ada_timer_device(const ada_timer *t) { return t->dev; }

void ada_timer_free(ada_timer *t) {
  if (!t) return;
  if (t->start) t->b->event_free(t->start, t->dev.index);
  if (t->stop) t->b->event_free(t->stop, t->dev.index);
  free(t);
}
