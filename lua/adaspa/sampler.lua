-- adaspa.sampler: flow-matching Euler, as HunyuanVideo samples (../shared/reference/hunyuan.md).
--   s_i = 1 - i/steps (i = 0..steps); sigma_i = shift s_i / (1 + (shift - 1) s_i);
--   timestep_i = 1000 sigma_i;  x <- x + (sigma_{i+1} - sigma_i) * v(x, timestep_i).
local sampler = {}

-- The steps+1 sigmas from 1 down to 0.
function sampler.sigmas(steps, shift)
  assert(type(steps) == "number" and steps >= 1 and steps % 1 == 0, "sampler.sigmas: steps must be a positive integer")
  assert(type(shift) == "number" and shift > 0, "sampler.sigmas: shift must be positive")
  local out = {}
  for i = 0, steps do
    local s = 1 - i / steps
    out[i + 1] = shift * s / (1 + (shift - 1) * s)
  end
  return out
end

-- Formats seconds as "1.2 s", "3 min 05 s" or "1 h 02 min".
function sampler.duration(sec)
  if sec < 60 then return string.format("%.1f s", sec) end
  if sec < 3600 then return string.format("%d min %02d s", math.floor(sec / 60), math.floor(sec % 60)) end
  return string.format("%d h %02d min", math.floor(sec / 3600), math.floor(sec % 3600 / 60))
end

-- Runs the Euler loop. velocity(x, timestep, step) returns v (same shape as x). Calls
-- on_step(info) after each step with {step=, steps=, timestep=, seconds=, eta=} and prints a
-- progress line unless quiet. Returns the final x and the per-step seconds.
function sampler.euler(x, velocity, opts)
  local adaspa = require "adaspa"
  local sig = sampler.sigmas(opts.steps, opts.shift)
  local times = {}
  local total = 0
  -- a step's time: on a GPU by device events around it (waiting for the step's own work only),
  -- elsewhere by the wall clock
  local timer = adaspa.cuda.available() and x:device() ~= "cpu" and adaspa.timer(x) or nil
  for i = 1, opts.steps do
    local t0 = adaspa.now()
    if timer then timer:start() end
    local v = velocity(x, 1000 * sig[i], i)
    adaspa.add(x, adaspa.scale(v, sig[i + 1] - sig[i]), {out = x})
    local dt
    if timer then dt = timer:stop():seconds() else dt = adaspa.now() - t0 end
    times[i] = dt
    total = total + dt
    local info = {step = i, steps = opts.steps, timestep = 1000 * sig[i], seconds = dt,
      eta = total / i * (opts.steps - i)}
    if not opts.quiet then
      io.write(string.format("step %3d/%d  t=%7.2f  %s  eta %s\n", i, opts.steps, info.timestep,
        sampler.duration(dt), sampler.duration(info.eta)))
      io.flush()
    end
    if opts.on_step then opts.on_step(info) end
  end
  return x, times
end

return sampler
