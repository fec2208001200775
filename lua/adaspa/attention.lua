-- adaspa.attention: the attention context a model calls (ctx:attention(q, k, v, info)). It asks
-- the policy what this (step, layer) runs and keeps the AdaSpa cache:
--   dense   adaspa.attention; the LSE is stored when the next step searches;
--   search  one fused pass, adaspa.attention_with_mass with the cached LSE (two passes, dense
--           then block_mass with the fresh LSE, when nothing is cached or the policy asks for
--           it); the dense output is kept; policy:select(mass) gives the layout; layout, fresh
--           LSE and recall go to the cache;
--   plan    policy:plan(q, k, v, info, ctx) builds the layout from q, k, v (static windows,
--           cheap estimates, sampled probes; see adaspa.policy); it is cached and used at once
--           with adaspa.sparse_attention; time the plan reports as measurement
--           (extra.recall_seconds) is kept apart (measure_seconds), not counted as attention;
--   sparse  adaspa.sparse_attention with the cached layout.
-- A layout that keeps every block runs the dense kernel (same result, and on a GPU the same bits
-- as a dense step: sparsity 0 reproduces the dense run exactly).
-- The modes dispatch through a table (attention.modes: mode name -> handler).
-- It also counts time and FLOPs per step and mode, for the reports: on a GPU (opts.sync) each
-- call is timed by device events recorded on the stream around it (adaspa.timer: the device time
-- from the model's queued work being done to the attention's being done, without synchronizing;
-- the step's sum is read at end_step), elsewhere by the wall clock. After each call,
-- ctx.last_mode is the mode that call ran (dense, search, plan or sparse).
--
-- Guidance branches. With classifier-free guidance a denoising step runs the model twice: the
-- conditional pass (branch 1) and the unconditional one (branch 2). The context keys the AdaSpa
-- cache by (layer, branch): one adaspa.Cache per branch (ctx.caches[b]), and ctx:set_branch(b)
-- before a forward makes ctx.cache that branch's, so a branch's search, LSE and sparse steps only
-- ever see its own layouts. The step counter (begin_step/end_step, what policy:mode(step, layer)
-- is asked with) counts denoising steps, not forward passes; info.branch tells a policy or hook
-- which branch a call belongs to. Without set_branch everything is branch 1 (ctx.cache).
local adaspa = require "adaspa"
local policies = require "adaspa.policy"

local attention = {}
local Ctx = {}
-- the contexts' metatable is not Ctx itself: a policy gets ctx, and ctx.__index must not reach the
-- methods every context shares (the recipe sandbox)
local ctx_mt = {__index = Ctx}

-- policy: an object with mode(step, layer) and select(mass, layer, info) or plan(q, k, v, info, ctx)
-- (see adaspa.policy);
-- opts: {layers = n (model layers with attention), sync = bool (time GPU calls with device events)}.
function attention.new(policy, opts)
  opts = opts or {}
  assert(type(policy) == "table" and type(policy.mode) == "function", "attention.new: policy needs a mode(step, layer) method")
  local c = setmetatable({policy = policy, layers = opts.layers, sync = opts.sync, steps = {}, capture = opts.capture,
                          timers = {}, branch = 1}, ctx_mt)
  c.cache = adaspa.Cache.new(opts.layers)
  c.caches = {c.cache}
  return c
end

-- The guidance branch the next attention calls belong to (1: conditional, 2: unconditional);
-- ctx.cache becomes that branch's cache (made on first use).
function Ctx:set_branch(b)
  if type(b) ~= "number" or b % 1 ~= 0 or b < 1 or b > 16 then
    error("attention: set_branch: branch must be an integer in [1, 16], got " .. tostring(b), 2)
  end
  if not self.caches[b] then self.caches[b] = adaspa.Cache.new(self.layers) end
  self.branch, self.cache = b, self.caches[b]
  if self.cur then self.cur.branches[b] = true end
end

-- The cache of branch b (nil when that branch never ran).
function Ctx:cache_for(b) return self.caches[b] end

-- The number of branches that have a cache.
function Ctx:branches() return #self.caches end

-- Sparse attention over layout, or dense attention when the layout keeps every block.
function attention.sparse(q, k, v, layout, kv_valid)
  if layout:nnz() == layout:heads() * layout:nqb() * layout:nkb() then
    return adaspa.attention(q, k, v, {kv_valid = kv_valid})
  end
  return adaspa.sparse_attention(q, k, v, layout, {kv_valid = kv_valid})
end

-- Attention over a layout; records its per-head densities in the step. Returns out, mean density.
function Ctx:run_layout(q, k, v, layout, info)
  local out, lse = attention.sparse(q, k, v, layout, info.kv_valid)
  lse:free()
  local d = layout:density()
  local m = 0
  for h = 1, #d do m = m + d[h] / #d; self.cur.densities[#self.cur.densities + 1] = d[h] end
  return out, m
end

function Ctx:begin_step(step)
  self.step = step
  self.cur = {step = step, modes = {}, seconds = 0, flops = 0, dense_flops = 0, densities = {}, recalls = {},
              plan_seconds = 0, plan_flops = 0, measure_seconds = 0, branches = {[self.branch] = true}}
end

function Ctx:end_step()
  local s = self.cur
  -- the event timers of the step's calls: reading the last waits for the step's attention only
  for _, t in ipairs(s.timed or {}) do
    s.seconds = s.seconds + t.timer:seconds() - t.measured
    self.timers[#self.timers + 1] = t.timer
  end
  s.timed = nil
  self.steps[#self.steps + 1] = s
  self.cur = nil
  return s
end

local function count_mode(modes)
  local best, n = nil, 0
  for m, c in pairs(modes) do if c > n then best, n = m, c end end
  return best
end
attention.main_mode = count_mode

-- The modes (adaspa.policy's contract), each a handler(ctx, q, k, v, info) -> out, density (mean
-- kept fraction, 1 for exact attention), measured (seconds a plan spent measuring itself: not
-- attention). A handler raises its errors at level 3: the caller of ctx:attention.
local modes = {}

function modes.dense(self, q, k, v, info)
  local p, layer, step = self.policy, info.layer, self.step
  local out, lse = adaspa.attention(q, k, v, {kv_valid = info.kv_valid})
  if policies.needs_lse(p, step, layer) then self.cache:set(layer, {lse = lse, step = step}) end
  lse:free() -- the cache keeps its own view
  return out, 1, 0
end

function modes.search(self, q, k, v, info)
  local p, layer, step = self.policy, info.layer, self.step
  local cached = self.cache:lse(layer)
  local block = p.block or 64
  local out, lse, mass
  if cached == nil or (p.two_pass_first and self.cache:step(layer) == nil) then
    out, lse = adaspa.attention(q, k, v, {kv_valid = info.kv_valid})
    mass = adaspa.block_mass(q, k, lse, {block = block, kv_valid = info.kv_valid})
  else
    out, lse, mass = adaspa.attention_with_mass(q, k, v, cached, {block = block, kv_valid = info.kv_valid})
  end
  if cached then cached:free() end -- a view of the cache's lse, about to be replaced
  -- selection (row-wise topk, threshold) and recall run on the mass's device: no host copy
  -- (per-head topk copies to the CPU inside adaspa.layout.topk)
  local layout = p:select(mass, layer, info)
  local recall = layout:recall(mass)
  self.cache:set(layer, {layout = layout, lse = lse, step = step, recall = recall})
  lse:free()
  for h = 1, #recall do self.cur.recalls[#self.cur.recalls + 1] = recall[h] end
  if self.capture then
    local m = mass:device() ~= "cpu" and mass:to("cpu") or mass -- pictures read the mass on the host
    self.capture(self, "search", layer, info, m, layout)
    if m ~= mass then m:free() end
  end
  mass:free()
  return out, 1, 0
end

function modes.plan(self, q, k, v, info)
  local p, layer, step = self.policy, info.layer, self.step
  if type(p.plan) ~= "function" then
    error(string.format("attention: policy %s returned mode plan for step %d layer %d but has no plan(q, k, v, info, ctx) method",
      tostring(p.name), step, layer), 3)
  end
  local tp = adaspa.now()
  local layout, extra = p:plan(q, k, v, info, self)
  if type(layout) ~= "userdata" then
    error(string.format("attention: policy %s: plan at step %d layer %d returned %s, not a layout", tostring(p.name),
      step, layer, type(layout)), 3)
  end
  extra = extra or {}
  local measured = 0
  if type(extra.recall_seconds) == "number" then measured = extra.recall_seconds end
  self.cur.measure_seconds = self.cur.measure_seconds + measured
  self.cur.plan_seconds = self.cur.plan_seconds + (adaspa.now() - tp) - measured
  self.cur.plan_flops = self.cur.plan_flops + (extra.flops or 0)
  self.cur.flops = self.cur.flops + (extra.flops or 0)
  local entry = {layout = layout, step = step}
  if extra.recall then
    entry.recall = extra.recall
    for h = 1, #extra.recall do self.cur.recalls[#self.cur.recalls + 1] = extra.recall[h] end
  end
  self.cache:set(layer, entry)
  if self.capture and extra.mass then self.capture(self, "plan", layer, info, extra.mass, layout) end
  local out, density = self:run_layout(q, k, v, layout, info)
  return out, density, measured
end

-- layout: the cached one when the caller fetched it already (Ctx:attention does for every sparse pass)
function modes.sparse(self, q, k, v, info, layout)
  local p, layer, step = self.policy, info.layer, self.step
  layout = layout or self.cache:layout(layer)
  if not layout then
    error(string.format("attention: policy %s asks for sparse attention at step %d, layer %d, but no layout has been searched for it",
      tostring(p.name), step, layer), 3)
  end
  local out, density = self:run_layout(q, k, v, layout, info)
  return out, density, 0
end

attention.modes = modes

function Ctx:attention(q, k, v, info)
  local p, layer, step = self.policy, info.layer, self.step
  info.branch = self.branch
  local mode = p:mode(step, layer)
  local handler = modes[mode]
  if handler == nil then
    error(string.format("attention: policy %s returned mode %s for step %d layer %d (dense, search, plan or sparse)",
      tostring(p.name), tostring(mode), step, layer), 2)
  end
  -- a guidance branch that starts late (a guidance interval: its first pass falls on a sparse
  -- step) has no layout to reuse: it makes one at that pass as the policy does (a search: exact
  -- attention and the block mass; or its plan), counted under the step's mode; branch 1 without a
  -- layout stays the policy's error
  local cached = mode == "sparse" and self.cache:layout(layer) or nil
  if mode == "sparse" and self.branch > 1 and not cached then
    handler = type(p.select) == "function" and modes.search or modes.plan
    self.cur.late_layouts = (self.cur.late_layouts or 0) + 1
  end
  local S, H, D = unpack(q:shape())
  local dense_flops = 4 * S * info.kv_valid * D * H
  local timer -- device events on the tensors' stream: the model's queued work is not attention's time
  if self.sync and q:device() ~= "cpu" and adaspa.cuda.available() then
    timer = table.remove(self.timers) or adaspa.timer(q)
    timer:start()
  end
  local t0 = adaspa.now()
  local out, density, measured = handler(self, q, k, v, info, cached)
  local c = self.cur
  if timer then
    timer:stop()
    c.timed = c.timed or {}
    c.timed[#c.timed + 1] = {timer = timer, measured = measured}
  else
    c.seconds = c.seconds + (adaspa.now() - t0) - measured
  end
  c.modes[mode] = (c.modes[mode] or 0) + 1
  c.flops = c.flops + dense_flops * density
  c.dense_flops = c.dense_flops + dense_flops
  self.last_mode = mode
  if self.on_output then self.on_output(self, layer, out) end
  return out
end

-- {mode=, seconds=, density={mean,min,max} or nil, recall=mean or nil, flop_fraction=} of a step record.
function attention.summarize(s)
  local nb = 0
  for _ in pairs(s.branches or {}) do nb = nb + 1 end
  local r = {step = s.step, mode = count_mode(s.modes), seconds = s.seconds, flop_fraction = s.flops / math.max(s.dense_flops, 1),
             plan_seconds = s.plan_seconds, measure_seconds = s.measure_seconds, branches = math.max(nb, 1),
             late_layouts = s.late_layouts}
  if #s.densities > 0 then
    local mn, mx, sum = math.huge, -math.huge, 0
    for _, d in ipairs(s.densities) do mn, mx, sum = math.min(mn, d), math.max(mx, d), sum + d end
    r.density = {mean = sum / #s.densities, min = mn, max = mx}
  end
  if #s.recalls > 0 then
    local sum = 0
    for _, x in ipairs(s.recalls) do sum = sum + x end
    r.recall = sum / #s.recalls
  end
  return r
end

return attention
