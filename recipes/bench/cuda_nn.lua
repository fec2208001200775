-- CUDA nn op benchmark at HunyuanVideo 720p-129f shapes (S = 119,056 tokens, hidden 3072, bf16).
--   build/adaspa recipes/bench/cuda_nn.lua
-- Median of wall-clock runs, each followed by cuda.synchronize(); TFLOP/s counts 2*S*in*out,
-- GB/s counts the bytes the op must move (inputs read once, outputs written once).
if not adaspa.cuda.available() then
  print("cuda_nn bench: no GPU (" .. adaspa.cuda.reason() .. "); nothing to time")
  return
end
local S, H = 119056, 3072
local o = {dtype = "bf16", device = "cuda"}
local bench = require "adaspa.bench"
local function time(fn, reps) return bench.time(fn, reps, 2) end
local rows = {}
local function row(op, shape, sec, metric)
  rows[#rows + 1] = string.format("| %-34s | %-28s | %8.3f | %s |", op, shape, sec * 1e3, metric)
  io.stderr:write(rows[#rows] .. "\n")
end
local function tf(sec, m, k, n) return string.format("%.0f TFLOP/s", 2 * m * k * n / sec / 1e12) end
local function gbs(sec, bytes) return string.format("%.0f GB/s", bytes / sec / 1e9) end

local x = adaspa.randn({S, H}, {seed = 1, dtype = "bf16", device = "cuda"})
for _, s in ipairs({{H, 9216, "QKV"}, {H, 12288, "MLP fc1"}, {H, 3072, "attn proj"}, {12288, H, "MLP fc2"}}) do
  local k, n = s[1], s[2]
  local xin = k == H and x or adaspa.randn({S, k}, {seed = 5, dtype = "bf16", device = "cuda"})
  local w = adaspa.randn({n, k}, {seed = 2, dtype = "bf16", device = "cuda"})
  local b = adaspa.randn({n}, {seed = 3, dtype = "bf16", device = "cuda"})
  local out = adaspa.empty({S, n}, o)
  local t_b = time(function() adaspa.linear(xin, w, b, {out = out}) end, 10)
  row("linear bf16 + bias (" .. s[3] .. ")", string.format("%dx%d -> %d", S, k, n), t_b, tf(t_b, S, k, n))
  local t_nb = time(function() adaspa.linear(xin, w, nil, {out = out}) end, 10)
  row("linear bf16, no bias (" .. s[3] .. ")", string.format("%dx%d -> %d", S, k, n), t_nb, tf(t_nb, S, k, n))
  out:free(); w:free(); b:free()
  if xin ~= x then xin:free() end
end
do -- the single blocks' linear2, second half: w narrowed out of [3072, 15360], no bias
  local a = adaspa.randn({S, 12288}, {seed = 14, dtype = "bf16", device = "cuda"})
  local w2 = adaspa.randn({H, 15360}, {seed = 15, dtype = "bf16", device = "cuda"})
  local wn = w2:narrow(2, 3073, 12288)
  local out = adaspa.empty({S, H}, o)
  local t = time(function() adaspa.linear(a, wn, nil, {out = out}) end, 10)
  row("linear bf16, narrowed w, no bias", string.format("%dx%d -> %d", S, 12288, H), t, tf(t, S, 12288, H))
  a:free(); w2:free(); out:free()
end
do -- f32 (SIMT, no TF32) for reference
  local xf = adaspa.randn({8192, H}, {seed = 4, device = "cuda"})
  local wf = adaspa.randn({H, H}, {seed = 6, device = "cuda"})
  local t = time(function() adaspa.linear(xf, wf) end, 5)
  row("linear f32 (no TF32)", string.format("%dx%d -> %d", 8192, H, H), t, tf(t, 8192, H, H))
  xf:free(); wf:free()
end

local B = S * H * 2 -- bytes of one [S, 3072] bf16 tensor
local sh, sc = adaspa.randn({H}, {seed = 7, dtype = "bf16", device = "cuda"}), adaspa.randn({H}, {seed = 8, dtype = "bf16", device = "cuda"})
local y = adaspa.empty({S, H}, o)
local t_ln = time(function() adaspa.layernorm(x, 1e-6, nil, nil, {out = y}) end, 20)
row("layernorm (no affine)", "[119056, 3072] bf16", t_ln, gbs(t_ln, 2 * B))
local t_mod = time(function() adaspa.modulate(y, sh, sc, {out = y}) end, 20)
row("modulate in place", "[119056, 3072] bf16", t_mod, gbs(t_mod, 2 * B))
local t_pair = time(function()
  adaspa.layernorm(x, 1e-6, nil, nil, {out = y})
  adaspa.modulate(y, sh, sc, {out = y})
end, 20)
row("layernorm + modulate (2 ops)", "[119056, 3072] bf16", t_pair,
  gbs(t_pair, 4 * B) .. " moved; " .. gbs(t_pair, 2 * B) .. " of x->out")
if adaspa.layernorm_modulate then
  local t_f = time(function() adaspa.layernorm_modulate(x, 1e-6, nil, nil, sh, sc, {out = y}) end, 20)
  row("layernorm_modulate (fused)", "[119056, 3072] bf16", t_f, gbs(t_f, 2 * B))
end
local lw, lb = adaspa.randn({H}, {seed = 9, dtype = "bf16", device = "cuda"}), adaspa.randn({H}, {seed = 10, dtype = "bf16", device = "cuda"})
for _, c in ipairs({2048, 4096}) do -- other row widths, same bytes (other kernel shapes)
  local xr = adaspa.randn({math.floor(S * H / c), c}, {seed = 16, dtype = "bf16", device = "cuda"})
  local yr = adaspa.empty(xr:shape(), o)
  local t = time(function() adaspa.layernorm(xr, 1e-6, nil, nil, {out = yr}) end, 20)
  row("layernorm (no affine)", string.format("[%d, %d] bf16", math.floor(S * H / c), c), t, gbs(t, 2 * B))
  xr:free(); yr:free()
end
local t_lnw = time(function() adaspa.layernorm(x, 1e-6, lw, lb, {out = y}) end, 20)
row("layernorm (weight, bias)", "[119056, 3072] bf16", t_lnw, gbs(t_lnw, 2 * B))
local t_ga = time(function() adaspa.gated_add(y, sh, x, {out = y}) end, 20)
row("gated_add in place", "[119056, 3072] bf16", t_ga, gbs(t_ga, 3 * B))
local t_add = time(function() adaspa.add(y, x, {out = y}) end, 20)
row("add in place", "[119056, 3072] bf16", t_add, gbs(t_add, 3 * B))
y:free()

local big = adaspa.randn({S, 12288}, {seed = 11, dtype = "bf16", device = "cuda"})
local t_gelu = time(function() adaspa.gelu_tanh(big, {out = big}) end, 10)
row("gelu_tanh in place", "[119056, 12288] bf16", t_gelu, gbs(t_gelu, 8 * B))
local t_silu = time(function() adaspa.silu(big, {out = big}) end, 10)
row("silu in place", "[119056, 12288] bf16", t_silu, gbs(t_silu, 8 * B))
big:free()

-- q of the QKV projection [S, 3, 24, 128]: rmsnorm (strided rows) then rope3d in place, and the fused op
local qkv = adaspa.randn({S, 3, 24, 128}, {seed = 12, dtype = "bf16", device = "cuda"})
local q = qkv:narrow(2, 1, 1):reshape({S, 24, 128})
local qw = adaspa.randn({128}, {seed = 13, dtype = "bf16", device = "cuda"})
local qo = adaspa.empty({S, 24, 128}, o)
local t_rms = time(function() adaspa.rmsnorm(q, qw, 1e-6, {out = qo}) end, 20)
row("rmsnorm of the q view (D=128)", "[119056, 24, 128] bf16", t_rms, gbs(t_rms, 2 * B))
local t_rope = time(function() adaspa.rope3d(qo, {33, 45, 80}, {16, 56, 56}, 256, 118800, {out = qo}) end, 20)
row("rope3d in place", "[119056, 24, 128] bf16", t_rope, gbs(t_rope, 2 * B))
local t_rope2 = time(function() adaspa.rope3d(q, {33, 45, 80}, {16, 56, 56}, 256, 118800, {out = qo}) end, 20)
row("rope3d of the q view", "[119056, 24, 128] bf16", t_rope2, gbs(t_rope2, 2 * B))
local t_fused = time(function()
  adaspa.rmsnorm_rope3d(q, qw, 1e-6, {33, 45, 80}, {16, 56, 56}, 256, 118800, {out = qo})
end, 20)
row("rmsnorm_rope3d of the q view (fused)", "[119056, 24, 128] bf16", t_fused, gbs(t_fused, 2 * B))
print(string.format("rmsnorm + rope3d: %.3f ms as two ops, %.3f ms fused (%.2fx)", t_rms + t_rope, t_fused,
  (t_rms + t_rope) / t_fused))

print("| op | shape | ms | rate |")
print("| --- | --- | --- | --- |")
for _, r in ipairs(rows) do print(r) end
