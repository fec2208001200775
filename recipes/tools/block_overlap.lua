-- Block 64 or 128? Measures, on an attention trace (lua/adaspa/trace.lua), what each block size
-- costs in quality and how much K/V traffic a 128-row query tile would save by serving two adjacent
-- 64-row query blocks (2i-1, 2i) from the union of their key-block lists.
--
--   build/adaspa recipes/tools/block_overlap.lua TRACE [sparsity=0.8,0.9] [steps=all] [layers=all]
--       [densities=0.1,0.2,0.3,0.5] [speed=] [quality=1] [device=auto|cpu|cuda] [dtype=auto|f32|bf16]
-- device auto: the GPU when this adaspa has one (a 720p trace needs it); dtype auto: f32 on the CPU,
-- as stored on a GPU. Layouts are read row by row on the host.
--
-- For every record (step, layer) the exact output, LSE and block mass (64 and 128) are computed
-- once; then:
-- 1. union: the AdaSpa policy (lua/adaspa/policy/adaspa.lua, its defaults: head-adaptive tiers,
--    text sink rows and columns, diagonal) selects a block-64 layout from this step's exact mass at
--    each sparsity. Per head, for each pair of adjacent query-block rows A = row(2i-1),
--    B = row(2i) (an odd last row pairs with nothing): r = |A u B| / (|A| + |B|), the K/V blocks
--    one 128-row tile streams for both halves against two 64-row tiles (0.5: identical lists,
--    1: disjoint). Reported as the mean of r weighted by |A| + |B| (= the traffic ratio), over all
--    pairs and over image pairs (neither row a forced text row, which keeps every block).
-- 2. quality (quality=1): the same policy at block 64 and 128 on this step's exact mass (an oracle
--    search, no layout reuse): block density, FLOP share (computed query x key pairs over
--    all rows x valid keys, so partial blocks count by their tokens), recall of the exact mass,
--    relative L2 error of sparse attention against dense (valid rows), and K/V traffic per 128
--    query rows (keys streamed / valid keys) for block 128, block 64 in 64-row tiles, and block
--    64 served by 128-row tiles over the union.
-- 3. equal budget (quality=1): plain row-wise top-k (no forced blocks), k = round(d * nkb128)
--    blocks of 128 or 2k blocks of 64 per row for each density d (the same keys per row): the
--    paper's comparison of what one budget of FLOPs keeps. speed=f1,f2 (block-64 kernel throughput
--    relative to block 128, e.g. 0.64) adds block 64 at round(2k x f) blocks: the same time.
-- Prints the tables; the numbers are means over records (and heads) unless said.
local adaspa = require "adaspa"
local trace = require "adaspa.trace"
local policy_mod = require "adaspa.policy.adaspa"
local quality = require "adaspa.quality"

local path = arg and arg[1]
if not path or path:match("=") then
  error("block_overlap: usage: block_overlap.lua TRACE [sparsity=0.8,0.9] [steps=..] [layers=..] [densities=..] [quality=1]", 0)
end
local opt = {sparsity = "0.8,0.9", steps = "all", layers = "all", densities = "0.1,0.2,0.3,0.5", speed = "", quality = "1",
  device = "auto", dtype = "auto"}
for i = 2, #arg do
  local k, v = arg[i]:match("^([%w_]+)=(.*)$")
  if not k or opt[k] == nil then
    error(string.format("block_overlap: unknown argument %q (sparsity=, steps=, layers=, densities=, speed=, quality=, device=, dtype=)", arg[i]), 0)
  end
  opt[k] = v
