-- adaspa.jobs.pipeline: the pieces the jobs share (video, compare, replay): the device choice,
-- the resolved sizes and the memory and time estimate, the model with its weights and the text
-- conditioning (prepare), one sampling run with a policy (run_schedule), the quality of a run
-- against a reference, and the progress printer:
--   pipeline.prepare(cfg [, opts]) -> prep: device, preset, model, text conditioning (once);
--   pipeline.run_schedule(cfg, prep, policy, say [, opts]) -> run: one sampling run with a policy;
--   pipeline.compare(run, ref) -> quality of run against ref (same seed): PSNR/SSIM of latents and
--     previews, per-layer attention errors at the error steps;
--   pipeline.median_steps(records);
--   pipeline.gpu_runs_model() -> ok, why: whether the CUDA backend runs the model's ops here;
--   pipeline.device(want, notes), pipeline.say(quiet), pipeline.message(err).
-- Policies come from adaspa.policy.build (the one builder); models from adaspa.models (the
-- registry: nothing here names a model).
local adaspa = require "adaspa"
local models = require "adaspa.models"
local sampler = require "adaspa.sampler"
local preview = require "adaspa.preview"
local attention = require "adaspa.attention"
local quality = require "adaspa.quality"

local pipeline = {}

-- Whether the CUDA backend can run the model's ops on this machine: true, or false and why.
local function gpu_runs_model()
  if not adaspa.cuda.available() then return false, adaspa.cuda.reason() end
  local ok, err = pcall(function()
    local x = adaspa.ones({2, 2}, {device = "cuda"})
    adaspa.linear(x, x, nil)
    adaspa.attention(x:reshape({2, 1, 2}), x:reshape({2, 1, 2}), x:reshape({2, 1, 2}))
  end)
  return ok, not ok and tostring(err):gsub("^[^:]*:%d+: ", "") or nil
end
pipeline.gpu_runs_model = gpu_runs_model

-- The device a job runs on: want ("auto", "cpu", "cuda", "cuda:N"); auto is the GPU when its
-- backend runs the model, else the CPU (noted in notes with why).
function pipeline.device(want, notes)
  if want ~= "auto" then return want end
  local ok, why = gpu_runs_model()
  if not ok then notes[#notes + 1] = "running on the CPU: " .. tostring(why) end
  return ok and "cuda" or "cpu"
end

-- The progress printer of a job: printf-like lines on stdout, nothing when quiet.
function pipeline.say(quiet)
  if quiet then return function() end end
  return function(...) io.write(string.format(...), "\n"); io.flush() end
end

-- An error's message without the "file.lua:N: " position (what a recipe's user is shown).
function pipeline.message(err) return (tostring(err):gsub("^[^\n]-%.lua:%d+: ", "")) end

-- The recipe's model overrides for M.config: M.overrides(model_table, preset) or, without it,
-- every field of M.schema the recipe set.
local function model_overrides(M, m, preset)
  if M.overrides then return M.overrides(m, preset) end
  local over = {}
  local copy = require("adaspa.models.common").deep_copy
  for k in pairs(M.schema or {}) do over[k] = copy(m[k]) end
  return over
end

-- Resolves the recipe's guidance (cfg.sampler.guidance_kind, guidance, shift; filled in place from
-- the model's sampler_defaults; the shift from the preset's own cfg.shift where it has one):
-- returns {kind =, scale =, forwards =, embedded = the scale the conditioning carries (embedded
-- guidance; nil when the model has none)}.
local function resolve_guidance(cfg, M, mcfg)
  local sd, s = M.sampler_defaults, cfg.sampler
  if s.shift == nil then s.shift = mcfg and mcfg.shift or sd.shift end
  if s.guidance_kind == nil or s.guidance_kind == "auto" then s.guidance_kind = sd.guidance.kind end
  if s.guidance == nil then s.guidance = sd.guidance.scale end
  if s.guidance_kind == "embedded" and sd.guidance.kind ~= "embedded" then
    error(string.format("sampler.guidance_kind = embedded: model %s has no embedded guidance (use cfg or auto)", M.name), 0)
  end
  local embedded
  if sd.guidance.kind == "embedded" then
    embedded = s.guidance_kind == "embedded" and s.guidance or sd.guidance.scale
  end
  local g = {kind = s.guidance_kind, scale = s.guidance, forwards = sampler.forwards(s.guidance_kind), embedded = embedded}
  if s.guidance_interval and g.kind == "cfg" then
    g.interval = {s.guidance_interval[1], s.guidance_interval[2]}
    g.guided_steps, g.steps = sampler.guided_steps(g.interval, s.steps, s.shift), s.steps
  elseif s.guidance_interval then
    error("sampler.guidance_interval needs sampler.guidance_kind = cfg (embedded guidance has one pass a step)", 0)
  end
  return g
