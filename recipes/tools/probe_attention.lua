-- Attention probe: does the model's attention look like a trained video DiT's?
--
--   build/adaspa recipes/tools/probe_attention.lua [preset=small] [heads=4] [frames=17]
--       [width=320] [height=256] [seed=1] [noise=1] [t1=900] [t2=700] [delta=0.2] [valid=12]
--       [density=0.2] [block=64] [baseline=1] [euler=0] [device=cpu] [dtype=f32] [c.NAME=value ...]
--
-- Builds HunyuanVideo with the synthetic weights (adaspa.models.hunyuan_synth) and, as the
-- baseline, with the same network's plain random weights (structure off), and runs Model:forward
-- three times with a ctx that measures every joint attention:
--   A: noise latent x (seed `noise`) at t1;  B: x + delta * other noise at t2 (a later step);
--   C: a different noise latent at t1 (another input).
-- Per layer and head it prints the head's kind (from synth.plan), recall of the row-wise top
-- `density` blocks (adaspa.layout.topk, then layout:recall), the share of the image queries'
-- mass on key blocks holding text, the Jaccard index of the A and B top-k masks (stability
-- across steps), the mean and max |lse_A - lse_B| over the valid rows, and the Jaccard of A and C
-- (input dependence), then summary lines. euler=N also runs N Euler steps (shift 7) from A's
-- noise and prints the velocity RMS of the first and last step (numerical sanity).
-- `heads` overrides the preset's head count (hidden = heads x head_dim); the small preset
-- defaults to 4 heads here (it has 2) to show more kinds of head. c.NAME=value overrides one of
-- synth.constants (for tuning the construction).
-- weights=EXPORT.safetensors [prompt="..."]: the tiny trained model instead (adaspa.models.tiny:
-- its sizes, its DiT, the prompt through its text encoder; default prompt: a held-out one); no
-- synthetic plan or random baseline then: the per-head table is the trained model's attention.
local hy = require "adaspa.models.hunyuan"
local synth = require "adaspa.models.hunyuan_synth"

-- ---- arguments ----------------------------------------------------------------------------------
local defaults = {preset = "small", seed = 1, noise = 1, t1 = 900, t2 = 700, delta = 0.2, valid = 12,
  density = 0.2, block = 64, baseline = 1, euler = 0, device = "cpu", dtype = "f32"}
local numeric = {heads = true, frames = true, width = true, height = true, seed = true, noise = true, t1 = true,
  t2 = true, delta = true, valid = true, density = true, block = true, baseline = true, euler = true}
local strings = {weights = true, prompt = true}
local opt, constants = {}, {}
for k, v in pairs(defaults) do opt[k] = v end
for _, a in ipairs(arg or {}) do
  local ck, cv = a:match("^c%.([%w_]+)=(.*)$")
  local k, v = a:match("^([%w_]+)=(.*)$")
  if ck then
    if synth.constants[ck] == nil or not tonumber(cv) then
      error(string.format("probe_attention: bad argument %q (c.NAME=number with NAME one of synth.constants)", a), 0)
    end
    constants[ck] = tonumber(cv)
  elseif not k or (defaults[k] == nil and not numeric[k] and not strings[k]) then
    error(string.format("probe_attention: bad argument %q (expected key=value with key one of: preset, heads, " ..
      "frames, width, height, seed, noise, t1, t2, delta, valid, density, block, baseline, euler, device, dtype, weights, prompt)", a), 0)
  elseif numeric[k] then
    local n = tonumber(v)
    if not n then error(string.format("probe_attention: %s must be a number, got %q", k, v), 0) end
    opt[k] = n
  else
    opt[k] = v
  end
end

local tinym, cfg, video
if opt.weights then
  tinym = require("adaspa.models.tiny").load(opt.weights, {device = opt.device, dtype = opt.dtype})
  local v = tinym.cfg.video
  video = {frames = opt.frames or v.frames, width = opt.width or v.width, height = opt.height or v.height}
  cfg = tinym.cfg
  cfg.video = video
  opt.baseline = 0
else
  local base = hy.presets[opt.preset]
  if not base then hy.config(opt.preset) end   -- raises the "unknown preset" error
  local heads = opt.heads or (opt.preset == "small" and 4 or base.heads)
  video = {frames = opt.frames or base.video.frames, width = opt.width or base.video.width,
    height = opt.height or base.video.height}
  cfg = hy.config(opt.preset, {heads = heads, hidden = heads * base.head_dim, video = video})
end
local grid, lat = hy.grid(cfg.video)
for i, g in ipairs(grid) do
  if g % 1 ~= 0 then
    error(string.format("probe_attention: video %dx%dx%d gives a fractional token grid (axis %d = %g); frames " ..
      "must be 4n+1, width and height multiples of 16", video.width, video.height, video.frames, i, g), 0)
  end
