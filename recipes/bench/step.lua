-- Denoising-step benchmark of a full registered model (synthetic bf16 weights made on the GPU).
--   build/adaspa recipes/bench/step.lua [model=hunyuan|wan] [steps] [schedule] [quick] [cpu] [nopeers]
--                      [frames=N] [sched_frames=N] [sched_steps=N] [block=64|128] [text_valid=N]
-- model: hunyuan (default: HunyuanVideo 720p, 129 frames, 119,056 tokens) or wan (Wan2.1 14B,
--   720p, 81 frames, 75,600 tokens; a forward is one pass: a step with classifier-free guidance is
--   two, and the schedule runs both).
-- steps (default when neither is named): one model forward at the default preset in each mode:
--   dense, search (fused dense + block mass and AdaSpa's selection at sparsity 0.8, as a run's
--   search step; the 0.9 layouts are selected from the same mass too, timed apart and printed),
--   sparse at 0.8, sparse at 0.9, then both sparse steps again on the same layouts ("again": what
--   the steps between two searches do, with nothing left of a layout's first use); each split
--   into attention (everything the attention
--   context does: kernels, selection, recall), GEMMs (adaspa.linear and adaspa.matmul, timed with a
--   device synchronize around each call) and the rest (norms, RoPE, modulation, residuals, glue);
--   the peak GPU memory of each step, the weights and the AdaSpa cache at 720p.
-- schedule: the whole 50-step sampling at 720p with 33 frames, dense and AdaSpa (the defaults:
--   sparsity 0.8, head-adaptive, warm-up 10, searches at 10 and 30), end to end, and the latents'
--   PSNR of AdaSpa against dense (synthetic weights: the PSNR describes these weights only).
-- quick: the model's small CPU preset, for a smoke test of this script (no peers unless `peers`);
--   cpu: run on the CPU (f32) instead of the GPU (with quick: checks this script on a machine
--   without a GPU).
-- block: the layout block of the search and sparse steps (default: AdaSpa's, 64); text_valid: valid
--   text tokens of the 256 (default 200, as a real prompt pads; keys past them are ignored).
-- Peers (steps, unless nopeers): HunyuanVideo: recipes/bench/step_peers.py times one double and
--   one single block written in plain PyTorch (cuDNN SDPA, with and without the text-padding mask)
--   in the same run, composed into a step of 20 + 40 blocks; Wan: recipes/bench/wan_peers.py times
--   diffusers' own WanTransformerBlock, composed into a forward of 40 blocks ($ADASPA_PYTHON
--   overrides python3).
local models = require "adaspa.models"
local sampler = require "adaspa.sampler"
local attention = require "adaspa.attention"
local adaspa_policy = require "adaspa.policy.adaspa"
local dense_policy = require "adaspa.policy.dense"
local quality = require "adaspa.quality"

local args = require("adaspa.bench").args(arg)
if not args.steps and not args.schedule then args.steps = true end
local gpu = not args.cpu
if gpu and not adaspa.cuda.available() then
  print("step bench: no GPU (" .. adaspa.cuda.reason() .. "); nothing to time (cpu quick checks this script)")
  return
end
local dev, dtype = gpu and "cuda" or "cpu", gpu and "bf16" or "f32"
local function sync() if gpu then adaspa.cuda.synchronize() end end
local M = models.get(args.model or "hunyuan")

local GiB = 2 ^ 30
local function gib(b) return string.format("%.2f GiB", b / GiB) end

local mcfg = M.config(args.quick and (M.cpu_preset or "small") or M.default_preset)
local n_layers = M.attention_layers(mcfg)
local t0 = adaspa.now()
local weights = M.synthetic_weights(mcfg, {seed = 1, device = dev, dtype = dtype})
local model = M.new(mcfg, weights)
sync()
collectgarbage()
local mem_w = gpu and adaspa.cuda.memory().allocated or 0
local guidance = {kind = M.sampler_defaults.guidance.kind, scale = M.sampler_defaults.guidance.scale}
local conds = M.conditioning(mcfg, {prompt = "a red fox running through fresh snow at dawn", negative = "",
  cfg = guidance.kind == "cfg", device = dev, dtype = dtype})
local cond = conds.cond
if cond.valid then cond.valid = math.min(mcfg.text_len, args.text_valid or 200) end -- HunyuanVideo's padded prompt
print(string.format("step bench: %s, %d attention layers, weights %s on the %s in %.1f s",
  M.describe and M.describe(mcfg) or (M.name .. " " .. mcfg.preset), n_layers, gpu and gib(mem_w) or "(host)",
  gpu and "GPU" or "CPU", adaspa.now() - t0))

-- GEMM time: adaspa.linear / adaspa.matmul wrapped with a synchronize on each side.
local gemm = {seconds = 0, on = false}
local raw_linear, raw_matmul = adaspa.linear, adaspa.matmul
local function timed(fn)
  return function(...)
    if not gemm.on then return fn(...) end
    sync()
    local t = adaspa.now()
    local r = fn(...)
    sync()
    gemm.seconds = gemm.seconds + (adaspa.now() - t)
    return r
  end
end
adaspa.linear, adaspa.matmul = timed(raw_linear), timed(raw_matmul)

local function video_of(frames, width, height)
  return {frames = frames, width = width or mcfg.video.width, height = height or mcfg.video.height}
end

-- One model evaluation under ctx at schedule step `step`; returns {total=, attention=, gemm=, rest=, peak=}.
local function one_step(ctx, x, step)
  sync()
  collectgarbage()
  if gpu then adaspa.cuda.reset_peak() end
  gemm.seconds, gemm.on = 0, true
  local t = adaspa.now()
  ctx:begin_step(step)
  local v = model:forward(x, 500, cond, ctx)
  sync()
  local total = adaspa.now() - t
  local rec = attention.summarize(ctx:end_step())
  gemm.on = false
  v:free()
  local r = {total = total, attention = rec.seconds, gemm = gemm.seconds, peak = gpu and adaspa.cuda.memory().peak or 0,
             density = rec.density, recall = rec.recall}
  r.rest = total - r.attention - r.gemm
  return r
end

local results = {}
if args.steps then
  local frames = args.frames or mcfg.video.frames
  local _, lshape = M.grid(video_of(frames), mcfg)
  local tok = M.tokens(mcfg, video_of(frames))
  local S = tok.n_img + tok.n_txt
  print(string.format("step bench: one forward per mode at %dx%d, %d frames: %d tokens in self-attention (%d text)",
    mcfg.video.width, mcfg.video.height, frames, S, tok.n_txt))
  local x = adaspa.randn(lshape, {seed = 42, dtype = dtype, device = dev})
  -- The schedule the bench drives: step 0 dense (keeps the LSE), 1 search, 2 sparse at 0.8; the
  -- search also selects the 0.9 layouts from the same mass, which step 3 uses (a plan step);
  -- steps 4 and 5 run steps 2 and 3 again on the same layouts.
  local block = args.block or 64
  local p8 = adaspa_policy.new({sparsity = 0.8, warmup = 1, search = {1}, block = block}, 6)
  local p9 = adaspa_policy.new({sparsity = 0.9, warmup = 1, search = {1}, block = block}, 6)
  local alt, keep8 = {}, {}
  local bench_policy = {name = "bench", block = block}
  print(string.format("step bench: layout blocks of %d%s", block,
    cond.valid and string.format(", %d of %d text tokens valid", cond.valid, mcfg.text_len) or ""))
  function bench_policy:mode(step) return ({"dense", "search", "sparse", "plan", "sparse", "plan"})[step + 1] end
  -- a run's search step selects once: the bench's second selection (the 0.9 layouts) is timed
  -- apart (a synchronize on each side) and taken out of the search row, and printed
  local extra = {seconds = 0}
  function bench_policy:select(mass, layer, info)
    sync()
    local t = adaspa.now()
    alt[layer] = p9:select(mass, layer, info)
    sync()
    extra.seconds = extra.seconds + (adaspa.now() - t)
    keep8[layer] = p8:select(mass, layer, info) -- the cache retains it too; kept for step 4
    return keep8[layer]
  end
  function bench_policy:plan(q, k, v, info) return alt[info.layer] end
  local ctx = attention.new(bench_policy, {layers = n_layers, sync = gpu})
  local names = {"dense", "search", "sparse 0.8", "sparse 0.9", "sparse 0.8 again", "sparse 0.9 again"}
  for i, name in ipairs(names) do
    extra.seconds = 0
    if name == "sparse 0.8 again" then -- step 3's plan replaced the cached 0.8 layouts: put them back
      for layer, l in pairs(keep8) do ctx.cache:set(layer, {layout = l, step = 1}) end
    end
    local r = one_step(ctx, x, i - 1)
    r.name = name
    if extra.seconds > 0 then
      r.total, r.attention = r.total - extra.seconds, r.attention - extra.seconds
      r.rest = r.total - r.attention - r.gemm
      print(string.format("  (the bench's second selection, the 0.9 layouts for step 3, took %.2f s; left out of the search row)",
        extra.seconds))
    end
    results[#results + 1] = r
    print(string.format("  %-10s %7.2f s  (attention %.2f s, GEMMs %.2f s, rest %.2f s)  peak %s%s", name, r.total,
      r.attention, r.gemm, r.rest, gib(r.peak), r.density and string.format("  density %.3f", r.density.mean) or ""))
    if i == 2 then
      local cs = ctx.cache:stats()
      results.cache = cs.memory
      print(string.format("  AdaSpa cache after the search (layouts + LSE of %d layers): %s on the GPU, %s on the host",
        cs.n_layers, gib(cs.memory.device), gib(cs.memory.host)))
    end
  end
  for _, l in pairs(alt) do l:free() end
  for _, l in pairs(keep8) do l:free() end
  ctx.cache:free()
  x:free()
end

if args.schedule then
  local frames, steps = args.sched_frames or 33, args.sched_steps or 50
  local _, lshape = M.grid(video_of(frames), mcfg)
  print(string.format("step bench: full schedule, %d steps at %dx%d, %d frames, %s %g", steps, mcfg.video.width,
    mcfg.video.height, frames, guidance.kind == "cfg" and "classifier-free guidance" or "embedded guidance", guidance.scale))
  local function run(policy)
    local ctx = attention.new(policy, {layers = n_layers, sync = gpu})
    local x = adaspa.randn(lshape, {seed = 42, dtype = "f32", device = dev})
    sync()
    local t = adaspa.now()
    local velocity = sampler.guided(model, conds, guidance, ctx, dtype)
    x = sampler.euler(x, function(xt, timestep, i)
      local v = velocity(xt, timestep, i)
      ctx:end_step()
      return v
    end, {steps = steps, shift = mcfg.shift or M.sampler_defaults.shift, quiet = true})
    sync()
    local total = adaspa.now() - t
    local att = 0
    for _, s in ipairs(ctx.steps) do att = att + s.seconds end
    for _, c in ipairs(ctx.caches) do c:free() end
    return x, total, att
  end
  local xd, td, ad = run(dense_policy.new())
  print(string.format("  dense   %7.1f s  (attention %.1f s)", td, ad))
  local xa, ta, aa = run(adaspa_policy.new({}, steps))
  print(string.format("  adaspa  %7.1f s  (attention %.1f s)  %.2fx faster end to end, attention %.2fx; latent PSNR vs dense %.1f dB",
    ta, aa, td / ta, ad / aa, quality.psnr(xa, xd)))
  results.schedule = {frames = frames, steps = steps, dense = td, adaspa = ta, dense_attention = ad, adaspa_attention = aa}
end

adaspa.linear, adaspa.matmul = raw_linear, raw_matmul
if #results > 0 then
  print("")
  print(string.format("| mode | step (s) | attention (s) | GEMMs (s) | rest (s) | peak GPU memory |"))
  print("| --- | --- | --- | --- | --- | --- |")
  for _, r in ipairs(results) do
    print(string.format("| %s | %.2f | %.2f | %.2f | %.2f | %.1f GiB |", r.name, r.total, r.attention, r.gemm, r.rest, r.peak / GiB))
  end
  print(string.format("weights %s; AdaSpa cache %s (GPU) + %s (host)", gib(mem_w),
    results.cache and gib(results.cache.device) or "?", results.cache and gib(results.cache.host) or "?"))
end
-- Runs a peer script of this folder; returns {[key] = number} of its PEER lines (NOTE lines printed).
local function peers(script, argstr)
  local py = os.getenv("ADASPA_PYTHON") or "python3"
  local path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "recipes/bench/") .. script
  local f = io.popen(string.format("%s %s %s 2>&1", py, path, argstr))
  local out = f and f:read("*a") or ""
  if f then f:close() end
  local peer = {}
  for line in out:gmatch("[^\n]+") do
    local key, v = line:match("^PEER (%S+) ([%d%.]+)")
    if key then peer[key] = tonumber(v) elseif line:match("^NOTE") or line:match("Error") then print(line) end
  end
  return peer
end
local want_peers = args.steps and not args.nopeers and (not args.quick or args.peers)
if want_peers and M.name == "hunyuan" then
  local peer = peers("step_peers.py", string.format("--valid_text %d", cond.valid))
  if next(peer) then
    print("")
    print("| PyTorch blocks (same GPU, same run) | double (ms) | single (ms) | step of 20 + 40 (s) |")
    print("| --- | --- | --- | --- |")
    for _, k in ipairs({"cudnn_nomask", "default_nomask", "cudnn_masked", "default_masked"}) do
      if peer["step_" .. k] then
        print(string.format("| %s | %.1f | %.1f | %.2f |", k:gsub("_", ", "), peer["double_" .. k], peer["single_" .. k],
          peer["step_" .. k]))
      end
    end
  end
elseif want_peers and M.name == "wan" then
  local grid = M.grid(video_of(args.frames or mcfg.video.frames), mcfg)
  local peer = peers("wan_peers.py", string.format("--grid %d,%d,%d --dim %d --heads %d --ffn %d --layers %d --text %d --device %s",
    grid[1], grid[2], grid[3], mcfg.dim, mcfg.heads, mcfg.ffn, n_layers, mcfg.text_len, dev))
  if peer.wan_forward then
    local dense = results[1] and results[1].total
    print("")
    print("| diffusers WanTransformerBlock (same GPU, same run) | block (ms) | forward (s) | CFG step (s) | adaspa dense forward (s) |")
    print("| --- | --- | --- | --- | --- |")
    print(string.format("| %s, SDPA | %.1f | %.2f | %.2f | %s |", dtype, peer.wan_block, peer.wan_forward, peer.wan_step_cfg,
      dense and string.format("%.2f (%.2fx)", dense, peer.wan_forward / dense) or "-"))
  end
end
if results.schedule then
  local s = results.schedule
  print(string.format("| schedule %d steps, %d frames | dense %.1f s | adaspa %.1f s | %.2fx |", s.steps, s.frames, s.dense, s.adaspa,
    s.dense / s.adaspa))
end
