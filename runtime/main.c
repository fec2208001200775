/* main.c: the adaspa host. Embeds LuaJIT with the adaspa runtime and runs scripts, chunks,
 * subcommands (devices, recipe, weights, ...: lua/adaspa/cli.lua) or a REPL.
 *
 *   adaspa FILE.lua [args]     run a script (arg as the standalone lua sets it)
 *   adaspa -e CODE [args]      run a chunk
 *   adaspa -                   run standard input as a script
 *   adaspa SUBCOMMAND [args]   devices | recipe | help ...
 *   adaspa                     REPL (prompts and line editing on a terminal; quiet when piped)
 *   adaspa --version | --help
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>

#include <editline/readline.h>

#include "lua/lbind.h"

#ifndef ADA_VERSION
#define ADA_VERSION "0.1.0"
#endif

static const char *progname = "adaspa";

static int file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

/* The folder holding adaspa/init.lua: $ADASPA_PATH, then next to the binary in the source tree
 * (build/adaspa -> lua/), then the installed layout (bin/adaspa -> share/adaspa/lua). */
static int find_lua_dir(char *out, size_t n, char *home, size_t hn) {
  char probe[PATH_MAX + 64];
  const char *env = getenv("ADASPA_PATH");
  if (env && *env) {
    snprintf(probe, sizeof probe, "%s/adaspa/init.lua", env);
    if (file_exists(probe)) {
      snprintf(out, n, "%s", env);
      snprintf(home, hn, "%s/..", env);
      return 1;
    }
  }
  char exe[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len <= 0) return env && *env ? 0 : 0;
  exe[len] = '\0';
  char *dir = dirname(exe);
  static const char *const rel[][2] = {{"/../lua", "/.."}, {"/../share/adaspa/lua", "/../share/adaspa"}};
  for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
    snprintf(probe, sizeof probe, "%s%s/adaspa/init.lua", dir, rel[i][0]);
    if (file_exists(probe)) {
      char tmp[PATH_MAX + 64], res[PATH_MAX];
      snprintf(tmp, sizeof tmp, "%s%s", dir, rel[i][0]);
      snprintf(out, n, "%s", realpath(tmp, res) ? res : tmp);
      snprintf(tmp, sizeof tmp, "%s%s", dir, rel[i][1]);
      snprintf(home, hn, "%s", realpath(tmp, res) ? res : tmp);
      return 1;
    }
  }
  return 0;
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static int message_only(lua_State *L) {
  if (!lua_isstring(L, 1) && !luaL_callmeta(L, 1, "__tostring"))
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  return 1;
}

static int repl_mode = 0; /* in the REPL an error prints its message only, no traceback */

/* Calls the function below its nargs arguments, as lua.c's docall does. */
static int docall(lua_State *L, int nargs, int nres) {
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, repl_mode ? message_only : traceback);
  lua_insert(L, base);
  int st = lua_pcall(L, nargs, nres, base);
  lua_remove(L, base);
  return st;
}

static int report(lua_State *L, int st) {
  if (st && !lua_isnil(L, -1)) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "%s: %s\n", progname, msg ? msg : "(error object is not a string)");
    fflush(stderr);
    lua_pop(L, 1);
  }
  return st;
}