end
pipeline.resolve_guidance = resolve_guidance

-- Resolves device, dtype, preset and sizes (filling cfg.video from the preset, and the sampler's
-- shift and guidance from the model's defaults); returns the model config, device, dtype, notes
-- for the report, and the model's registry entry.
local function resolve(cfg)
  local notes = {}
  if cfg.prompt ~= nil then cfg.text.prompt = cfg.prompt end
  local M = models.get(cfg.model.name)
  local device = pipeline.device(cfg.model.device, notes)
  local preset = cfg.model.preset
  local auto_note
  if preset == "auto" then
    preset = models.auto_preset(M, device)
    if device == "cpu" and preset ~= M.default_preset then
      notes[#notes + 1] = string.format("preset auto -> %s (the %s model needs a GPU)", preset, M.default_preset)
      auto_note = #notes
    end
  end
  -- a model that ships trained weights runs them when the recipe names none (M.default_weights)
  if cfg.model.weights == nil and M.default_weights then cfg.model.weights = M.default_weights() end
  local mcfg = M.config(preset, model_overrides(M, cfg.model, preset))
  -- the model may map the preset on (Wan's model.task = i2v: small -> small_i2v): name the one run
  if auto_note and mcfg.preset ~= nil and mcfg.preset ~= preset then
    notes[auto_note] = string.format("preset auto -> %s (the %s model needs a GPU)", mcfg.preset, M.default_preset)
  end
  for _, k in ipairs({"width", "height", "frames"}) do
    if cfg.video[k] == nil then cfg.video[k] = mcfg.video[k] end
  end
  resolve_guidance(cfg, M, mcfg)
  local dtype = cfg.model.dtype
  if dtype == "auto" then dtype = device == "cpu" and "f32" or "bf16" end
  return mcfg, device, dtype, notes, M
end

pipeline.resolve = resolve

local function timestamp() return os.date("%Y%m%d-%H%M%S") end
pipeline.timestamp = timestamp

-- The estimate of a resolved run (adaspa.footprint) with the memory available to it.
function pipeline.estimate(cfg, mcfg, device, dtype, policy)
  local fp = require "adaspa.footprint"
  local file_bytes
  if cfg.model.weights then
    local wt = require "adaspa.weights"
    local ok, files = pcall(wt.files, cfg.model.weights)
    if ok then
      for _, p in ipairs(files) do
        local f = io.open(p, "rb")
        if f then file_bytes = (file_bytes or 0) + f:seek("end"); f:close() end
      end
    end
  end
  local pname = type(policy) == "table" and policy.name or cfg.attention.policy
  -- the passes a step: with a guidance interval the second pass runs on some steps only (their mean)
  local g = resolve_guidance(cfg, models.get(cfg.model.name), mcfg)
  local passes = g.interval and 1 + g.guided_steps / g.steps or nil
  local e = fp.estimate{mcfg = mcfg, model = models.get(cfg.model.name), video = cfg.video, device = device, dtype = dtype,
    steps = cfg.sampler.steps, sparsity = pname == "dense" and 0 or cfg.attention.sparsity, policy = pname,
    warmup = type(policy) == "table" and tonumber(policy.warmup) or cfg.attention.warmup,
    error_steps = cfg.output.compare_dense and #cfg.output.error_steps or 0, weights_file_bytes = file_bytes,
    forwards = g.forwards, passes = passes}
  e.host_available = fp.host_available()
  e.gpu_available = device ~= "cpu" and fp.gpu_available(device) or nil
  return e
end

-- "embedded guidance 6 (1 forward pass per step)" / "classifier-free guidance 5 (2 forward passes per step)" /
-- "classifier-free guidance 3 at t in [0, 900] (2 forward passes on 37 of 50 steps, 1 on the rest)".
function pipeline.guidance_text(g)
  local what = g.kind == "cfg" and "classifier-free guidance" or "embedded guidance"
  if g.interval then
    return string.format("%s %g at t in [%g, %g] (2 forward passes on %d of %d steps, 1 on the rest)", what, g.scale,
      g.interval[1], g.interval[2], g.guided_steps, g.steps)
  end
  return string.format("%s %g (%d forward pass%s per step)", what, g.scale, g.forwards, g.forwards == 1 and "" or "es")
end

-- Resolves the configuration (device, preset, sizes), estimates the run's memory and time and
-- prints them; refuses (an error naming the sizes and what to change) when the memory does not
-- fit, unless model.memory_check is false. Nothing is allocated for the model yet. opts: say,
-- policy (the run's policy object, for its schedule). Returns plan = {mcfg, device, dtype, notes,
-- estimate, entry, guidance, grid, latent_shape, n_tokens, n_txt}.
function pipeline.plan(cfg, opts)
  opts = opts or {}
  local say = opts.say or function() end
  local fp = require "adaspa.footprint"
  local mcfg, device, dtype, notes, M = resolve(cfg)
  local guidance = resolve_guidance(cfg, M, mcfg)
  for _, n in ipairs(notes) do say("adaspa: %s", n) end
  local grid, latent_shape = M.grid(cfg.video, mcfg)
  local tok = M.tokens(mcfg, cfg.video)
  local n_tokens = tok.n_img + tok.n_txt
  say("adaspa: %s on %s, %s", models.describe(M, mcfg), device, dtype)
  say("adaspa: video %dx%d, %d frames -> latent [%s], %d tokens (%d text); %d steps (0..%d)",
    cfg.video.width, cfg.video.height, cfg.video.frames, table.concat(latent_shape, ", "), n_tokens,
    tok.n_txt, cfg.sampler.steps, cfg.sampler.steps - 1)
  if guidance.kind == "cfg" then say("adaspa: %s", pipeline.guidance_text(guidance)) end
  local e = pipeline.estimate(cfg, mcfg, device, dtype, opts.policy)
  for _, l in ipairs(fp.describe(e, e.host_available, e.gpu_available)) do say("adaspa: %s", l) end
  local ok, why = fp.fits(e, e.host_available, e.gpu_available)
  if not ok then
    if cfg.model.memory_check then error(why, 0) end
    say("adaspa: warning: %s", why)
    notes[#notes + 1] = "memory check off: " .. why
  end
  return {mcfg = mcfg, device = device, dtype = dtype, notes = notes, estimate = e, grid = grid,
          latent_shape = latent_shape, n_tokens = n_tokens, n_txt = tok.n_txt, entry = M, guidance = guidance}
end

-- Resolves the configuration and builds what every run of it shares: the model with its weights
-- and the conditioning. opts: say (printf-like; nothing when absent), dir (named in the progress
-- line), plan (pipeline.plan's result; made here when absent), policy (for pipeline.plan).
-- Returns prep = {mcfg, device, dtype, notes, estimate, entry (the model's registry entry), model,
-- cond = {cond, uncond (classifier-free guidance), source}, guidance = {kind, scale, forwards},
-- weights_source, weights_seconds, grid, latent_shape, n_tokens}.
function pipeline.prepare(cfg, opts)
  opts = opts or {}
  local say = opts.say or function() end
  local plan = opts.plan or pipeline.plan(cfg, {say = say, policy = opts.policy})
  local mcfg, device, dtype, notes, M = plan.mcfg, plan.device, plan.dtype, plan.notes, plan.entry
  local grid, latent_shape, n_tokens = plan.grid, plan.latent_shape, plan.n_tokens
  local guidance = plan.guidance
  if opts.dir then say("adaspa: output %s", opts.dir) end

  local t0 = adaspa.now()
  local weights, weights_source
  if cfg.model.weights then
    weights = M.load_weights(cfg.model.weights, mcfg, {device = device, dtype = dtype, prefix = cfg.model.weights_prefix})
    weights_source = require("adaspa.weights").describe_source(cfg.model.weights)
      .. (cfg.model.weights_prefix and string.format(" (keys under %s)", cfg.model.weights_prefix) or "")
  else
    weights = M.synthetic_weights(mcfg, {seed = cfg.model.weights_seed, device = device, dtype = dtype})
    weights_source = string.format("SYNTHETIC (seed %d): not trained weights; the pictures show attention structure, not content",
      cfg.model.weights_seed)
  end
  local model = M.new(mcfg, weights)
  local t_weights = adaspa.now() - t0
  say("adaspa: weights: %s (%.1f s)", weights_source, t_weights)

  local cond = M.conditioning(mcfg, {embeds = cfg.text.embeds, prompt = cfg.text.prompt, negative = cfg.text.negative,
    guidance = guidance.embedded, cfg = guidance.kind == "cfg", device = device, dtype = dtype, model = model})
  say("adaspa: text: %s", cond.source)
  return {mcfg = mcfg, device = device, dtype = dtype, notes = notes, estimate = plan.estimate, model = model, cond = cond,
          entry = M, guidance = guidance, weights_source = weights_source, weights_seconds = t_weights, grid = grid,
          latent_shape = latent_shape, n_tokens = n_tokens}
end

-- One sampling run with a policy. opts:
--   dir           write mask and mass pictures at search steps (output.pictures), the density
--                 grid and the cache there;
--   outputs       {[step] = {[layer] = tensor}}: attention outputs of another run at the error
--                 steps (output.error_steps); each layer's relative error between the two is
--                 computed (run.errors[step][layer]); outputs_are_reference: those outputs are the
--                 reference (else this run is); without opts.outputs, this run's outputs at the
--                 error steps are kept (run.outputs);
--   on_attention  fn(ctx, info, mode, out): after every attention call (mode: dense, search,
--                 plan or sparse);
--   quiet_steps   no progress line per step.
--   keep_ctx      run.ctx: the attention context (its caches, one per guidance branch: ctx.caches);
--   interruptible Ctrl-C stops the sampling at the next op boundary (run.interrupted: the step
--                 that did not complete; x and the records hold the steps done).
-- Returns {x, steps (per-step records), by_mode, attention_seconds, sampling_seconds, flops,
-- dense_flops, plan_flops, plan_seconds, outputs, errors, pictures, cache_stats (branch 1's: the
-- conditional one), branch_cache_stats (branches 2.. with classifier-free guidance), forwards
-- (passes per step), interrupted}. With classifier-free guidance each branch keeps its own cache
-- (saved as cache.safetensors and cache_branch2.safetensors), pictures of branch 2 end in _branch2,
-- and the attention errors at the error steps are the conditional branch's.
-- The sequence-parallel part of a run's report (every rank calls it: it gathers): ranks, transport
-- and, for a sparse policy, the attention work imbalance (max over mean of the per-rank sums of
-- kept-block fractions; branch 1's last layouts) per layer and their means: under the plain
-- contiguous head split (plain), under the assignment the last layouts ran with (applied), and
-- under parallel.balance of these layouts (balanced); and per search step (branch 1), the mean
-- over layers of the imbalance of the layouts just chosen under the heads the search ran on
-- (before) and under the rebalanced heads the sparse steps then run on (after).
function pipeline.parallel_report(ctx, n_layers, policy)
  local parallel = require "adaspa.parallel"
  local sp = ctx.sp
  local r = {ranks = sp.size, transport = sp.comm:transport(), balance = sp.balance ~= false}
  if policy.name == "dense" then return r end
  local sums, layers = {plain = 0, applied = 0, balanced = 0}, {}
  for l = 1, n_layers do
    local mine = ctx.cache:density(l)
    if mine and #mine > 0 then
      local key = l .. ":1"
      local H = sp.comm:all_reduce({#mine}, "sum")[1] -- every rank's heads
      local all = sp:gather_heads(mine, H, key)
      local e = {layer = l, density = all, plain = parallel.imbalance(all, parallel.contiguous(H, sp.size)),
                 applied = parallel.imbalance(all, sp:heads(H, key)), balanced = parallel.imbalance(all, parallel.balance(all, sp.size))}
      layers[#layers + 1] = e
      for k in pairs(sums) do sums[k] = sums[k] + e[k] end
    end
  end
  if #layers > 0 then
    r.imbalance = {plain = sums.plain / #layers, applied = sums.applied / #layers, balanced = sums.balanced / #layers, layers = layers}
  end
  local by_step, steps = {}, {}
  for _, e in ipairs(sp.balance_log or {}) do
    if e.key:match(":1$") then
      local s = by_step[e.step]
      if not s then
        s = {step = e.step, before = 0, after = 0, layers = 0}
        by_step[e.step] = s
        steps[#steps + 1] = s
      end
      s.before, s.after, s.layers = s.before + e.before, s.after + e.after, s.layers + 1
    end
  end
  for _, s in ipairs(steps) do s.before, s.after = s.before / s.layers, s.after / s.layers end
  if #steps > 0 then r.searches = steps end
  return r
end

function pipeline.run_schedule(cfg, prep, policy, say, opts)
  opts = opts or {}
  local mcfg, model, cond, device, dtype = prep.mcfg, prep.model, prep.cond, prep.device, prep.dtype
  local dir = opts.dir
  local n_layers = prep.entry.attention_layers(mcfg)
  local ctx = attention.new(policy, {layers = math.max(n_layers, 1), sync = device ~= "cpu"})
  local comm = adaspa.comm.world()
  if comm:size() > 1 then -- several processes (adaspa launch): Ulysses sequence parallelism
    if not prep.entry.sequence_parallel then
      local names = {}
      for _, n in ipairs(require("adaspa.models").names()) do
        if require("adaspa.models").get(n).sequence_parallel then names[#names + 1] = n end
      end
      error(string.format("model %s does not run sequence-parallel yet (%d processes): run it as one process, or use a "
        .. "model that does (%s)", prep.entry.name, comm:size(), table.concat(names, ", ")), 0)
    end
    ctx.sp = require("adaspa.parallel").new(comm)
  end
  local error_steps = {}
  for _, s in ipairs(cfg.output.error_steps or {}) do error_steps[s] = true end
  local outputs, errors = {}, {}
  local other = opts.outputs
  ctx.on_output = function(c, layer, out)
    if not error_steps[c.step] or c.branch ~= 1 then return end -- errors: the conditional branch's
    if other then
      local o = other[c.step] and other[c.step][layer]
      if o then
        errors[c.step] = errors[c.step] or {}
        errors[c.step][layer] = opts.outputs_are_reference and quality.rel_l2(out, o) or quality.rel_l2(o, out)
      end
    end
    if not other then
      outputs[c.step] = outputs[c.step] or {}
      outputs[c.step][layer] = out:clone()
    end
  end
  if opts.on_attention then
    local base = ctx.attention
    ctx.attention = function(self, q, k, v, info)
      local out = base(self, q, k, v, info)
      opts.on_attention(self, info, self.last_mode, out)
      return out
    end
  end
  local pics = {}
  local pictures_on = dir and cfg.output.pictures
  if pictures_on then
    local want_layer, want_head = {}, cfg.output.picture_heads
    for _, l in ipairs(cfg.output.picture_layers) do want_layer[l] = true end
    ctx.capture = function(c, kind, layer, info, mass, layout)
      if not want_layer[layer] then return end
      local pictures = require "adaspa.pictures"
      local b = pictures.boundaries(info.grid, info.n_txt, layout:block())
      for _, h in ipairs(want_head) do
        local g = h -- the head's number in the model; with sequence parallelism, its row here (or none)
        if info.sp then
          h = nil
          for j, x in ipairs(info.sp.heads) do if x == g then h = j end end
        end
        if h and h >= 1 and h <= layout:heads() then
          local base = string.format("%s/step%02d_layer%02d_head%02d%s", dir, c.step, layer, g,
            c.branch == 1 and "" or string.format("_branch%d", c.branch))
          adaspa.png.write(base .. "_mask.png", pictures.mask(layout, h, b))
          adaspa.png.write(base .. "_mass.png", pictures.mass(mass, h, b))
          pics[#pics + 1] = base .. "_mask.png"
          pics[#pics + 1] = base .. "_mass.png"
        end
      end
    end
  end
  local records = {}
  local latent_shape = prep.latent_shape
  local x = adaspa.randn(latent_shape, {seed = cfg.sampler.seed, dtype = "f32", device = device})
  local guidance = prep.guidance
  local _, _, interrupted = sampler.euler(x, sampler.guided(model, cond, guidance, ctx, dtype), {steps = cfg.sampler.steps, shift = cfg.sampler.shift, renoise = cfg.sampler.renoise, seed = cfg.sampler.seed, quiet = true, interruptible = opts.interruptible,
        on_step = function(info)
          local r = attention.summarize(ctx:end_step())
          -- a plan's self-measurement (exact recall) is not the method's time
          r.seconds_total, r.timestep = info.seconds - (r.measure_seconds or 0), info.timestep
          records[#records + 1] = r
          if not opts.quiet_steps then
            local extra = ""
            if r.density then extra = string.format(", density %.3f [%.3f, %.3f]", r.density.mean, r.density.min, r.density.max) end
            if r.recall then extra = extra .. string.format(", recall %.3f", r.recall) end
            if (r.branches or 1) > 1 then extra = extra .. string.format(", %d passes (cfg)", r.branches) end
            if r.late_layouts then extra = extra .. string.format(", %d layouts made for the late branch", r.late_layouts) end
            say("step %3d/%d  t=%7.2f  %s  eta %s  %-6s attention %s%s", info.step, info.steps - 1, info.timestep,
              sampler.duration(info.seconds), sampler.duration(info.eta), r.mode, sampler.duration(r.seconds), extra)
          end
        end})
  local by_mode, att, flops, dflops, pflops, pseconds, sampling = {}, 0, 0, 0, 0, 0, 0
  for i, r in ipairs(records) do
    local st = ctx.steps[i]
    local b = by_mode[r.mode] or {steps = 0, seconds = 0, attention = 0}
    b.steps, b.seconds, b.attention = b.steps + 1, b.seconds + r.seconds_total, b.attention + r.seconds
    by_mode[r.mode] = b
    att, flops, dflops = att + st.seconds, flops + st.flops, dflops + st.dense_flops
    pflops, pseconds, sampling = pflops + (st.plan_flops or 0), pseconds + (st.plan_seconds or 0), sampling + r.seconds_total
  end
  -- the caches of every head (with sequence parallelism each rank holds its heads': rank 0 gets
  -- them all, so the density grid, the cache stats and the saved caches are one process's)
  local caches = ctx.caches
  if ctx.sp and policy.name ~= "dense" then
    caches = {}
    for b = 1, ctx:branches() do caches[b] = ctx.sp:gather_cache(ctx:cache_for(b), math.max(n_layers, 1), b) end
  end
  if pictures_on and policy.name ~= "dense" then
    local pictures = require "adaspa.pictures"
    local dens = {}
    local any = false
    for l = 1, n_layers do
      dens[l] = caches[1]:density(l) or {}
      any = any or #dens[l] > 0
    end
    if any then -- (none when the run was interrupted before its first search)
      local p = dir .. "/densities.png"
      adaspa.png.write(p, pictures.density_grid(dens))
      pics[#pics + 1] = p
    end
  end
  ctx:set_branch(1)
  local par
  if ctx.sp then par = pipeline.parallel_report(ctx, n_layers, policy) end
  local cache_stats = caches[1]:stats()
  local branch_stats
  if #caches > 1 then
    branch_stats = {}
    for b = 2, #caches do branch_stats[b - 1] = caches[b]:stats() end
  end
  if dir and policy.name ~= "dense" then
    caches[1]:save(dir .. "/cache.safetensors")
    for b = 2, #caches do caches[b]:save(string.format("%s/cache_branch%d.safetensors", dir, b)) end
  end
  return {x = x, parallel = par, ctx = opts.keep_ctx and ctx or nil, branch_cache_stats = branch_stats, forwards = guidance.forwards, steps = records, by_mode = by_mode, attention_seconds = att, sampling_seconds = sampling, flops = flops,
          dense_flops = dflops, plan_flops = pflops, plan_seconds = pseconds, outputs = outputs, errors = errors,
          pictures = pics, cache_stats = cache_stats, interrupted = interrupted}
end

-- Median seconds of a step and of its attention, per mode: robust to a busy machine.
-- records: run.steps. Returns {[mode] = {steps = n, step = s, attention = s}}.
local function median_steps(records)
  local by = {}
  for _, r in ipairs(records) do
    by[r.mode] = by[r.mode] or {step = {}, attention = {}}
    table.insert(by[r.mode].step, r.seconds_total)
    table.insert(by[r.mode].attention, r.seconds)
  end
  local out = {}
  for m, v in pairs(by) do
    table.sort(v.step)
    table.sort(v.attention)
    out[m] = {steps = #v.step, step = v.step[math.floor((#v.step + 1) / 2)], attention = v.attention[math.floor((#v.attention + 1) / 2)]}
  end
  return out
end

pipeline.median_steps = median_steps

-- Quality of run against the dense reference ref (same seed). The per-layer attention errors are
-- those computed by whichever of the two runs was given the other's outputs. decode (optional):
-- x -> the video's frames (a model's decoder, M.decode); the "previews" numbers are then those of
-- the decoded frames (kept as run.frames and ref.frames), else of the latent previews.
local function compare(run, ref, decode)
  local fa, fb
  if decode then
    run.frames = run.frames or decode(run.x)
    ref.frames = ref.frames or decode(ref.x)
    fa, fb = run.frames, ref.frames
  else
    fa = preview.frames(run.x, 1)
    fb = preview.frames(ref.x, 1)
  end
  local pa, pb = {}, {}
  for i = 1, #fa do pa[i], pb[i] = fa[i]:to("f32"):permute(3, 1, 2), fb[i]:to("f32"):permute(3, 1, 2) end
  local a, b = adaspa.concat(pa), adaspa.concat(pb)                 -- [3T, h, w] u8 values as f32
  local out = {
    latents = {psnr = quality.psnr(run.x, ref.x), ssim = quality.ssim(run.x, ref.x), rel_l2 = quality.rel_l2(run.x, ref.x)},
    previews = {psnr = quality.psnr(a, b, 255), ssim = quality.ssim(a, b, 255)},
    attention_error = {},
  }
  local errs = (ref.errors and next(ref.errors)) and ref.errors or run.errors or {}
  local steps = {}
  for s in pairs(errs) do steps[#steps + 1] = s end
  table.sort(steps)
  for _, s in ipairs(steps) do
    local per, sum, n, mx, ml = errs[s], 0, 0, -1, 0
    for l, e in pairs(per) do
      sum, n = sum + e, n + 1
      if e > mx then mx, ml = e, l end
    end
    out.attention_error[#out.attention_error + 1] = {step = s, mean = sum / n, max = mx, max_layer = ml, per_layer = per}
  end
  return out
end
pipeline.compare = compare

return pipeline
