/* main.c: the adaspa host. Embeds LuaJIT with the adaspa runtime and runs scripts, chunks,
 * subcommands (devices, recipe, weights, ...: lua/adaspa/cli.lua) or a REPL.
 *
 *   adaspa FILE.lua [args]     run a script (arg as the standalone lua sets it)
 *   adaspa -e CODE [args]      run a chunk
 *   adaspa -                   run standard input as a script
 *   adaspa SUBCOMMAND [args]   devices | recipe | weights | help ...
 *   adaspa launch -n N ARGS    N processes of adaspa ARGS, ranks of one communicator (launch.h)
 *   adaspa                     REPL (prompts and line editing on a terminal; quiet when piped)
 *   adaspa --version | --help  (--help: adaspa help)
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
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

#include "launch.h"
#include "lua/lbind.h"

#ifndef ADA_VERSION
#define ADA_VERSION "0.1.0"
#endif

static const char *progname = "adaspa";

/* ---- Ctrl-C ------------------------------------------------------------------------------------
 * SIGINT sets a flag and arms a Lua hook; the hook raises the error "interrupted" at the next Lua
 * instruction, call or return (so at an op boundary: a running C op finishes first). The flag stays
 * pending until Lua acknowledges it (adaspa.interrupt.clear(), which the REPL and the jobs call),
 * and adaspa.interrupt.check() raises again while it is pending, so a pcall that swallowed the
 * error does not lose it. A second Ctrl-C while one is still pending (code that never reaches a
 * boundary, e.g. a JIT-compiled endless loop) exits at once with status 130. */
static volatile sig_atomic_t interrupt_pending = 0;
static lua_State *hooked_state = NULL;

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  lua_pushstring(L, "interrupted");
  lua_error(L);
}

