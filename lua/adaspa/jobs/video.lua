-- adaspa.jobs.video: the main job. Builds HunyuanVideo (weights from a file or synthetic),
-- samples a latent video with flow-matching Euler, and writes the outputs: latents
-- (safetensors), one preview PNG per latent frame, a contact sheet, and a report (text + JSON).
-- Its pieces serve other jobs (adaspa.jobs.compare):
--   video.prepare(cfg [, opts]) -> prep: device, preset, model, text conditioning (once);
--   video.run_schedule(cfg, prep, policy, say [, opts]) -> run: one sampling run with a policy;
--   video.compare(run, ref) -> quality of run against ref (same seed): PSNR/SSIM of latents and
--     previews, per-layer attention errors at the error steps;
--   video.median_steps(records);
--   video.gpu_runs_model() -> ok, why: whether the CUDA backend runs the model's ops here.
local adaspa = require "adaspa"
local hy = require "adaspa.models.hunyuan"
local sampler = require "adaspa.sampler"
local preview = require "adaspa.preview"
local text = require "adaspa.text"
local json = require "adaspa.json"
local attention = require "adaspa.attention"
local quality = require "adaspa.quality"
local dense_policy = require "adaspa.policy.dense"
local policies = require "adaspa.policy"

local video = {}

local C = require "adaspa.check"

-- Limits of the schedule and of the sizes: beyond them a run could not finish (the memory and
-- time estimate refuses what does not fit the machine; these bound what is sane at all).
video.MAX_STEPS = 1000

local function steps_of(root)
  local n = root.sampler and root.sampler.steps
  if C.finite(n) and n % 1 == 0 and n >= 1 and n <= video.MAX_STEPS then return n end
end

-- "entry i: step s beyond the schedule" for a list of 0-based steps, or nil.
local function steps_in_schedule(v, root, what)
  local n = steps_of(root)
  if not n then return end
  for i, s in ipairs(v) do
    if s >= n then return string.format("%s %d (entry %d) is beyond the schedule (steps 0..%d)", what, s, i, n - 1) end
  end
end

local builtin_warmup = {adaspa = true, window = true, spatial_temporal = true, estimate = true}

