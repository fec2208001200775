-- GPU attention benchmark: the CUDA attention primitives at HunyuanVideo's shapes (24 heads x 128,
-- bf16, q, k, v as views of one [S, 3, H, D] QKV tensor), beside PyTorch's cuDNN SDPA and
-- FlexAttention timed in the same run by recipes/bench/attention_peers.py when python3 with torch
-- and a GPU is importable ($ADASPA_PYTHON overrides python3).
--   build/adaspa recipes/bench/attention.lua [quick] [nopeers] [nowalks] [540p] [720p]
-- (nowalks: without the sparse walks' alternations at the end: per shape, density and layout kind,
-- 9 rounds plus a warm-up of 5 block-64 and 3 block-128 launches; not yet timed on a GPU)
-- Times: median of 5 runs after a warm-up, adaspa.cuda.synchronize around each. TFLOP/s counts
-- 4 * Sq * Skv * D * H for the blocks computed (the kept blocks for sparse; Q K^T only, half of
-- that, for block_mass). Sparse layouts: row-wise top-k of random mass with the text sink forced
-- (text rows and text columns kept), as AdaSpa selects them; densities are the layouts' own.
-- Last, per shape: dense and the fused pass (mass blocks 64 and 128) timed in alternation, 9 rounds,
-- medians: the fused / dense ratio free of the clock drift between rows (`bench.alternate`); and on
-- sm90 block-64 sparse in one pass over the key blocks (variant "one") against two and three passes
-- ("split2", "split3") and one pass with the sweep ("sweep"), and block 128's longest-first order
-- against the head-major one ("head"), the same way, on these layouts, on head-adaptive ones (densities per head
-- from 0.25 d to 2.5 d, as AdaSpa's per-head sparsity spreads them) and on ones whose rows' lengths
-- spread (a top-k per head, as a recall target's rows), with one pass timed twice a round.
local bench = require "adaspa.bench"
local args = bench.args(arg)
if not adaspa.cuda.available() then
  print("attention bench: no GPU (" .. adaspa.cuda.reason() .. "); nothing to time")
  return
end

local H, D, TEXT = 24, 128, 256
local shapes = {}
if args["540p"] or not args["720p"] then shapes[#shapes + 1] = {name = "540p-129f", S = 67576} end
if args["720p"] or not args["540p"] then shapes[#shapes + 1] = {name = "720p-129f", S = 119056} end
if args.quick then shapes = {{name = "quick", S = 8192 + TEXT}} end
local densities = {0.1, 0.2, 0.4}
local reps = 5

local function time(fn) return bench.time(fn, reps) end


local function mean(t)
  local s = 0
  for _, x in ipairs(t) do s = s + x end
  return s / #t
end

-- Peers: {[shape name] = {[key] = {ms=, tflops=}}} from attention_peers.py, keys "sdpa_cudnn",
-- "flex_0.1", ...; "ours Nx" below is the peer's time over ours (above 1: we are faster).
local function peers(list)
  if args.nopeers then return {}, "peers skipped (nopeers)" end
  local py = os.getenv("ADASPA_PYTHON") or "python3"
  local script = (debug.getinfo(1, "S").source:match("^@(.*/)") or "recipes/bench/") .. "attention_peers.py"
  local spec = {}
  for _, s in ipairs(list) do spec[#spec + 1] = string.format("%s:%d", s.name, s.S) end
  local cmd = string.format("%s %s --heads %d --dim %d --text %d --densities %s --flex %s %s 2>&1", py, script, H, D, TEXT,
    table.concat(densities, ","), args.flex720 and "all" or list[1].name, table.concat(spec, " "))
  local f = io.popen(cmd)
  local out = f and f:read("*a") or ""
  if f then f:close() end
  local res, notes = {}, {}
  for line in out:gmatch("[^\n]+") do
    local shape, key, ms, tf = line:match("^PEER (%S+) (%S+) ([%d%.]+) ([%d%.]+)")
    if shape then
      res[shape] = res[shape] or {}
      res[shape][key] = {ms = tonumber(ms), tflops = tonumber(tf)}
    elseif line:match("^NOTE") or line:match("Error") then
      notes[#notes + 1] = line
    end
  end
  return res, table.concat(notes, "\n")
end

local rows = {}
local alternated = {} -- {shape=, ms = {dense, mass 64, mass 128}}
local walks = {} -- {shape=, b=, d=, kind=, flops=, ms = {...}}: the sparse walks in alternation, walk_variants[b]
-- the plan variants timed in alternation, per layout block; the first one again last
local walk_variants = {[64] = {"one", "split2", "split3", "sweep", "one"}, [128] = {"st3", "head", "st3"}}

local function row(shape, op, ms, flop, peer_key)
  rows[#rows + 1] = {shape = shape, op = op, ms = ms * 1e3, tflops = flop / ms / 1e12, peer_key = peer_key}
end

for _, sh in ipairs(shapes) do
  local S = sh.S
  local qkv = adaspa.randn({S, 3, H, D}, {seed = 1, dtype = "bf16", device = "cuda"})
  local q = qkv:narrow(2, 1, 1):reshape({S, H, D})
  local k = qkv:narrow(2, 2, 1):reshape({S, H, D})
  local v = qkv:narrow(2, 3, 1):reshape({S, H, D})
  local out = adaspa.empty({S, H, D}, {dtype = "bf16", device = "cuda"})
  local lse = adaspa.empty({H, S}, {device = "cuda"})
  local dense = 4.0 * S * S * D * H
  local plan = adaspa.attention_plan(q, k)
  row(sh.name, string.format("attention (dense, %s %s)", plan.family, plan.variant), time(function()
    adaspa.attention(q, k, v, {out = out, lse_out = lse})
  end), dense, "sdpa_cudnn")
  if plan.family ~= "sm80" then -- the previous family, for comparison
    row(sh.name, "attention (dense, sm80)", time(function()
      adaspa.attention(q, k, v, {out = out, lse_out = lse, family = "sm80"})
    end), dense, "sdpa_cudnn")
  end
  local masked = S - TEXT + 200 -- 200 of 256 text tokens valid, as a real prompt pads
  row(sh.name, "attention (dense, kv_valid -56)", time(function()
    adaspa.attention(q, k, v, {out = out, lse_out = lse, kv_valid = masked})
  end), 4.0 * S * masked * D * H, "sdpa_cudnn")
  local lse_c = lse:clone()
  local masses = {} -- [block] = the [H, S / block, S / block] mass, for the rows and the alternation
  local function fused(b)
    return function()
      adaspa.attention_with_mass(q, k, v, lse_c, {block = b, out = out, lse_out = lse, mass_out = masses[b]})
    end
  end
  for _, b in ipairs({64, 128}) do
    masses[b] = adaspa.empty({H, math.ceil(S / b), math.ceil(S / b)}, {device = "cuda"})
    row(sh.name, "block_mass b" .. b, time(function() adaspa.block_mass(q, k, lse_c, {block = b, out = masses[b]}) end),
      dense / 2)
    row(sh.name, "attention_with_mass b" .. b, time(fused(b)), dense, "sdpa_cudnn")
  end
  -- the fused pass against dense in alternation (the goal: fused <= 1.03x dense)
  alternated[#alternated + 1] = {shape = sh.name, ms = bench.alternate({
    function() adaspa.attention(q, k, v, {out = out, lse_out = lse}) end, fused(64), fused(128)}, 9)}
  masses[64]:free(); masses[128]:free()
  for _, b in ipairs({128, 64}) do
    for i, d in ipairs(densities) do
      local layout = bench.sink_layout(S, H, TEXT, b, d, 10 + i)
      local dens = mean(layout:density())
      adaspa.sparse_attention(q, k, v, layout, {out = out, lse_out = lse}) -- uploads the layout
      row(sh.name, string.format("sparse b%d d=%.1f (%.3f)", b, d, dens),
        time(function() adaspa.sparse_attention(q, k, v, layout, {out = out, lse_out = lse}) end), dense * dens,
        string.format(b == 128 and "flex_%.1f" or "flex64_%.1f", d))
      if not args.nowalks and adaspa.attention_plan(q, k, {mode = "sparse", layout = layout}).family == "sm90" then
        -- the walks in alternation: block 64 in one pass over the key blocks, two, three, one pass
        -- with the sweep, and one pass again (so one pass is timed after itself and after another
        -- kernel: the bench's rows read 10% under the alternation at 720p d0.1, sixteenth
        -- session); block 128 in the longest-first order, the head-major one, and longest-first
        -- again; on this layout, on a head-adaptive one
        local ha = {}
        for h = 1, H do ha[h] = math.min(1, d * (0.25 + 2.25 * (h - 1) / (H - 1))) end
        local lha = bench.sink_layout(S, H, TEXT, b, ha, 20 + i)
        -- and rows of spread lengths (a top-k per head: as a recall target's rows; kernels/testbed/
        -- l2_sim.lua predicts that these read more of a head's K/V from HBM at 720p)
        local lvar = bench.sink_layout(S, H, TEXT, b, d, 30 + i, "vary")
        local kinds = {[layout] = "uniform", [lha] = "head-adaptive", [lvar] = "rows vary"}
        for _, l in ipairs({layout, lha, lvar}) do
          local function walk(variant)
            return function() adaspa.sparse_attention(q, k, v, l, {out = out, lse_out = lse, variant = variant}) end
          end
          local fns = {}
          for j, var in ipairs(walk_variants[b]) do fns[j] = walk(var) end
          walks[#walks + 1] = {shape = sh.name, b = b, d = d, kind = kinds[l], flops = dense * mean(l:density()),
            ms = bench.alternate(fns, 9)}
        end
        lha:free(); lvar:free()
      end
      if plan.family ~= "sm80" and i == 2 then
        row(sh.name, string.format("sparse b%d d=%.1f (sm80)", b, d),
          time(function() adaspa.sparse_attention(q, k, v, layout, {out = out, lse_out = lse, family = "sm80"}) end),
          dense * dens, string.format(b == 128 and "flex_%.1f" or "flex64_%.1f", d))
      end
      layout:free()
    end
  end
  qkv:free(); out:free(); lse:free(); lse_c:free()
  collectgarbage()
  adaspa.cuda.empty_cache()
end

local peer, notes = peers(shapes)
local dev = adaspa.cuda.devices()[1]
print(string.format("adaspa %s attention on %s: %d heads x %d, bf16; median of %d runs", adaspa.version, dev.name, H, D,
  reps))
if notes ~= "" then print(notes) end
print(string.format("%-10s %-32s %9s %8s  %s", "shape", "op", "ms", "TFLOP/s", "peer (ms, TFLOP/s, ours vs peer)"))
for _, r in ipairs(rows) do
  local note = ""
  local p = r.peer_key and peer[r.shape] and peer[r.shape][r.peer_key]
  if p then note = string.format("%s %.2f ms %.0f TFLOP/s: ours %.2fx", r.peer_key, p.ms, p.tflops, p.ms / r.ms) end
  print(string.format("%-10s %-32s %9.2f %8.1f  %s", r.shape, r.op, r.ms, r.tflops, note))
end
print("fused pass against dense, timed in alternation (dense, mass 64, mass 128; 9 rounds, medians):")
for _, a in ipairs(alternated) do
  local d, f64, f128 = a.ms[1], a.ms[2], a.ms[3]
  print(string.format("%-10s dense %.2f ms, attention_with_mass b64 %.2f ms (%.3fx), b128 %.2f ms (%.3fx)", a.shape,
    d * 1e3, f64 * 1e3, f64 / d, f128 * 1e3, f128 / d))
end
if #walks > 0 then
  print("sparse walks in alternation (9 rounds, medians; ms, TFLOP/s, and the first variant's time over this one's):")
  print("block 64: one, two and three passes over the key blocks, one pass with the sweep, one pass again (after the sweep);")
  print("block 128: the longest-first order (st3), the head-major one (head), longest-first again")
  for _, w in ipairs(walks) do
    local cells = {}
    for j, var in ipairs(walk_variants[w.b]) do
      local t = w.ms[j]
      cells[j] = string.format("%s%s %.2f ms (%.0f, %.3fx)", var, j == #w.ms and " again" or "", t * 1e3, w.flops / t / 1e12,
        w.ms[1] / t)
    end
    print(string.format("%-10s b%d d=%.1f %-13s %s", w.shape, w.b, w.d, w.kind, table.concat(cells, ", ")))
  end
end
