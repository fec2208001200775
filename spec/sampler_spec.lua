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
