-- adaspa.footprint: memory and time of a video run estimated from its configuration, before any
-- weight is allocated, so that a run that cannot fit is refused at once with the numbers.
--
--   local fp = require "adaspa.footprint"
--   local e = fp.estimate{mcfg = mcfg, video = {width, height, frames}, device = "cpu", dtype = "f32",
--                         steps = 50, sparsity = 0.8, policy = "adaspa", error_steps = 0,
--                         weights_file_bytes = nil, forwards = 1, passes = nil}
--   print(fp.describe(e)); local ok, why = fp.fits(e)
--
-- The model's own numbers come from its registry entry (adaspa.models: M.estimate(cfg, video,
-- dtype), the entry named by mcfg.model unless o.model gives it): S tokens per attention call,
-- the parameters, one forward's peak activations and FLOPs. From them:
--   weights       the parameters x the dtype's bytes;
--   activations   the entry's peak of one forward (forwards run one after another);
--   weights temp  synthetic weights: fp.SYNTH_TEMP of the weights in temporaries (measured);
--   attention     per layer with attention and per guidance branch (forwards: 2 with
--                 classifier-free guidance, each branch keeps its own cache): the cached LSE
--                 [heads, S] f32; at a search step the block mass [heads, nqb, nkb] f32 of one
--                 layer; layouts [heads, nqb, nkb] int32 x density for every layer (host;
--                 mirrored on a GPU);
--   error steps   compare_dense keeps every layer's attention output at each error step;
--   fixed         the process itself (its resident memory now) and, on a GPU, the CUDA context.
-- Where the run lives: on the CPU everything is host memory; on a GPU the weights, activations,
-- LSEs and mass are GPU memory, layouts are in both, and a weights file is read whole into host
-- memory first (adaspa.weights).
-- Time: FLOPs of a step, the entry's linear and dense attention FLOPs of a forward (HunyuanVideo:
-- 2 x S x (4h^2 + 2hm) per block, 4 x S^2 x h per attention layer) times the passes per step (the
-- forwards, or o.passes, their mean over the steps when a guidance interval runs the second pass on
-- some steps only; a sparse step computes about 1 - sparsity of the attention), over rates measured
-- here on the run's device and dtype with a small matmul and a small attention (measure()). Small
-- problems run below a large one's rate, so the times lean long.
local adaspa = require "adaspa"

local fp = {}