end
local function numbers(s, what, lo, hi)
  local t = {}
  for x in s:gmatch("[^,%s]+") do
    local n = tonumber(x)
    if not n or n < lo or n > hi then
      error(string.format("block_overlap: %s: %q is not a number in [%g, %g]", what, x, lo, hi), 0)
    end
    t[#t + 1] = n
  end
  if #t == 0 then error(string.format("block_overlap: %s: empty list", what), 0) end
  return t
end
local sparsities = numbers(opt.sparsity, "sparsity", 0, 0.999)
local densities = numbers(opt.densities, "densities", 0.001, 1)
-- equal-budget variants: block 128 with k blocks, block 64 with round(2k x f) blocks per row
local variants = {{B = 128, f = 1}, {B = 64, f = 1}}
if opt.speed ~= "" then
  for _, f in ipairs(numbers(opt.speed, "speed", 0.01, 4)) do variants[#variants + 1] = {B = 64, f = f} end
end
local with_quality = opt.quality ~= "0"
if opt.dtype ~= "auto" and opt.dtype ~= "f32" and opt.dtype ~= "bf16" then
  error(string.format("block_overlap: dtype = %q: auto, f32 or bf16", opt.dtype), 0)
end
if opt.device ~= "auto" and opt.device ~= "cpu" and not opt.device:match("^cuda") then
  error(string.format("block_overlap: device = %q: auto, cpu or cuda[:N]", opt.device), 0)
end
local device = opt.device
if device == "auto" then device = adaspa.cuda.available() and "cuda" or "cpu" end
local dtype = opt.dtype
if dtype == "auto" then dtype = device == "cpu" and "f32" or nil end

local tr = trace.open(path)
local function pick(s, have, what)
  if s == "all" then return have end
  local want, out = {}, {}
  for _, x in ipairs(numbers(s, what, 0, math.huge)) do want[x] = true end
  for _, x in ipairs(have) do if want[x] then out[#out + 1] = x; want[x] = nil end end
  for x in pairs(want) do error(string.format("block_overlap: %s: %d is not in the trace (%s)", what, x, table.concat(have, ",")), 0) end
  return out
end
local steps = pick(opt.steps, tr.steps, "steps")
local layers = pick(opt.layers, tr.layers, "layers")

-- Head kinds, when the trace comes from adaspa's own synthetic weights (the plan is known).
local plan
do
  local preset = tr.model:match("^adaspa%-hunyuan%-(.-)%-synthetic$")
  if preset then
    local ok, cfg = pcall(function() return require("adaspa.models.hunyuan").config(preset, {}) end)
    if ok and cfg.heads == tr.heads then plan = require("adaspa.models.hunyuan_synth").plan(cfg) end
  end
end
local function kind_of(l, h)
  local p = plan and plan[l] and plan[l][h]
  return p and string.format("%s/r%d/%s", p.kind, p.reach, p.sink) or "-"
end

print(tr:describe())

-- per-head row statistics of a layout: keys streamed (valid tokens of the kept blocks) per query
-- block row, query x key pairs computed, and for block 64 the pair unions.
local function tokens_in(b, B, n) return math.max(0, math.min(b * B, n) - (b - 1) * B) end

local function layout_stats(L, S, kv, first_text_qb)
  local B, H, nqb = L:block(), L:heads(), L:nqb()
  local st = {}
  for h = 1, H do
    local keys = {}            -- per query block: valid keys streamed
    local rows = {}
    local pairs_ = 0
    for qb = 1, nqb do
      local r = L:row(h, qb)
      rows[qb] = r
      local n = 0
      for _, kb in ipairs(r) do n = n + tokens_in(kb, B, kv) end
      keys[qb] = n
      pairs_ = pairs_ + n * tokens_in(qb, B, S)
    end
    local s = {flop_share = pairs_ / (S * kv), keys = keys, rows = rows}
    if B == 64 then
      local u_all, w_all, u_img, w_img, uk, sk, n_img = 0, 0, 0, 0, 0, 0, 0
      for i = 1, nqb, 2 do
        local a, b = rows[i], rows[i + 1] or {}
        local seen, u, ukeys = {}, 0, 0
        for _, list in ipairs({a, b}) do
          for _, kb in ipairs(list) do
            if not seen[kb] then seen[kb] = true; u = u + 1; ukeys = ukeys + tokens_in(kb, B, kv) end
          end
        end
        local w = #a + #b
        u_all, w_all = u_all + u, w_all + w
        uk, sk = uk + ukeys, sk + keys[i] + (keys[i + 1] or 0)
        local img = i < first_text_qb and (i + 1 > nqb or i + 1 < first_text_qb)
        if img then u_img, w_img, n_img = u_img + u, w_img + w, n_img + (rows[i + 1] and 2 or 1) end
      end
      s.union_all = u_all / w_all
      s.union_img = w_img > 0 and u_img / w_img or nil
      s.union_keys = uk       -- keys streamed by 128-row tiles over the unions
      s.sep_keys = sk         -- keys streamed by 64-row tiles
      s.mean_row = n_img > 0 and w_img / n_img or nil
    end
    st[h] = s
  end
  return st
end

local function mean(t)
  local s = 0
  for _, x in ipairs(t) do s = s + x end
  return #t > 0 and s / #t or 0 / 0
end
local function minof(t)
  local m = math.huge
  for _, x in ipairs(t) do m = math.min(m, x) end
  return m
end
local function maxof(t)
  local m = -math.huge
  for _, x in ipairs(t) do m = math.max(m, x) end
  return m
end

local function rel_error(out, ref, rows)
  local x, y = out:narrow(1, 1, rows), ref:narrow(1, 1, rows)
  local e = quality.rel_l2(x, y, true)
  x:free(); y:free()
  return e
end

-- accumulators
local U = {}        -- U[s] = {per (layer, head) lists, all lists}
local Q = {}        -- Q[s][B] = {density, flop, recall, err, traffic}
local E = {}        -- E[d][B]
for _, s in ipairs(sparsities) do
  U[s] = {lh = {}, all = {}, img = {}, w_all = {}, w_img = {}}
  Q[s] = {}
  for _, B in ipairs({64, 128}) do Q[s][B] = {density = {}, flop = {}, recall = {}, err = {}, traffic = {}, traffic_u = {}} end
end
for _, d in ipairs(densities) do
  E[d] = {}
  for vi in ipairs(variants) do E[d][vi] = {flop = {}, recall = {}, err = {}} end
end

local t_start = adaspa.now()
for _, s_step in ipairs(steps) do
  for _, l in ipairs(layers) do
    local q, k, v, info = tr:load(s_step, l, {device = device, dtype = dtype})
    local S, H = q:shape()[1], q:shape()[2]
    local kv = info.kv_valid
    local ref, lse = adaspa.attention(q, k, v, {kv_valid = kv})
    local mass = {}
    for _, B in ipairs({64, 128}) do mass[B] = adaspa.block_mass(q, k, lse, {block = B, kv_valid = kv}) end
    for _, s in ipairs(sparsities) do
      for _, B in ipairs({64, 128}) do
        if B == 64 or with_quality then
          local pol = policy_mod.new({sparsity = s, block = B})
          local L = pol:select(mass[B], l, info)
          local first_text_qb = (info.n_txt or 0) > 0 and math.floor(info.n_img / B) + 1 or L:nqb() + 1
          local st = layout_stats(L, S, kv, first_text_qb)
          local n128 = math.ceil(S / 128)       -- 128-row query tiles
          for h = 1, H do
            if B == 64 then
              local u = U[s]
              local key = l .. ":" .. h
              u.lh[key] = u.lh[key] or {layer = l, head = h, all = {}, img = {}, row = {}}
              table.insert(u.lh[key].all, st[h].union_all)
              table.insert(u.all, st[h].union_all)
              if st[h].union_img then
                table.insert(u.lh[key].img, st[h].union_img)
                table.insert(u.img, st[h].union_img)
                table.insert(u.lh[key].row, st[h].mean_row)
              end
            end
            if with_quality then
              local qq = Q[s][B]
              table.insert(qq.flop, st[h].flop_share)
              if B == 128 then
                local n = 0
                for qb = 1, L:nqb() do n = n + st[h].keys[qb] end
                table.insert(qq.traffic, n / (n128 * kv))
              else
                table.insert(qq.traffic, st[h].sep_keys / (n128 * kv))
                table.insert(qq.traffic_u, st[h].union_keys / (n128 * kv))
              end
            end
          end
          if with_quality then
            local qq = Q[s][B]
            for _, x in ipairs(L:density()) do table.insert(qq.density, x) end
            for _, x in ipairs(L:recall(mass[B])) do table.insert(qq.recall, x) end
            local out, l2 = adaspa.sparse_attention(q, k, v, L, {kv_valid = kv})
            table.insert(qq.err, rel_error(out, ref, kv))
            out:free(); l2:free()
          end
          L:free()
        end
      end
    end
    if with_quality then
      for _, d in ipairs(densities) do
        for vi, var in ipairs(variants) do
          -- the same key budget at both sizes: k blocks of 128 or 2k blocks of 64 per row (x f)
          local B = var.B
          local nkb128 = mass[128]:shape()[3]
          local k128 = math.max(1, math.floor(d * nkb128 + 0.5))
          local kb = B == 128 and k128 or math.max(1, math.floor(2 * k128 * var.f + 0.5))
          local L = adaspa.layout.topk(mass[B], {density = (kb + 0.25) / mass[B]:shape()[3], row_wise = true, block = B})
          local st = layout_stats(L, S, kv, L:nqb() + 1)
          local e = E[d][vi]
          e.blocks = kb
          for h = 1, H do table.insert(e.flop, st[h].flop_share) end
          for _, x in ipairs(L:recall(mass[B])) do table.insert(e.recall, x) end
          local out, l2 = adaspa.sparse_attention(q, k, v, L, {kv_valid = kv})
          table.insert(e.err, rel_error(out, ref, kv))
          out:free(); l2:free(); L:free()
        end
      end
    end
    for _, B in ipairs({64, 128}) do mass[B]:free() end
    ref:free(); lse:free()
    if device ~= "cpu" then q:free(); k:free(); v:free() end
    io.stderr:write(string.format("block_overlap: step %d layer %d done (%.0f s)\n", s_step, l, adaspa.now() - t_start))
  end
end

-- 1. union table
print()
print("1. K/V traffic of a 128-row tile serving two adjacent 64-row query blocks, relative to two 64-row tiles:")
print("   r = |A u B| / (|A| + |B|) weighted by |A| + |B| (0.5: identical key lists, 1: disjoint); adaspa policy, block 64,")
print("   layouts from each step's exact mass; means over the replayed steps")
for _, s in ipairs(sparsities) do
  local u = U[s]
  print()
  print(string.format("sparsity %.2f", s))
  print(string.format("  %5s %4s %-22s %10s %10s %10s", "layer", "head", "kind/reach/sink", "blocks/row", "r image", "r all"))
  local keys = {}
  for key in pairs(u.lh) do keys[#keys + 1] = key end
  table.sort(keys, function(a, b)
    local x, y = u.lh[a], u.lh[b]
    if x.layer ~= y.layer then return x.layer < y.layer end
    return x.head < y.head
  end)
  for _, key in ipairs(keys) do
    local e = u.lh[key]
    print(string.format("  %5d %4d %-22s %10.1f %10.3f %10.3f", e.layer, e.head, kind_of(e.layer, e.head), mean(e.row),
      mean(e.img), mean(e.all)))
  end
  print(string.format("  %-33s %10s %10.3f %10.3f   (min image %.3f, max %.3f)", "mean over heads and records", "", mean(u.img),
    mean(u.all), minof(u.img), maxof(u.img)))
end

if with_quality then
  print()
  print("2. adaspa policy (head-adaptive tiers, text sink, diagonal) on each step's exact mass, block 64 vs 128:")
  print("   density: blocks kept; FLOPs: query x key pairs computed / dense; K/V per 128 rows: keys streamed per 128-row")
  print("   query tile / valid keys (block 64: 64-row tiles, and 128-row tiles over the unions)")
  print(string.format("  %8s %5s %8s %8s %8s %9s %9s %14s %14s", "sparsity", "block", "density", "FLOPs", "recall",
    "err mean", "err max", "K/V per 128", "K/V union"))
  for _, s in ipairs(sparsities) do
    for _, B in ipairs({64, 128}) do
      local qq = Q[s][B]
      print(string.format("  %8.2f %5d %8.3f %7.1f%% %8.3f %9.4f %9.4f %14.3f %14s", s, B, mean(qq.density), 100 * mean(qq.flop),
        mean(qq.recall), mean(qq.err), maxof(qq.err), mean(qq.traffic),
        B == 64 and string.format("%.3f", mean(qq.traffic_u)) or "-"))
    end
  end
  print()
  print("3. equal budget: row-wise top-k, no forced blocks; k = round(d x nkb128) blocks of 128 or 2k blocks of 64 per row")
  print("   (speed f: block 64 with round(2k x f) blocks, the budget a block-64 kernel at f x the block-128 throughput")
  print("   runs in the same time)")
  print(string.format("  %8s %5s %6s %7s %8s %8s %9s %9s", "density", "block", "speed", "blocks", "FLOPs", "recall", "err mean",
    "err max"))
  for _, d in ipairs(densities) do
    for vi, var in ipairs(variants) do
      local e = E[d][vi]
      print(string.format("  %8.2f %5d %6.2f %7d %7.1f%% %8.3f %9.4f %9.4f", d, var.B, var.f, e.blocks or 0, 100 * mean(e.flop),
        mean(e.recall), mean(e.err), maxof(e.err)))
    end
  end
end
print(string.format("\n(%d steps x %d layers x %d heads, %.0f s)", #steps, #layers, tr.heads, adaspa.now() - t_start))
