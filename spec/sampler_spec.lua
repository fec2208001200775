-- The flow-matching sampler's schedule against the reference values.
local sampler = require "adaspa.sampler"

describe("sampler sigmas", function()
  it("match HunyuanVideo's shifted schedule (50 steps, shift 7)", function()
    local s = sampler.sigmas(50, 7.0)
    assert.equal(51, #s)
    assert.equal(1.0, s[1])
    assert.is_true(math.abs(s[2] - 0.99709) < 5e-6, tostring(s[2]))
    assert.is_true(math.abs(s[3] - 0.99408) < 5e-6, tostring(s[3]))
    assert.is_true(math.abs(s[50] - 0.125) < 1e-12, tostring(s[50]))
    assert.equal(0, s[51])
    for i = 2, 51 do assert.is_true(s[i] < s[i - 1]) end
  end)

  it("shift 1 is the plain linear schedule", function()
    assert.same({1, 0.75, 0.5, 0.25, 0}, sampler.sigmas(4, 1))
  end)

  it("formats durations", function()
    assert.equal("1.5 s", sampler.duration(1.5))
    assert.equal("2 min 05 s", sampler.duration(125))
    assert.equal("1 h 02 min", sampler.duration(3720))
  end)
end)

describe("sampler stochastic steps (renoise)", function()
  local adaspa = require "adaspa"
  -- a velocity that predicts x0 = target exactly: v = (x - target) / s, so every step's x0 is target
  local target = adaspa.randn({3, 5}, {seed = 11})
  local function run(renoise, seed, path)
    local x = adaspa.randn({3, 5}, {seed = 5})
    return sampler.euler(x, function(xt, timestep, i)
      path[#path + 1] = xt:clone()
      return adaspa.scale(adaspa.add(xt, adaspa.scale(target, -1)), 1000 / timestep)
    end, {steps = 4, shift = 3, renoise = renoise, seed = seed, quiet = true})
  end

  it("steps from the step's x0 and noise with a share r of fresh noise (float64 reference)", function()
    local path = {}
    local out = run(0.6, 7, path)
    local sig = sampler.sigmas(4, 3)
    for i = 0, 2 do
      local x, nx = path[i + 1]:reshape({15}):totable(), path[i + 2]:reshape({15}):totable()
      local z = adaspa.randn({3, 5}, {seed = sampler.renoise_seed(7, i)}):reshape({15}):totable()
      local t = target:reshape({15}):totable()
      local s, s2 = sig[i + 1], sig[i + 2]
      for j = 1, #x do
        local v = (x[j] - t[j]) / s
        local x0, e = x[j] - s * v, x[j] + (1 - s) * v
        local want = (1 - s2) * x0 + s2 * (math.sqrt(1 - 0.36) * e + 0.6 * z[j])
        assert.is_true(math.abs(nx[j] - want) < 1e-5, string.format("step %d element %d: %g against %g", i, j, nx[j], want))
      end
    end
    -- the last step lands on x0 as the ODE does
    assert.is_true(spec_maxdiff(out, target) < 1e-5)
  end)

  it("renoise 0 is the Euler step; the fresh noise follows the seed", function()
    local p0, pe, pa, pb, pc = {}, {}, {}, {}, {}
    run(0, 7, p0)
    local x = adaspa.randn({3, 5}, {seed = 5})
    sampler.euler(x, function(xt, timestep) pe[#pe + 1] = xt:clone(); return adaspa.scale(adaspa.add(xt, adaspa.scale(target, -1)), 1000 / timestep) end,
      {steps = 4, shift = 3, quiet = true})
    for i = 1, 4 do assert.equal(0, spec_maxdiff(p0[i], pe[i])) end
    run(0.5, 7, pa); run(0.5, 7, pb); run(0.5, 8, pc)
    assert.equal(0, spec_maxdiff(pa[3], pb[3]))
    assert.is_true(spec_maxdiff(pa[3], pc[3]) > 1e-3)
    assert.is_true(spec_maxdiff(pa[3], p0[3]) > 1e-3)
    assert.are_not.equal(sampler.renoise_seed(7, 0), 7)
    assert.equal("flow-matching Euler", sampler.name(0))
    assert.equal("flow-matching Euler, stochastic (renoise 0.5)", sampler.name(0.5))
  end)
end)
