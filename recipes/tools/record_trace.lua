-- Records an attention trace (lua/adaspa/trace.lua's format) from adaspa's own HunyuanVideo:
-- dense sampling, with q, k, v of the chosen steps and layers kept as bf16.
--   build/adaspa recipes/tools/record_trace.lua OUT.safetensors [steps=9,10,11,20,30,49] [layers=all]
--       [preset=small] [frames=N] [width=W] [height=H] [sampling=50] [seed=42] [weights_seed=1]
--       [device=cpu|cuda]
-- width and height (pixels, multiples of 16) override the preset's video size. Steps after the last
-- recorded one are not run (nothing after them reaches the trace).
-- The weights are synthetic (see the README); a trace of a trained model comes from
-- recipes/tools/dump_trace.py inside a PyTorch pipeline, or, for the tiny model trained here,
-- from weights=EXPORT.safetensors [prompt="..."]: its DiT, the prompt through its text encoder,
-- its video size and its sampler shift (adaspa.models.tiny); preset= is then ignored.
local hy = require "adaspa.models.hunyuan"
local sampler = require "adaspa.sampler"
local text = require "adaspa.text"
local trace = require "adaspa.trace"

local out = arg and arg[1]
if not out or out:match("=") then
  error("record_trace: usage: record_trace.lua OUT.safetensors [steps=9,10,11] [layers=1,2] [preset=small] ...", 0)
end
local opt = {steps = "9,10,11,20,30,49", layers = "all", preset = "small", sampling = "50", seed = "42", weights_seed = "1"}
for i = 2, #arg do
  local k, v = arg[i]:match("^([%w_]+)=(.*)$")
  if not k or (opt[k] == nil and k ~= "frames" and k ~= "width" and k ~= "height" and k ~= "device" and k ~= "weights"
      and k ~= "prompt") then
    error(string.format("record_trace: unknown argument %q (steps=, layers=, preset=, frames=, width=, height=, sampling=, seed=, weights_seed=, device=, weights=, prompt=)", arg[i]), 0)
  end
  opt[k] = v
end
local function list(s, what)
  local t = {}
  for x in s:gmatch("[^,%s]+") do
    local n = tonumber(x)
    if not n or n % 1 ~= 0 or n < 0 then error(string.format("record_trace: %s: %q is not an integer >= 0", what, x), 0) end
    t[#t + 1] = n
  end
  return t
end
local nsteps = tonumber(opt.sampling)
local want_step, want_layer, last_step = {}, nil, -1
for _, s in ipairs(list(opt.steps, "steps")) do
  if s >= nsteps then error(string.format("record_trace: step %d is beyond the schedule (0..%d)", s, nsteps - 1), 0) end
  want_step[s] = true
  last_step = math.max(last_step, s)
end
if opt.layers ~= "all" then
  want_layer = {}
  for _, l in ipairs(list(opt.layers, "layers")) do want_layer[l] = true end
end
local device = opt.device or (adaspa.cuda.available() and "cuda" or "cpu")
local dtype = device == "cpu" and "f32" or "bf16"

local tinym = opt.weights and require("adaspa.models.tiny").load(opt.weights, {device = device, dtype = dtype}) or nil
local mcfg = tinym and tinym.cfg or hy.config(opt.preset, {})
local video = {width = tonumber(opt.width) or mcfg.video.width, height = tonumber(opt.height) or mcfg.video.height,
  frames = tonumber(opt.frames) or mcfg.video.frames}
for _, f in ipairs({"width", "height"}) do
  if video[f] % 16 ~= 0 or video[f] < 16 then
    error(string.format("record_trace: %s = %s: must be a positive multiple of 16", f, tostring(video[f])), 0)
  end
end
if (video.frames - 1) % 4 ~= 0 or video.frames < 1 then
  error(string.format("record_trace: frames = %s: must be 4k + 1", tostring(video.frames)), 0)
end
local model, cond, shift
if tinym then
  model, shift = tinym.dit, require("adaspa.models.tiny").sampler_defaults.shift
  cond = tinym.text:encode(opt.prompt or "a small green triangle moving up over a plain magenta background as the camera pans left")
else
  local weights = require("adaspa.models.hunyuan_synth").weights(mcfg, {seed = tonumber(opt.weights_seed), device = device, dtype = dtype})
  model, shift = hy.new(mcfg, weights), 7.0
  cond = text.synthetic("a red fox running through fresh snow at dawn", mcfg, {device = device, dtype = dtype})
end

local recs, meta, ts, kinds = {}, nil, {}, {}
local step
local ctx = {attention = function(_, q, k, v, info)
  if want_step[step] and (not want_layer or want_layer[info.layer]) then
    local function keep(t) return t:to("cpu"):to("bf16"):contiguous() end
    recs[#recs + 1] = {step = step, layer = info.layer, q = keep(q), k = keep(k), v = keep(v)}
    meta = meta or {grid = info.grid, text_len = info.n_txt, kv_valid = info.kv_valid}
    kinds[info.layer] = info.kind
  end
  return (adaspa.attention(q, k, v, {kv_valid = info.kv_valid}))
end}
local _, latent_shape = hy.grid(video)
local x = adaspa.randn(latent_shape, {seed = tonumber(opt.seed), dtype = "f32", device = device})
sampler.euler(x, function(xt, timestep, i)
  step = i
  ts[step] = timestep
  if step > last_step then return adaspa.zeros(xt:shape(), {dtype = "f32", device = device}) end
  return model:forward(xt:to(dtype), timestep, cond, 6.0, ctx):to("f32")
end, {steps = nsteps, shift = shift, quiet = false})
if #recs == 0 then error("record_trace: no record matched the chosen steps and layers", 0) end
trace.write(out, recs, {model = tinym and "adaspa-tiny" or ("adaspa-hunyuan-" .. opt.preset .. "-synthetic"), grid = meta.grid,
  text_len = meta.text_len, kv_valid = meta.kv_valid, num_steps = nsteps, timesteps = ts, kinds = kinds,
  source = tinym and string.format("the tiny model %s, prompt %q, sampling seed %s", opt.weights, opt.prompt or "(default)", opt.seed)
    or string.format("adaspa %s preset, synthetic weights seed %s, sampling seed %s", opt.preset, opt.weights_seed, opt.seed)})
print(trace.open(out):describe())