video.schema = {
  model = {
    name = C.string{default = "hunyuan", one_of = {"hunyuan"}, doc = "the model (HunyuanVideo is the only one)"},
    preset = C.string{default = "auto", one_of = {"auto", "720p", "small"},
      doc = "sizes: 720p (the real model), small (narrow, few layers: runs on a CPU), auto: 720p on a GPU, small on the CPU"},
    weights = C.file{doc = "a safetensors checkpoint (original or diffusers keys); none: synthetic weights"},
    weights_seed = C.integer{default = 1, min = 0, max = 2 ^ 31 - 1, doc = "seed of the synthetic weights"},
    device = C.string{default = "auto", one_of = {"auto", "cpu", "cuda"}, pattern = "^cuda:%d+$", pattern_doc = "cuda:N",
      doc = "where the model runs: auto (the GPU when its backend runs the model), cpu, cuda or cuda:N"},
    dtype = C.string{default = "auto", one_of = {"auto", "f32", "bf16"}, doc = "weights and activations: auto (f32 on the CPU, bf16 on a GPU), f32, bf16"},
    hidden = C.integer{min = 1, max = 65536, doc = "model width (default: the preset's; heads x head_dim)", extra = function(v, root)
      local m = root.model
      if C.finite(m.heads) and C.finite(m.head_dim) and v ~= m.heads * m.head_dim then
        return string.format("must equal model.heads x model.head_dim (%d x %d = %d)", m.heads, m.head_dim, m.heads * m.head_dim)
      end
    end},
    heads = C.integer{min = 1, max = 1024, doc = "attention heads (default: the preset's)"},
    head_dim = C.integer{min = 128, max = 128, doc = "channels per head: 128, the sum of the 3D RoPE axes 16 + 56 + 56"},
    mlp_ratio = C.integer{min = 1, max = 64, doc = "MLP width / model width (default: the preset's, 4)"},
    text_len = C.integer{min = 1, max = 4096, doc = "text tokens (default: the preset's; with text.embeds, the file's)"},
    fused_norm_rope = C.boolean{default = true,
      doc = "q and k RMSNorm + RoPE in one pass (adaspa.rmsnorm_rope3d; same results as the two passes)"},
    layers = {double = C.integer{min = 0, max = 1000, doc = "double-stream blocks (default: the preset's)"},
              single = C.integer{min = 0, max = 1000, doc = "single-stream blocks (default: the preset's)"},
              refiner = C.integer{min = 0, max = 1000, doc = "text refiner blocks (default: the preset's)"}},
    memory_check = C.boolean{default = true,
      doc = "refuse a run whose estimated memory exceeds what the host or GPU has free (false: warn only)"},
  },
  video = {
    width = C.integer{min = 16, max = 16384, doc = "pixels, a multiple of 16 (default: the preset's: 1280, small 320)",
      extra = function(v) if v % 16 ~= 0 then return "must be a multiple of 16" end end},
    height = C.integer{min = 16, max = 16384, doc = "pixels, a multiple of 16 (default: the preset's: 720, small 256)",
      extra = function(v) if v % 16 ~= 0 then return "must be a multiple of 16" end end},
    frames = C.integer{min = 1, max = 100001, doc = "frames, 4k+1 (default: the preset's: 129, small 17)",
      extra = function(v) if (v - 1) % 4 ~= 0 then return "must be 4k+1 (1, 5, 9, ..., 129)" end end},
  },
  text = {
    prompt = C.string{default = "a red fox running through fresh snow at dawn", empty = true,
      doc = "the prompt (without text.embeds it seeds synthetic text states; it names the run)"},
    embeds = C.file{doc = "safetensors with text_states, text_mask, text_pooled (the text encoders' outputs)"},
  },
  sampler = {
    steps = C.integer{default = 50, min = 1, max = video.MAX_STEPS, doc = "flow-matching Euler steps, numbered 0..steps-1"},
    shift = C.number{default = 7.0, above = 0, max = 1000, doc = "the schedule's shift (HunyuanVideo: 7)"},
    guidance = C.number{default = 6.0, min = 0, max = 100, doc = "embedded guidance scale (HunyuanVideo: 6)"},
    seed = C.integer{default = 42, min = 0, max = 2 ^ 53, doc = "seed of the initial noise"},
  },
  attention = {
    policy = C.any{default = "adaspa", doc = "adaspa | dense | window | spatial_temporal | estimate, or a policy object defined in the recipe",
      check = function(v)
      if type(v) == "table" then
        if not policies.is_policy(v) then
          return "a policy object needs mode(step, layer) and select(mass, layer, info) or plan(q, k, v, info, ctx) methods"
        end
      else
        for _, n in ipairs(policies.names) do if v == n then return end end
        return "known policies: " .. table.concat(policies.names, ", ") .. " (or a policy object defined in the recipe)"
      end
    end},
    options = C.table{default = {}, doc = "options of the chosen policy beyond the shared fields below (checked by the policy)"},
    sparsity = C.number{default = 0.8, min = 0, below = 1, doc = "mean fraction of blocks dropped per head"},
    block = C.integer{default = 64, min = 64, max = 128, doc = "block size in tokens: 64 or 128",
      extra = function(v) if v ~= 64 and v ~= 128 then return "must be 64 or 128" end end},
    warmup = C.integer{min = 0, max = video.MAX_STEPS,
      doc = "dense warm-up steps (steps 0..warmup-1 dense); default 20% of the steps (10 of 50)",
      extra = function(v, root)
        local n = steps_of(root)
        local pol = root.attention.policy
        if n and v >= n and (type(pol) ~= "string" or builtin_warmup[pol]) then
          return string.format("the schedule has %d steps (0..%d): the warm-up must end before the last step", n, n - 1)
        end
      end},
    search = C.list{item = "integer", min = 0, max = video.MAX_STEPS, nonempty = true,
      doc = "adaspa's search steps (0-based); default 20% and 60% of the steps ({10, 30} of 50)",
      extra = function(v, root) return steps_in_schedule(v, root, "search step") end},
    head_adaptive = C.boolean{default = true, doc = "tiers (1+s)/2, s, (3s-1)/2 by each head's recall"},
    text_sink = C.boolean{default = true, doc = "text blocks always kept, as rows and columns"},
    first_frame_sink = C.boolean{default = false, doc = "the first latent frame's blocks always kept as columns"},
    diagonal = C.boolean{default = true, doc = "diagonal blocks always kept"},
    recall = C.number{above = 0, max = 1, doc = "instead of tiers: keep blocks until each row's mass reaches it"},
    recall_cut = C.number{default = 0.8, min = 0, max = 1, doc = "recall above which a head counts as easy (tiers)"},
    min_density = C.number{default = 0.02, min = 0, max = 1, doc = "with recall: the least share of blocks kept per row"},
    max_density = C.number{default = 1.0, above = 0, max = 1, doc = "with recall: the largest share of blocks kept per row"},
    two_pass_first = C.boolean{default = false, doc = "the first search runs dense then block mass (no cached LSE)"},
  },
  output = {
    dir = C.dir{doc = "the output folder (default out/<recipe>-<time>)"},
    previews = C.boolean{default = true, doc = "frame PNGs and a contact sheet"},
    upscale = C.integer{default = 8, min = 1, max = 64, doc = "preview pixels per latent pixel"},
    quiet = C.boolean{default = false, doc = "no progress lines"},
    compare_dense = C.boolean{default = false, doc = "also run dense with the same seed and report PSNR/SSIM against it"},
    error_steps = C.list{default = {}, item = "integer", min = 0, max = video.MAX_STEPS,
      doc = "steps (0-based) whose per-layer attention error against dense is reported",
      extra = function(v, root) return steps_in_schedule(v, root, "step") end},
    pictures = C.boolean{default = true, doc = "masks and mass heat maps at search steps, a layer x head density grid"},
    picture_layers = C.list{default = {1}, item = "integer", min = 1, max = 2000, doc = "layers (1-based) pictured"},
    picture_heads = C.list{default = {1}, item = "integer", min = 1, max = 1024, doc = "heads (1-based) pictured"},
  },
}

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
video.gpu_runs_model = gpu_runs_model

