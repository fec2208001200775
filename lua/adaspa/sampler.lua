-- adaspa.sampler: flow-matching Euler, as HunyuanVideo and Wan2.1 sample
-- (../shared/reference/hunyuan.md).
--   s_i = 1 - i/steps (i = 0..steps); sigma_i = shift s_i / (1 + (shift - 1) s_i);
--   timestep_i = 1000 sigma_i;  x <- x + (sigma_{i+1} - sigma_i) * v(x, timestep_i).
-- Guidance (sampler.guided): "embedded", one forward pass per step with the scale inside the
-- conditioning (HunyuanVideo's distilled guidance); "cfg", classifier-free guidance: a
-- conditional and an unconditional pass per step, in sequence, combined as
-- v = v_uncond + scale (v_cond - v_uncond). A guidance interval {lo, hi} (timesteps) limits the
-- unconditional pass to the steps whose timestep lies within it; the others take v_cond alone (as
-- scale 1), one pass (guidance applied in a limited interval: Kynkaanniemi et al., 2024).
local sampler = {}

-- Forward passes per step of a guidance kind.
function sampler.forwards(kind) return kind == "cfg" and 2 or 1 end

-- v_uncond + scale (v_cond - v_uncond), in f32 (new tensor; the inputs are left as they are).
function sampler.cfg_combine(vc, vu, scale)
  local adaspa = require "adaspa"
  local c, u = vc:to("f32"), vu:to("f32")
  local nu = adaspa.scale(u, -1)
  local d = adaspa.add(c, nu)
  nu:free()
  local sd = adaspa.scale(d, scale)
  d:free()
  local out = adaspa.add(u, sd)
  sd:free()
  if c ~= vc then c:free() end
  if u ~= vu then u:free() end
  return out
end

-- The velocity function of a model under guidance, for sampler.euler: fn(x, timestep, step) -> v
-- (f32). model: forward(x, t, cond, ctx); conds: {cond =, uncond =} (uncond needed for cfg);
-- guidance = {kind = "embedded" | "cfg", scale =, interval = {lo, hi} or nil (cfg: the timesteps whose
-- steps run the unconditional pass)}; ctx: the attention context or nil; before each
-- pass ctx:set_branch(b) (1 conditional, 2 unconditional) so each branch keeps its own cache, and
-- ctx:begin_step(step) once per denoising step. dtype: the model's activations (x is cast to it).
function sampler.guided(model, conds, guidance, ctx, dtype)
  local cfg = guidance.kind == "cfg"
  if cfg and not conds.uncond then error("sampler.guided: classifier-free guidance needs conds.uncond", 2) end
  if guidance.kind ~= "cfg" and guidance.kind ~= "embedded" then
    error("sampler.guided: guidance.kind must be embedded or cfg, got " .. tostring(guidance.kind), 2)
  end
  local iv = guidance.interval
  return function(xt, timestep, i)
    if ctx then
      if ctx.set_branch then ctx:set_branch(1) end
      ctx:begin_step(i)
    end
    local xin = xt:to(dtype or xt:dtype())
    local vc = model:forward(xin, timestep, conds.cond, ctx)
    if not cfg or not sampler.guided_at(iv, timestep) then
      local v = vc:to("f32")
      return v
    end
    if ctx and ctx.set_branch then ctx:set_branch(2) end
    local vu = model:forward(xin, timestep, conds.uncond, ctx)
    if ctx and ctx.set_branch then ctx:set_branch(1) end
    local v = sampler.cfg_combine(vc, vu, guidance.scale)
    vc:free()
    vu:free()
    return v
  end
end

-- Whether a step at this timestep runs the unconditional pass under guidance interval iv ({lo, hi}
-- or nil: every step).
function sampler.guided_at(iv, timestep)
  return iv == nil or (timestep >= iv[1] and timestep <= iv[2])
end

-- The number of steps (of steps at shift) whose timestep lies in the guidance interval iv.
function sampler.guided_steps(iv, steps, shift)
  local sig, n = sampler.sigmas(steps, shift), 0
  for i = 1, steps do if sampler.guided_at(iv, 1000 * sig[i]) then n = n + 1 end end
  return n
end

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

-- The seed of step i's fresh noise under renoise: (the run's seed mod 2^32) x 4096 + i + 1, exact
-- in a double and never the run's own seed (its initial noise).
function sampler.renoise_seed(seed, i) return seed % 2 ^ 32 * 4096 + i + 1 end

