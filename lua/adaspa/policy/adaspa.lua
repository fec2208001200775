-- adaspa.policy.adaspa: AdaSpa (arXiv 2502.21079) as a policy.
--
-- Schedule (steps count from 0, as in the paper; progress lines and reports use the same numbers):
-- steps before `warmup` are dense; the steps in `search` run the fused search pass (dense output
-- kept, block mass from the LSE cached by the previous dense step, fresh LSE stored); the others
-- reuse the last searched layouts. Left out, warmup and search follow the step count: the paper's
-- 50-step schedule (warm-up 10, searches at 10 and 30) as fractions, warm-up 20% of the steps and
-- searches at 20% and 60% (policy.schedule); given, they are absolute step numbers and checked
-- against the schedule.
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

-- (recall has no default: nil selects the tiers; warmup and search default to policy.schedule)
policy.options = {"sparsity", "block", "warmup", "search", "head_adaptive", "text_sink", "first_frame_sink",
  "diagonal", "recall", "recall_cut", "min_density", "max_density", "two_pass_first"}

policy.defaults = {
  sparsity = 0.8, block = 64, warmup = nil, search = nil, head_adaptive = true,
  text_sink = true, first_frame_sink = false, diagonal = true, recall = nil, recall_cut = 0.8,
  min_density = 0.02, max_density = 1.0, two_pass_first = false,
}

-- Options whose value is a list (a single number given for one means a list of it).
policy.list_options = {search = true}

-- The options that do nothing beside the others ({option = why}): a recall target selects the
-- blocks, so the tiers' sparsity is not used.
function policy.inert(opts)
  if opts.recall == nil then return {} end
  return {sparsity = string.format("attention.recall=%s selects AdaSpa's blocks (add attention.recall=nil for the "
    .. "tiers at that sparsity)", tostring(opts.recall))}
end

-- The paper's schedule as fractions of the step count (its 50 steps: warm-up 10, searches at
-- 10 and 30).
policy.WARMUP_FRACTION, policy.SEARCH_FRACTIONS = 0.2, {0.2, 0.6}

-- The default warm-up and search steps of a schedule of `steps` steps (nil: the paper's 50);
-- warmup: an explicit warm-up the searches start from. Returns warmup, search (a list).
function policy.schedule(steps, warmup)
  steps = steps or 50
  local function at(f) return math.floor(f * steps + 0.5) end
  warmup = warmup or math.min(at(policy.WARMUP_FRACTION), steps - 1)
  local search = {warmup}
  for i = 2, #policy.SEARCH_FRACTIONS do
    local s = math.min(at(policy.SEARCH_FRACTIONS[i]), steps - 1)
    if s > search[#search] then search[#search + 1] = s end
  end
  return warmup, search
end

local function check_int(v, lo) return type(v) == "number" and v == v and v % 1 == 0 and v >= lo and v < 2 ^ 31 end

-- opts: fields of policy.defaults; steps: the schedule's length (to fill and check the schedule).
function policy.new(opts, steps)
  local p = setmetatable({name = "adaspa"}, policy)
  for k, v in pairs(policy.defaults) do p[k] = v end
  local known = {}
  for _, k in ipairs(policy.options) do known[k] = true end
  if opts ~= nil and type(opts) ~= "table" then error("policy adaspa: options must be a table, got " .. type(opts), 2) end
  for k, v in pairs(opts or {}) do
    if not known[k] then
      error(string.format("policy adaspa: unknown option %s (options: %s)", tostring(k), table.concat(policy.options, ", ")), 2)
    end
    p[k] = v
  end
  if steps ~= nil and not check_int(steps, 1) then
    error(string.format("policy adaspa: the schedule's step count must be an integer >= 1, got %s", tostring(steps)), 2)
  end
  local function bad(field, why) error(string.format("policy adaspa: %s = %s: %s", field, tostring(p[field]), why), 3) end
  if type(p.search) == "number" then p.search = {p.search} end
  if p.warmup ~= nil and not check_int(p.warmup, 0) then bad("warmup", "must be an integer >= 0") end
  if p.search == nil then
    local _, search = policy.schedule(steps, p.warmup)
    p.search = search
  elseif p.warmup == nil and type(p.search) == "table" then
    local first = math.huge
    for _, s in ipairs(p.search) do if type(s) == "number" then first = math.min(first, s) end end
    if first ~= math.huge then p.warmup = first end
  end
  if p.warmup == nil then p.warmup = policy.schedule(steps) end
  if type(p.sparsity) ~= "number" or not (p.sparsity >= 0 and p.sparsity < 1) then bad("sparsity", "must be in [0, 1)") end
  if p.block ~= 64 and p.block ~= 128 then bad("block", "must be 64 or 128") end
  if steps and p.warmup >= steps then
    bad("warmup", string.format("the schedule has %d steps (0..%d), so no step would search", steps, steps - 1))
  end
  if type(p.search) ~= "table" or #p.search == 0 then bad("search", "must be a non-empty list of steps") end
  local seen = {}
  for i, s in ipairs(p.search) do
    if not check_int(s, 0) then
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
  for _, f in ipairs({"head_adaptive", "text_sink", "first_frame_sink", "diagonal", "two_pass_first"}) do
    if type(p[f]) ~= "boolean" then bad(f, "must be true or false") end
  end
  if p.recall ~= nil and (type(p.recall) ~= "number" or not (p.recall > 0 and p.recall <= 1)) then bad("recall", "must be in (0, 1]") end
  if type(p.recall_cut) ~= "number" or not (p.recall_cut >= 0 and p.recall_cut <= 1) then bad("recall_cut", "must be in [0, 1]") end
  if type(p.min_density) ~= "number" or not (p.min_density >= 0 and p.min_density <= 1) then bad("min_density", "must be in [0, 1]") end
  if type(p.max_density) ~= "number" or not (p.max_density > 0 and p.max_density <= 1) then bad("max_density", "must be in (0, 1]") end
  if p.max_density < p.min_density then bad("max_density", "must be >= min_density (" .. p.min_density .. ")") end
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

-- Whether this dense step's LSE is kept for the next step's search (adaspa.policy's contract).
function policy:needs_lse(step, layer)
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

-- Per-head densities of the paper's tiers, from each head's recall at density 1 - s. With
-- sequence parallelism (info.sp: this rank holds some of the layer's heads) the recalls of every
-- rank's heads are gathered, so the tiers are those one process would choose.
function policy:tiers(mass, force, info)
  local s = self.sparsity
  local H = mass:shape()[1]
  local sp = info and info.sp
  local d = {}
  for h = 1, H do d[h] = 1 - s end
  local H_all = sp and sp.n_heads or H
  if not self.head_adaptive or H_all < 2 or s < 1 / 3 then return d end
  local probe = adaspa.layout.topk(mass, {density = 1 - s, row_wise = true, force = force, block = self.block})
  local rec = probe:recall(mass)
  probe:free()
  if sp then -- tiers over every head, then this rank's
    local all = sp.parallel:gather_heads(rec, H_all, sp.key)
    local mine = sp.heads
    local d_all = self:tiers_of(all)
    local out = {}
    for j, h in ipairs(mine) do out[j] = d_all[h] end
    return out
  end
  return self:tiers_of(rec)
end

-- The tiers' densities from per-head recalls at density 1 - s (a list of H).
function policy:tiers_of(rec)
  local s, H = self.sparsity, #rec
  local d = {}
  for h = 1, H do d[h] = 1 - s end
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
  return adaspa.layout.topk(mass, {density = self:tiers(mass, force, info), row_wise = true, force = force, block = self.block})
end

policy.mean = mean
return policy
