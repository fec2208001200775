-- CPU op benchmark: GFLOP/s of linear and of the attention primitives on this machine.
--   build/adaspa recipes/bench/cpu_ops.lua [quick]
-- Prints one table; with numpy importable by python3 (or by $ADASPA_PYTHON), also OpenBLAS's
-- float32 GEMM on the same shapes and thread count (the reference the CPU GEMM is measured
-- against; e.g. python3 -m venv /tmp/venv && /tmp/venv/bin/pip install numpy, then
-- ADASPA_PYTHON=/tmp/venv/bin/python build/adaspa recipes/bench/cpu_ops.lua).
local quick = arg and arg[1] == "quick"
local threads = adaspa.threads()

-- Runs fn once to warm up, then `reps` times; returns the median seconds.
local time = require("adaspa.bench").time

local rows = {}
local function row(op, shape, flop, sec, note)
  rows[#rows + 1] = {op, shape, string.format("%.2f", sec * 1e3), string.format("%.1f", flop / sec / 1e9), note or ""}
end

-- numpy (OpenBLAS) matmul GFLOP/s for x [n, k] . w^T [k, m], or nil without numpy
local function openblas(n, k, m, reps)
  local cmd = string.format([[env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=%d OMP_NUM_THREADS=%d %s -c '
import time, numpy as np
x = np.random.rand(%d, %d).astype(np.float32); w = np.random.rand(%d, %d).astype(np.float32)
x @ w.T; ts = []
for _ in range(%d):
    t = time.perf_counter(); x @ w.T; ts.append(time.perf_counter() - t)
ts.sort(); print(2.0 * %d * %d * %d / ts[len(ts) // 2] / 1e9)' 2>/dev/null]], threads, threads,
    os.getenv("ADASPA_PYTHON") or "python3", n, k, m, k, reps, n, k, m)
  local f = io.popen(cmd)
  local out = f and f:read("*a") or ""
  if f then f:close() end
  return tonumber(out)
end

local linear_sizes = quick and {{256, 512, 512}} or {{1024, 1024, 1024}, {4096, 3072, 3072}, {2048, 3072, 12288}}
for _, s in ipairs(linear_sizes) do
  local n, k, m = s[1], s[2], s[3]
  local x = adaspa.randn({n, k}, {seed = 1})
  local w = adaspa.randn({m, k}, {seed = 2})
  local b = adaspa.randn({m}, {seed = 3})
  local out = adaspa.empty({n, m})
  local reps = quick and 3 or 5
  local sec = time(function() adaspa.linear(x, w, b, {out = out}) end, reps)
  local gf = 2.0 * n * k * m
  local ob = openblas(n, k, m, reps)
  row("linear f32", string.format("%dx%d -> %d", n, k, m), gf, sec,
    ob and string.format("OpenBLAS %.1f GFLOP/s (ours %.2fx)", ob, gf / sec / 1e9 / ob) or "numpy/OpenBLAS not available")
end

local attn_sizes = quick and {{512, 2, 64}} or {{1024, 4, 128}, {4096, 4, 128}}
for _, s in ipairs(attn_sizes) do
  local S, H, D = s[1], s[2], s[3]
  local qkv = adaspa.randn({S, 3, H, D}, {seed = 4})
  local q = qkv:narrow(2, 1, 1):reshape({S, H, D})
  local k = qkv:narrow(2, 2, 1):reshape({S, H, D})
  local v = qkv:narrow(2, 3, 1):reshape({S, H, D})
  local shape = string.format("S=%d H=%d D=%d", S, H, D)
  local dense = 4.0 * S * S * D * H
  local reps = quick and 2 or 3
  local out, lse
  local sec = time(function() out, lse = adaspa.attention(q, k, v) end, reps)
  row("attention", shape, dense, sec)
  sec = time(function() adaspa.block_mass(q, k, lse, {block = 64}) end, reps)
  row("block_mass", shape, dense / 2, sec, "flop: q.k only")
  local mass
  sec = time(function() _, _, mass = adaspa.attention_with_mass(q, k, v, lse, {block = 64}) end, reps)
  row("attention_with_mass", shape, dense, sec)
  for _, d in ipairs({0.1, 0.2, 0.4}) do
    local layout = adaspa.layout.topk(mass, {density = d, row_wise = true})
    local dens = 0
    for _, x in ipairs(layout:density()) do dens = dens + x / H end
    sec = time(function() adaspa.sparse_attention(q, k, v, layout) end, reps)
    row(string.format("sparse_attention %.1f", d), shape, dense * dens, sec, "flop: kept blocks only")
  end
end

print(string.format("adaspa %s, CPU ops, %d threads, median of repeated runs", adaspa.version, threads))
print(string.format("%-22s %-20s %10s %10s  %s", "op", "shape", "ms", "GFLOP/s", "note"))
for _, r in ipairs(rows) do
  print(string.format("%-22s %-20s %10s %10s  %s", r[1], r[2], r[3], r[4], r[5]))
end