local GiB = 2 ^ 30
fp.CUDA_CONTEXT = 0.6 * GiB -- driver context, cuBLAS workspace: reserved on any GPU run
-- Measured on the CPU (peak resident memory against these terms, small preset and wider
-- variants, 2.8k to 15.7k tokens): a step's peak holds about 2.5 times the block's widest
-- moment (allocator slack, views and temporaries that wait for the collector), and the synthetic
-- weights' structure edits leave about 0.6 of the weights in temporaries until collected.
fp.SLACK, fp.SYNTH_TEMP = 2.5, 0.6 -- (SLACK: the models' entries keep their own measured value)

local function bytes_of(dtype) return dtype == "f32" and 4 or 2 end

local function meminfo(key)
  local f = io.open("/proc/meminfo")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  local kb = s:match(key .. ":%s*(%d+)")
  return kb and tonumber(kb) * 1024 or nil
end

local function read_number(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("*l")
  f:close()
  return s and tonumber(s)
end

-- Host memory a new allocation can get: MemAvailable, bounded by the cgroup's limit when set.
function fp.host_available()
  local avail = meminfo("MemAvailable") or meminfo("MemFree")
  local max, cur = read_number("/sys/fs/cgroup/memory.max"), read_number("/sys/fs/cgroup/memory.current")
  if max and cur then avail = math.min(avail or math.huge, math.max(0, max - cur)) end
  return avail
end

-- This process's resident memory now (the fixed part of the host estimate).
function fp.resident()
  local f = io.open("/proc/self/status")
  if not f then return 0 end
  local s = f:read("*a")
  f:close()
  local kb = s:match("VmRSS:%s*(%d+)")
  return kb and tonumber(kb) * 1024 or 0
end

local function gpu_index(device) return tonumber(device:match("^cuda:(%d+)$") or 0) end

-- GPU memory the run can get on device: the driver's free memory plus what adaspa's allocator
-- holds cached but unused.
function fp.gpu_available(device)
  local ok, devs = pcall(adaspa.cuda.devices)
  if not ok then return nil end
  local d = devs[gpu_index(device) + 1]
  if not d then return nil end
  local extra = 0
  local okm, m = pcall(adaspa.cuda.memory, gpu_index(device))
  if okm and m.cached and m.allocated then extra = math.max(0, m.cached - m.allocated) end
  return d.free + extra
end

-- ---- rates ---------------------------------------------------------------------------------------

local rates = {}

-- Measured FLOP rates {linear =, attention =} of device and dtype (cached per process): the best
-- of three runs of a small matmul and a small attention, after one warm-up.
function fp.measure(device, dtype)
  local key = device .. "/" .. dtype
  if rates[key] then return rates[key] end
  local gpu = device ~= "cpu"
  local n, s = gpu and 2048 or 384, gpu and 4096 or 512
  local opts = {dtype = dtype, device = device, seed = 1}
  local function best(fn)
    fn()
    local t = math.huge
    for _ = 1, 5 do
      if gpu then adaspa.cuda.synchronize() end
      local t0 = adaspa.now()
      local out = fn()
      if gpu then adaspa.cuda.synchronize() end
      t = math.min(t, adaspa.now() - t0)
      out:free()
    end
    return math.max(t, 1e-6)
  end
  local x, w = adaspa.randn({n, n}, opts), adaspa.randn({n, n}, opts)
  local tl = best(function() return adaspa.linear(x, w, nil) end)
  x:free(); w:free()
  local H, D = 2, 128
  local q, k, v = adaspa.randn({s, H, D}, opts), adaspa.randn({s, H, D}, opts), adaspa.randn({s, H, D}, opts)
  local ta = best(function()
    local o, lse = adaspa.attention(q, k, v)
    if lse then lse:free() end
    return o
  end)
  q:free(); k:free(); v:free()
  rates[key] = {linear = 2 * n ^ 3 / tl, attention = 4 * s * s * H * D / ta}
  return rates[key]
end

-- ---- the estimate --------------------------------------------------------------------------------

-- o: mcfg (a resolved model configuration), video = {width, height, frames}, device, dtype, steps,
-- sparsity (of sparse steps; 0 for dense), warmup (dense steps), error_steps (count kept by
-- compare_dense), weights_file_bytes (a weights file read whole into host memory), rates
-- ({linear =, attention =} FLOP/s; measured when absent). Returns {tokens, params, host = {bytes,
-- parts}, gpu = {bytes, parts} or nil, flops = {dense_step, sparse_step}, seconds = {dense_step,
-- sparse_step, run}, rates}.
function fp.estimate(o)
  local c = o.mcfg
  local entry = o.model or require("adaspa.models").get(c.model)
  local forwards = o.forwards or 1
  local me = entry.estimate and entry.estimate(c, o.video, o.dtype)
  if not me then -- an entry without an estimate: its weights and its attention only
    local t = entry.tokens(c, o.video)
    local params, largest = 0, 0
    for _, shape in pairs(entry.weight_shapes(c)) do
      local n = 1
      for _, d in ipairs(shape) do n = n * d end
      params, largest = params + n, math.max(largest, n)
    end
    local S = t.n_img + t.n_txt
    local layers = entry.attention_layers(c)
    me = {tokens = S, image_tokens = t.n_img, params = params, largest = largest, heads = c.heads, layers = layers,
          activation_bytes = 0, linear_flops = 0, attention_flops = 4 * S * S * (c.heads * (c.head_dim or 128)) * layers,
          output_bytes = 0}
  end
  local S, n_img, layers, params, largest = me.tokens, me.image_tokens, me.layers, me.params, me.largest
  local bytes = bytes_of(o.dtype)
  local B = 64
  local nqb = math.ceil(S / B)
  local density = 1 - (o.sparsity or 0)
  local sparse = o.policy ~= "dense"
  local parts = {
    weights = params * bytes,
    activations = me.activation_bytes,
    weights_temp = o.weights_file_bytes and 0 or fp.SYNTH_TEMP * params * bytes,
    lse = sparse and forwards * layers * me.heads * S * 4 or 0,
    mass = sparse and me.heads * nqb * nqb * 4 or 0,
    layouts = sparse and forwards * layers * me.heads * (nqb * nqb * 4 * density + (nqb + 1) * 8) or 0,
    error_outputs = (o.error_steps or 0) * layers * me.output_bytes,
  }
  local host, gpu = {parts = {}}, nil
  local function add(t, k, v) t.parts[k] = (t.parts[k] or 0) + v end
  add(host, "process", fp.resident())
  if o.device == "cpu" then
    for k, v in pairs(parts) do add(host, k, v) end
    -- a checkpoint is read whole, then converted: both at the peak
    if o.weights_file_bytes then add(host, "weights_file", o.weights_file_bytes) end
  else
    gpu = {parts = {}}
    for k, v in pairs(parts) do add(gpu, k, v) end
    add(gpu, "cuda_context", fp.CUDA_CONTEXT)
    add(host, "layouts", parts.layouts)
    -- weights are made or read on the host one tensor (synthetic) or one file (a checkpoint) at a time
    add(host, "weights_file", o.weights_file_bytes or largest * 4)
  end
  for _, t in ipairs({host, gpu}) do
    t.bytes = 0
    for _, v in pairs(t.parts) do t.bytes = t.bytes + v end
  end
  local passes = o.passes or forwards
  local lin = passes * me.linear_flops
  local att = passes * me.attention_flops
  local r = o.rates or fp.measure(o.device, o.dtype)
  local dense_s = lin / r.linear + att / r.attention
  local sparse_s = lin / r.linear + att * (sparse and density or 1) / r.attention
  local warm = math.min(o.warmup or o.steps, o.steps)
  if not sparse then warm = o.steps end
  return {tokens = S, image_tokens = n_img, params = params, host = host, gpu = gpu,
          flops = {dense_step = lin + att, sparse_step = lin + att * (sparse and density or 1), linear = lin, attention = att},
          seconds = {dense_step = dense_s, sparse_step = sparse_s, run = warm * dense_s + (o.steps - warm) * sparse_s},
          rates = r, device = o.device, dtype = o.dtype, forwards = forwards, passes = passes}
end

local function gib(b) return string.format("%.2f GiB", b / GiB) end
fp.gib = gib

local ORDER = {"weights", "weights_temp", "weights_file", "activations", "lse", "mass", "layouts", "error_outputs", "cuda_context", "process"}

local function parts_text(t)
  local out = {}
  for _, k in ipairs(ORDER) do
    local v = t.parts[k]
    if v and v > 0 then out[#out + 1] = string.format("%s %s", k:gsub("_", " "), gib(v)) end
  end
  return table.concat(out, ", ")
end

-- One or two lines for the progress output.
function fp.describe(e, host_avail, gpu_avail)
  local sampler = require "adaspa.sampler"
  local lines = {}
  lines[1] = string.format("estimate: %d tokens, %.3g parameters; host %s%s (%s)", e.tokens, e.params, gib(e.host.bytes),
    host_avail and (" of " .. gib(host_avail) .. " available") or "", parts_text(e.host))
  if e.gpu then
    lines[#lines + 1] = string.format("estimate: GPU %s%s (%s)", gib(e.gpu.bytes),
      gpu_avail and (" of " .. gib(gpu_avail) .. " free") or "", parts_text(e.gpu))
  end
  lines[#lines + 1] = string.format("estimate: %.3g GFLOP a dense step (attention %.0f%%): about %s a dense step, %s a sparse one, "
    .. "%s the whole schedule (measured here: linear %.3g GFLOP/s, attention %.3g GFLOP/s on %s, %s)",
    e.flops.dense_step / 1e9, 100 * e.flops.attention / e.flops.dense_step, sampler.duration(e.seconds.dense_step),
    sampler.duration(e.seconds.sparse_step), sampler.duration(e.seconds.run), e.rates.linear / 1e9,
    e.rates.attention / 1e9, e.device, e.dtype)
  return lines
end

-- Whether the estimate fits: true, or false and a message naming what to change.
function fp.fits(e, host_avail, gpu_avail)
  local advice = "use a smaller video (video.width, video.height, video.frames), fewer or narrower layers "
    .. "(model.preset, model.layers.*)" .. (e.dtype == "f32" and ", model.dtype=bf16" or "")
    .. (e.device == "cpu" and " or a GPU" or "")
    .. "; model.memory_check=false runs anyway"
  if host_avail and e.host.bytes > host_avail then
    return false, string.format("the run needs about %s of host memory (%s) but %s is available: %s",
      gib(e.host.bytes), parts_text(e.host), gib(host_avail), advice)
  end
  if e.gpu and gpu_avail and e.gpu.bytes > gpu_avail then
    return false, string.format("the run needs about %s of GPU memory on %s (%s) but %s is free: %s",
      gib(e.gpu.bytes), e.device, parts_text(e.gpu), gib(gpu_avail), advice)
  end
  return true
end

return fp
