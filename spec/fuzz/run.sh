#!/usr/bin/env bash
# spec/fuzz/run.sh: the fuzz campaign of `make fuzz`. FUZZ_SECONDS (default 12) per harness:
#   json, safetensors, png,  libFuzzer (clang, ASan + UBSan), built by spec/fuzz/fuzz.mk into
#   layout (messages), cache build-fuzz/; -timeout 10 s per input (a hang), -rss_limit_mb 2048,
#                            -malloc_limit_mb 256, and the harness's own check of each input's
#                            heap peak against 4 x its size + a fixed bound (spec/fuzz/fuzz_common.h)
#   trace, recipe, tiny,     Lua mutators run inside $ADASPA_BIN (default build/adaspa)
#   index
# Corpora and crash inputs go to $FUZZ_OUT (default build-fuzz/runs/); FUZZ_SEED seeds the Lua
# mutators (default: random, printed). Exit status 1 when any harness found a crash or a hang.
set -u
cd "$(dirname "$0")/../.."
SECS=${FUZZ_SECONDS:-12}
BIN=${ADASPA_BIN:-build/adaspa}
OUT=${FUZZ_OUT:-build-fuzz/runs}
SEED=${FUZZ_SEED:-$((RANDOM * 32768 + RANDOM))}
make --no-print-directory -f spec/fuzz/fuzz.mk -j"$(nproc)" >/dev/null || { echo "fuzz: building the harnesses failed" >&2; exit 1; }
fail=0
summary=()
for h in json safetensors png layout cache; do
  dict=spec/fuzz/safetensors.dict
  [ "$h" = png ] && dict=spec/fuzz/png.dict
  [ "$h" = layout ] && dict=spec/fuzz/layout.dict
  [ "$h" = cache ] && dict=spec/fuzz/cache.dict
  mkdir -p "$OUT/$h/corpus" "$OUT/$h/crashes"
  log="$OUT/$h/log.txt"
  build-fuzz/${h}_fuzz -dict="$dict" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 \
    -max_len=8192 -print_final_stats=1 -artifact_prefix="$OUT/$h/crashes/" "$OUT/$h/corpus" "spec/fuzz/seeds/$h" \
    >"$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
  mem=$(sed -n 's/.*_fuzz: memory: .*largest heap peak of one input \([0-9]*\) bytes (input of \([0-9]*\) bytes); largest peak beyond 4x its input \([0-9]*\) bytes.*/heap peak of one input \1 B (its input \2 B), beyond 4x its input at most \3 B/p' "$log")
  crashes=$(ls "$OUT/$h/crashes" | grep -c '^crash-\|^leak-\|^oom-' || true)
  hangs=$(ls "$OUT/$h/crashes" | grep -c '^timeout-\|^slow-unit-' || true)
  line="$h: ${runs:-0} inputs, $crashes crashes, $hangs hangs, peak RSS ${rss:-?} MB (ASan), ${mem:-no memory report}"
  if [ "$rc" != 0 ]; then
    fail=1
    line="$line; FAILED (rc $rc): see $log and $OUT/$h/crashes/"
    grep -m3 -E "ERROR|SUMMARY|over 4 x" "$log" >&2
  fi
  summary+=("$line")
done
for l in trace recipe tiny index; do
  log="$OUT/$l.log"
  "$BIN" spec/fuzz/${l}_fuzz.lua "$SECS" "$SEED" >"$log" 2>&1
  rc=$?
  line=$(grep "^${l}_fuzz: [0-9]* inputs" "$log" || echo "$l: no report")
  if [ "$rc" != 0 ]; then
    fail=1
    line="$line; FAILED (rc $rc, seed $SEED): see $log"
    grep -m5 -v "^${l}_fuzz: [0-9]* inputs" "$log" >&2
  fi
  summary+=("$line")
done
echo "== fuzz: $SECS s per harness, Lua seed $SEED"
printf '  %s\n' "${summary[@]}"
exit $fail
