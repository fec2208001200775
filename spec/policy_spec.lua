-- AdaSpa policies and the attention context: schedule, selection rules, the cache, recipe-defined
-- policies, and validation of every policy field.
local attention = require "adaspa.attention"
local adaspa_policy = require "adaspa.policy.adaspa"
local dense_policy = require "adaspa.policy.dense"

-- q, k, v [S, H, D] with local structure (nearby tokens similar), so mass is far from uniform.
local function qkv(S, H, D, seed)
  local base = adaspa.randn({S, 3, H, D}, {seed = seed})
  local smooth = adaspa.randn({math.ceil(S / 16), 1, H, D}, {seed = seed + 1})
  local rows = {}
  for i = 1, math.ceil(S / 16) do rows[i] = smooth:narrow(1, i, 1):expand({16, 3, H, D}) end
  local x = adaspa.add(adaspa.scale(base, 0.5), adaspa.concat(rows):narrow(1, 1, S):contiguous())
  local function part(i) return x:narrow(2, i, 1):reshape({S, H, D}) end
  return part(1), part(2), part(3)
end

-- info as the model passes it: n_img image tokens then n_txt text tokens, all valid.
local function info(layer, n_img, n_txt)
  return {layer = layer, kind = "double", index = layer - 1, kv_valid = n_img + n_txt, n_img = n_img, n_txt = n_txt,
          grid = {n_img / 64, 8, 8}}
end

local S_IMG, S_TXT, H, D = 1024, 40, 4, 64
local q, k, v = qkv(S_IMG + S_TXT, H, D, 1)

local function run_steps(p, steps, layers)
  local ctx = attention.new(p, {layers = layers or 1})
  local outs, modes = {}, {}
  for step = 0, steps - 1 do
    ctx:begin_step(step)
    outs[step] = ctx:attention(q, k, v, info(1, S_IMG, S_TXT))
    local s = ctx:end_step()
    modes[step] = attention.summarize(s).mode
  end
  return ctx, outs, modes
end

describe("the adaspa policy schedule", function()
  it("runs warm-up steps dense, searches at the search steps and reuses layouts between", function()
    local p = adaspa_policy.new({warmup = 2, search = {2, 4}}, 6)
    local ctx, _, modes = run_steps(p, 6)
    assert.same({[0] = "dense", "dense", "search", "sparse", "search", "sparse"}, modes)
    assert.equal(4, ctx.cache:step(1))
    local dense = adaspa.attention(q, k, v)
    -- a search step keeps the dense output of the fused pass
    local ctx2 = attention.new(adaspa_policy.new({warmup = 1, search = {1}}, 2), {layers = 1})
    ctx2:begin_step(0); ctx2:attention(q, k, v, info(1, S_IMG, S_TXT)); ctx2:end_step()
    ctx2:begin_step(1)
    local out = ctx2:attention(q, k, v, info(1, S_IMG, S_TXT))
    assert.equal(0, spec_maxdiff(out, dense))
  end)

  it("stores the LSE of the dense step before a search, and the fresh LSE at the search", function()
    local ctx = attention.new(adaspa_policy.new({warmup = 3, search = {3}}, 4), {layers = 1})
    for step = 0, 1 do ctx:begin_step(step); ctx:attention(q, k, v, info(1, S_IMG, S_TXT)); ctx:end_step() end
    assert.is_nil(ctx.cache:lse(1))
    ctx:begin_step(2); ctx:attention(q, k, v, info(1, S_IMG, S_TXT)); ctx:end_step()
    assert.equal(2, ctx.cache:lse_step(1))
    ctx:begin_step(3); ctx:attention(q, k, v, info(1, S_IMG, S_TXT)); ctx:end_step()
    assert.equal(3, ctx.cache:lse_step(1))
    local _, lse = adaspa.attention(q, k, v)
    assert.equal(0, spec_maxdiff(ctx.cache:lse(1), lse))
  end)

  it("sparsity 0 reproduces dense attention exactly", function()
    local _, outs = run_steps(adaspa_policy.new({sparsity = 0, warmup = 1, search = {1}}, 4), 4)
    local dense = adaspa.attention(q, k, v)
    for step = 0, 3 do assert.equal(0, spec_maxdiff(outs[step], dense), "step " .. step) end
  end)
end)

