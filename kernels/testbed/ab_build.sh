#!/usr/bin/env bash
# kernels/testbed/ab_build.sh [PATCH ...]: on the CPU machine (nvcc, no GPU), sm_90a-only kernel
# test beds of HEAD's kernels and of HEAD with each patch applied, xz-compressed into .gpu/bin as
# tb_head.xz and tb_<patch name>.xz, for `kernels/testbed/gpu_run.sh ab` on the GPU machine (one
# call validates and times them all in turn). Prints each build's fused / dense / block-64 SASS
# loop length when cuobjdump is found (CUOBJDUMP=path; the CUDA toolkit's or the PyPI wheel's).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
mkdir -p .gpu/bin
flags=(-std=c++17 -O3 -gencode arch=compute_90a,code=sm_90a -Ikernels -Iruntime '-DADA_VERSION="ab"')
cuobjdump=${CUOBJDUMP:-$(command -v cuobjdump || true)}
build() { # build NAME [PATCH]
  local name=$1 patch=${2:-} tmp
  tmp=$(mktemp -d)
  git archive HEAD kernels runtime | tar -x -C "$tmp"
  if [ -n "$patch" ]; then (cd "$tmp" && git apply "$root/$patch") || { echo "ab_build: $patch does not apply to HEAD" >&2; exit 1; }; fi
  (cd "$tmp" && nvcc "${flags[@]}" -c kernels/attention_sm80.cu -o a80.o && nvcc "${flags[@]}" -c kernels/attention_sm90.cu -o a90.o &&
    nvcc "${flags[@]}" -Xcompiler -fopenmp -o attn_testbed kernels/testbed/attn_testbed.cu a80.o a90.o && strip attn_testbed)
  xz -T0 -c "$tmp/attn_testbed" > ".gpu/bin/tb_$name.xz"
  if [ -n "$cuobjdump" ]; then
    (cd "$tmp" && nvcc "${flags[@]}" -cubin -o a90.cubin kernels/attention_sm90.cu && "$cuobjdump" -sass a90.cubin > a90.sass)
    for k in Li0ELi3ELb0ELi4 Li1ELi3ELb0 Li3ELi3ELb0 Li2ELi3ELb0; do
      loop=$(python3 kernels/testbed/sass_loop.py "$tmp/a90.sass" "bfloat16$k")
      printf '%s %s: %s\n' "$name" "$k" "$(grep -m1 'loop' <<< "$loop")"
    done
  fi
  rm -rf "$tmp"
  echo "ab_build: .gpu/bin/tb_$name.xz"
}
build head
for p in "$@"; do build "$(basename "$p" .patch)" "$p"; done
