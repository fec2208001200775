#!/usr/bin/env bash
# kernels/testbed/gpu_run.sh STAGE...: the GPU machine's one script (run from the repository root
# there, after `. .gpu/gpu-env.sh`): build, check, time. Logs go to $OUT (or ./gpu-logs).
#   build     make -j CUDA=1 and the kernel test bed
#   prebuilt  use binaries built on the CPU machine and carried in .gpu/bin (no build there; NAME.xz unpacked
#             to build/NAME: the tiny model's calls need only build/adaspa from .gpu/bin/adaspa.xz)
#   specs     the GPU-tagged specs (build/adaspa spec/busted.lua --tags=gpu)
#   sanitize  compute-sanitizer memcheck and racecheck over the test bed's validation cases
#   testbed   the kernel test bed: validate, then time every family and variant
#   bandwidth what L2 and HBM deliver to the SMs: streaming reads over 8 MB to 512 MB, and one head's
#             K/V tiles gathered as block 64 does (block 64's roofline; about 10 s)
#   ncu       Nsight Compute (clocks left alone) over the first attention kernel of each test-bed case
#             named in $NCU_CASES ('|' between names; default "720p sparse128 d0.1"), of the families in
#             $TESTBED_FAMS (default "sm90 st3 pp"): throughput, L2 / DRAM, warp stalls; reports in $OUT
#   stalls    Nsight Compute warp-stall reasons a issued instruction, instructions and time of the first
#             attention kernel of each test-bed case in $NCU_CASES (default "720p dense"), once per value of
#             ADA_SM90_SYNC in $STALL_SYNC (default "0 1": the dense warpgroup barrier off and on), families
#             $TESTBED_FAMS (default "sm90 st3 hint"); the tenth session's call, folded in here
#   power     SM clock and board power (nvidia-smi every 50 ms) while the test bed times $POWER_CASE
#             (default "720p dense"), once per ADA_SM90_SYNC value in $STALL_SYNC: medians over the busy samples
#   attention recipes/bench/attention.lua (540p and 720p, cuDNN SDPA and FlexAttention beside)
#   step      recipes/bench/step.lua steps for $MODEL (hunyuan: 720p-129f, PyTorch blocks beside;
#             wan: 14B 720p-81f, diffusers' Wan block beside when .whl/ carries its wheel) for each
#             of $BLOCKS (64)
#   ab        the test beds .gpu/bin/tb_*.xz (kernels/testbed/ab_build.sh: HEAD and patched kernels, built on
#             the CPU machine): each validated (`quick`), then each "families:case" of $AB_CASES ('|' between
#             them; default the fused pass, dense with its L2 priorities and block 64 at density 0.1, at
#             540p and 720p) timed with every test bed in turn, $AB_ROUNDS rounds (default 2): ms per build
#             and families
#   train     recipes/tools/tinyvideo/train.py --device cuda $TRAIN_ARGS --time-limit $TRAIN_LIMIT (issue 14):
#             resumes from the state parts in .train/ when they are there; leaves the export
#             (tiny.safetensors) when it finished, and the state in 15 MB parts (state.part.NN: a
#             device call returns files of 16 MiB at most) in $TRAIN_OUT (default $OUT): always when the
#             time limit stopped it, after a finished run only when it fits beside the export (a grown
#             DiT's state: 58 MiB with --weight-ema's f32 average does not, 42 MiB without it does; the
#             optimizer's moments are kept in bf16 since the twenty-first session); TRAIN_AE_ONLY=1: when
#             the finished run's state is too large, its autoencoder alone (train.py --ae-only-state) instead
#   decoder   recipes/tools/tinyvideo/decoder_fit.py --device cuda $DECODER_ARGS (issue 14): a new decoder fitted to
#             the frozen encoder of the state in .train/state.part.* (an --ae-only-state one will do), swapped into
#             $DECODER_EXPORT (default the committed export); leaves the export (tiny.safetensors, which the
#             caption stage then reads) and the state with the new decoder (state.part.NN) in $TRAIN_OUT
#             (default $OUT), decoder.log in $OUT
#   trainbench recipes/tools/tinyvideo/bench.py on cuda (issue 14): train.py's model step at batch
#             $TRAINBENCH_BATCH (128) eager and under torch.compile (train.py --compile on), and the clip
#             generator and encoder; about two minutes, most of it the compile
#   caption   the caption check of an export on the GPU machine's CPU cores (issue 14; minutes instead of the
#             CPU machine's half hour): recipes/tools/tinyvideo/evaluate.py caption, all 50 held-out prompts,
#             dense beside AdaSpa at recall 0.9 (the default run since the thirty-second session; with
#             $CAPTION_SPARSITY set, the tiers at that sparsity, e.g. 0.7, the default run before), at each seed of $CAPTION_SEEDS
#             (42 43), one adaspa process a core (--jobs $(nproc) --threads 1), on the CPU path
#             (model.device=cpu, f32, as the committed checks; that machine's CPU may round otherwise, so
#             check the committed export beside a new one); CAPTION_DEVICE=cuda: on the GPU instead (bf16,
#             5 runs at a time, about 100 s a seed on an H100; not beside the train stage, whose allocator
#             holds the GPU's memory; 42 of 44 prompts read the same as on the CPU path in the twenty-fifth
#             session); the exports are $CAPTION_WEIGHTS (spaces between
#             them), else the train stage's $TRAIN_OUT/tiny.safetensors when there is one, else the committed
#             one; tables in $OUT/caption_K_SEED/caption.md (K: the export's place in the list);
#             $CAPTION_ARGS: more evaluate.py options (e.g. "--guidance 3 --set sampler.guidance_interval={0,900}")
#             $CAPTION_JOBS: adaspa runs at a time (default: the cores on the CPU path, 5 on cuda; 10 fit an H100
#             with the tiny model)
#   pack      last: leaves under $OUT what a call can return (8 files): the logs in logs.tgz, and the train
#             stage's tiny.safetensors, state.part.NN and tiny.log; e.g. the tiny model's training call
#             (carry .gpu and .train): TRAIN_LIMIT=380 TRAIN_ARGS=... CAPTION_DEVICE=cuda CAPTION_JOBS=10
#             bash kernels/testbed/gpu_run.sh prebuilt train caption pack
set -uo pipefail
out=${OUT:-gpu-logs}
mkdir -p "$out"
rc=0
for stage in "$@"; do
  t0=$(date +%s)
  case $stage in
    prebuilt) mkdir -p build && for f in .gpu/bin/*; do # .xz ones unpacked (build/adaspa from .gpu/bin/adaspa.xz)
        case $f in *.xz) b=build/$(basename "$f" .xz); xz -dc "$f" > "$b" && chmod +x "$b" ;; *) cp "$f" build/ ;; esac
      done ;;
    build) { make -j"$(nproc)" CUDA=1 DEPS_CHECK=0 && make testbed DEPS_CHECK=0; } > "$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; } ;;
    specs) build/adaspa spec/busted.lua --tags=gpu ${SPECS:-} > "$out/specs.log" 2>&1; r=$?; grep -v "^$" "$out/specs.log" | grep -iv "^ok\b" | tail -25; [ $r = 0 ] || rc=1 ;;
    sanitize) # the test bed's validation cases when built, else the Hopper family's specs
      for tool in memcheck racecheck; do
        if [ -x build/attn_testbed ]; then set -- build/attn_testbed quick
        else set -- build/adaspa spec/busted.lua --tags=gpu spec/cuda_sm90_spec.lua; fi
        timeout ${SANITIZE_TIMEOUT:-240} compute-sanitizer --tool $tool --print-limit 20 "$@" > "$out/$tool.log" 2>&1
        echo "$tool ($1): exit $? :: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|failures|passed' "$out/$tool.log" | tr '\n' ' ')"
      done ;;
    testbed) build/attn_testbed > "$out/testbed.log" 2>&1 || rc=1; grep -v " ok$" "$out/testbed.log" ;;
    bandwidth) build/attn_testbed bandwidth 2>&1 | tee "$out/bandwidth.log" ;;
    ncu)
      IFS='|' read -ra ncases <<< "${NCU_CASES:-720p sparse128 d0.1}"
      for c in "${ncases[@]}"; do
        f="$out/ncu_$(echo "$c" | tr -c 'A-Za-z0-9.\n' '_').txt"
        TESTBED_FAMS=${TESTBED_FAMS:-sm90 st3 pp} timeout ${NCU_TIMEOUT:-150} ncu --clock-control none -k regex:attn_sm90 -c 1 \
          --section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section WarpStateStats \
          build/attn_testbed time "$c" > "$f" 2>&1
        echo "ncu $c: exit $?"
        grep -E "^ +(Duration|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|L2 Hit Rate|L1/TEX Hit Rate|Executed Ipc Active|Issue Slots Busy|Warp Cycles Per Issued Instruction)" "$f" | head -12
      done ;;
    stalls)
      IFS='|' read -ra ncases <<< "${NCU_CASES:-720p dense}"
      for c in "${ncases[@]}"; do for sy in ${STALL_SYNC:-0 1}; do
        f="$out/stalls_$(echo "$c" | tr -c 'A-Za-z0-9.\n' '_')_sync$sy.csv"
        ADA_SM90_SYNC=$sy TESTBED_FAMS=${TESTBED_FAMS:-sm90 st3 hint} timeout ${NCU_TIMEOUT:-150} ncu --clock-control none \
          -k regex:attn_sm90 -c 1 --csv --page raw --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,smsp__inst_executed.sum,gpu__time_duration.sum' \
          build/attn_testbed time "$c" > "$f" 2>&1
        python3 - "$f" "$c" "$sy" <<'PY'
import csv, sys
rows = list(csv.reader(l for l in open(sys.argv[1]) if l.startswith('"')))
if len(rows) < 3: sys.exit(print(sys.argv[2], "sync", sys.argv[3], ": no ncu data (see", sys.argv[1] + ")"))
d = dict(zip(rows[0], rows[2]))
top = sorted(((float(v.replace(",", "")), k.split("stalled_")[1].split("_per_issue")[0]) for k, v in d.items() if "stalled_" in k), reverse=True)[:6]
print("%s, ADA_SM90_SYNC=%s: %s ns, %s instructions; stalls a issued instruction: %s" % (sys.argv[2], sys.argv[3],
      d.get("gpu__time_duration.sum"), d.get("smsp__inst_executed.sum"), ", ".join("%s %.2f" % (k, v) for v, k in top)))
PY
      done; done ;;
    power)
      for sy in ${STALL_SYNC:-0 1}; do
        f="$out/power_sync$sy.csv"
        nvidia-smi --query-gpu=clocks.sm,power.draw --format=csv,noheader,nounits -lms 50 > "$f" 2>/dev/null & sp=$!
        ADA_SM90_SYNC=$sy TESTBED_FAMS=${TESTBED_FAMS:-sm90 st3 hint} build/attn_testbed time "${POWER_CASE:-720p dense}" > "$out/power_tb_sync$sy.log" 2>&1
        kill $sp; wait $sp 2>/dev/null
        python3 - "$f" "$sy" "$out/power_tb_sync$sy.log" <<'PY'
import sys
s = [tuple(float(x) for x in l.split(",")[:2]) for l in open(sys.argv[1]) if l.count(",") >= 1 and l.split(",")[0].strip().replace(".", "").isdigit()]
busy = [r for r in s if r[1] > 300]   # the samples while the kernel runs (as measured in the tenth session)
med = lambda xs: sorted(xs)[len(xs) // 2] if xs else float("nan")
tb = [l.strip().replace("| 0.0 ms 0 ", "") for l in open(sys.argv[3]) if l.startswith("| ") and " ms " in l]
print("ADA_SM90_SYNC=%s: %d samples; over 300 W: SM clock median %.0f MHz, power median %.0f W :: %s" % (
      sys.argv[2], len(s), med([r[0] for r in busy]), med([r[1] for r in busy]), " ".join(tb)))
PY
      done ;;
    ab)
      for f in .gpu/bin/tb_*.xz; do [ -e "$f" ] && xz -dkf "$f" && chmod +x "${f%.xz}"; done
      tbs=$(ls .gpu/bin/tb_* 2>/dev/null | grep -v '\.xz$') || { echo "ab: no .gpu/bin/tb_* (kernels/testbed/ab_build.sh)"; exit 2; }
      for tb in $tbs; do
        n=${tb##*/tb_}; "$tb" quick > "$out/ab_quick_$n.log" 2>&1; r=$?
        echo "$n: quick exit $r, $(grep -c ' ok$' "$out/ab_quick_$n.log") ok, $(grep -c FAIL "$out/ab_quick_$n.log") FAIL"; [ $r = 0 ] || rc=1
      done
      IFS='|' read -ra cases <<< "${AB_CASES:-sm90 st3:fused|sm90 st3 hint:p dense|sm90 st3:sparse64 d0.1}"
      for r in $(seq "${AB_ROUNDS:-2}"); do for c in "${cases[@]}"; do for tb in $tbs; do
        TESTBED_FAMS="${c%%:*}" "$tb" time "${c#*:}" 2>&1 | awk -F'|' -v b="${tb##*/tb_}" -v r="$r" -v fam="${c%%:*}" \
          '/^\| / { for (i = 3; i <= NF; i++) if ($i ~ / ms / && $i !~ /^ *0(\.0)? ms/) { sub(/^ +/, "", $2); sub(/ +$/, "", $2); print "round " r " " b " [" fam "]: " $2 ": " $i } }'
      done; done; done | tee "$out/ab.log" ;;
    attention) build/adaspa recipes/bench/attention.lua > "$out/attention.log" 2>&1 || rc=1; tail -40 "$out/attention.log" ;;
    step) # BLOCKS: the layout blocks to run the search and sparse steps with (peers with the first)
      peers=${STEP_PEERS:-}   # STEP_PEERS=nopeers skips the PyTorch blocks
      model=${MODEL:-hunyuan}
      if [ "$model" = wan ] && [ -z "$peers" ] && ls .whl/diffusers-*.whl > /dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
          && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
      fi
      for b in ${BLOCKS:-64}; do
        build/adaspa recipes/bench/step.lua model=$model steps block=$b $peers > "$out/step_${model}_$b.log" 2>&1 || rc=1
        grep -v "^  \|^step bench" "$out/step_${model}_$b.log" | tail -16; peers=nopeers
      done ;;
    train)
      tout=${TRAIN_OUT:-$out}; tdir=$(mktemp -d); resume=
      if ls .train/state.part.* > /dev/null 2>&1; then
        cat .train/state.part.* > "$tdir/tiny.state.pt" && cp .train/tiny.log "$tdir/" 2>/dev/null; resume=--resume
      fi
      (cd recipes/tools/tinyvideo && PYTHONUNBUFFERED=1 python3 train.py --device cuda --out "$tdir/tiny.safetensors" \
        $resume ${TRAIN_ARGS:-} --time-limit ${TRAIN_LIMIT:-540}) > "$out/train.log" 2>&1; r=$?
      # a finished run returns its export first; the state (a finished run saves it too: train on from it
      # with --resume --restart-schedule) comes back in 15 MB parts when it fits beside the export in what
      # a call returns (8 files, 64 MiB: a grown DiT's state with --weight-ema, 58 MiB, does not; then
      # the next session refits an encoder to the export instead: --refit-encoder EXPORT); a run the
      # time limit stopped returns the state alone (up to 60 MiB)
      if [ $r = 0 ]; then cp "$tdir/tiny.safetensors" "$tout/"; elif [ $r != 3 ]; then rc=1; fi
      if { [ $r = 3 ] || [ $r = 0 ]; } && [ -f "$tdir/tiny.state.pt" ]; then
        ssz=$(stat -c %s "$tdir/tiny.state.pt"); esz=$(stat -c %s "$tout/tiny.safetensors" 2>/dev/null || echo 0)
        if [ $r = 3 ] && [ "$ssz" -gt $((60 * 1048576)) ]; then
          echo "train: stopped by the time limit with a state of $((ssz / 1048576)) MiB, more than a call returns (64 MiB): this run's training is lost; give --dit-seconds more headroom under TRAIN_LIMIT" >&2; rc=1
        elif [ $r = 3 ] || [ $((ssz + esz)) -le $((52 * 1048576)) ]; then split -b 15M -d "$tdir/tiny.state.pt" "$tout/state.part."
        elif [ -n "${TRAIN_AE_ONLY:-}" ]; then   # the autoencoder alone, for --init-from EXPORT next call
          (cd recipes/tools/tinyvideo && python3 train.py --device cuda --out "$tdir/tiny.safetensors" --resume \
            --ae-only-state "$tdir/ae.state.pt") >> "$out/train.log" 2>&1 && split -b 15M -d "$tdir/ae.state.pt" "$tout/state.part." \
            && echo "train: the state ($((ssz / 1048576)) MiB) is not returned; its autoencoder alone is (state.part.*: --init-from EXPORT with it in .train/)" || rc=1
        else echo "train: the state ($((ssz / 1048576)) MiB) is not returned beside the export: train on from the export with --init-from and an --ae-only-state state (or --refit-encoder; TRAIN_AE_ONLY=1 returns it)"; fi
      fi
      cp "$tdir/tiny.log" "$tout/" 2>/dev/null; echo "train: exit $r"; grep -v "step " "$out/train.log" | tail -6
      grep "step " "$out/train.log" | tail -3 ;;
    decoder)
      tout=${TRAIN_OUT:-$out}; tdir=$(mktemp -d)
      ls .train/state.part.* > /dev/null 2>&1 || { echo "decoder: no .train/state.part.* (the autoencoder's state)"; exit 2; }
      st=$(realpath .train/state.part.00); ex=$(realpath "${DECODER_EXPORT:-models/tiny/tiny.safetensors}")
      (cd recipes/tools/tinyvideo && PYTHONUNBUFFERED=1 python3 decoder_fit.py --device cuda --state "$st" \
        --export "$ex" --out "$tdir/tiny.safetensors" \
        --out-state "$tdir/tiny.state.pt" ${DECODER_ARGS:-}) > "$out/decoder.log" 2>&1; r=$?
      if [ $r = 0 ]; then cp "$tdir/tiny.safetensors" "$tout/" && split -b 15M -d "$tdir/tiny.state.pt" "$tout/state.part."; else rc=1; fi
      echo "decoder: exit $r"; grep -v "^step " "$out/decoder.log" | tail -14; grep "^step " "$out/decoder.log" | tail -2 ;;
    trainbench)
      (cd recipes/tools/tinyvideo && PYTHONUNBUFFERED=1 python3 bench.py --device cuda --batch ${TRAINBENCH_BATCH:-128} \
        --model-batch ${TRAINBENCH_BATCH:-128} --compile both --repeat 3) > "$out/trainbench.log" 2>&1 || rc=1
      grep -v "Warn" "$out/trainbench.log" | tail -8 ;;
    caption)
      ws=${CAPTION_WEIGHTS:-}
      [ -z "$ws" ] && [ -f "${TRAIN_OUT:-$out}/tiny.safetensors" ] && ws=${TRAIN_OUT:-$out}/tiny.safetensors
      adaspa=$(realpath build/adaspa); k=0; dev=${CAPTION_DEVICE:-cpu}; jobs=$(nproc)
      pol="--recall 0.9"; [ -n "${CAPTION_SPARSITY:-}" ] && pol="--sparsity $CAPTION_SPARSITY"
      [ "$dev" = cuda ] && jobs=5; jobs=${CAPTION_JOBS:-$jobs}
      for w in ${ws:-models/tiny/tiny.safetensors}; do
        w=$(realpath "$w"); k=$((k + 1))
        for seed in ${CAPTION_SEEDS:-42 43}; do
          d=caption_${k}_$seed; [ "$dev" = cpu ] || d=${d}_$dev
          (cd recipes/tools/tinyvideo && PYTHONUNBUFFERED=1 ${PYTHON:-python3} evaluate.py caption --n ${CAPTION_N:-50} \
            $pol --seed $seed --jobs $jobs --threads 1 --set model.device=$dev ${CAPTION_ARGS:-} \
            --weights "$w" --adaspa "$adaspa" --out "$(realpath "$out")/$d") > "$out/$d.log" 2>&1 || rc=1
          echo "caption $d: seed $seed, $w:"; grep -E "^(agreement|per attribute|one object)" "$out/$d.log" || tail -5 "$out/$d.log"
        done
      done ;;
    pack) # what a call returns is 8 files at most, 16 MiB each: every log into logs.tgz (frames and videos left
      # out); the train stage's export (in 15 MB parts when larger: a widened DiT's is 32 MB; join them
      # with cat), state parts and tiny.log kept beside it; everything else under $out removed
      (cd "$out" && tar czf /tmp/logs.$$.tgz --exclude='*.png' --exclude='*.mp4' --exclude='*.safetensors' \
        --exclude='state.part.*' --exclude=tiny.log --exclude=logs.tgz . 2>/dev/null; mv /tmp/logs.$$.tgz logs.tgz
        find . -mindepth 1 -maxdepth 1 ! -name logs.tgz ! -name 'state.part.*' ! -name tiny.log ! -name tiny.safetensors \
          -exec rm -rf {} +
        if [ -f tiny.safetensors ] && [ "$(stat -c %s tiny.safetensors)" -gt $((16 * 1048576)) ]; then
          split -b 15M -d tiny.safetensors tiny.safetensors.part. && rm tiny.safetensors
        fi; ls -la) ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
  echo "== $stage: $(( $(date +%s) - t0 )) s"
done
exit $rc
