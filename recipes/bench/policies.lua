-- Planning cost of the policies that build layouts from q, k, v (window, spatial_temporal,
-- estimate) at HunyuanVideo's full size, against one dense attention pass and AdaSpa's search
-- (the fused dense + block-mass pass and its selection).
--   build/adaspa recipes/bench/policies.lua [quick] [frames=N]
-- q, k, v: random bf16 [S, 24, 128] views of one [S, 3, H, D] tensor (the planning cost does not
-- depend on the values; the densities do, so they are printed only as a check). exact_recall is
-- off (it is measurement, two more dense passes). Times: median of 3 after a warm-up, with a
-- device synchronize around each.
local policies = require "adaspa.policy"
local attention = require "adaspa.attention"

local bench = require "adaspa.bench"
local args = bench.args(arg)
local device = adaspa.cuda.available() and "cuda" or "cpu"
if device == "cpu" and not args.quick then
  print("policies bench: no GPU (" .. adaspa.cuda.reason() .. "); `quick` runs a small size on the CPU")
  return
end
local H, D, TEXT = 24, 128, 256
local frames = args.frames or (args.quick and 5 or 129)
local grid = args.quick and {2, 8, 16} or {(frames - 1) / 4 + 1, 45, 80}
if args.quick then H = 2 end
local n_img = grid[1] * grid[2] * grid[3]
local S = n_img + TEXT
local function median3(fn) return bench.time(fn, 3) end

local qkv = adaspa.randn({S, 3, H, D}, {seed = 1, dtype = device == "cpu" and "f32" or "bf16", device = device})
local q = qkv:narrow(2, 1, 1):reshape({S, H, D})
local k = qkv:narrow(2, 2, 1):reshape({S, H, D})
local v = qkv:narrow(2, 3, 1):reshape({S, H, D})
local info = {layer = 1, kind = "double", index = 0, kv_valid = S, n_img = n_img, n_txt = TEXT, grid = grid}
print(string.format("policies bench on %s: grid %dx%dx%d + %d text = %d tokens, %d heads x %d", device, grid[1], grid[2],
  grid[3], TEXT, S, H, D))

local t_dense = median3(function() adaspa.attention(q, k, v) end)
local _, lse = adaspa.attention(q, k, v)
local ap = policies.new("adaspa", {sparsity = 0.8}, 50)
local t_search = median3(function()
  local _, l2, mass = adaspa.attention_with_mass(q, k, v, lse, {block = 64})
  local layout = ap:select(mass, 1, info)
  layout:recall(mass)
  layout:free(); mass:free(); l2:free()
end)
local rows = {{"dense attention", t_dense, nil}, {"adaspa search (fused pass + selection)", t_search, nil}}
for _, name in ipairs({"window", "spatial_temporal", "estimate"}) do
  local p = policies.new(name, {exact_recall = false, warmup = 0}, 50)
  local ctx = attention.new(p, {layers = 1})
  ctx:begin_step(0)
  local dens
  local t = median3(function()
    -- window plans once per run (its layout is memoized per shape): time that build.
    -- spatial_temporal profiles every step and reuses the layout of a repeated per-head choice:
    -- time a step whose choice is new (profile + layout). Shape-only patterns stay memoized.
    if name == "window" then p.memo = {} end
    if name == "spatial_temporal" then p.layouts = {} end
    local layout = p:plan(q, k, v, info, ctx)
    local d = layout:density()
    local m = 0
    for h = 1, #d do m = m + d[h] / #d end
    dens = m
  end)
  rows[#rows + 1] = {name .. " plan", t, dens}
end
print("")
print("| step | ms | vs dense pass | density |")
print("| --- | --- | --- | --- |")
for _, r in ipairs(rows) do
  print(string.format("| %s | %.1f | %.3f | %s |", r[1], r[2] * 1e3, r[2] / t_dense, r[3] and string.format("%.3f", r[3]) or "-"))
end