static void on_sigint(int sig) {
  (void)sig;
  if (interrupt_pending) {
    static const char msg[] = "\nadaspa: interrupted again: exiting\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    _exit(130);
  }
  interrupt_pending = 1;
  /* as luajit.c's laction: lua_sethook is the one Lua call safe in a signal handler */
  if (hooked_state) lua_sethook(hooked_state, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* Installs the handler (no SA_RESTART: a blocking read at the REPL's prompt returns). Returns 0,
 * or -1 with errno set. */
static int install_sigint(lua_State *L) {
  hooked_state = L;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  if (sigemptyset(&sa.sa_mask) != 0) return -1;
  sa.sa_flags = 0;
  return sigaction(SIGINT, &sa, NULL);
}

/* Clears a pending interrupt and its hook; returns whether one was pending. */
static int interrupt_clear(lua_State *L) {
  int was = interrupt_pending != 0;
  interrupt_pending = 0;
  lua_sethook(L, NULL, 0, 0);
  return was;
}

static int l_interrupt_pending(lua_State *L) {
  lua_pushboolean(L, interrupt_pending != 0);
  return 1;
}

static int l_interrupt_check(lua_State *L) {
  if (interrupt_pending) {
    lua_pushstring(L, "interrupted");
    return lua_error(L);
  }
  return 0;
}

static int l_interrupt_clear(lua_State *L) {
  lua_pushboolean(L, interrupt_clear(L));
  return 1;
}

/* adaspa.interrupt: pending() -> bool; check() raises "interrupted" while one is pending;
 * clear() -> whether one was pending (and forgets it); is(err) -> whether an error value is an
 * interrupt; installed() -> whether this host handles SIGINT (false in other embeddings). */
static int l_interrupt_is(lua_State *L) {
  size_t n;
  const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
  lua_pushboolean(L, s && n >= 11 && !strcmp(s + n - 11, "interrupted"));
  return 1;
}

static int l_interrupt_installed(lua_State *L) {
  lua_pushboolean(L, hooked_state != NULL);
  return 1;
}

static int luaopen_interrupt(lua_State *L) {
  static const luaL_Reg fns[] = {{"pending", l_interrupt_pending}, {"check", l_interrupt_check},
                                 {"clear", l_interrupt_clear},     {"is", l_interrupt_is},
                                 {"installed", l_interrupt_installed}, {NULL, NULL}};
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  return 1;
}

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
    if (interrupt_pending) break;
    if (n + 2 > cap) {
      char *nb = realloc(buf, cap *= 2);
      if (!nb) { free(buf); return NULL; }
      buf = nb;
    }
    buf[n++] = (char)c;
  }
  if ((c == EOF && n == 0) || interrupt_pending) { free(buf); return NULL; }
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

/* Adds a line to the history and saves the history file at once (a crash or kill keeps it). */
static void remember(const char *histfile, const char *line) {
  if (!*line) return;
  add_history(line);
  if (*histfile && write_history(histfile) != 0 && errno) {
    static int warned = 0;
    if (!warned) fprintf(stderr, "%s: cannot save the history to %s: %s\n", progname, histfile, strerror(errno));
    warned = 1;
  }
}

/* Reads a line at the prompt; Ctrl-C there drops the line and prompts again. NULL at the end. */
static char *prompt_line(int tty, const char *prompt) {
  for (;;) {
    errno = 0;
    char *l = read_line(tty, prompt);
    if (l || !interrupt_pending) return l;
    interrupt_pending = 0; /* Ctrl-C at the prompt: a fresh prompt, as a shell does */
    if (tty) fputs("\n", stdout);
    fflush(stdout);
    clearerr(stdin);
  }
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
    stifle_history(1000);
    printf("adaspa %s (%s) -- Lua REPL; expressions print their values; Ctrl-C interrupts; Ctrl-D exits\n",
           ADA_VERSION, LUAJIT_VERSION);
  }
  rl_catch_signals = 0; /* our SIGINT handler, not editline's */
  char *line;
  while ((line = prompt_line(tty, "adaspa> ")) != NULL) {
    if (tty) remember(histfile, line);
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
      if (!more && interrupt_pending) { /* Ctrl-C in a continuation: drop the chunk */
        interrupt_pending = 0;
        clearerr(stdin);
        if (tty) fputs("\n", stdout);
        st = -2;
        break;
      }
      if (!more) { st = -1; break; }
      if (tty) remember(histfile, more);
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
    if (st == -2) { lua_settop(L, base); continue; }
    lua_remove(L, base + 1); /* the source */
    interrupt_clear(L);
    if (st == 0) st = docall(L, 0, LUA_MULTRET);
    if (st == 0) print_results(L, base);
    else { errors++; report(L, st); }
    interrupt_clear(L); /* an interrupted chunk returns to the prompt with the state kept */
    lua_settop(L, base);
  }
  if (tty) putchar('\n');
  return tty ? 0 : errors > 0;
}

/* ---- main ------------------------------------------------------------------------------------- */

/* The usage when the Lua library cannot give it (adaspa help prints the full text). */
static void usage(FILE *f) {
  fprintf(f, "usage: %s [FILE.lua [args] | -e CODE [args] | - | COMMAND [args]]; %s help lists the commands\n", progname,
          progname);
}

/* require("adaspa.cli").main(name, args...) returns an exit status. */
static int run_subcommand(lua_State *L, const char *name, char **argv, int argc, int first) {
  lua_getglobal(L, "require");
  lua_pushstring(L, "adaspa.cli");
  int st = docall(L, 1, 1);
  if (!st) {
    lua_getfield(L, -1, "main");
    lua_remove(L, -2);
    lua_pushstring(L, name);
    st = docall(L, 1 + push_args(L, argv, argc, first), 1);
  }
  if (report(L, st)) return 1;
  return (int)lua_tointeger(L, -1);
}

static int pmain_status = 0;

/* OpenMP's threads spin at every barrier by default; on a machine whose cores are shared a run
 * then slows several times (the tiny recipe on this project's 2-core machine with the other core
 * busy: 55 s, against 16 s with passive waiting; on an idle machine both take 10.4 s). libgomp
 * reads the policy when it loads, before main, so when the user has not chosen one adaspa sets
 * passive waiting and starts itself again (the same process: exec keeps the pid). If the exec
 * fails the run goes on with the default policy. */
static void prefer_passive_waiting(char **argv) {
  if (getenv("OMP_WAIT_POLICY")) return;
  if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  execv("/proc/self/exe", argv);
  unsetenv("OMP_WAIT_POLICY");
}

int main(int argc, char **argv) {
  prefer_passive_waiting(argv);
  /* adaspa launch -n N ...: the launcher runs no Lua itself */
  if (argc > 1 && !strcmp(argv[1], "launch")) return ada_launch_main(argc, argv, 2);
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
  lua_pushcfunction(L, luaopen_interrupt);
  lua_setfield(L, -2, "adaspa.interrupt");
  lua_pop(L, 1);
  if (install_sigint(L) != 0)
    fprintf(stderr, "%s: cannot install the Ctrl-C handler (%s): Ctrl-C will end the process\n", progname, strerror(errno));
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
    set_arg(L, argv, argc, 1);
    pmain_status = run_subcommand(L, "help", argv, argc, 2);
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
      /* a subcommand */
      set_arg(L, argv, argc, 1);
      pmain_status = run_subcommand(L, a1, argv, argc, 2);
    }
  }
  if (pmain_status == 1 && interrupt_pending) pmain_status = 130; /* ended by an unhandled Ctrl-C */
  fflush(stdout);
  lua_close(L);
  return pmain_status;
}
