-- adaspa.policy.adaspa: AdaSpa (arXiv 2502.21079) as a policy.
--
-- Schedule (steps count from 0, as in the paper): steps before `warmup` are dense; the steps
-- in `search` run the fused search pass (dense output kept, block mass from the LSE cached by
-- the previous dense step, fresh LSE stored); the others reuse the last searched layouts.
-- Selection per layer and head:
--   tiers (default): row-wise top-k at density 1 - s per head; with head_adaptive, heads are
--     ranked by recall at s and, with n = #heads whose recall exceeds `recall_cut` (0.8, at most
--     half the heads), the n best get sparsity (1+s)/2, the n worst (3s-1)/2, the rest s, so
--     the mean sparsity stays s (s = 0.8 gives 0.9 / 0.8 / 0.7); below s = 1/3 the lowest tier
--     would be negative, so every head gets s there (and s = 0 is exactly dense);
--   recall = r: per head and row, keep blocks until the kept mass reaches r, within
--     min_density and max_density.
-- Forced blocks: text sink (every block holding text tokens, as rows and as columns), the
-- diagonal, and optionally the first latent frame's blocks as columns.
local adaspa = require "adaspa"

local policy = {}
policy.__index = policy

-- (recall has no default: nil selects the tiers)
policy.options = {"sparsity", "block", "warmup", "search", "head_adaptive", "text_sink", "first_frame_sink",
  "diagonal", "recall", "recall_cut", "min_density", "max_density", "two_pass_first"}

policy.defaults = {
  sparsity = 0.8, block = 64, warmup = 10, search = {10, 30}, head_adaptive = true,
  text_sink = true, first_frame_sink = false, diagonal = true, recall = nil, recall_cut = 0.8,
  min_density = 0.02, max_density = 1.0, two_pass_first = false,
}

-- opts: fields of policy.defaults; steps: the schedule's length (to check search steps).
function policy.new(opts, steps)
  local p = setmetatable({name = "adaspa"}, policy)
  for k, v in pairs(policy.defaults) do p[k] = v end
  local known = {}
  for _, k in ipairs(policy.options) do known[k] = true end
  for k, v in pairs(opts or {}) do
    if not known[k] then error(string.format("policy adaspa: unknown option %s", tostring(k)), 2) end
    p[k] = v
  end
  local function bad(field, why) error(string.format("policy adaspa: %s = %s: %s", field, tostring(p[field]), why), 3) end
  if type(p.sparsity) ~= "number" or p.sparsity < 0 or p.sparsity >= 1 then bad("sparsity", "must be in [0, 1)") end
  if p.block ~= 64 and p.block ~= 128 then bad("block", "must be 64 or 128") end
  if type(p.warmup) ~= "number" or p.warmup < 0 or p.warmup % 1 ~= 0 then bad("warmup", "must be an integer >= 0") end
  if type(p.search) ~= "table" or #p.search == 0 then bad("search", "must be a non-empty list of steps") end
  local seen = {}
  for i, s in ipairs(p.search) do
    if type(s) ~= "number" or s % 1 ~= 0 or s < 0 then
      error(string.format("policy adaspa: search[%d] = %s: must be a step number >= 0", i, tostring(s)), 2)
    end
    if steps and s >= steps then
      error(string.format("policy adaspa: search step %d is beyond the schedule (steps 0..%d)", s, steps - 1), 2)
    end
    if s < p.warmup then
      error(string.format("policy adaspa: search step %d falls inside the dense warm-up (steps 0..%d)", s, p.warmup - 1), 2)
    end
    seen[s] = true
  end
  if not seen[p.warmup] and p.warmup > 0 then
    -- steps between the warm-up and the first search would have no layout
    local first = math.huge
    for _, s in ipairs(p.search) do first = math.min(first, s) end
    if first > p.warmup then bad("warmup", string.format("the first search (step %d) must come right after the warm-up", first)) end
  end
  if p.warmup == 0 then
    local first = math.huge
    for _, s in ipairs(p.search) do first = math.min(first, s) end
    if first ~= 0 then bad("search", "with warmup 0 the first search must be step 0") end
  end
  if p.recall ~= nil and (type(p.recall) ~= "number" or p.recall <= 0 or p.recall > 1) then bad("recall", "must be in (0, 1]") end
  p.search_set = seen
  return p