static void set_arg(lua_State *L, char **argv, int argc, int script) {
  /* arg[0] = script, arg[1..] = arguments after it, arg[-1] = the program */
  lua_createtable(L, argc - script - 1, script + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

static int push_args(lua_State *L, char **argv, int argc, int first) {
  luaL_checkstack(L, argc - first + 3, "too many arguments");
  for (int i = first; i < argc; i++) lua_pushstring(L, argv[i]);
  return argc - first;
}

/* ---- REPL ------------------------------------------------------------------------------------ */

static int incomplete(lua_State *L, int st) {
  if (st == LUA_ERRSYNTAX) {
    size_t lmsg;
    const char *msg = lua_tolstring(L, -1, &lmsg);
    if (lmsg >= 7 && strstr(msg, "'<eof>'") == msg + lmsg - 7) {
      lua_pop(L, 1);
      return 1;
    }
  }
  return 0;
}

static char *read_line(int tty, const char *prompt) {
  if (tty) {
    char *l = readline(prompt);
    return l;
  }
  size_t cap = 256, n = 0;
  char *buf = malloc(cap);
  if (!buf) return NULL;
  int c;
  while ((c = getchar()) != EOF && c != '\n') {
    if (n + 2 > cap) {
      char *nb = realloc(buf, cap *= 2);
      if (!nb) { free(buf); return NULL; }
      buf = nb;
    }
    buf[n++] = (char)c;
  }
  if (c == EOF && n == 0) { free(buf); return NULL; }
  buf[n] = '\0';
  return buf;
}

/* Prints the values left on the stack above base through adaspa.repl_print (pretty tensors). */
static void print_results(lua_State *L, int base) {
  int n = lua_gettop(L) - base;
  if (n <= 0) return;
  lua_getglobal(L, "adaspa");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "repl_print");
    lua_remove(L, -2);
  }
  if (!lua_isfunction(L, -1)) { lua_pop(L, 1); lua_getglobal(L, "print"); }
  lua_insert(L, base + 1);
  report(L, docall(L, n, 0));
}

static int repl(lua_State *L) {
  int tty = isatty(0);
  int errors = 0;
  char histfile[PATH_MAX] = "";
  if (tty) {
    const char *h = getenv("HOME");
    if (h) {
      snprintf(histfile, sizeof histfile, "%s/.adaspa_history", h);
      read_history(histfile);
    }
    printf("adaspa %s (%s) -- Lua REPL; expressions print their values; Ctrl-D exits\n", ADA_VERSION, LUAJIT_VERSION);
  }
  char *line;
  while ((line = read_line(tty, "adaspa> ")) != NULL) {
    if (tty && *line) add_history(line);
    /* accumulate until the chunk is complete */
    luaL_Buffer b;
    int base = lua_gettop(L);
    lua_pushstring(L, line);
    free(line);
    int st;
    for (;;) {
      const char *chunk = lua_tostring(L, base + 1);
      /* first as an expression, then as a statement */
      lua_pushfstring(L, "return %s", chunk);
      st = luaL_loadbuffer(L, lua_tostring(L, -1), lua_objlen(L, -1), "=stdin");
      lua_remove(L, -2);
      if (st == 0) break;
      lua_pop(L, 1);
      st = luaL_loadbuffer(L, chunk, strlen(chunk), "=stdin");
      if (!incomplete(L, st)) break;
      char *more = read_line(tty, ">> ");
      if (!more) { st = -1; break; }
      if (tty && *more) add_history(more);
      luaL_buffinit(L, &b);
      lua_pushvalue(L, base + 1);
      luaL_addvalue(&b);
      luaL_addchar(&b, '\n');
      luaL_addstring(&b, more);
      free(more);
      luaL_pushresult(&b);
      lua_replace(L, base + 1);
    }
    if (st == -1) { lua_settop(L, base); break; }
    lua_remove(L, base + 1); /* the source */
    if (st == 0) st = docall(L, 0, LUA_MULTRET);
    if (st == 0) print_results(L, base);
    else { errors++; report(L, st); }
    lua_settop(L, base);
  }
  if (tty) {
    putchar('\n');
    if (*histfile) write_history(histfile);
  }
  return tty ? 0 : errors > 0;
}

/* ---- main ------------------------------------------------------------------------------------- */

static void usage(FILE *f) {
  fprintf(f,
          "usage: %s [FILE.lua [args] | -e CODE [args] | - | COMMAND [args]]\n"
          "  FILE.lua         run a Lua script with the adaspa runtime loaded\n"
          "  -e CODE          run a Lua chunk\n"
          "  -                run a script read from standard input\n"
          "  devices          list the CPU and each GPU\n"
          "  recipe FILE [path.to.field=value ...]   run a recipe\n"
          "  --version        print the version and the backends built\n"
          "  (no argument)    start the REPL\n",
          progname);
}

