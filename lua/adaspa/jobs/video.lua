-- adaspa.jobs.video: the main job. Builds the recipe's model (model.name, from the registry
-- adaspa.models; weights from a checkpoint or synthetic), samples a latent video with
-- flow-matching Euler (embedded guidance, or classifier-free guidance with two forward passes per
-- step), and writes the outputs: latents (safetensors), one preview PNG per latent frame, a
-- contact sheet, and a report (text + JSON).
-- This file holds the recipe's schema (the shared fields; each model adds its own model.* fields:
-- video.schema_for(cfg)), the job and its report; the pieces the jobs share (prepare,
-- run_schedule, compare, ...) live in adaspa.jobs.pipeline (also reachable as video.*).
local adaspa = require "adaspa"
local sampler = require "adaspa.sampler"
local preview = require "adaspa.preview"
local video_out = require "adaspa.video_out"
local json = require "adaspa.json"
local dense_policy = require "adaspa.policy.dense"
local policies = require "adaspa.policy"
local models = require "adaspa.models"

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

-- model.weights: a checkpoint file, a folder of shards (with its *.safetensors.index.json), an
-- index file, or a list of shard files.
local function weights_source_problem(v)
  local function usable(p, folder_ok)
    if type(p) ~= "string" or p == "" then return "must name a file or folder (got " .. type(p) .. ")" end
    if p:find("%z") then return "must not hold a NUL byte" end
    local wt = require "adaspa.weights"
    if folder_ok and (wt.is_dir(p) or p:match("%.index%.json$")) then
      local ok, err = pcall(wt.files, p)
      if not ok then return (tostring(err):gsub("^weights: ", "")) end
      for _, f in ipairs(err) do
        local why = C.readable(f)
        if why then return string.format("names the shard %s, which %s", f, why) end
      end
      return nil
    end
    return C.readable(p)
  end
  if type(v) == "table" then
    if #v == 0 then return "a list of shard files must not be empty" end
    for i, p in ipairs(v) do
      local why = usable(p, false)
      if why then return string.format("shard %d (%s) %s", i, tostring(p), why) end
    end
    return nil
  end
  if type(v) ~= "string" then return "must be a path or a list of shard paths" end
  return usable(v, true)
end

-- The shared model.* fields; each model's own (M.schema) join them (video.model_schema).
local shared_model = {
  name = C.string{default = models.default, doc = "the model: one of the registered models (adaspa.models)", extra = function(v)
    if not models.known(v) then return "known models: " .. table.concat(models.names(), ", ") end
  end},
  preset = C.string{default = "auto",
    doc = "the model's sizes: a preset of the model (its real configuration, a small one that runs on a CPU, ...); "
      .. "auto: the real model on a GPU, its small preset on the CPU",
    extra = function(v, root)
      if v == "auto" or not models.known(root.model.name) then return end
      local M = models.get(root.model.name)
      if not M.presets[v] then
        return string.format("model %s has the presets auto, %s", root.model.name, table.concat(models.presets(M), ", "))
      end
    end},
  weights = C.any{doc = "a safetensors checkpoint (every key layout the model accepts), a folder or *.safetensors.index.json " ..
    "of a sharded one, or a list of shard files; none: synthetic weights", check = weights_source_problem},
  weights_prefix = C.string{doc = "a key prefix stripped from the checkpoint's keys (e.g. model.diffusion_model.); " ..
    "keys without it are ignored"},
  weights_seed = C.integer{default = 1, min = 0, max = 2 ^ 31 - 1, doc = "seed of the synthetic weights"},
  device = C.string{default = "auto", one_of = {"auto", "cpu", "cuda"}, pattern = "^cuda:%d+$", pattern_doc = "cuda:N",
    doc = "where the model runs: auto (the GPU when its backend runs the model), cpu, cuda or cuda:N"},
  dtype = C.string{default = "auto", one_of = {"auto", "f32", "bf16"}, doc = "weights and activations: auto (f32 on the CPU, bf16 on a GPU), f32, bf16"},
  memory_check = C.boolean{default = true,
    doc = "refuse a run whose estimated memory exceeds what the host or GPU has free (false: warn only)"},
}

-- The model.* schema of model `name`: the shared fields and the model's own (M.schema), whose
-- doc strings say the model's name.
function video.model_schema(name)
  local M = models.get(name)
  local out = {}
  for k, v in pairs(shared_model) do out[k] = v end
  local function tag(spec)
    if type(spec.type) == "string" then
      local c = {}
      for k, v in pairs(spec) do c[k] = v end
      c.doc = string.format("(%s) %s", name, spec.doc or "")
      return c
    end
    local t = {}
    for k, v in pairs(spec) do t[k] = tag(v) end
    return t
  end
  for k, v in pairs(M.schema or {}) do
    if out[k] then error(string.format("model %s: its schema field model.%s clashes with a shared field", name, k), 2) end
    out[k] = tag(v)
  end
  return out