end

function policy:describe()
  local sel = self.recall and string.format("recall %.3g (density %.3g..%.3g)", self.recall, self.min_density, self.max_density)
    or string.format("sparsity %.3g%s", self.sparsity, self.head_adaptive and ", head-adaptive tiers" or "")
  return string.format("adaspa: %s, block %d, dense warm-up %d steps, search at {%s}%s%s", sel, self.block, self.warmup,
    table.concat(self.search, ", "), self.text_sink and ", text sink" or "", self.first_frame_sink and ", first-frame sink" or "")
end

-- dense | search | sparse for a step (0-based) and layer.
function policy:mode(step, layer)
  if self.search_set[step] then return "search" end
  if step < self.warmup then return "dense" end
  return "sparse"
end

-- Whether this dense step's LSE is needed later (the step before a search).
function policy:keeps_lse(step, layer)
  return self.search_set[step + 1] == true
end

-- The forced blocks of a layer: info = {n_img=, n_txt=, grid=, kv_valid=}, nqb, nkb.
function policy:force(info, nqb, nkb)
  local B = self.block
  local f = {diagonal = self.diagonal}
  if self.text_sink and info.n_txt and info.n_txt > 0 then
    local first = math.floor(info.n_img / B) + 1        -- 1-based block holding the first text token
    f.cols = {{first, nkb}}
    f.rows = {{first, nqb}}
  end
  if self.first_frame_sink and info.grid then
    local per_frame = info.grid[2] * info.grid[3]
    f.cols = f.cols or {}
    f.cols[#f.cols + 1] = {1, math.floor((per_frame - 1) / B) + 1}
  end
  return f
end

local function mean(t)
  local s = 0
  for _, x in ipairs(t) do s = s + x end
  return s / #t
end

-- Per-head densities of the paper's tiers, from each head's recall at density 1 - s.
function policy:tiers(mass, force)
  local s = self.sparsity
  local H = mass:shape()[1]
  local d = {}
  for h = 1, H do d[h] = 1 - s end
  if not self.head_adaptive or H < 2 or s < 1 / 3 then return d end
  local probe = adaspa.layout.topk(mass, {density = 1 - s, row_wise = true, force = force, block = self.block})
  local rec = probe:recall(mass)
  probe:free()
  local order = {}
  for h = 1, H do order[h] = h end
  table.sort(order, function(a, b) if rec[a] ~= rec[b] then return rec[a] > rec[b] end return a < b end)
  local n = 0
  for h = 1, H do if rec[h] > self.recall_cut then n = n + 1 end end
  n = math.min(n, math.floor(H / 2))
  for i = 1, n do
    d[order[i]] = 1 - (1 + s) / 2          -- best heads: sparser
    d[order[H - i + 1]] = 1 - (3 * s - 1) / 2 -- worst heads: denser
  end
  for h = 1, H do d[h] = math.min(1, math.max(0, d[h])) end
  return d
end

-- The layout of a layer from its block mass [H, nqb, nkb].
function policy:select(mass, layer, info)
  local shape = mass:shape()
  local nqb, nkb = shape[2], shape[3]
  local force = self:force(info, nqb, nkb)
  if self.recall then
    local min_blocks = math.max(1, math.floor(self.min_density * nkb + 0.5))
    local max_blocks = self.max_density >= 1 and 0 or math.max(min_blocks, math.floor(self.max_density * nkb + 0.5))
    return adaspa.layout.threshold(mass, {recall = self.recall, min_blocks = min_blocks, max_blocks = max_blocks,
      force = force, block = self.block})
  end
  return adaspa.layout.topk(mass, {density = self:tiers(mass, force), row_wise = true, force = force, block = self.block})
end

policy.mean = mean
return policy