static int pmain_status = 0;

int main(int argc, char **argv) {
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "%s: cannot create the Lua state (out of memory)\n", progname);
    return 1;
  }
  luaL_openlibs(L);
  /* adaspa.core is built in; lua/adaspa/ is found on disk */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_adaspa_core);
  lua_setfield(L, -2, "adaspa.core");
  lua_pop(L, 1);
  char dir[PATH_MAX + 128], home[PATH_MAX + 128];
  if (!find_lua_dir(dir, sizeof dir, home, sizeof home)) {
    fprintf(stderr,
            "%s: cannot find the adaspa Lua library (adaspa/init.lua): looked in $ADASPA_PATH, "
            "next to the binary (../lua) and in the installed layout (../share/adaspa/lua)\n",
            progname);
    lua_close(L);
    return 1;
  }
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);
  lua_pushstring(L, home);
  lua_setglobal(L, "ADASPA_HOME");

  lua_getglobal(L, "require");
  lua_pushstring(L, "adaspa");
  int st = docall(L, 1, 1);
  if (st) {
    report(L, st);
    lua_close(L);
    return 1;
  }
  lua_setglobal(L, "adaspa");

  const char *a1 = argc > 1 ? argv[1] : NULL;
  if (!a1) {
    set_arg(L, argv, argc, 0);
    repl_mode = 1;
    pmain_status = repl(L);
  } else if (!strcmp(a1, "--version") || !strcmp(a1, "-v")) {
    lua_getglobal(L, "adaspa");
    lua_getfield(L, -1, "version_string");
    st = docall(L, 0, 1);
    if (!report(L, st)) printf("%s\n", lua_tostring(L, -1));
    pmain_status = st != 0;
  } else if (!strcmp(a1, "--help") || !strcmp(a1, "-h")) {
    usage(stdout);
  } else if (!strcmp(a1, "-e")) {
    if (argc < 3) {
      fprintf(stderr, "%s: -e needs a chunk of Lua\n", progname);
      pmain_status = 1;
    } else {
      set_arg(L, argv, argc, 2);
      st = luaL_loadbuffer(L, argv[2], strlen(argv[2]), "=(command line)");
      if (!st) st = docall(L, push_args(L, argv, argc, 3), 0);
      pmain_status = report(L, st) != 0;
    }
  } else if (!strcmp(a1, "-")) {
    set_arg(L, argv, argc, 1);
    st = luaL_loadfile(L, NULL);
    if (!st) st = docall(L, push_args(L, argv, argc, 2), 0);
    pmain_status = report(L, st) != 0;
  } else if (a1[0] == '-') {
    fprintf(stderr, "%s: unknown option '%s'\n", progname, a1);
    usage(stderr);
    pmain_status = 1;
  } else {
    size_t n = strlen(a1);
    int is_file = (n > 4 && !strcmp(a1 + n - 4, ".lua")) || strchr(a1, '/') || file_exists(a1);
    if (is_file) {
      set_arg(L, argv, argc, 1);
      if (!file_exists(a1)) {
        fprintf(stderr, "%s: cannot open %s: %s\n", progname, a1, strerror(errno));
        pmain_status = 1;
      } else {
        st = luaL_loadfile(L, a1);
        if (!st) st = docall(L, push_args(L, argv, argc, 2), 0);
        pmain_status = report(L, st) != 0;
      }
    } else {
      /* a subcommand: require("adaspa.cli").main(name, args...) returns an exit status */
      set_arg(L, argv, argc, 1);
      lua_getglobal(L, "require");
      lua_pushstring(L, "adaspa.cli");
      st = docall(L, 1, 1);
      if (!st) {
        lua_getfield(L, -1, "main");
        lua_remove(L, -2);
        st = docall(L, push_args(L, argv, argc, 1), 1);
      }
      if (report(L, st)) pmain_status = 1;
      else pmain_status = (int)lua_tointeger(L, -1);
    }
  }
  fflush(stdout);
  lua_close(L);
  return pmain_status;
}