describe("adaspa selection", function()
  local _, lse = adaspa.attention(q, k, v)
  local mass = adaspa.block_mass(q, k, lse, {block = 64})
  local nqb = mass:shape()[2]
  local text_block = math.floor(S_IMG / 64) + 1

  it("keeps the asked density with equal row counts and the text blocks always", function()
    local p = adaspa_policy.new({sparsity = 0.75, head_adaptive = false, diagonal = false}, 50)
    local l = p:select(mass, 1, info(1, S_IMG, S_TXT))
    for h = 1, H do
      local counts = {}
      for qb = 1, text_block - 1 do
        local row = l:row(h, qb)
        counts[#counts + 1] = #row
        local has_text = false
        for _, kb in ipairs(row) do if kb == text_block then has_text = true end end
        assert.is_true(has_text, "text block kept in row " .. qb)
      end
      for i = 2, #counts do assert.equal(counts[1], counts[i]) end
      assert.equal(math.max(math.floor(0.25 * nqb + 0.5), 1), counts[1])
      assert.equal(nqb, #l:row(h, text_block)) -- the text query row keeps every block
    end
  end)

  it("head-adaptive tiers keep the mean sparsity and give the best heads the sparsest layouts", function()
    local s = 0.75
    local p = adaspa_policy.new({sparsity = s, recall_cut = 0.0}, 50)
    local f = p:force(info(1, S_IMG, S_TXT), nqb, nqb)
    local d = p:tiers(mass, f)
    local sum = 0
    for h = 1, H do sum = sum + d[h] end
    assert.is_true(math.abs(sum / H - (1 - s)) < 1e-12, "mean density " .. sum / H)
    local probe = adaspa.layout.topk(mass, {density = 1 - s, force = f}):recall(mass)
    local best, worst = 1, 1
    for h = 2, H do
      if probe[h] > probe[best] then best = h end
      if probe[h] < probe[worst] then worst = h end
    end
    assert.is_true(math.abs(d[best] - (1 - (1 + s) / 2)) < 1e-12)
    assert.is_true(math.abs(d[worst] - (1 - (3 * s - 1) / 2)) < 1e-12)
  end)

  it("with a recall target each head reaches it", function()
    local p = adaspa_policy.new({recall = 0.9, min_density = 0.0}, 50)
    local l = p:select(mass, 1, info(1, S_IMG, S_TXT))
    for h, r in ipairs(l:recall(mass)) do assert.is_true(r >= 0.9 - 1e-6, "head " .. h .. " recall " .. r) end
  end)

  it("the first-frame sink keeps the first frame's blocks in every row", function()
    local p = adaspa_policy.new({sparsity = 0.9, first_frame_sink = true}, 50)
    local inf = info(1, S_IMG, S_TXT)
    inf.grid = {4, 16, 16} -- 256 tokens per frame: blocks 1..4
    local l = p:select(mass, 1, inf)
    for qb = 1, nqb do
      local row = {}
      for _, kb in ipairs(l:row(2, qb)) do row[kb] = true end
      for kb = 1, 4 do assert.is_true(row[kb] == true, string.format("row %d block %d", qb, kb)) end
    end
  end)
end)

describe("policies", function()
  it("dense is dense everywhere", function()
    local _, outs, modes = run_steps(dense_policy.new(), 3)
    for step = 0, 2 do assert.equal("dense", modes[step]) end
    assert.equal(0, spec_maxdiff(outs[2], adaspa.attention(q, k, v)))
  end)

  it("a policy defined in Lua is called for its modes and selections", function()
    local calls = {mode = 0, select = 0}
    local mine = {name = "mine", block = 64}
    function mine:mode(step) calls.mode = calls.mode + 1; return step == 0 and "search" or "sparse" end
    function mine:select(mass_, layer, inf)
      calls.select = calls.select + 1
      assert.equal(1, layer)
      assert.equal(S_IMG, inf.n_img)
      local s = mass_:shape()
      return adaspa.layout.full(s[1], s[2], s[3])
    end
    local _, outs = run_steps(mine, 3)
    assert.is_true(calls.mode >= 3)
    assert.equal(1, calls.select)
    assert.is_true(spec_maxdiff(outs[2], adaspa.attention(q, k, v)) < 1e-6)
  end)

  it("a mode that is not dense, search or sparse is an error naming the policy", function()
    local bad = {name = "bad", mode = function() return "fast" end, select = function() end}
    spec_error(function() run_steps(bad, 1) end, "policy bad", "fast")
  end)

  it("a plan step builds the layout from q, k, v, caches it, runs sparse and counts the planning", function()
    local mine = {name = "planner", block = 64, plans = 0}
    function mine:mode(step) return step == 0 and "plan" or "sparse" end
    function mine:plan(q_, k_, v_, inf)
      self.plans = self.plans + 1
      local nqb = math.ceil(q_:shape()[1] / 64)
      local nkb = math.ceil(inf.kv_valid / 64)
      return adaspa.layout.full(q_:shape()[2], nqb, nkb), {flops = 1e6, recall = {1, 1, 1, 1}}
    end
    local ctx, outs, modes = run_steps(mine, 2)
    assert.equal(1, mine.plans)
    assert.equal("plan", modes[0])
    assert.equal("sparse", modes[1])
    local ref = adaspa.attention(q, k, v)
    assert.is_true(spec_maxdiff(outs[0], ref) < 1e-5)
    assert.is_true(spec_maxdiff(outs[1], ref) < 1e-5)
    assert.same({1, 1, 1, 1}, ctx.cache:recall(1))
    local r = attention.summarize(ctx.steps[1])
    assert.is_true(r.flop_fraction > 1)   -- the full layout plus the planning FLOPs
    assert.equal(1, r.recall)
  end)

  it("time a plan reports as measurement (recall_seconds) is kept apart from attention time", function()
    local mine = {name = "measurer", block = 64}
    function mine:mode() return "plan" end
    function mine:plan(q_, k_, v_, inf)
      local t0 = adaspa.now()
      while adaspa.now() - t0 < 0.2 do end -- stands for measuring recall against the exact mass
      local nqb, nkb = math.ceil(q_:shape()[1] / 64), math.ceil(inf.kv_valid / 64)
      return adaspa.layout.full(q_:shape()[2], nqb, nkb), {recall_seconds = adaspa.now() - t0}
    end
    local t0 = adaspa.now()
    local ctx = run_steps(mine, 1)
    local wall = adaspa.now() - t0
    local r = attention.summarize(ctx.steps[1])
    assert.is_true(r.measure_seconds >= 0.2, tostring(r.measure_seconds))
    -- no absolute bound (machine load and sanitizers vary): counted time plus the measurement
    -- must fit in the wall time, which fails if the 0.2 s were counted twice
    local counted = r.seconds + r.measure_seconds
    assert.is_true(counted <= wall + 1e-3, string.format("%.3f + %.3f > wall %.3f", r.seconds, r.measure_seconds, wall))
    assert.is_true(r.plan_seconds + r.measure_seconds <= wall + 1e-3, tostring(r.plan_seconds))
  end)

  it("a plan mode without a plan method, or a plan that returns no layout, is an error", function()
    local a = {name = "noplan", mode = function() return "plan" end, select = function() end}
    spec_error(function() run_steps(a, 1) end, "noplan", "no plan")
    local b = {name = "badplan", mode = function() return "plan" end, plan = function() return 42 end}
    spec_error(function() run_steps(b, 1) end, "badplan", "not a layout")
  end)

  it("the registry builds built-in policies by name and rejects unknown names", function()
    local policies = require "adaspa.policy"
    assert.equal("dense", policies.new("dense").name)
    assert.equal("adaspa", policies.new("adaspa", {sparsity = 0.5}, 50).name)
    spec_error(function() policies.new("magic") end, "unknown policy magic", "adaspa")
    assert.is_true(policies.is_policy(policies.new("dense")))
    assert.is_false(policies.is_policy({mode = function() end}))
  end)

  it("the contract: check names what a policy lacks; needs_lse defaults to the next step searching", function()
    local policies = require "adaspa.policy"
    assert.is_nil(policies.check(policies.new("adaspa", {}, 50)))
    assert.truthy(policies.check(42):find("must be a table", 1, true))
    assert.truthy(policies.check({}):find("mode(step, layer)", 1, true))
    assert.truthy(policies.check({mode = function() end}):find("select(mass, layer, info) or plan", 1, true))
    assert.truthy(policies.check({mode = function() end, plan = function() end, needs_lse = true}):find("needs_lse must be a method", 1, true))
    local a = policies.new("adaspa", {warmup = 2, search = {2, 4}}, 6)
    local got = {}
    for s = 0, 5 do got[#got + 1] = tostring(policies.needs_lse(a, s, 1)) end
    assert.same({"false", "true", "false", "true", "false", "false"}, got)
    local obj = {mode = function(_, step) return step == 1 and "search" or "dense" end, select = function() end}
    assert.is_true(policies.needs_lse(obj, 0, 1))
    assert.is_false(policies.needs_lse(obj, 1, 1))
    assert.is_false(policies.needs_lse(policies.new("dense"), 0, 1))
    -- the mode handlers are the contract's four modes
    local names = {}
    for m in pairs(attention.modes) do names[#names + 1] = m end
    table.sort(names)
    assert.same({"dense", "plan", "search", "sparse"}, names)
  end)

  it("the context keeps a dense step's LSE only when the policy's needs_lse asks", function()
    local function policy(keep)
      return {name = "p", block = 64, mode = function(_, step) return step == 0 and "dense" or "search" end,
              select = function(self, mass, layer, inf) return adaspa_policy.new({sparsity = 0.5}, 2):select(mass, layer, inf) end,
              needs_lse = function() return keep end}
    end
    local kept = attention.new(policy(true), {layers = 1})
    kept:begin_step(0); kept:attention(q, k, v, info(1, S_IMG, S_TXT)); kept:end_step()
    local lse = kept.cache:lse(1)
    assert.is_not_nil(lse)
    lse:free()
    local dropped = attention.new(policy(false), {layers = 1})
    dropped:begin_step(0); dropped:attention(q, k, v, info(1, S_IMG, S_TXT)); dropped:end_step()
    assert.is_nil(dropped.cache:lse(1))
    -- the search then runs two passes (no cached LSE): both give the same dense output
    kept:begin_step(1); dropped:begin_step(1)
    assert.equal(0, spec_maxdiff(kept:attention(q, k, v, info(1, S_IMG, S_TXT)), dropped:attention(q, k, v, info(1, S_IMG, S_TXT))))
  end)

  it("one builder: objects as they are, built-ins with a warm-up that follows the step count", function()
    local policies = require "adaspa.policy"
    local obj = {name = "mine", mode = function() return "dense" end, select = function() end}
    assert.equal(obj, policies.build(obj))
    spec_error(function() policies.build({mode = function() end}) end, "select(mass, layer, info) or plan")
    spec_error(function() policies.build("magic", {}, 20) end, "unknown policy magic")
    for _, n in ipairs({"window", "spatial_temporal", "estimate"}) do
      assert.equal(4, policies.build(n, {}, 20).warmup, n)
      assert.equal(10, policies.build(n, {}, 50).warmup, n)
      assert.equal(3, policies.build(n, {warmup = 3}, 20).warmup, n)
    end
    local a = policies.build("adaspa", {}, 20)
    assert.same({4, {4, 12}}, {a.warmup, a.search})
    -- the video job's attention table: shared fields the policy takes, then its own options
    local w = policies.from_attention({policy = "window", sparsity = 0.5, block = 128, options = {windows = {{1, 2, 2}}}}, 20)
    assert.same({128, 4}, {w.block, w.warmup})
    -- the compare job builds its runs with it: its zoo warm-ups follow the steps too (was 10)
    local compare = require "adaspa.jobs.compare"
    local runs = compare.plan({policies = {"dense", "window", "estimate"}, sweep = {}, attention = {}})
    for _, r in ipairs(runs) do assert.equal(2, policies.build(r.name, r.opts, 12).warmup, r.label) end
  end)

  it("sparse before any search is an error naming the step and layer", function()
    local bad = {name = "eager", mode = function() return "sparse" end, select = function() end}
    spec_error(function() run_steps(bad, 1) end, "eager", "step 0", "layer 1", "no layout")
  end)

  it("every bad field is an error naming it", function()
    spec_error(function() adaspa_policy.new({sparsity = 1.0}, 50) end, "sparsity = 1", "[0, 1)")
    spec_error(function() adaspa_policy.new({sparsity = -0.1}, 50) end, "sparsity")
    spec_error(function() adaspa_policy.new({block = 96}, 50) end, "block = 96", "64 or 128")
    spec_error(function() adaspa_policy.new({search = {10, 60}}, 50) end, "search step 60", "beyond the schedule")
    spec_error(function() adaspa_policy.new({search = {5}, warmup = 10}, 50) end, "search step 5", "warm-up")
    spec_error(function() adaspa_policy.new({search = {}}, 50) end, "search")
    spec_error(function() adaspa_policy.new({recall = 1.5}, 50) end, "recall")
    spec_error(function() adaspa_policy.new({speed = 2}, 50) end, "unknown option speed")
  end)
end)