end
local n_img = grid[1] * grid[2] * grid[3]
local L = cfg.text_len
local tiny_text
if tinym then
  tiny_text = tinym.text:encode(opt.prompt or
    "a small green triangle moving up over a plain magenta background as the camera pans left")
  opt.valid = tiny_text.valid
end
local valid = math.max(1, math.min(L, opt.valid))
local kv_valid = n_img + valid
local B = opt.block
local nkb = math.ceil((n_img + L) / B)
local first_text_kb = math.floor(n_img / B) + 1          -- key blocks from here on hold text keys
local n_img_qb = math.floor(n_img / B)                    -- query blocks of image rows only
local o = {device = opt.device, dtype = opt.dtype}

print(string.format("probe_attention: %s, hidden %d = %d heads x %d, layers %d double + %d single",
  tinym and ("the tiny model " .. opt.weights) or ("preset " .. opt.preset), cfg.hidden, cfg.heads, cfg.head_dim,
  cfg.layers.double, cfg.layers.single))
if tinym then print(string.format("prompt %q (%d words)", opt.prompt or "(a held-out one)", valid)) end
print(string.format("video %dx%dx%d -> latent [%s] -> grid %dx%dx%d = %d image + %d text tokens (%d valid); " ..
  "%d key blocks of %d; top %.0f%% = %d blocks per row", video.width, video.height, video.frames, table.concat(lat, ", "),
  grid[1], grid[2], grid[3], n_img, L, valid, nkb, B, 100 * opt.density, math.floor(opt.density * nkb + 0.5)))
print(string.format("runs: A = noise %d at t=%g; B = A + %g x other noise at t=%g; C = noise %d at t=%g",
  opt.noise, opt.t1, opt.delta, opt.t2, opt.noise + 1000, opt.t1))

-- ---- inputs -------------------------------------------------------------------------------------
local text = tiny_text or {
  states = adaspa.randn({L, cfg.text_dim}, {seed = 77, dtype = o.dtype, device = o.device}),
  pooled = adaspa.randn({1, cfg.pooled_dim}, {seed = 78, dtype = o.dtype, device = o.device}),
  valid = valid,
}
local xA = adaspa.randn(lat, {seed = opt.noise, dtype = o.dtype, device = o.device})
local xB = adaspa.add(xA, adaspa.scale(adaspa.randn(lat, {seed = opt.noise + 500, dtype = o.dtype, device = o.device}),
  opt.delta))
local xC = adaspa.randn(lat, {seed = opt.noise + 1000, dtype = o.dtype, device = o.device})

-- ---- measurement --------------------------------------------------------------------------------
-- One forward pass; returns per layer {mass [H, nqb, nkb] (cpu f32), lse [H, S] (cpu f32)}.
local function measure(model, x, t)
  local rec = {}
  local ctx = {attention = function(_, q, k, v, info)
    local out, lse = adaspa.attention(q, k, v, {kv_valid = info.kv_valid})
    local mass = adaspa.block_mass(q, k, lse, {block = B, kv_valid = info.kv_valid})
    rec[info.layer] = {mass = mass:to("cpu"):to("f32"), lse = lse:to("cpu"):to("f32"), kind = info.kind,
      index = info.index}
    return out
  end}
  local t0 = adaspa.now()
  local vel = model:forward(x, t, text, 6.0, ctx)
  return rec, adaspa.now() - t0, vel:norm() / math.sqrt(vel:numel())
end

-- Per head Jaccard index of two u8 masks [H, nqb, nkb] given as tables.
local function jaccard(ma, mb)
  local out = {}
  for h = 1, #ma do
    local inter, union = 0, 0
    for qb = 1, #ma[h] do
      for kb = 1, #ma[h][qb] do
        local a, b = ma[h][qb][kb] ~= 0, mb[h][qb][kb] ~= 0
        if a and b then inter = inter + 1 end
        if a or b then union = union + 1 end
      end
    end
    out[h] = union > 0 and inter / union or 1
  end
  return out
end

-- Per head: mean over image query blocks of the mass on key blocks holding text.
local function text_share(mass)
  local m = mass:totable()
  local out = {}
  for h = 1, #m do
    local s = 0
    for qb = 1, n_img_qb do
      for kb = first_text_kb, nkb do s = s + m[h][qb][kb] end
    end
    out[h] = s / math.max(n_img_qb, 1)
  end
  return out
end

-- Per head mean and max |a - b| over the first kv_valid rows of two lse [H, S].
local function lse_diff(a, b)
  local d = adaspa.add(a:narrow(2, 1, kv_valid), adaspa.scale(b:narrow(2, 1, kv_valid), -1)):totable()
  local mean, mx = {}, {}
  for h = 1, #d do
    local s, m = 0, 0
    for _, x in ipairs(d[h]) do
      local ax = math.abs(x)
      s = s + ax
      if ax > m then m = ax end
    end
    mean[h], mx[h] = s / #d[h], m
  end
  return mean, mx
end