-- The sampler's name in reports: "flow-matching Euler", or with renoise r > 0 its stochastic form.
function sampler.name(renoise)
  if renoise and renoise > 0 then return string.format("flow-matching Euler, stochastic (renoise %g)", renoise) end
  return "flow-matching Euler"
end

-- The Ctrl-C handling of the adaspa host (nil where adaspa is embedded elsewhere).
local function interrupt_module()
  local ok, m = pcall(require, "adaspa.interrupt")
  return ok and m or nil
end

-- Runs the Euler loop over steps numbered 0..steps-1 (the numbers the policies' schedules,
-- progress lines and reports use). velocity(x, timestep, step) returns v (same shape as x).
-- opts.renoise = r in [0, 1) (default 0, the ODE): a stochastic step instead, from the step's
-- x0 = x - s v and noise e = x + (1 - s) v (x = (1 - s) x0 + s e) to x = (1 - s') x0 +
-- s' (sqrt(1 - r^2) e + r z) at the next sigma s', z fresh standard noise (seeded by opts.seed and
-- the step: sampler.renoise_seed); the last step (s' = 0) is the same x0 either way.
-- Calls on_step(info) after each step with {step=, steps=, timestep=, seconds=, eta=} and prints
-- a progress line "step  k/last" unless quiet. With opts.interruptible, Ctrl-C (the host's
-- "interrupted" error, see adaspa.interrupt) stops the loop at the next op boundary instead of
-- raising: x then holds the result of the steps completed. Returns the final x, the per-step
-- seconds and, when interrupted, the number of the step that did not complete (= steps done).
function sampler.euler(x, velocity, opts)
  local adaspa = require "adaspa"
  local sig = sampler.sigmas(opts.steps, opts.shift)
  local intr = interrupt_module()
  local times = {}
  local total = 0
  -- a step's time: on a GPU by device events around it (waiting for the step's own work only),
  -- elsewhere by the wall clock
  local timer = adaspa.cuda.available() and x:device() ~= "cpu" and adaspa.timer(x) or nil
  local function step(i)
    if intr then intr.check() end
    local t0 = adaspa.now()
    if timer then timer:start() end
    local v = velocity(x, 1000 * sig[i + 1], i)
    local r, s, s2 = opts.renoise or 0, sig[i + 1], sig[i + 2]
    if r > 0 and s2 > 0 then
      -- x = (1 - s) x0 + s e with v = e - x0: the step's x0 and e, then x at s2 from x0 and a noise
      -- whose share r is drawn anew (r = 0: the Euler step below)
      local x0 = adaspa.add(x, adaspa.scale(v, -s))
      local e = adaspa.add(x, adaspa.scale(v, 1 - s))
      local z = adaspa.randn(x:shape(), {seed = sampler.renoise_seed(opts.seed or 0, i), dtype = x:dtype(), device = x:device()})
      local mixed = adaspa.add(adaspa.scale(e, s2 * math.sqrt(1 - r * r)), adaspa.scale(z, s2 * r))
      adaspa.add(adaspa.scale(x0, 1 - s2), mixed, {out = x})
    else
      adaspa.add(x, adaspa.scale(v, s2 - s), {out = x})
    end
    local dt
    if timer then dt = timer:stop():seconds() else dt = adaspa.now() - t0 end
    times[i + 1] = dt
    total = total + dt
    local info = {step = i, steps = opts.steps, timestep = 1000 * sig[i + 1], seconds = dt,
      eta = total / (i + 1) * (opts.steps - i - 1)}
    if not opts.quiet then
      io.write(string.format("step %3d/%d  t=%7.2f  %s  eta %s\n", i, opts.steps - 1, info.timestep,
        sampler.duration(dt), sampler.duration(info.eta)))
      io.flush()
    end
    if opts.on_step then opts.on_step(info) end
  end
  for i = 0, opts.steps - 1 do
    if opts.interruptible and intr then
      local ok, err = pcall(step, i)
      if not ok then
        if not intr.is(err) then error(err, 0) end
        intr.clear()
        return x, times, #times
      end
    else
      step(i)
    end
  end
  return x, times
end

return sampler
