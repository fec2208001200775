-- adaspa.policy.common: pieces shared by the policies of the zoo (window, spatial_temporal,
-- estimate): option handling with errors that name the policy, the option and the value; the
-- geometry of a layer in blocks; layouts from per-head block patterns; the exact block mass for
-- recall reports; the dense / plan / sparse schedule.
local adaspa = require "adaspa"

local common = {}

-- A value as a recipe would write it: numbers, strings, booleans and (nested) lists.
function common.show(v, depth)
  depth = depth or 0
  if type(v) == "string" then return depth > 0 and string.format("%q", v) or v end
  if type(v) ~= "table" or depth > 3 then return tostring(v) end
  local parts = {}
  for i = 1, #v do parts[i] = common.show(v[i], depth + 1) end
  for k, x in pairs(v) do
    if type(k) ~= "number" or k < 1 or k > #v or k % 1 ~= 0 then
      parts[#parts + 1] = tostring(k) .. " = " .. common.show(x, depth + 1)
    end
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

local function copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = copy(x) end
  return c
end

-- The fields of a new policy object: m.defaults overridden by opts. Unknown options are errors.
-- Returns the object (with metatable m) and bad(field, why), which raises
-- "policy <name>: <field> = <value>: <why>".
function common.configure(name, m, opts)
  local p = setmetatable({name = name}, m)
  for k, v in pairs(m.defaults) do p[k] = copy(v) end
  local known = {}
  for _, k in ipairs(m.options) do known[k] = true end
  if opts ~= nil and type(opts) ~= "table" then
    error(string.format("policy %s: options must be a table, got %s", name, type(opts)), 3)
  end
  for k, v in pairs(opts or {}) do
    if not known[k] then
      error(string.format("policy %s: unknown option %s (options: %s)", name, tostring(k), table.concat(m.options, ", ")), 3)
    end
    p[k] = copy(v)
  end
  local function bad(field, why)
    error(string.format("policy %s: %s = %s: %s", name, field, common.show(p[field]), why), 4)
  end
  return p, bad
end

local function is_int(v, lo) return type(v) == "number" and v % 1 == 0 and v >= lo and v < 2 ^ 31 end
common.is_int = is_int

-- Checks of the fields most policies share (those present in p's options).
function common.check_shared(p, bad, steps)
  if p.block ~= nil and p.block ~= 64 and p.block ~= 128 then bad("block", "must be 64 or 128") end
  if p.warmup ~= nil then
    if not is_int(p.warmup, 0) then bad("warmup", "must be an integer >= 0") end
    if steps and p.warmup >= steps then
      bad("warmup", string.format("the schedule has %d steps (0..%d), so every step would be dense", steps, steps - 1))
    end
  end
  if p.every ~= nil and not is_int(p.every, 1) then bad("every", "must be an integer >= 1") end
  for _, f in ipairs({"exact_recall", "text_sink", "diagonal"}) do
    if p[f] ~= nil and type(p[f]) ~= "boolean" then bad(f, "must be true or false") end
  end
end

-- dense before warmup; plan at warmup and every `every` steps after (every nil: only once);
-- sparse between.
function common.mode(p, step)
  if step < p.warmup then return "dense" end
  local since = step - p.warmup
  if since == 0 or (p.every and since % p.every == 0) then return "plan" end
  return "sparse"
end

-- The geometry of a layer: q [S, H, D], k [Skv, H, D], info as the model passes it.
--   S, Skv, H, D, nqb, nkb, n_img, n_txt, kv_valid, grid {T, Hh, Ww};
--   text_first: the 1-based block holding the first text token (nil without text): text
--   rows (query blocks >= it) attend to everything and every row attends to its key blocks.
function common.geometry(q, k, info, block)
  local S, H, D = unpack(q:shape())
  local Skv = k:shape()[1]
  local g = {S = S, Skv = Skv, H = H, D = D, block = block, nqb = math.ceil(S / block), nkb = math.ceil(Skv / block),
             kv_valid = info.kv_valid or Skv, n_img = info.n_img or S, n_txt = info.n_txt or 0, grid = info.grid}
  if g.n_img < math.max(S, Skv) then g.text_first = math.floor(g.n_img / block) + 1 end
  if g.grid then
    local T, Hh, Ww = g.grid[1], g.grid[2], g.grid[3]
    if T * Hh * Ww ~= g.n_img then
      error(string.format("policy: grid {%d, %d, %d} holds %d tokens but n_img = %d", T, Hh, Ww, T * Hh * Ww, g.n_img), 3)
    end
  end
  return g
end

-- A string naming the shapes a static pattern depends on (for memoizing).
function common.shape_key(g, extra)
  local grid = g.grid and table.concat(g.grid, "x") or "-"
  return table.concat({g.S, g.Skv, g.n_img, g.block, grid, extra or ""}, "/")
end

-- A u8 [nqb, nkb] mask tensor from rows[qb] = {[kb] = true, ...} (1-based blocks), with the
-- text rule of g applied: text rows full, text key blocks kept in every row.
function common.pattern_tensor(rows, g)
  local nqb, nkb, tf = g.nqb, g.nkb, g.text_first
  local data = {}
  for qb = 1, nqb do
    local r, set = {}, rows[qb] or {}
    local full = tf ~= nil and qb >= tf
    for kb = 1, nkb do r[kb] = (full or set[kb] or (tf ~= nil and kb >= tf)) and 1 or 0 end
    data[qb] = r
  end
  return adaspa.tensor(data, {dtype = "u8"})
end

-- The image-block density of rows[qb] = {[kb] = true} (1-based blocks): the kept (query, key)
-- pairs among the image blocks' rows and columns over their count (the text rule left out).
function common.image_density(g, rows)
  local nimg, kept = math.ceil(g.n_img / g.block), 0
  for qb = 1, nimg do
    for kb in pairs(rows[qb] or {}) do if kb <= nimg then kept = kept + 1 end end
  end
  return kept / (nimg * nimg)
end

-- The integer x in [lo, hi] whose density_of(x) (non-decreasing in x) is nearest to target:
-- bisection for the smallest x reaching it, then that x or the one below. Returns x, its density.
function common.nearest_int(lo, hi, density_of, target)
  local a, b = lo, hi
  while a < b do
    local mid = math.floor((a + b) / 2)
    if density_of(mid) >= target then b = mid else a = mid + 1 end
  end
  local d = density_of(a)
  if a > lo then
    local d0 = density_of(a - 1)
    if math.abs(d0 - target) <= math.abs(d - target) then return a - 1, d0 end
  end
  return a, d
end

-- The f32 copies (1 kept, 0 dropped) of u8 [nqb, nkb] pattern masks on a device.
function common.indicators(patterns, device)
  local out = {}
  for i, p in ipairs(patterns) do
    local f = p:to("f32")
    out[i] = device ~= "cpu" and f:to(device) or f
    if out[i] ~= f then f:free() end
  end
  return out
end

-- The layout of H heads where head h keeps the blocks that inds[choice[h]] (f32 [nqb, nkb]
-- indicators, on the device of the layer) marks with 1. Built where the indicators live:
-- the per-head scores [H, nqb, nkb] are assembled by device copies and adaspa.layout.threshold
-- at recall 1 keeps exactly the blocks scored 1 (each row's total is its count of ones, reached
-- only once every one is kept; counts are exact in f32). On a GPU this is the device selection;
-- a host u8 mask [H, nqb, nkb] and from_mask took 1-2 s per layer at 720p (24 heads) on the CPU.
function common.layout_of(inds, choice, H, block)
  local nqb, nkb = unpack(inds[choice[1]]:shape())
  local scores = adaspa.empty({H, nqb, nkb}, {device = inds[choice[1]]:device()})
  for h = 1, H do scores:narrow(1, h, 1):copy(inds[choice[h]]:reshape({1, nqb, nkb})) end
  local l = adaspa.layout.threshold(scores, {recall = 1, min_blocks = 1, block = block})
  scores:free()
  return l
end

-- The exact block mass [H, nqb, nkb] (f32, on q's device) of a layer: a dense pass for the
-- LSE, then the mass pass. Returns mass and the FLOPs spent (about two dense passes).
function common.exact_mass(q, k, v, g)
  local out, lse = adaspa.attention(q, k, v, {kv_valid = g.kv_valid})
  out:free()
  local mass = adaspa.block_mass(q, k, lse, {block = g.block, kv_valid = g.kv_valid})
  lse:free()
  return mass, 2 * 4 * g.S * g.kv_valid * g.D * g.H
end

-- The per-head recall of layout against the exact mass of the layer, the seconds and FLOPs that
-- measuring it cost, and (when ctx captures pictures) the mass on the CPU.
function common.recall(layout, q, k, v, g, ctx)
  local t0 = adaspa.now()
  local mass, flops = common.exact_mass(q, k, v, g)
  local rec = layout:recall(mass)
  local pic
  if ctx and ctx.capture then pic = mass:device() ~= "cpu" and mass:to("cpu") or mass end
  if pic ~= mass then mass:free() end
  return rec, adaspa.now() - t0, flops, pic
end

-- A small deterministic generator (Park-Miller) for sampling: next(n) -> integer in 1..n.
function common.rng(seed)
  local s = seed % 2147483646 + 1
  return function(n)
    s = (s * 16807) % 2147483647
    return s % n + 1
  end
end

return common