end

-- The schema of a recipe table cfg (before validation): base (video.schema by default) with the
-- model.* fields of cfg.model.name (default: the registry's default model). An unknown name fails
-- here, naming where, the field and the known models.
function video.schema_for(cfg, where, base)
  base = base or video.schema
  local name = type(cfg) == "table" and type(cfg.model) == "table" and cfg.model.name or nil
  if name == nil then name = models.default end
  if not models.known(name) then
    error(string.format("%s: field model.name = %s: known models: %s", where or "recipe", type(name) == "string"
      and string.format("%q", name) or tostring(name), table.concat(models.names(), ", ")), 0)
  end
  local out = {}
  for k, v in pairs(base) do out[k] = v end
  out.model = video.model_schema(name)
  return out
end

-- prompt=... on the command line: the same as text.prompt=... (applied by pipeline.resolve)
video.prompt_field = C.string{empty = true, doc = "shorthand for text.prompt (wins over it when both are set)"}

video.schema = {
  model = nil, -- video.model_schema(models.default), set below
  prompt = video.prompt_field,
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
    embeds = C.file{doc = "safetensors with text_states, text_mask (and text_pooled for HunyuanVideo): the text encoders' " ..
      "outputs; negative_text_* entries give classifier-free guidance's unconditional branch"},
    negative = C.string{default = "", empty = true,
      doc = "the unconditional prompt of classifier-free guidance (without text.embeds it seeds the synthetic states)"},
  },
  sampler = {
    steps = C.integer{default = 50, min = 1, max = video.MAX_STEPS, doc = "flow-matching Euler steps, numbered 0..steps-1"},
    shift = C.number{above = 0, max = 1000, doc = "the schedule's shift (default: the model's; HunyuanVideo: 7)"},
    guidance = C.number{min = 0, max = 100, doc = "the guidance scale (default: the model's): with guidance_kind embedded the " ..
      "model's embedded guidance scale (HunyuanVideo: 6), with cfg the classifier-free scale s of uncond + s (cond - uncond)"},
    guidance_kind = C.string{default = "auto", one_of = {"auto", "embedded", "cfg"},
      doc = "embedded: one forward pass per step, the scale given to the model (HunyuanVideo); cfg: classifier-free " ..
        "guidance, a conditional and an unconditional pass per step, each with its own attention cache; auto: the model's",
      extra = function(v, root)
        if v ~= "embedded" or not models.known(root.model.name) then return end
        local M = models.get(root.model.name)
        if M.sampler_defaults.guidance.kind ~= "embedded" then
          return string.format("model %s has no embedded guidance (use cfg or auto)", root.model.name)
        end
      end},
    guidance_interval = C.list{item = "number", min = 0, max = 1000,
      doc = "with cfg: {lo, hi}, the timesteps (1000 at pure noise .. 0) whose steps run the unconditional pass; the " ..
        "others run the conditional pass alone (scale 1), one pass a step (default: every step)",
      extra = function(v, root)
        if #v ~= 2 or v[1] > v[2] then return "must be {lo, hi} with lo <= hi" end
        if root.sampler.guidance_kind == "embedded" then return "needs guidance_kind cfg (embedded guidance has one pass a step)" end
      end},
    seed = C.integer{default = 42, min = 0, max = 2 ^ 53, doc = "seed of the initial noise"},
    renoise = C.number{default = 0, min = 0, below = 1, doc = "stochastic sampling: the share of the noise drawn anew " ..
      "at each step (each step's x0 and noise from the velocity, then x at the next sigma from x0 and that noise with a " ..
      "share r of fresh noise, seeded by seed and the step); 0: the Euler ODE step"},
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
    video = C.boolean{default = true, doc = "video.mp4 of the previews, encoded by ffmpeg (needs output.previews; false, or no ffmpeg: the PNGs only)"},
    fps = C.integer{min = 1, max = 240, doc = "the video's frame rate (default: the model's, HunyuanVideo 24); the previews play at fps/4"},
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

video.schema.model = video.model_schema(models.default)

local pipeline = require "adaspa.jobs.pipeline"
-- The shared pieces (adaspa.jobs.pipeline), still reachable from here.
for _, k in ipairs({"gpu_runs_model", "resolve", "timestamp", "estimate", "plan", "prepare", "run_schedule",
                    "median_steps", "compare"}) do
  video[k] = pipeline[k]
end
local compare, median_steps = pipeline.compare, pipeline.median_steps

local function read_peak_rss()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  local kb = s:match("VmHWM:%s*(%d+)")
  return kb and tonumber(kb) * 1024 or nil
end

-- The policy object of the recipe's attention table: a recipe-defined object as it is, or a
-- built-in policy from the shared fields it knows (sparsity, block, ...) and attention.options
-- (adaspa.policy.from_attention: the builder compare and replay use too).
local function make_policy(cfg)
  return policies.from_attention(cfg.attention, cfg.sampler.steps)
end

function video.run(cfg, job)
  local t_start = adaspa.now()
  local say = pipeline.say(cfg.output.quiet)
  -- the policy (its options checked) and the memory and time estimate come before any output
  -- or allocation: a run that cannot start leaves nothing behind (the runner removes a folder
  -- it made that holds nothing)
  local okp, policy = pcall(make_policy, cfg)
  if not okp then
    error(string.format("%s: attention: %s", job.recipe or "recipe", pipeline.message(policy)), 0)
  end
  local plan = pipeline.plan(cfg, {say = say, policy = policy})

  local out = require("adaspa.recipe").output_folder(cfg, job) -- opened by the runner (or here)
  local dir = out:path()
  local prep = pipeline.prepare(cfg, {say = say, dir = dir, plan = plan})
  local mcfg, device, dtype, notes = prep.mcfg, prep.device, prep.dtype, prep.notes
  local latent_shape, n_tokens = prep.latent_shape, prep.n_tokens
  local weights_source, t_weights, cond = prep.weights_source, prep.weights_seconds, prep.cond

  -- a model with its own decoder (M.decode) gives the video's frames; else latent previews
  local decode = prep.entry.decode and function(lat) return prep.entry.decode(prep.model, lat) end
  say("adaspa: attention: %s", policy.describe and policy:describe() or tostring(policy.name or "recipe policy"))
  local run = pipeline.run_schedule(cfg, prep, policy, say, {dir = dir, interruptible = true})
  local x, steps = run.x, run.steps
  if run.interrupted then say("adaspa: interrupted at step %d: writing the outputs of the %d steps done", run.interrupted, run.interrupted) end
  local comparison
  if cfg.output.compare_dense and policy.name ~= "dense" and not run.interrupted then
    say("adaspa: compare_dense: the same run with dense attention")
    local ref = pipeline.run_schedule(cfg, prep, dense_policy.new(), say, {outputs = run.outputs})
    comparison = compare(run, ref, decode)
    comparison.timing = {sampling_seconds = run.sampling_seconds, dense_sampling_seconds = ref.sampling_seconds,
                         attention_seconds = run.attention_seconds, dense_attention_seconds = ref.attention_seconds,
                         median_step = median_steps(run.steps), dense_median_step = median_steps(ref.steps)}
    say("adaspa: quality against dense: latents PSNR %.2f dB, SSIM %.4f; previews PSNR %.2f dB, SSIM %.4f",
      comparison.latents.psnr, comparison.latents.ssim, comparison.previews.psnr, comparison.previews.ssim)
  end

  local files = {latents = dir .. "/latents.safetensors"}
  adaspa.safetensors.save(files.latents, {latents = x}, {
    model = prep.entry.name .. "-" .. mcfg.preset, weights = weights_source, seed = tostring(cfg.sampler.seed),
    shape = table.concat(latent_shape, "x"), steps = tostring(cfg.sampler.steps),
    steps_done = tostring(run.interrupted or cfg.sampler.steps)})
  local video_intr -- Ctrl-C while ffmpeg ran: the other outputs are written, the exit status is 130
  if cfg.output.previews then
    local frames = decode and (run.frames or decode(x)) or preview.frames(x, cfg.output.upscale)
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
    if cfg.output.video then -- adaspa.video_out: ffmpeg, or a note saying why there is no mp4
      -- decoded frames play one per video frame; latent previews one per latent frame (fps / 4)
      local v, why, intr = video_out.write(out, frames, {fps = cfg.output.fps or video_out.fps_of(cfg.model.name),
        per_frame = decode and 1 or nil})
      files.video = v and v.path
      if why then say("adaspa: %s", why); notes[#notes + 1] = why end
      video_intr = intr
    end
  end

  local weights_synthetic = not cfg.model.weights
  local total = adaspa.now() - t_start
  local sampling = run.sampling_seconds
  local memory = {host_peak_bytes = read_peak_rss()}
  if device ~= "cpu" then memory.gpu = adaspa.cuda.memory() end
  local report = {
    adaspa = adaspa.version, recipe = job.recipe, created = os.date("%Y-%m-%d %H:%M:%S"),
    device = device, dtype = dtype, threads = adaspa.threads(),
    model = {name = prep.entry.name, preset = mcfg.preset, hidden = mcfg.hidden, heads = mcfg.heads, head_dim = mcfg.head_dim,
             layers = mcfg.layers, weights = weights_source},
    video = cfg.video, latent_shape = latent_shape, tokens = n_tokens, text = cond.source,
    sampler = cfg.sampler, guidance = prep.guidance, attention = cfg.attention, notes = notes,
    timings = {total_seconds = total, weights_seconds = t_weights, sampling_seconds = sampling,
               seconds_per_step = #steps > 0 and sampling / #steps or nil, attention_seconds = run.attention_seconds,
               by_mode = run.by_mode, steps = steps},
    attention_flops = {done = run.flops, dense = run.dense_flops, fraction = run.dense_flops > 0 and run.flops / run.dense_flops or nil},
    estimate = prep.estimate and {host_bytes = prep.estimate.host.bytes, gpu_bytes = prep.estimate.gpu and prep.estimate.gpu.bytes,
      host_available = prep.estimate.host_available, gpu_available = prep.estimate.gpu_available,
      seconds_dense_step = prep.estimate.seconds.dense_step, seconds_sparse_step = prep.estimate.seconds.sparse_step,
      flops_dense_step = prep.estimate.flops.dense_step},
    interrupted = run.interrupted and {step = run.interrupted, steps_done = run.interrupted} or nil,
    cache = run.cache_stats, cache_branches = run.branch_cache_stats, quality = comparison, pictures = run.pictures,
    memory = memory, outputs = files,
  }
  local per_step = #steps > 0 and sampling / #steps or 0
  local lines = {
    string.format("adaspa %s: %s", adaspa.version, job.recipe),
    string.format("model      %s, %s on %s", models.describe(prep.entry, mcfg), dtype, device),
    string.format("weights    %s", weights_source),
    string.format("video      %dx%d, %d frames; latent [%s]; %d tokens", cfg.video.width, cfg.video.height,
      cfg.video.frames, table.concat(latent_shape, ", "), n_tokens),
    string.format("text       %s", cond.source),
    string.format("sampler    %s, %d steps, shift %g, %s, seed %d", sampler.name(cfg.sampler.renoise), cfg.sampler.steps,
      cfg.sampler.shift, pipeline.guidance_text(prep.guidance), cfg.sampler.seed),
    string.format("attention  %s", policy.describe and policy:describe() or tostring(policy.name)),
    string.format("           FLOPs %.3g of dense %.3g (%.1f%%); attention time %s", run.flops, run.dense_flops,
      run.dense_flops > 0 and 100 * run.flops / run.dense_flops or 0, sampler.duration(run.attention_seconds)),
    string.format("time       %s total, %s sampling (%s per step), %s weights", sampler.duration(total),
      sampler.duration(sampling), sampler.duration(per_step), sampler.duration(t_weights)),
    string.format("memory     host peak %s%s", memory.host_peak_bytes and string.format("%.2f GiB", memory.host_peak_bytes / 2 ^ 30) or "?",
      memory.gpu and string.format(", GPU peak %.2f GiB", memory.gpu.peak / 2 ^ 30) or ""),
    string.format("outputs    %s (latents.safetensors%s, report.json)", dir,
      cfg.output.previews and string.format(", %d %sframe PNGs, contact_sheet.png%s", #files.frames, decode and "decoded " or "",
        files.video and ", video.mp4" or "") or ""),
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
  if run.parallel then
    local par = run.parallel
    report.parallel = par
    local imb = par.imbalance and string.format("; attention work imbalance (max/mean kept blocks per rank, last layouts) "
      .. "%.3f with contiguous heads, %.3f as run (%s)", par.imbalance.plain, par.imbalance.applied,
      par.balance and "heads rebalanced after each search" or "balance off") or ""
    lines[#lines + 1] = string.format("parallel   %d processes (%s), Ulysses sequence parallelism; step densities and "
      .. "recalls above are rank 0's heads%s", par.ranks, par.transport, imb)
    for _, s in ipairs(par.searches or {}) do
      lines[#lines + 1] = string.format("           search at step %d: imbalance of its layouts %.3f on the heads it ran with, %.3f "
        .. "rebalanced for the steps after (mean of %d layers)", s.step, s.before, s.after, s.layers)
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
  if weights_synthetic then
    lines[#lines + 1] = "weights    (synthetic weights: timings and densities are real; quality numbers describe these weights, not a trained model)"
  end
  for _, n in ipairs(notes) do lines[#lines + 1] = "note       " .. n end
  if run.interrupted then
    table.insert(lines, 2, string.format("status     interrupted at step %d (Ctrl-C): steps 0..%d of 0..%d done; the outputs hold "
      .. "the latent after them", run.interrupted, run.interrupted - 1, cfg.sampler.steps - 1))
  end
  out:write("report.json", json.encode(report, "  ") .. "\n")
  out:write("report.txt", table.concat(lines, "\n") .. "\n")
  say("%s", table.concat(lines, "\n"))
  report.lines = lines
  return (run.interrupted or video_intr) and 130 or 0, report
end

return video
