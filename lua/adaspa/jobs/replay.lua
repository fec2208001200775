-- adaspa.jobs.replay: every policy on a recorded attention trace (adaspa.trace).
--
--   adaspa recipe recipes/replay.lua trace=FILE [policies=dense,adaspa] [sparsity=0.9] ...
--
-- For each recorded step (in order) and layer, q, k, v are read (moved to the GPU when there is
-- one), the exact reference is computed once (adaspa.attention: output and LSE; adaspa.block_mass
-- under that LSE: the exact block mass), and every policy runs the record through its own
-- attention context (adaspa.attention: ctx:begin_step(step), ctx:attention(q, k, v, info),
-- ctx:end_step()), as the model would. Per policy and record: the mode, the output's relative
-- L2 error against the dense output (valid query rows), the recall of what it computed against
-- the exact mass (1 for dense and search, whose output is exact), the recall and density of the
-- layout it holds, the fraction of dense FLOPs, the attention time. Then, policy independent,
-- the stability across consecutive recorded steps (the AdaSpa paper's invariance claims), per
-- layer: the LSE change, and for row-wise top-k layouts at density 1 - sparsity (no forced
-- blocks): the layout searched at the earlier step applied to the later step's exact mass
-- (Jaccard with the later step's own top-k, recall against its mass), and the layout found from
-- the later step's q, k under the earlier step's LSE (what AdaSpa's LSE-cached search computes).
--
-- The schedule on a trace. Policies are asked mode(step, layer) with the recorded step numbers;
-- the steps between recorded ones never run. So that the attention context behaves as in a full
-- run, each policy is wrapped:
--   * ctx asks needs_lse(step) after a dense step to know whether to keep its LSE for a search:
--     the wrapper answers whether the next recorded step searches; a search therefore uses the
--     LSE of the last recorded step before it that ran dense or search, or, with none, its own
--     step's LSE (two passes: dense, then block mass). results.json gives each search's lse_step;
--   * "sparse" at a record whose layer holds no layout yet (its search step was not recorded)
--     becomes "search" (or "plan" for a policy without select) at that record; counted in the
--     report as substituted.
-- By default (warmup = search = "auto") the first replayed step is where policies with a dense
-- warm-up and search steps (adaspa) search, with that step's own LSE, and every later recorded
-- step reuses those layouts: the error of reusing layouts is what the table shows, and the
-- error of the cached LSE is measured separately (stability, cached-LSE columns). To replay a
-- real schedule set warmup/search (e.g. warmup=10 search=10,30 on a trace of steps 9,10,20,30).
local adaspa = require "adaspa"
local trace = require "adaspa.trace"
local attention = require "adaspa.attention"
local policies = require "adaspa.policy"
local json = require "adaspa.json"
local quality = require "adaspa.quality"
local pipeline = require "adaspa.jobs.pipeline"
local report = require "adaspa.jobs.replay_report"

local replay = {}
local C = require "adaspa.check"


local function int_list(v)
  for i, s in ipairs(v) do
    if type(s) ~= "number" or s % 1 ~= 0 or s < 0 then return string.format("entry %d (%s) is not an integer >= 0", i, tostring(s)) end
  end
end

replay.schema = {
  trace = C.file{required = true, doc = "the trace file (safetensors, see adaspa.trace)"},
  policies = {type = "list", doc = "policy names or policy objects; default: every built-in policy available", check = function(v)
    for i, p in ipairs(v) do
      if type(p) == "table" then
        if not policies.is_policy(p) then
          return string.format("entry %d: a policy object needs mode(step, layer) and select(mass, layer, info) or plan(q, k, v, info, ctx)", i)
        end
      else
        local known = false
        for _, n in ipairs(policies.names) do if n == p then known = true end end
        if not known then
          return string.format("entry %d (%s): known policies: %s (or a policy object defined in the recipe)", i, tostring(p),
            table.concat(policies.names, ", "))
        end
      end
    end
    if #v == 0 then return "must list at least one policy" end
  end},
  options = C.table{default = {}, doc = "per policy name, options beyond the shared fields: {adaspa = {recall = 0.95}}"},
  sparsity = C.number{default = 0.8, min = 0, below = 1, doc = "mean fraction of blocks dropped per head (policies that have it)"},
  block = C.integer{default = 64, min = 64, max = 128, doc = "block size in tokens: 64 or 128",
    extra = function(v) if v ~= 64 and v ~= 128 then return "must be 64 or 128" end end},
  warmup = {type = "any", default = "auto", doc = "\"auto\" (the first replayed step searches) or the dense warm-up (0-based steps)",
    check = function(v)
    if v ~= "auto" and (not C.finite(v) or v % 1 ~= 0 or v < 0 or v > 100000) then return "must be \"auto\" or an integer in [0, 100000]" end
  end},
  search = {type = "any", default = "auto", doc = "\"auto\" (the first replayed step) or adaspa's search steps (0-based)", check = function(v)
    if v == "auto" then return end
    if type(v) == "number" then v = {v} end
    if type(v) ~= "table" or #v == 0 then return "must be \"auto\" or a list of steps" end
    return int_list(v)
  end},
  steps = C.list{item = "integer", min = 0, max = 100000, doc = "replay only these recorded steps (0-based; default: all)"},
  layers = C.list{item = "integer", min = 1, max = 100000, doc = "replay only these recorded layers (1-based; default: all)"},
  device = C.string{default = "auto", one_of = {"auto", "cpu", "cuda"}, pattern = "^cuda:%d+$", pattern_doc = "cuda:N",
    doc = "where the replay runs: auto (a GPU when there is one), cpu, cuda or cuda:N"},
  dtype = C.string{default = "auto", one_of = {"auto", "f32", "bf16"}, doc = "auto (as stored), f32 or bf16"},
  stability = {
    enabled = C.boolean{default = true, doc = "the stability of layouts and LSEs across consecutive recorded steps"},
    density = C.number{above = 0, max = 1, doc = "density of the top-k layouts compared across steps (default 1 - sparsity)"},
  },
  output = {
    dir = C.dir{doc = "the output folder (default out/<recipe>-<time>)"},
    quiet = C.boolean{default = false, doc = "no progress lines"},
    pictures = C.boolean{default = true, doc = "masks of every policy at the pictured records"},
    picture_steps = C.list{item = "integer", min = 0, max = 100000, doc = "steps pictured (0-based; default: every replayed step)"},
    picture_layers = C.list{item = "integer", min = 1, max = 100000, doc = "layers pictured (1-based; default: the first replayed layer)"},
    picture_heads = C.list{default = {1}, item = "integer", min = 1, max = 1024, doc = "heads pictured (1-based)"},
  },
}

-- ---- helpers ---------------------------------------------------------------------------------------

local mean = report.mean

local function minmax(t)
  local lo, hi = math.huge, -math.huge
  for _, x in ipairs(t) do lo, hi = math.min(lo, x), math.max(hi, x) end
  return lo, hi
end

local function set_of(list)
  local s = {}
  for _, x in ipairs(list or {}) do s[x] = true end
  return s
end

local function sync(device) if device ~= "cpu" then adaspa.cuda.synchronize() end end

-- ||a - b|| / ||b|| over the first `rows` rows (||a - b|| when ||b|| is 0), in f32 on the
-- tensors' device (adaspa.quality.rel_l2).
local function rel_error(a, b, rows)
  local x, y = a:narrow(1, 1, rows), b:narrow(1, 1, rows)
  local e = quality.rel_l2(x, y, true)
  x:free(); y:free()
  return e
end

-- Mean over heads of the Jaccard similarity of two layouts' kept blocks (masks on the host).
local function jaccard(a, b)
  local ma, mb = a:to_mask():to("f32"), b:to_mask():to("f32")
  local both = adaspa.mul(ma, mb)
  local H, js = ma:shape()[1], {}
  for h = 1, H do
    local i = both:narrow(1, h, 1):sum()
    local u = ma:narrow(1, h, 1):sum() + mb:narrow(1, h, 1):sum() - i
    js[h] = u > 0 and i / u or 1
  end
  ma:free(); mb:free(); both:free()
  return mean(js)
end

-- The proxy of a policy on a trace: mode(step, layer) answered for the recorded steps (see the
-- header). ctx is set once the attention context exists.
local function wrap(inner, order, entry)
  local recorded = {}
  for _, s in ipairs(order) do recorded[s] = true end
  local proxy = setmetatable({substituted = {}}, {__index = inner})
  local function fixed(self, step, layer)
    local m = inner.mode(self, step, layer)
    if m == "sparse" and self.ctx and self.ctx.cache:layout(layer) == nil then
      if type(inner.select) == "function" then return "search", true end
      if type(inner.plan) == "function" then return "plan", true end
    end
    return m, false
  end
  -- the recorded steps' modes; other steps are never run (the context asks only needs_lse ahead)
  function proxy.mode(self, step, layer)
    if not recorded[step] then return inner.mode(self, step, layer) end
    local m, sub = fixed(self, step, layer)
    if sub and self.ctx and self.ctx.step == step then
      self.substituted[step .. ":" .. layer] = true
    end
    return m
  end
  -- after a dense step: whether the next recorded step searches (it uses this step's LSE)
  function proxy.needs_lse(self, step, layer)
    local nxt
    for _, s in ipairs(order) do
      if s > step then nxt = s; break end
    end
    if nxt == nil then
      if inner.needs_lse ~= nil then return inner.needs_lse(self, step, layer) end
      return inner.mode(self, step + 1, layer) == "search"
    end
    return (fixed(self, nxt, layer)) == "search"
  end
  proxy.entry = entry
  return proxy
end

-- The policy objects: {name=, policy= (wrapped), ctx=, describe=}.
local function build_policies(cfg, tr, order, notes)
  local list, explicit = cfg.policies, cfg.policies ~= nil
  if not explicit then
    list = {}
    for _, n in ipairs(policies.names) do
      local ok, err = pcall(policies.module, n)
      if ok then list[#list + 1] = n
      else
        local msg = pipeline.message(err):match("^[^\n]*"):gsub(":%s*$", "")
        notes[#notes + 1] = string.format("policy %s not available (%s)", n, msg)
      end
    end
  end
  local warmup = cfg.warmup == "auto" and order[1] or cfg.warmup
  local search = cfg.search
  if search == "auto" then search = {warmup} elseif type(search) == "number" then search = {search} end
  local num_steps = tr.num_steps or (tr.steps[#tr.steps] + 1)
  local out, seen = {}, {}
  for i, entry in ipairs(list) do
    local p
    if type(entry) == "table" then
      p = entry
    else
      -- the shared fields and the policy's own options, as the video job gives them
      -- (adaspa.policy.from_attention)
      local shared = {policy = entry, sparsity = cfg.sparsity, block = cfg.block, warmup = warmup, search = search}
      local own = cfg.options[entry] or {}
      if type(own) ~= "table" then error(string.format("replay: options.%s must be a table, got %s", entry, type(own)), 0) end
      if type(own.search) == "number" then own.search = {own.search} end
      if own.warmup ~= nil and own.search == nil then shared.search = {own.warmup} end
      if own.search ~= nil and own.warmup == nil and cfg.warmup == "auto" then
        local first = math.huge
        for _, s in ipairs(own.search) do first = math.min(first, s) end
        shared.warmup = first
      end
      shared.options = own
      local ok, made = pcall(policies.from_attention, shared, num_steps)
      if not ok then error(string.format("replay: policy %s: %s", entry, pipeline.message(made)), 0) end
      p = made
    end
    local name = tostring(p.name or ("policy" .. i))
    if seen[name] then name = name .. "#" .. i end
    seen[name] = true
    local proxy = wrap(p, order, entry)
    out[#out + 1] = {name = name, policy = proxy, inner = p,
                     describe = p.describe and p:describe() or name}
  end
  for name in pairs(cfg.options) do
    local used = false
    for _, e in ipairs(list) do if e == name then used = true end end
    if not used then notes[#notes + 1] = string.format("options.%s given but policy %s is not replayed", name, tostring(name)) end
  end
  return out
end

local fmt_time = report.fmt_time

-- ---- the job ---------------------------------------------------------------------------------------

local run_inner

-- Runs the replay; returns 0 and the results (also written to table.txt and results.json).
function replay.run(cfg, job)
  return run_inner(cfg, job)
end

function run_inner(cfg, job)
  local t_start = adaspa.now()
  local say = pipeline.say(cfg.output.quiet)
  local notes = {}
  local tr = trace.open(cfg.trace)

  -- steps and layers to replay
  local function subset(want, have, what)
    if not want then return have end
    local hs = set_of(have)
    local out = {}
    for _, x in ipairs(want) do
      if not hs[x] then
        error(string.format("%s: %s = %s is not recorded in %s (recorded: %s)", job.recipe, what, tostring(x), tr.path,
          table.concat(have, ", ")), 0)
      end
    end
    local ws = set_of(want)
    for _, x in ipairs(have) do if ws[x] then out[#out + 1] = x end end
    return out
  end
  local steps = subset(cfg.steps, tr.steps, "steps")
  local layers = subset(cfg.layers, tr.layers, "layers")

  local device = pipeline.device(cfg.device, notes)
  local dtype = cfg.dtype == "auto" and tr.dtype or cfg.dtype

  local out = require("adaspa.recipe").output_folder(cfg, job) -- opened by the runner (or here)
  local dir = out:path()

  local runs = build_policies(cfg, tr, steps, notes)
  local n_layers = layers[#layers]
  for _, r in ipairs(runs) do
    r.ctx = attention.new(r.policy, {layers = n_layers, sync = device ~= "cpu"})
    r.policy.ctx = r.ctx
    r.records = {}
  end
  local stab_density = cfg.stability.density or (1 - cfg.sparsity)
  local stab_block = cfg.block

  say("adaspa replay: %s", tr:describe())
  say("adaspa replay: %d steps x %d layers on %s (%s); policies: %s", #steps, #layers, device, dtype,
    (function() local n = {} for i, r in ipairs(runs) do n[i] = r.name end return table.concat(n, ", ") end)())
  for _, r in ipairs(runs) do say("  %-18s %s", r.name, r.describe) end
  for _, n in ipairs(notes) do say("adaspa replay: note: %s", n) end

  -- pictures
  local pictures = cfg.output.pictures and require "adaspa.pictures" or nil
  local pic_steps = set_of(cfg.output.picture_steps or steps)
  local pic_layers = set_of(cfg.output.picture_layers or {layers[1]})
  local pic_files, galleries = {}, {}

  do -- one untimed call first, so that the first timed record does not pay for warming up
    local q, k, v, info = tr:load(steps[1], layers[1], {device = device, dtype = dtype})
    local o, l = adaspa.attention(q, k, v, {kv_valid = info.kv_valid})
    sync(device)
    o:free(); l:free()
    if device ~= "cpu" then q:free(); k:free(); v:free() end
  end
  local dense_time, dense_records = 0, {}
  local prev = {}           -- per layer: {step=, lse=, layout=}
  local stability = {}
  local n_rec, total_rec = 0, #steps * #layers

  for si, s in ipairs(steps) do
    for _, r in ipairs(runs) do r.ctx:begin_step(s) end
    for li, l in ipairs(layers) do
      n_rec = n_rec + 1
      local q, k, v, info = tr:load(s, l, {device = device, dtype = dtype})
      local kv = info.kv_valid
      local H = q:shape()[2]
      -- the exact reference
      sync(device)
      local t0 = adaspa.now()
      local ref, lse = adaspa.attention(q, k, v, {kv_valid = kv})
      sync(device)
      local t_dense = adaspa.now() - t0
      dense_time = dense_time + t_dense
      dense_records[#dense_records + 1] = {step = s, layer = l, seconds = t_dense}
      local masses = {}
      local function mass_of(B)
        if not masses[B] then masses[B] = adaspa.block_mass(q, k, lse, {block = B, kv_valid = kv}) end
        return masses[B]
      end
      local want_pic = pictures and pic_steps[s] and pic_layers[l]
      local pic_imgs = {}   -- per head: list of images (mass first)
      local line = {}
      for _, r in ipairs(runs) do
        local c = r.ctx
        local cur = c.cur
        local f0, d0, p0 = cur.flops, cur.dense_flops, cur.plan_seconds
        local cached_lse = c.cache:lse(l) ~= nil and c.cache:lse_step(l) or nil
        local cached_step = c.cache:step(l)
        sync(device)
        local t1 = adaspa.now()
        local out = c:attention(q, k, v, info)
        sync(device)
        local secs = adaspa.now() - t1
        local mode = c.last_mode
        local rec = {step = s, layer = l, mode = mode, seconds = secs, plan_seconds = cur.plan_seconds - p0,
                     flop_fraction = (cur.flops - f0) / math.max(cur.dense_flops - d0, 1),
                     rel_error = rel_error(out, ref, kv)}
        if r.policy.substituted[s .. ":" .. l] then rec.substituted = true end
        local layout = mode ~= "dense" and c.cache:layout(l) or nil
        if mode == "search" then
          -- as adaspa.attention decides: the cached LSE, else (or when the policy asks for two passes
          -- at its first search) this step's own
          local two_pass = cached_lse == nil or (r.policy.two_pass_first and cached_step == nil)
          rec.lse_step = two_pass and s or cached_lse
        end
        if layout then
          local mass = mass_of(layout:block())
          rec.layout_recall = mean(layout:recall(mass))
          rec.layout_density = mean(layout:density())
          rec.layout_step = c.cache:step(l)
        end
        if mode == "dense" or mode == "search" then
          rec.recall, rec.density = 1, 1
        else
          rec.recall, rec.density = rec.layout_recall, rec.layout_density
        end
        r.records[#r.records + 1] = rec
        if out ~= ref then out:free() end
        line[#line + 1] = string.format("%s %s err %.4f recall %.3f d %.2f", r.name, mode, rec.rel_error, rec.recall, rec.density)
        if want_pic and layout then
          local b = pictures.boundaries(info.grid, info.n_txt, layout:block())
          for _, h in ipairs(cfg.output.picture_heads) do
            if h <= H then
              local img = pictures.mask(layout, h, b)
              local p = string.format("%s/step%02d_layer%02d_head%02d_%s_%s.png", dir, s, l, h, r.name:gsub("[^%w_%-]", "_"), mode)
              adaspa.png.write(p, img)
              pic_files[#pic_files + 1] = p
              pic_imgs[h] = pic_imgs[h] or {}
              table.insert(pic_imgs[h], {name = r.name, mode = mode, img = img})
            end
          end
        end
      end
      if want_pic then
        local mass = mass_of(stab_block)
        local mcpu = mass:device() ~= "cpu" and mass:to("cpu") or mass
        local b = pictures.boundaries(info.grid, info.n_txt, stab_block)
        for _, h in ipairs(cfg.output.picture_heads) do
          if h <= H then
            local img = pictures.mass(mcpu, h, b)
            local p = string.format("%s/step%02d_layer%02d_head%02d_mass.png", dir, s, l, h)
            adaspa.png.write(p, img)
            pic_files[#pic_files + 1] = p
            local row = {img}
            local names = {"exact mass"}
            for _, e in ipairs(pic_imgs[h] or {}) do
              -- galleries put pictures of one size side by side: the mass's block size
              if e.img:shape()[1] == img:shape()[1] then row[#row + 1] = e.img; names[#names + 1] = e.name .. " (" .. e.mode .. ")" end
            end
            local g = string.format("%s/step%02d_layer%02d_head%02d_gallery.png", dir, s, l, h)
            adaspa.png.write(g, pictures.side_by_side(row))
            pic_files[#pic_files + 1] = g
            galleries[#galleries + 1] = {file = g, columns = names}
          end
        end
        if mcpu ~= mass then mcpu:free() end
      end
      -- stability against the previous replayed step of this layer
      if cfg.stability.enabled then
        local mass = mass_of(stab_block)
        local opts = {density = stab_density, row_wise = true, block = stab_block}
        local L = adaspa.layout.topk(mass, opts)
        local p = prev[l]
        -- this step's LSE on the host (lse itself on the CPU), kept for the next replayed step
        local lse_host = lse:to("cpu")
        if p then
          local e = {from = p.step, to = s, layer = l}
          -- LSE [H, S] of the valid query rows, compared on the host (H x kv values)
          local a = lse_host:narrow(2, 1, kv):contiguous()
          local b = p.lse_host:narrow(2, 1, kv):contiguous()
          local nb = adaspa.scale(b, -1)
          local d = adaspa.add(a, nb)
          local dn, bn = d:norm(), b:norm()
          e.lse_rel_change = bn > 0 and dn / bn or dn
          e.lse_rms_change = dn / math.sqrt(H * kv)
          e.lse_max_change = math.max(d:max(), -d:min())
          d:free(); nb:free(); a:free(); b:free()
          e.exact_recall = mean(L:recall(mass))
          e.reuse_recall = mean(p.layout:recall(mass))
          e.reuse_jaccard = jaccard(p.layout, L)
          local stale = adaspa.block_mass(q, k, p.lse, {block = stab_block, kv_valid = kv})
          local Lc = adaspa.layout.topk(stale, opts)
          e.cached_lse_recall = mean(Lc:recall(mass))
          e.cached_lse_jaccard = jaccard(Lc, L)
          Lc:free(); stale:free()
          stability[#stability + 1] = e
          if p.lse_host ~= p.lse then p.lse_host:free() end
          p.lse:free()
          p.layout:free()
        end
        prev[l] = {step = s, lse = lse, lse_host = lse_host, layout = L}
      else
        lse:free()
      end
      for _, m in pairs(masses) do m:free() end
      ref:free()
      if device ~= "cpu" then q:free(); k:free(); v:free() end
      say("replay  step %d (%d/%d) layer %d (%d/%d) [%d/%d]: dense %s | %s", s, si, #steps, l, li, #layers, n_rec, total_rec,
        fmt_time(t_dense), table.concat(line, " | "))
    end
    for _, r in ipairs(runs) do r.ctx:end_step() end
  end
  for _, p in pairs(prev) do
    if p.lse_host ~= p.lse then p.lse_host:free() end
    p.lse:free(); p.layout:free()
  end

  -- summaries
  local results = {
    adaspa = adaspa.version, recipe = job.recipe, created = os.date("%Y-%m-%d %H:%M:%S"), device = device, dtype = dtype,
    threads = adaspa.threads(),
    trace = {path = tr.path, model = tr.model, grid = tr.grid, n_img = tr.n_img, text_len = tr.text_len, tokens = tr.S,
             kv_valid = tr.kv_valid, heads = tr.heads, head_dim = tr.head_dim, dtype = tr.dtype, steps = tr.steps,
             layers = tr.layers, num_steps = tr.num_steps, source = tr.meta.source},
    replayed = {steps = steps, layers = layers},
    config = {sparsity = cfg.sparsity, block = cfg.block, warmup = cfg.warmup, search = cfg.search, options = cfg.options,
              stability_density = stab_density},
    dense_seconds = dense_time, policies = {}, notes = notes,
  }
  for _, r in ipairs(runs) do
    local errs, recs, dens, flops, sparse_recall, sparse_err, modes = {}, {}, {}, {}, {}, {}, {}
    local secs, subs = 0, 0
    for _, rec in ipairs(r.records) do
      errs[#errs + 1], recs[#recs + 1], dens[#dens + 1], flops[#flops + 1] = rec.rel_error, rec.recall, rec.density, rec.flop_fraction
      modes[rec.mode] = (modes[rec.mode] or 0) + 1
      secs = secs + rec.seconds
      if rec.substituted then subs = subs + 1 end
      if rec.mode == "sparse" or rec.mode == "plan" then
        sparse_recall[#sparse_recall + 1], sparse_err[#sparse_err + 1] = rec.recall, rec.rel_error
      end
    end
    local _, emax = minmax(errs)
    local rmin = minmax(recs)
    local sum = {records = #r.records, modes = modes, rel_error_mean = mean(errs), rel_error_max = emax,
                 recall_mean = mean(recs), recall_min = rmin, density_mean = mean(dens), flop_fraction = mean(flops),
                 seconds = secs, speedup = secs > 0 and dense_time / secs or nil, substituted = subs,
                 sparse_records = #sparse_recall, sparse_recall_mean = mean(sparse_recall), sparse_rel_error_mean = mean(sparse_err)}
    if subs > 0 then
      notes[#notes + 1] = string.format("%s: %d records asked for sparse attention with no layout (search step not recorded) and searched instead",
        r.name, subs)
    end
    results.policies[#results.policies + 1] = {name = r.name, describe = r.describe, summary = sum, records = r.records}
  end
  if cfg.stability.enabled then
    local keys = {"lse_rel_change", "lse_rms_change", "lse_max_change", "exact_recall", "reuse_recall", "reuse_jaccard",
                  "cached_lse_recall", "cached_lse_jaccard"}
    local summary = {pairs = #stability}
    for _, key in ipairs(keys) do
      local vals = {}
      for _, e in ipairs(stability) do vals[#vals + 1] = e[key] end
      if #vals > 0 then
        local lo, hi = minmax(vals)
        summary[key] = {mean = mean(vals), min = lo, max = hi}
      end
    end
    results.stability = {density = stab_density, block = stab_block, pairs = stability, summary = summary}
  end
  results.pictures = {files = pic_files, galleries = galleries}

  -- table.txt (adaspa.jobs.replay_report)
  local L = report.table_lines(results, {cfg = cfg, job = job, tr = tr, steps = steps, layers = layers, total_rec = total_rec,
    device = device, dtype = dtype, dense_time = dense_time, stability = stability, stab_density = stab_density,
    stab_block = stab_block, pic_files = pic_files, dir = dir, notes = notes})
  L[#L + 1] = string.format("time       %s total", fmt_time(adaspa.now() - t_start))
  results.seconds = adaspa.now() - t_start

  out:write("results.json", json.encode(results, "  ") .. "\n")
  out:write("table.txt", table.concat(L, "\n") .. "\n")
  say("%s", table.concat(L, "\n"))
  say("adaspa replay: wrote %s/table.txt, %s/results.json", dir, dir)
  results.lines = L
  results.dir = dir
  return 0, results
end

return replay