local function stats(xs)
  local s, mn, mx = 0, math.huge, -math.huge
  local sorted = {}
  for i, x in ipairs(xs) do s = s + x; mn = math.min(mn, x); mx = math.max(mx, x); sorted[i] = x end
  table.sort(sorted)
  local n = #sorted
  local med = n % 2 == 1 and sorted[(n + 1) / 2] or (sorted[n / 2] + sorted[n / 2 + 1]) / 2
  return {mean = s / n, min = mn, max = mx, median = med}
end

local plan = not tinym and synth.plan(cfg) or nil

local function probe(label, weights, with_plan)
  local model = tinym and tinym.dit or hy.new(cfg, weights)
  local rA, tA, vA = measure(model, xA, opt.t1)
  local rB = measure(model, xB, opt.t2)
  local rC = measure(model, xC, opt.t1)
  print(string.format("\n== %s  (one forward %.2f s, velocity RMS %.3f)", label, tA, vA))
  print("layer block   head kind     reach sink    recall@" .. opt.density .. "  text   J(steps)  lse|d| mean/max  J(inputs)")
  local all = {recall = {}, text = {}, jstep = {}, jin = {}, lse = {}, sink_text = {}}
  for l = 1, #rA do
    local a, b, c = rA[l], rB[l], rC[l]
    local la, lb, lc = adaspa.layout.topk(a.mass, {density = opt.density, block = B}),
      adaspa.layout.topk(b.mass, {density = opt.density, block = B}),
      adaspa.layout.topk(c.mass, {density = opt.density, block = B})
    local rec = la:recall(a.mass)
    local ma = la:to_mask():totable()
    local js = jaccard(ma, lb:to_mask():totable())
    local ji = jaccard(ma, lc:to_mask():totable())
    local ts = text_share(a.mass)
    local dmean, dmax = lse_diff(a.lse, b.lse)
    for h = 1, #rec do
      local hp = with_plan and plan[l][h]
      print(string.format("%5d %-7s %4d %-9s %4s  %-7s %9.3f %7.3f %9.3f %8.3f / %-7.3f %8.3f", l,
        a.kind .. "." .. a.index, h, hp and hp.kind or (tinym and "trained" or "random"), hp and tostring(hp.reach) or "-", hp and hp.sink or "-",
        rec[h], ts[h], js[h], dmean[h], dmax[h], ji[h]))
      table.insert(all.recall, rec[h]); table.insert(all.text, ts[h]); table.insert(all.jstep, js[h])
      table.insert(all.jin, ji[h]); table.insert(all.lse, dmean[h])
      if hp and hp.sink == "strong" then table.insert(all.sink_text, ts[h]) end
    end
  end
  local r, t, js, ji, ld = stats(all.recall), stats(all.text), stats(all.jstep), stats(all.jin), stats(all.lse)
  local n80 = 0
  for _, x in ipairs(all.jstep) do if x >= 0.8 then n80 = n80 + 1 end end
  print(string.format("summary %s: recall@%.2f mean %.3f median %.3f min %.3f max %.3f over %d heads", label, opt.density,
    r.mean, r.median, r.min, r.max, #all.recall))
  print(string.format("summary %s: text share mean %.3f (max %.3f)%s", label, t.mean, t.max,
    #all.sink_text > 0 and string.format("; strong-sink heads mean %.3f min %.3f", stats(all.sink_text).mean,
      stats(all.sink_text).min) or ""))
  print(string.format("summary %s: Jaccard across steps mean %.3f min %.3f, >= 0.8 in %d of %d heads; " ..
    "lse |d| mean %.3f", label, js.mean, js.min, n80, #all.jstep, ld.mean))
  print(string.format("summary %s: Jaccard across inputs mean %.3f min %.3f max %.3f", label, ji.mean, ji.min, ji.max))
  return model
end

local model
if tinym then
  model = probe("trained", nil, false)
else
  local t0 = adaspa.now()
  local W = synth.weights(cfg, {seed = opt.seed, device = o.device, dtype = o.dtype, constants = constants})
  print(string.format("synthetic weights (seed %d): %.2f s", opt.seed, adaspa.now() - t0))
  model = probe("synthetic", W, true)
end
if opt.baseline ~= 0 then
  probe("random", synth.weights(cfg, {seed = opt.seed, device = o.device, dtype = o.dtype, structure = false}), false)
end

if opt.euler > 0 then
  local sampler = require "adaspa.sampler"
  local x = xA:clone()
  local first, last
  sampler.euler(x, function(xi, t, step)
    local v = model:forward(xi, t, text, 6.0)
    local rms = v:norm() / math.sqrt(v:numel())
    if step == 0 then first = rms end
    last = rms
    return v
  end, {steps = opt.euler, shift = 7.0, quiet = true})
  print(string.format("\neuler %d steps (synthetic): velocity RMS first %.3f last %.3f; final latent RMS %.3f, max |x| %.3f",
    opt.euler, first, last, x:norm() / math.sqrt(x:numel()), math.max(x:max(), -x:min())))
end