local function read_peak_rss()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  local kb = s:match("VmHWM:%s*(%d+)")
  return kb and tonumber(kb) * 1024 or nil
end

-- Resolves device, dtype, preset and sizes (filling cfg.video from the preset); returns the model
-- config, device, dtype and notes for the report.
local function resolve(cfg)
  local notes = {}
  local device = cfg.model.device
  if device == "auto" then
    local ok, why = gpu_runs_model()
    device = ok and "cuda" or "cpu"
    if not ok then notes[#notes + 1] = "running on the CPU: " .. why end
  end
  local preset = cfg.model.preset
  if preset == "auto" then
    preset = device == "cpu" and "small" or "720p"
    if device == "cpu" then notes[#notes + 1] = "preset auto -> small (the 720p model needs a GPU)" end
  end
  local over = {}
  for _, k in ipairs({"hidden", "heads", "head_dim", "mlp_ratio", "text_len", "fused_norm_rope"}) do over[k] = cfg.model[k] end
  over.layers = {}
  for k, v in pairs(cfg.model.layers) do over.layers[k] = v end
  if over.hidden == nil and (over.heads or over.head_dim) then
    local p = hy.presets[preset]
    over.hidden = (over.heads or p.heads) * (over.head_dim or p.head_dim)
  end
  local mcfg = hy.config(preset, over)
  for _, k in ipairs({"width", "height", "frames"}) do
    if cfg.video[k] == nil then cfg.video[k] = mcfg.video[k] end
  end
  local dtype = cfg.model.dtype
  if dtype == "auto" then dtype = device == "cpu" and "f32" or "bf16" end
  return mcfg, device, dtype, notes
end

video.resolve = resolve

local function timestamp() return os.date("%Y%m%d-%H%M%S") end
video.timestamp = timestamp

-- The estimate of a resolved run (adaspa.footprint) with the memory available to it.
function video.estimate(cfg, mcfg, device, dtype, policy)
  local fp = require "adaspa.footprint"
  local file_bytes
  if cfg.model.weights then
    local f = io.open(cfg.model.weights, "rb")
    if f then file_bytes = f:seek("end"); f:close() end
  end
  local pname = type(policy) == "table" and policy.name or cfg.attention.policy
  local e = fp.estimate{mcfg = mcfg, video = cfg.video, device = device, dtype = dtype, steps = cfg.sampler.steps,
    sparsity = pname == "dense" and 0 or cfg.attention.sparsity, policy = pname,
    warmup = type(policy) == "table" and tonumber(policy.warmup) or cfg.attention.warmup,
    error_steps = cfg.output.compare_dense and #cfg.output.error_steps or 0, weights_file_bytes = file_bytes}
  e.host_available = fp.host_available()
  e.gpu_available = device ~= "cpu" and fp.gpu_available(device) or nil
  return e
end

-- Resolves the configuration (device, preset, sizes), estimates the run's memory and time and
-- prints them; refuses (an error naming the sizes and what to change) when the memory does not
-- fit, unless model.memory_check is false. Nothing is allocated for the model yet. opts: say,
-- policy (the run's policy object, for its schedule). Returns plan = {mcfg, device, dtype, notes,
-- estimate}.
function video.plan(cfg, opts)
  opts = opts or {}
  local say = opts.say or function() end
  local fp = require "adaspa.footprint"
  local mcfg, device, dtype, notes = resolve(cfg)
  for _, n in ipairs(notes) do say("adaspa: %s", n) end
  local grid, latent_shape = hy.grid(cfg.video)
  local n_tokens = grid[1] * grid[2] * grid[3] + mcfg.text_len
  say("adaspa: HunyuanVideo %s (%d double + %d single blocks, %d heads x %d) on %s, %s",
    mcfg.preset, mcfg.layers.double, mcfg.layers.single, mcfg.heads, mcfg.head_dim, device, dtype)
  say("adaspa: video %dx%d, %d frames -> latent [%s], %d tokens (%d text); %d steps (0..%d)",
    cfg.video.width, cfg.video.height, cfg.video.frames, table.concat(latent_shape, ", "), n_tokens,
    mcfg.text_len, cfg.sampler.steps, cfg.sampler.steps - 1)
  local e = video.estimate(cfg, mcfg, device, dtype, opts.policy)
  for _, l in ipairs(fp.describe(e, e.host_available, e.gpu_available)) do say("adaspa: %s", l) end
  local ok, why = fp.fits(e, e.host_available, e.gpu_available)
  if not ok then
    if cfg.model.memory_check then error(why, 0) end
    say("adaspa: warning: %s", why)
    notes[#notes + 1] = "memory check off: " .. why
  end
  return {mcfg = mcfg, device = device, dtype = dtype, notes = notes, estimate = e, grid = grid,
          latent_shape = latent_shape, n_tokens = n_tokens}
end

-- Resolves the configuration and builds what every run of it shares: the model with its weights
-- and the text conditioning. opts: say (printf-like; nothing when absent), dir (named in the
-- progress line), plan (video.plan's result; made here when absent), policy (for video.plan).
-- Returns prep = {mcfg, device, dtype, notes, estimate, model, cond, weights_source,
-- weights_seconds, grid, latent_shape, n_tokens}.
function video.prepare(cfg, opts)
  opts = opts or {}
  local say = opts.say or function() end
  local plan = opts.plan or video.plan(cfg, {say = say, policy = opts.policy})
  local mcfg, device, dtype, notes = plan.mcfg, plan.device, plan.dtype, plan.notes
  local grid, latent_shape, n_tokens = plan.grid, plan.latent_shape, plan.n_tokens
  if opts.dir then say("adaspa: output %s", opts.dir) end

  local t0 = adaspa.now()
  local weights, weights_source
  if cfg.model.weights then
    weights = require("adaspa.weights").load(cfg.model.weights, mcfg, {device = device, dtype = dtype})
    weights_source = cfg.model.weights
  else
    weights = require("adaspa.models.hunyuan_synth").weights(mcfg, {seed = cfg.model.weights_seed, device = device, dtype = dtype})
    weights_source = string.format("SYNTHETIC (seed %d): not trained weights; the pictures show attention structure, not content",
      cfg.model.weights_seed)
  end
  local model = hy.new(mcfg, weights)
  local t_weights = adaspa.now() - t0
  say("adaspa: weights: %s (%.1f s)", weights_source, t_weights)

  local cond = cfg.text.embeds and text.load(cfg.text.embeds, mcfg, {device = device, dtype = dtype})
    or text.synthetic(cfg.text.prompt, mcfg, {device = device, dtype = dtype})
  say("adaspa: text: %s", cond.source)
  return {mcfg = mcfg, device = device, dtype = dtype, notes = notes, estimate = plan.estimate, model = model, cond = cond,
          weights_source = weights_source, weights_seconds = t_weights, grid = grid, latent_shape = latent_shape,
          n_tokens = n_tokens}
end

-- The policy object of the recipe's attention table: a recipe-defined object as it is, or a
-- built-in policy from the shared fields it knows (sparsity, block, ...) and attention.options
-- (adaspa.policy.from_attention: the builder compare and replay use too).
local function make_policy(cfg)
  return policies.from_attention(cfg.attention, cfg.sampler.steps)
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
--   interruptible Ctrl-C stops the sampling at the next op boundary (run.interrupted: the step
--                 that did not complete; x and the records hold the steps done).
-- Returns {x, steps (per-step records), by_mode, attention_seconds, sampling_seconds, flops,
-- dense_flops, plan_flops, plan_seconds, outputs, errors, pictures, cache_stats, interrupted}.
function video.run_schedule(cfg, prep, policy, say, opts)
  opts = opts or {}
  local mcfg, model, cond, device, dtype = prep.mcfg, prep.model, prep.cond, prep.device, prep.dtype
  local dir = opts.dir
  local n_layers = mcfg.layers.double + mcfg.layers.single
  local ctx = attention.new(policy, {layers = math.max(n_layers, 1), sync = device ~= "cpu"})
  local error_steps = {}
  for _, s in ipairs(cfg.output.error_steps or {}) do error_steps[s] = true end
  local outputs, errors = {}, {}
  local other = opts.outputs
  ctx.on_output = function(c, layer, out)
    if not error_steps[c.step] then return end
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
        if h >= 1 and h <= layout:heads() then
          local base = string.format("%s/step%02d_layer%02d_head%02d", dir, c.step, layer, h)
          adaspa.png.write(base .. "_mask.png", pictures.mask(layout, h, b))
          adaspa.png.write(base .. "_mass.png", pictures.mass(mass, h, b))
          pics[#pics + 1] = base .. "_mask.png"
          pics[#pics + 1] = base .. "_mass.png"
        end
      end
    end
  end
  local records = {}
  local _, latent_shape = hy.grid(cfg.video)
  local x = adaspa.randn(latent_shape, {seed = cfg.sampler.seed, dtype = "f32", device = device})
  local _, _, interrupted = sampler.euler(x, function(xt, timestep, i)
    ctx:begin_step(i)
    local v = model:forward(xt:to(dtype), timestep, cond, cfg.sampler.guidance, ctx)
    return v:to("f32")
  end, {steps = cfg.sampler.steps, shift = cfg.sampler.shift, quiet = true, interruptible = opts.interruptible,
        on_step = function(info)
          local r = attention.summarize(ctx:end_step())
          -- a plan's self-measurement (exact recall) is not the method's time
          r.seconds_total, r.timestep = info.seconds - (r.measure_seconds or 0), info.timestep
          records[#records + 1] = r
          if not opts.quiet_steps then
            local extra = ""
            if r.density then extra = string.format(", density %.3f [%.3f, %.3f]", r.density.mean, r.density.min, r.density.max) end
            if r.recall then extra = extra .. string.format(", recall %.3f", r.recall) end
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
  if pictures_on and policy.name ~= "dense" then
    local pictures = require "adaspa.pictures"
    local dens = {}
    local any = false
    for l = 1, n_layers do
      dens[l] = ctx.cache:density(l) or {}
      any = any or #dens[l] > 0
    end
    if any then -- (none when the run was interrupted before its first search)
      local p = dir .. "/densities.png"
      adaspa.png.write(p, pictures.density_grid(dens))
      pics[#pics + 1] = p
    end
  end
  local cache_stats = ctx.cache:stats()
  if dir and policy.name ~= "dense" then ctx.cache:save(dir .. "/cache.safetensors") end
  return {x = x, steps = records, by_mode = by_mode, attention_seconds = att, sampling_seconds = sampling, flops = flops,
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

video.median_steps = median_steps

-- Quality of run against the dense reference ref (same seed). The per-layer attention errors are
-- those computed by whichever of the two runs was given the other's outputs.
local function compare(run, ref)
  local fa = preview.frames(run.x, 1)
  local fb = preview.frames(ref.x, 1)
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
video.compare = compare

function video.run(cfg, job)
  local t_start = adaspa.now()
  local say = cfg.output.quiet and function() end or function(...) io.write(string.format(...), "\n"); io.flush() end
  -- the policy (its options checked) and the memory and time estimate come before any output
  -- or allocation: a run that cannot start leaves nothing behind (the runner removes a folder
  -- it made that holds nothing)
  local okp, policy = pcall(make_policy, cfg)
  if not okp then
    error(string.format("%s: attention: %s", job.recipe or "recipe", (tostring(policy):gsub("^[^\n]-%.lua:%d+: ", ""))), 0)
  end
  local plan = video.plan(cfg, {say = say, policy = policy})

  local out = require("adaspa.recipe").output_folder(cfg, job) -- opened by the runner (or here)
  local dir = out:path()
  local prep = video.prepare(cfg, {say = say, dir = dir, plan = plan})
  local mcfg, device, dtype, notes = prep.mcfg, prep.device, prep.dtype, prep.notes
  local latent_shape, n_tokens = prep.latent_shape, prep.n_tokens
  local weights_source, t_weights, cond = prep.weights_source, prep.weights_seconds, prep.cond

  say("adaspa: attention: %s", policy.describe and policy:describe() or tostring(policy.name or "recipe policy"))
  local run = video.run_schedule(cfg, prep, policy, say, {dir = dir, interruptible = true})
  local x, steps = run.x, run.steps
  if run.interrupted then say("adaspa: interrupted at step %d: writing the outputs of the %d steps done", run.interrupted, run.interrupted) end
  local comparison
  if cfg.output.compare_dense and policy.name ~= "dense" and not run.interrupted then
    say("adaspa: compare_dense: the same run with dense attention")
    local ref = video.run_schedule(cfg, prep, dense_policy.new(), say, {outputs = run.outputs})
    comparison = compare(run, ref)
    comparison.timing = {sampling_seconds = run.sampling_seconds, dense_sampling_seconds = ref.sampling_seconds,
                         attention_seconds = run.attention_seconds, dense_attention_seconds = ref.attention_seconds,
                         median_step = median_steps(run.steps), dense_median_step = median_steps(ref.steps)}
    say("adaspa: quality against dense: latents PSNR %.2f dB, SSIM %.4f; previews PSNR %.2f dB, SSIM %.4f",
      comparison.latents.psnr, comparison.latents.ssim, comparison.previews.psnr, comparison.previews.ssim)
  end

  local files = {latents = dir .. "/latents.safetensors"}
  adaspa.safetensors.save(files.latents, {latents = x}, {
    model = "hunyuan-" .. mcfg.preset, weights = weights_source, seed = tostring(cfg.sampler.seed),
    shape = table.concat(latent_shape, "x"), steps = tostring(cfg.sampler.steps),
    steps_done = tostring(run.interrupted or cfg.sampler.steps)})
  if cfg.output.previews then
    local frames = preview.frames(x, cfg.output.upscale)
    local synthetic = not cfg.model.weights
    if synthetic then for _, f in ipairs(frames) do preview.label(f, "SYNTHETIC WEIGHTS") end end
    files.frames = {}
    for i, f in ipairs(frames) do
      local p = string.format("%s/frame_%03d.png", dir, i - 1)
      adaspa.png.write(p, f)
      files.frames[i] = p
    end
    files.contact_sheet = dir .. "/contact_sheet.png"
    adaspa.png.write(files.contact_sheet, preview.contact_sheet(frames))
  end

  local total = adaspa.now() - t_start
  local sampling = run.sampling_seconds
  local memory = {host_peak_bytes = read_peak_rss()}
  if device ~= "cpu" then memory.gpu = adaspa.cuda.memory() end
  local report = {
    adaspa = adaspa.version, recipe = job.recipe, created = os.date("%Y-%m-%d %H:%M:%S"),
    device = device, dtype = dtype, threads = adaspa.threads(),
    model = {preset = mcfg.preset, hidden = mcfg.hidden, heads = mcfg.heads, head_dim = mcfg.head_dim,
             layers = mcfg.layers, weights = weights_source},
    video = cfg.video, latent_shape = latent_shape, tokens = n_tokens, text = cond.source,
    sampler = cfg.sampler, attention = cfg.attention, notes = notes,
    timings = {total_seconds = total, weights_seconds = t_weights, sampling_seconds = sampling,
               seconds_per_step = #steps > 0 and sampling / #steps or nil, attention_seconds = run.attention_seconds,
               by_mode = run.by_mode, steps = steps},
    attention_flops = {done = run.flops, dense = run.dense_flops, fraction = run.dense_flops > 0 and run.flops / run.dense_flops or nil},
    estimate = prep.estimate and {host_bytes = prep.estimate.host.bytes, gpu_bytes = prep.estimate.gpu and prep.estimate.gpu.bytes,
      host_available = prep.estimate.host_available, gpu_available = prep.estimate.gpu_available,
      seconds_dense_step = prep.estimate.seconds.dense_step, seconds_sparse_step = prep.estimate.seconds.sparse_step,
      flops_dense_step = prep.estimate.flops.dense_step},
    interrupted = run.interrupted and {step = run.interrupted, steps_done = run.interrupted} or nil,
    cache = run.cache_stats, quality = comparison, pictures = run.pictures,
    memory = memory, outputs = files,
  }
  local per_step = #steps > 0 and sampling / #steps or 0
  local lines = {
    string.format("adaspa %s: %s", adaspa.version, job.recipe),
    string.format("model      HunyuanVideo %s, %d double + %d single blocks, %d heads x %d, %s on %s",
      mcfg.preset, mcfg.layers.double, mcfg.layers.single, mcfg.heads, mcfg.head_dim, dtype, device),
    string.format("weights    %s", weights_source),
    string.format("video      %dx%d, %d frames; latent [%s]; %d tokens", cfg.video.width, cfg.video.height,
      cfg.video.frames, table.concat(latent_shape, ", "), n_tokens),
    string.format("text       %s", cond.source),
    string.format("sampler    flow-matching Euler, %d steps, shift %g, guidance %g, seed %d", cfg.sampler.steps,
      cfg.sampler.shift, cfg.sampler.guidance, cfg.sampler.seed),
    string.format("attention  %s", policy.describe and policy:describe() or tostring(policy.name)),
    string.format("           FLOPs %.3g of dense %.3g (%.1f%%); attention time %s", run.flops, run.dense_flops,
      run.dense_flops > 0 and 100 * run.flops / run.dense_flops or 0, sampler.duration(run.attention_seconds)),
    string.format("time       %s total, %s sampling (%s per step), %s weights", sampler.duration(total),
      sampler.duration(sampling), sampler.duration(per_step), sampler.duration(t_weights)),
    string.format("memory     host peak %s%s", memory.host_peak_bytes and string.format("%.2f GiB", memory.host_peak_bytes / 2 ^ 30) or "?",
      memory.gpu and string.format(", GPU peak %.2f GiB", memory.gpu.peak / 2 ^ 30) or ""),
    string.format("outputs    %s (latents.safetensors%s, report.json)", dir,
      cfg.output.previews and string.format(", %d frame PNGs, contact_sheet.png", #files.frames) or ""),
  }
  do
    local dsum, dn, dmin, dmax, rsum, rn = 0, 0, math.huge, -math.huge, 0, 0
    for _, r in ipairs(steps) do
      if r.density then
        dsum, dn = dsum + r.density.mean, dn + 1
        dmin, dmax = math.min(dmin, r.density.min), math.max(dmax, r.density.max)
      end
      if r.recall then rsum, rn = rsum + r.recall, rn + 1 end
    end
    if dn > 0 then
      lines[#lines + 1] = string.format("sparsity   sparse and plan steps keep %.3f of the blocks (heads %.3f..%.3f); mean recall against the exact mass %s",
        dsum / dn, dmin, dmax, rn > 0 and string.format("%.3f", rsum / rn) or "not measured")
      report.sparsity = {density_mean = dsum / dn, density_min = dmin, density_max = dmax, recall_mean = rn > 0 and rsum / rn or nil}
    end
  end
  for _, m in ipairs({"dense", "search", "plan", "sparse"}) do
    local b = run.by_mode[m]
    if b then
      lines[#lines + 1] = string.format("steps      %-6s %3d steps, %s per step (attention %s)", m, b.steps,
        sampler.duration(b.seconds / b.steps), sampler.duration(b.attention / b.steps))
    end
  end
  if comparison then
    local tm = comparison.timing
    lines[#lines + 1] = string.format("speed      vs dense: sampling %s vs %s (%.2fx), attention %s vs %s (%.2fx)",
      sampler.duration(tm.sampling_seconds), sampler.duration(tm.dense_sampling_seconds),
      tm.dense_sampling_seconds / tm.sampling_seconds, sampler.duration(tm.attention_seconds),
      sampler.duration(tm.dense_attention_seconds), tm.dense_attention_seconds / tm.attention_seconds)
    lines[#lines + 1] = string.format("quality    vs dense, same seed: latents PSNR %.2f dB SSIM %.4f; previews PSNR %.2f dB SSIM %.4f",
      comparison.latents.psnr, comparison.latents.ssim, comparison.previews.psnr, comparison.previews.ssim)
    for _, e in ipairs(comparison.attention_error) do
      lines[#lines + 1] = string.format("           step %d attention rel. error per layer: mean %.4f, max %.4f (layer %d)",
        e.step, e.mean, e.max, e.max_layer)
    end
  end
  lines[#lines + 1] = "weights    (synthetic weights: timings and densities are real; quality numbers describe these weights, not a trained model)"
  for _, n in ipairs(notes) do lines[#lines + 1] = "note       " .. n end
  if run.interrupted then
    table.insert(lines, 2, string.format("status     interrupted at step %d (Ctrl-C): steps 0..%d of 0..%d done; the outputs hold "
      .. "the latent after them", run.interrupted, run.interrupted - 1, cfg.sampler.steps - 1))
  end
  out:write("report.json", json.encode(report, "  ") .. "\n")
  out:write("report.txt", table.concat(lines, "\n") .. "\n")
  say("%s", table.concat(lines, "\n"))
  report.lines = lines
  return run.interrupted and 130 or 0, report
end

return video
