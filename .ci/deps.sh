#!/usr/bin/env bash
# .ci/deps.sh check|install|line: the Debian packages adaspa needs to build and test.
#   check    exit 0 when what building and testing need is present (silent), 1 otherwise (names it)
#   check-fuzz  the same for make fuzz (clang, libFuzzer, OpenMP runtime) as well
#   install  apt-get install what is missing (as root), or print the exact command to run
#   line     print the apt-get line
set -u
PKGS="luajit libluajit-5.1-dev libpng-dev lua-busted pkg-config libedit-dev python3 ffmpeg clang libclang-rt-dev libomp-dev"
LINE="apt-get install -y $PKGS"
missing() {
  local m=""
  pkg-config --exists luajit 2>/dev/null || m="$m libluajit-5.1-dev"
  pkg-config --exists libpng 2>/dev/null || m="$m libpng-dev"
  pkg-config --exists libedit 2>/dev/null || [ -f /usr/include/editline/readline.h ] || [ -n "${PFX:-}" -a -f "${PFX:-/nonexistent}/usr/include/editline/readline.h" ] || m="$m libedit-dev"
  command -v pkg-config >/dev/null 2>&1 || m="$m pkg-config"
  [ -n "${BUSTED:-}" ] || [ -f /usr/share/lua/5.1/busted/runner.lua ] || m="$m lua-busted"
  command -v python3 >/dev/null 2>&1 || m="$m python3" # specs: recipes/tools/dump_trace.py --selftest
  { [ -x /usr/bin/ffmpeg ] || [ -x /usr/local/bin/ffmpeg ]; } && command -v ffprobe >/dev/null 2>&1 || m="$m ffmpeg" # video.mp4; its spec probes it
  [ "${1:-}" = fuzz ] || { echo "$m"; return; }
  # make fuzz: clang with libFuzzer and the sanitizer runtimes, and clang's OpenMP runtime
  command -v clang >/dev/null 2>&1 || m="$m clang"
  ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1 || m="$m libclang-rt-dev"
  ls /usr/lib/llvm-*/lib/libomp.so >/dev/null 2>&1 || m="$m libomp-dev"
  echo "$m"
}
case "${1:-check}" in
  check|check-fuzz)
    m=$(missing "${1#check-}")
    if [ -n "$m" ]; then echo "adaspa: missing Debian packages:$m" >&2; exit 1; fi ;;
  install)
    m=$(missing fuzz)
    [ -z "$m" ] && { echo "adaspa: all dependencies present"; exit 0; }
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq && apt-get install -y -qq $PKGS
    else
      echo "adaspa: missing:$m" >&2
      echo "adaspa: run as root:  $LINE" >&2
      exit 1
    fi ;;
  line) echo "$LINE" ;;
  *) echo "usage: $0 check|check-fuzz|install|line" >&2; exit 2 ;;
esac
