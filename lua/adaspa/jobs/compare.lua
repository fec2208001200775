-- adaspa.jobs.compare: several attention policies on one model, one text and one seed, against a
-- single dense reference run. Writes under output.dir:
--   table.txt (aligned), table.md, results.csv, results.json: per run the attention FLOPs against
--     dense (planning included), attention and sampling time and speedups, mean density and
--     recall, PSNR/SSIM of latents and of preview frames against dense;
--   chart.png: quality (chart.y) against speed (chart.x), one point per run, one line per policy
--     entry across its sweep;
--   gallery.png: the masks each run used at gallery.step for gallery.layers x gallery.heads;
--   previews.png: every run's preview frames, one row per run (output.previews).
-- (The writers live in adaspa.jobs.compare_report; this file plans and runs.)
-- Policies: a list of entries, each a built-in name ("adaspa"), a table {"adaspa", sparsity = 0.9,
-- label = "...", ...options}, or a policy object defined in the recipe (alone or as entry[1] with a
-- label; sweep = false keeps an entry out of the sweep). sweep = {option = {values}}: each
-- built-in entry that has the option and does not set it runs once per value (several options:
-- the grid). attention = {option = value}: given to every
-- built-in entry that has the option (below the entry's own options and the sweep).
local adaspa = require "adaspa"
local preview = require "adaspa.preview"
local video = require "adaspa.jobs.video"
local pipeline = require "adaspa.jobs.pipeline"
local policies = require "adaspa.policy"
local dense_policy = require "adaspa.policy.dense"
local sampler = require "adaspa.sampler"
local pictures = require "adaspa.pictures"
local recipe = require "adaspa.recipe"
local reports = require "adaspa.jobs.compare_report"

local compare = {}

-- ---- entries ---------------------------------------------------------------------------------------

local function fmt_value(v)
  if type(v) == "number" then return string.format("%g", v) end
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = fmt_value(x) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return tostring(v)
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b) return tostring(a) < tostring(b) end)
  return ks
end

