/* ltimer.c: device timers (backend.h's ada_timer):
 *   adaspa.timer([device | tensor]) -> timer   (default "cpu"; a tensor: its device)
 *   timer:start() timer:stop()                 record on the device's stream, no synchronization
 *   timer:seconds()                            seconds between them (waits for the stop record only)
 *   timer:device() timer:free()
 * On a GPU the records are CUDA events in order with the stream's work, so start .. stop measures
 * the device time of the work queued between them; on the CPU they read the wall clock. */
#include <stdio.h>

#include "../backend.h"
#include "lbind.h"

#define LADA_TIMER_MT "adaspa.Timer"

static void release(void *t) { ada_timer_free(t); }
static void describe(const void *t, char *buf, size_t n) { ada_device_format(ada_timer_device(t), buf, n); }

static const lada_class timer_class = {LADA_TIMER_MT, "timer", release, describe, NULL, 1};

#define SELF(fname) ada_timer *t = lada_object_check(L, 1, &timer_class, fname, "self")

static int l_timer(lua_State *L) {
  const char *fname = "adaspa.timer";
  ada_device dev = {ADA_CPU, 0};
  if (lada_test_tensor(L, 1)) {
    dev = lada_check_tensor(L, 1, fname, "device")->storage->device;
  } else if (!lua_isnoneornil(L, 1)) {
    if (lua_type(L, 1) != LUA_TSTRING || !ada_device_parse(lua_tostring(L, 1), &dev))
      return lada_error(L, fname, "device must be \"cpu\", \"cuda\", \"cuda:N\" or a tensor, got %s",
                        lua_type(L, 1) == LUA_TSTRING ? lua_tostring(L, 1) : lada_typename(L, 1));
  }
  lada_object *u = lada_object_new(L, &timer_class, NULL);
  ada_timer *t = NULL;
  lada_check(L, ada_timer_new(&t, dev), fname);
  u->obj = t;
  return 1;
}

static int m_start(lua_State *L) {
  SELF("timer:start");
  lada_check(L, ada_timer_start(t), "timer:start");
  lua_settop(L, 1);
  return 1;
}

static int m_stop(lua_State *L) {
  SELF("timer:stop");
  lada_check(L, ada_timer_stop(t), "timer:stop");
  lua_settop(L, 1);
  return 1;
}

static int m_seconds(lua_State *L) {
  SELF("timer:seconds");
  double sec = 0;
  lada_check(L, ada_timer_seconds(t, &sec), "timer:seconds");
  lua_pushnumber(L, sec);
  return 1;
}

static int m_device(lua_State *L) {
  SELF("timer:device");
  char buf[16];
  ada_device_format(ada_timer_device(t), buf, sizeof buf);
  lua_pushstring(L, buf);
  return 1;
}

void lada_open_timer(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"start", m_start}, {"stop", m_stop}, {"seconds", m_seconds}, {"device", m_device}, {NULL, NULL}};
  lada_class_register(L, &timer_class, methods);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_timer);
  lua_setfield(L, -2, "timer");
}