-- Command-line paths give string keys ("policies.2.sparsity=0.9"): make them numbers, merging
-- into what the recipe has there (a name becomes {name, sparsity = 0.9}).
local function numeric_keys(t)
  local moves = {}
  for k, v in pairs(t) do
    if type(k) == "string" and k:match("^%d+$") then moves[#moves + 1] = {k, v} end
  end
  for _, m in ipairs(moves) do
    local i, v = tonumber(m[1]), m[2]
    t[m[1]] = nil
    local old = t[i]
    if type(v) == "table" and type(old) == "table" then
      for k, x in pairs(v) do old[k] = x end
    else
      if type(v) == "table" and type(old) == "string" and v[1] == nil then v[1] = old end
      t[i] = v
    end
  end
  return t
end

local function module_of(name)
  local ok, m = pcall(policies.module, name)
  if not ok then return nil, pipeline.message(m) end
  return m
end

local function has_option(m, k)
  for _, o in ipairs(m.options or {}) do if o == k then return true end end
  return false
end

-- The entries of cfg.policies as {index, name, module, object, opts, label}, or nil, a message.
function compare.entries(list)
  numeric_keys(list)
  local n = 0
  for k in pairs(list) do
    if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then return nil, string.format("key %s is not an entry number", tostring(k)) end
    n = math.max(n, k)
  end
  if n == 0 then return nil, "must list at least one policy" end
  local out = {}
  for i = 1, n do
    local e = list[i]
    local where = string.format("entry %d (%s)", i, recipe.show(e))
    local ent = {index = i, opts = {}}
    if e == nil then return nil, string.format("entry %d is missing", i) end
    if type(e) == "string" then
      ent.name = e
    elseif type(e) == "table" and policies.is_policy(e) then
      ent.object, ent.label = e, e.label
      ent.name = tostring(e.name or "recipe policy")
    elseif type(e) == "table" then
      numeric_keys(e)
      local head = e[1]
      if type(head) == "string" then
        ent.name = head
      elseif type(head) == "table" and policies.is_policy(head) then
        ent.object, ent.name = head, tostring(head.name or "recipe policy")
      else
        return nil, string.format("%s: the first item must be a policy name (%s) or a policy object, got %s", where,
          table.concat(policies.names, ", "), head == nil and "nothing" or recipe.show(head))
      end
      for k, v in pairs(e) do
        if k == "label" then
          if type(v) ~= "string" then return nil, string.format("%s: label must be a string, got %s", where, recipe.show(v)) end
          ent.label = v
        elseif k == "sweep" then
          if type(v) ~= "boolean" then return nil, string.format("%s: sweep must be true or false, got %s", where, recipe.show(v)) end
          ent.no_sweep = v == false
        elseif k ~= 1 then
          if type(k) ~= "string" then return nil, string.format("%s: item %s: options are named (option = value)", where, tostring(k)) end
          ent.opts[k] = v
        end
      end
    else
      return nil, string.format("%s: an entry is a policy name, a table {name, option = value, label = ...} or a policy object", where)
    end
    if ent.object then
      if next(ent.opts) then
        return nil, string.format("%s: a policy object takes no options (%s); set them on the object", where,
          table.concat(sorted_keys(ent.opts), ", "))
      end
    else
      local known = false
      for _, nm in ipairs(policies.names) do if nm == ent.name then known = true end end
      if not known then
        return nil, string.format("%s: unknown policy %s (known: %s, or a policy object defined in the recipe)", where,
          recipe.show(ent.name), table.concat(policies.names, ", "))
      end
      local m, why = module_of(ent.name)
      if not m then return nil, string.format("%s: %s", where, why) end
      ent.module = m
      for _, k in ipairs(sorted_keys(ent.opts)) do
        if not has_option(m, k) then
          return nil, string.format("%s: policy %s has no option %s (options: %s)", where, ent.name, k,
            #(m.options or {}) > 0 and table.concat(m.options, ", ") or "none")
        end
      end
    end
    out[i] = ent
  end
  return out
end

-- Lists every option some listed built-in policy has.
local function all_options(entries)
  local seen, list = {}, {}
  for _, e in ipairs(entries) do
    for _, o in ipairs(e.module and e.module.options or {}) do
      if not seen[o] then seen[o] = true; list[#list + 1] = o end
    end
  end
  table.sort(list)
  return list
end

local function check_options_table(t, entries, what)
  for _, k in ipairs(sorted_keys(t)) do
    if type(k) ~= "string" then return string.format("%s keys are option names, got %s", what, tostring(k)) end
    local any = false
    -- an option of some built-in policy that no listed one has applies to nothing (the recipe's
    -- default sweep over sparsity with policies=dense,estimate); one that no policy has is a typo
    for _, name in ipairs(policies.names) do
      local m = module_of(name)
      if m and has_option(m, k) then any = true end
    end
    if not any then
      local opts = all_options(entries)
      return string.format("no policy has the option %s (the listed ones have: %s)", k, #opts > 0 and table.concat(opts, ", ") or "none")
    end
  end
end

-- A value of a policy option: a single value where the default is a list becomes a list
-- (search = 10 means {10}, as in the video recipe).
local function option_value(m, k, v)
  if type(v) ~= "table" and ((m.defaults and type(m.defaults[k]) == "table") or (m.list_options and m.list_options[k])) then
    return {v}
  end
  return v
end

-- The runs of a configuration: {label, series, point_label, name, entry, opts, object}. The dense
-- entries are the reference (not in the list); returns runs, the reference label.
function compare.plan(cfg)
  local entries = assert(compare.entries(cfg.policies))
  local sweep = cfg.sweep or {}
  local sweep_keys = sorted_keys(sweep)
  local runs, ref_label = {}, nil
  for _, e in ipairs(entries) do
    if e.name == "dense" and not e.object then
      ref_label = ref_label or e.label
    else
      local base = e.label
      if not base then
        local parts = {e.name}
        for _, k in ipairs(sorted_keys(e.opts)) do parts[#parts + 1] = k .. "=" .. fmt_value(e.opts[k]) end
        base = table.concat(parts, " ")
      end
      -- the grid of swept options this entry has and does not set itself
      local combos = {{}}
      if e.module and not e.no_sweep then
        for _, k in ipairs(sweep_keys) do
          if has_option(e.module, k) and e.opts[k] == nil then
            local nxt = {}
            for _, c in ipairs(combos) do
              for _, v in ipairs(sweep[k]) do
                local c2 = {}
                for i, kv in ipairs(c) do c2[i] = kv end
                c2[#c2 + 1] = {k, v}
                nxt[#nxt + 1] = c2
              end
            end
            combos = nxt
          end
        end
      end
      for _, c in ipairs(combos) do
        local opts = {}
        if e.module then
          for k, v in pairs(cfg.attention or {}) do if has_option(e.module, k) then opts[k] = option_value(e.module, k, v) end end
          for k, v in pairs(e.opts) do opts[k] = option_value(e.module, k, v) end
          -- the table has a recall column: policies that can measure it do, unless told not to
          if has_option(e.module, "exact_recall") and opts.exact_recall == nil then opts.exact_recall = true end
        end
        local tags = {}
        for _, kv in ipairs(c) do
          opts[kv[1]] = option_value(e.module, kv[1], kv[2])
          tags[#tags + 1] = kv[1] .. "=" .. fmt_value(kv[2])
        end
        local vals = {}
        for _, kv in ipairs(c) do vals[#vals + 1] = fmt_value(kv[2]) end
        runs[#runs + 1] = {label = #tags > 0 and (base .. " " .. table.concat(tags, " ")) or base, series = base,
                           point_label = #vals > 0 and table.concat(vals, ",") or nil, name = e.name, entry = e.index,
                           module = e.module, opts = opts, object = e.object, swept = c}
      end
    end
  end
  -- unique labels
  local seen = {}
  for _, r in ipairs(runs) do
    if seen[r.label] then
      seen[r.label] = seen[r.label] + 1
      r.label = r.label .. " #" .. seen[r.label]
    else
      seen[r.label] = 1
    end
  end
  return runs, ref_label or "dense (reference)"
end

-- ---- schema ----------------------------------------------------------------------------------------

local C = require "adaspa.check"

compare.metrics = reports.metrics

local function one_of(set)
  return function(v)
    if set[v] == nil then return "one of: " .. table.concat(sorted_keys(set), ", ") end
  end
end

compare.schema = {
  model = video.schema.model,
  video = video.schema.video,
  text = video.schema.text,
  prompt = video.prompt_field,
  sampler = video.schema.sampler,
  policies = {type = "list", default = {"dense", "adaspa"}, doc = "policy entries: names, {name, option = value, label = ...}, policy objects",
    check = function(v)
      local _, err = compare.entries(v)
      return err
    end},
  sweep = {type = "table", default = {}, doc = "option = {values}: every entry that has the option runs once per value",
    check = function(v, root)
      local entries = compare.entries(root.policies)
      if not entries then return end -- reported by the policies field
      for _, k in ipairs(sorted_keys(v)) do
        local list = v[k]
        if type(list) ~= "table" then list = {list}; v[k] = list end
        numeric_keys(list)
        if #list == 0 then return string.format("%s: needs at least one value", tostring(k)) end
        for i in pairs(list) do
          if type(i) ~= "number" or i > #list then return string.format("%s: must be a list of values", tostring(k)) end
        end
      end
      return check_options_table(v, entries, "sweep")
    end},
  attention = {type = "table", default = {}, doc = "options given to every listed built-in policy that has them",
    check = function(v, root)
      local entries = compare.entries(root.policies)
      if not entries then return end
      return check_options_table(v, entries, "attention")
    end},
  gallery = {
    layers = {type = "list", default = {1}, doc = "layers (1-based) shown in the gallery", check = function(v)
      for i, l in ipairs(v) do
        if type(l) ~= "number" or l % 1 ~= 0 or l < 1 then return string.format("entry %d is not a layer number (1, 2, ...)", i) end
      end
    end},
    heads = {type = "list", default = {1}, doc = "heads (1-based) shown in the gallery", check = function(v)
      for i, h in ipairs(v) do
        if type(h) ~= "number" or h % 1 ~= 0 or h < 1 then return string.format("entry %d is not a head number (1, 2, ...)", i) end
      end
      if #v == 0 then return "must list at least one head" end
    end},
    step = {type = "integer", doc = "the step (0-based) whose masks are shown; default the last", check = function(v, root)
      if not C.finite(v) then return "must be a finite step number" end
      if v < 0 or v >= root.sampler.steps then
        return string.format("must be a step of the schedule (0..%d)", root.sampler.steps - 1)
      end
    end},
    size = C.integer{default = 208, min = 16, max = 4096, doc = "pixels of each mask picture in the gallery"},
  },
  chart = {
    x = {type = "string", default = "attention_speedup", check = one_of(compare.metrics.x),
         doc = "the chart's x axis: attention_speedup, speedup or flops"},
    y = {type = "string", default = "latent_psnr", check = one_of(compare.metrics.y),
         doc = "the chart's y axis: latent_psnr, preview_psnr, latent_ssim or preview_ssim"},
    width = C.integer{default = 900, min = 200, max = 8192, doc = "chart pixels"},
    height = C.integer{default = 560, min = 160, max = 8192, doc = "chart pixels"},
  },
  output = {
    dir = C.dir{doc = "the output folder (default out/<recipe>-<time>)"},
    quiet = C.boolean{default = false, doc = "no progress lines"},
    step_lines = {type = "boolean", default = false, doc = "a progress line per step of every run"},
    previews = {type = "boolean", default = true, doc = "previews.png: every run's preview frames"},
    frames = C.boolean{default = false, doc = "every run's frames as PNGs under frames/NN/ (NN = the row, 00 the reference; "
      .. "a model with a decoder: the decoded video, else the latent previews); results.json names each row's folder"},
    upscale = C.integer{default = 2, min = 1, max = 64, doc = "preview pixels per latent pixel"},
    error_steps = C.list{default = {}, item = "integer", min = 0, max = 100000,
      doc = "steps (0-based) whose per-layer attention error against dense is reported", extra = function(v, root)
        local n = root.sampler.steps
        for i, s in ipairs(v) do
          if C.finite(n) and s >= n then return string.format("step %d (entry %d) is beyond the schedule (steps 0..%d)", s, i, n - 1) end
        end
      end},
  },
}

-- The schema of a recipe table: compare.schema with the model.* fields of its model.name.
function compare.schema_for(cfg, where) return video.schema_for(cfg, where, compare.schema) end

-- ---- measuring -------------------------------------------------------------------------------------

-- The schedule's time from medians per step mode (robust to a busy machine): sum over modes of
-- steps x median; returns step seconds, attention seconds.
local function estimate(med)
  local t, a = 0, 0
  for _, m in pairs(med) do t, a = t + m.steps * m.step, a + m.steps * m.attention end
  return t, a
end

local function mean_of(records, get)
  local s, n = 0, 0
  for _, r in ipairs(records) do
    local v = get(r)
    if v then s, n = s + v, n + 1 end
  end
  return n > 0 and s / n or nil
end

-- The row of a run against the reference.
local function summarize(label, res, ref, q, ref_times)
  local med = pipeline.median_steps(res.steps)
  local t_est, a_est = estimate(med)
  local modes = {}
  for m, b in pairs(res.by_mode) do modes[m] = b.steps end
  local row = {
    label = label,
    flops_fraction = res.flops / res.dense_flops,
    plan_fraction = res.plan_flops / res.dense_flops,
    attention_seconds = a_est, sampling_seconds = t_est,
    attention_seconds_measured = res.attention_seconds, sampling_seconds_measured = res.sampling_seconds,
    plan_seconds = res.plan_seconds,
    attention_speedup = ref_times and ref_times.attention / a_est or 1,
    speedup = ref_times and ref_times.sampling / t_est or 1,
    density = mean_of(res.steps, function(r) return r.density and r.density.mean end),
    recall = mean_of(res.steps, function(r) return r.recall end),
    latent_psnr = q.latents.psnr, latent_ssim = q.latents.ssim, latent_rel_l2 = q.latents.rel_l2,
    preview_psnr = q.previews.psnr, preview_ssim = q.previews.ssim,
    steps_by_mode = modes,
  }
  if #q.attention_error > 0 then
    local s = 0
    for _, e in ipairs(q.attention_error) do s = s + e.mean end
    row.attention_error = s / #q.attention_error
    row.attention_error_by_step = q.attention_error
  end
  return row
end

-- ---- the gallery -----------------------------------------------------------------------------------

-- An on_attention hook that draws the masks of the wanted layers and heads at the gallery step
-- into store["layer:head"] = {img, mode, density}.
local function gallery_hook(cfg, step, store, block_of)
  local want = {}
  for _, l in ipairs(cfg.gallery.layers) do want[l] = true end
  return function(ctx, info, mode, out)
    if ctx.step ~= step or not want[info.layer] or (info.branch or 1) ~= 1 then return end -- the conditional branch
    local layout, own
    if mode == "dense" then
      local B = block_of()
      local S = out:shape()[1]
      layout = adaspa.layout.full(out:shape()[2], math.ceil(S / B), math.ceil(info.kv_valid / B), B)
      own = true
    else
      layout = ctx.cache:layout(info.layer)
    end
    if not layout then return end
    local b = pictures.boundaries(info.grid, info.n_txt, layout:block())
    local d = layout:density()
    for _, h in ipairs(cfg.gallery.heads) do
      if h <= layout:heads() then
        store[info.layer .. ":" .. h] = {
          img = pictures.mask(layout, h, {max_size = cfg.gallery.size, frame_blocks = b.frame_blocks, text_block = b.text_block}),
          mode = mode, density = d[h]}
      end
    end
    if own then layout:free() end
  end
end

-- ---- the job ---------------------------------------------------------------------------------------

function compare.run(cfg, job)
  local t_start = adaspa.now()
  local say = pipeline.say(cfg.output.quiet)
  local runs, ref_label = compare.plan(cfg)

  -- sizes first (cheap), so gallery fields fail before the weights load
  local mcfg, _, _, _, entry = pipeline.resolve(cfg)
  local n_layers = entry.attention_layers(mcfg)
  for i, l in ipairs(cfg.gallery.layers) do
    if l > n_layers then
      error(string.format("%s: field gallery.layers = %s: entry %d: layer %d is beyond the model's %d attention layers",
        job.recipe, recipe.show(cfg.gallery.layers), i, l, n_layers), 0)
    end
  end
  for i, h in ipairs(cfg.gallery.heads) do
    if h > mcfg.heads then
      error(string.format("%s: field gallery.heads = %s: entry %d: head %d is beyond the model's %d heads",
        job.recipe, recipe.show(cfg.gallery.heads), i, h, mcfg.heads), 0)
    end
  end
  local gallery_step = cfg.gallery.step or (cfg.sampler.steps - 1)

  -- every policy is built before anything runs: a bad option fails at once, naming its entry
  for _, r in ipairs(runs) do
    if r.object then
      r.policy = r.object
    else
      local ok, p = pcall(policies.build, r.name, r.opts, cfg.sampler.steps)
      if not ok then
        error(string.format("%s: field policies: entry %d (run %q): %s", job.recipe, r.entry, r.label,
          pipeline.message(p)), 0)
      end
      r.policy = p
    end
    r.describe = r.policy.describe and r.policy:describe() or tostring(r.policy.name or r.label)
  end

  local out = recipe.output_folder(cfg, job) -- opened by the runner (or here)
  local dir = out:path()
  local prep = pipeline.prepare(cfg, {say = say, dir = dir})
  -- a model with its own decoder (M.decode): quality and pictures of the decoded frames
  local decode = prep.entry.decode and function(x) return prep.entry.decode(prep.model, x) end
  local made_frames = false
  local function write_frames(row, index, res)
    if not cfg.output.frames then return end
    local frames = res.frames or (decode and decode(res.x)) or preview.frames(res.x, cfg.output.upscale)
    res.frames = res.frames or (decode and frames or nil)
    local sub = string.format("frames/%02d", index)
    if not made_frames then out:mkdir("frames"); made_frames = true end
    out:mkdir(sub)
    for i, f in ipairs(frames) do adaspa.png.write(string.format("%s/%s/frame_%03d.png", dir, sub, i - 1), f) end
    row.frames_dir = sub
  end
  local n = #runs + 1
  say("compare: %d runs (the dense reference and %d policy runs), %d steps each, seed %d; output %s", n, #runs,
    cfg.sampler.steps, cfg.sampler.seed, dir)

  local step_say = cfg.output.step_lines and say or function() end
  local opts_base = {quiet_steps = not cfg.output.step_lines}
  local t_runs = adaspa.now()
  local function eta(done)
    if done == 0 then return "?" end
    return sampler.duration((adaspa.now() - t_runs) / done * (n - done))
  end

  -- the reference
  say("[1/%d] %s ...", n, ref_label)
  local ref_gallery = {}
  local ref = pipeline.run_schedule(cfg, prep, dense_policy.new(), step_say, {quiet_steps = opts_base.quiet_steps,
    on_attention = gallery_hook(cfg, gallery_step, ref_gallery, function() return 64 end)})
  local rmed = pipeline.median_steps(ref.steps)
  local rt, ra = estimate(rmed)
  local ref_times = {sampling = rt, attention = ra}
  -- the reference against itself (what pipeline.compare(ref, ref) gives): PSNR inf, SSIM 1, error 0
  local self_quality = {latents = {psnr = math.huge, ssim = 1, rel_l2 = 0}, previews = {psnr = math.huge, ssim = 1},
                        attention_error = {}}
  if decode then ref.frames = decode(ref.x) end
  local ref_row = summarize(ref_label, ref, ref, self_quality, nil)
  write_frames(ref_row, 0, ref)
  ref_row.policy, ref_row.describe = "dense", "dense (the reference every run is compared with)"
  local rows = {ref_row}
  say("[1/%d] %s: %s sampling (attention %s); eta %s", n, ref_label, sampler.duration(ref.sampling_seconds),
    sampler.duration(ref.attention_seconds), eta(1))

  local xs = {{label = ref_label, x = ref.x, frames = ref.frames}}
  local failed = 0
  for i, r in ipairs(runs) do
    say("[%d/%d] %s ...", i + 1, n, r.label)
    local cells = {}
    r.cells = cells
    local p = r.policy
    local ok, res = pcall(pipeline.run_schedule, cfg, prep, p, step_say, {quiet_steps = opts_base.quiet_steps,
      outputs = ref.outputs, outputs_are_reference = true,
      on_attention = gallery_hook(cfg, gallery_step, cells, function() return p.block or 64 end)})
    local row
    if ok then
      row = summarize(r.label, res, ref, pipeline.compare(res, ref, decode), ref_times)
      write_frames(row, i, res)
      -- time a plan spends measuring recall against the exact mass is kept apart by the attention
      -- context (each step's measure_seconds): it is off the step's attention and step times already
      local recall_total = 0
      for _, rec in ipairs(res.steps) do recall_total = recall_total + (rec.measure_seconds or 0) end
      row.recall_seconds = recall_total
      xs[#xs + 1] = {label = r.label, x = res.x, frames = res.frames}
      say("[%d/%d] %s: %s sampling; FLOPs %.1f%% of dense, attention %.2fx, latents PSNR %s dB; eta %s", i + 1, n, r.label,
        sampler.duration(res.sampling_seconds), 100 * row.flops_fraction, row.attention_speedup,
        reports.f_num(row.latent_psnr, "%.2f"), eta(i + 1))
    else
      failed = failed + 1
      local msg = pipeline.message(res)
      row = {label = r.label, error = msg}
      say("[%d/%d] %s: FAILED: %s", i + 1, n, r.label, msg)
    end
    row.policy, row.describe, row.options, row.entry = r.name, r.describe, r.opts, r.entry
    rows[#rows + 1] = row
    collectgarbage()
  end

  -- reports (adaspa.jobs.compare_report)
  local report, lines, files = reports.write(out, {cfg = cfg, job = job, prep = prep, rows = rows, runs = runs, ref_label = ref_label,
    ref_row = ref_row, ref_gallery = ref_gallery, gallery_step = gallery_step, xs = xs, t_start = t_start})
  say("%s", table.concat(lines, "\n"))
  say("compare: %s total; wrote %s", sampler.duration(adaspa.now() - t_start), dir)
  report.lines = lines
  report.rows = rows
  if failed > 0 then
    if not cfg.output.quiet then io.stderr:write(string.format("adaspa compare: %d of %d runs failed (see %s)\n", failed, #runs, files.table)) end
    return 1, report
  end
  return 0, report
end

-- The report formatters (adaspa.jobs.compare_report), still reachable from here.
for _, k in ipairs({"columns", "format_table", "format_markdown", "csv_fields", "format_csv", "chart_spec", "gallery_image"}) do
  compare[k] = reports[k]
end

return compare
