-- recipes/tools/block_overlap.lua (block 64 vs 128 on a trace) and record_trace's video size.
local trace = require "adaspa.trace"

-- 512 latent tokens (grid 1 x 8 x 64), no text, one head of 32 dims.
local S, D = 512, 32
local META = {model = "spec-blocks", grid = {1, 8, 64}, text_len = 0, kv_valid = S}

local function write(path, q, k, v)
  trace.write(path, {{step = 0, layer = 1, q = q, k = k, v = v}}, META)
end

-- q = k: token t carries 8 on dimension g = its 128-token group, so each group attends only to
-- itself and the two 64-row halves of a group have identical block mass.
local function grouped()
  local q = adaspa.zeros({S, 1, D})
  for g = 1, S / 128 do
    q:narrow(1, (g - 1) * 128 + 1, 128):narrow(3, g, 1):fill(8)
  end
  return q
end

local function field(out, pattern)
  local x = out:match(pattern)
  return x and tonumber(x)
end

describe("recipes/tools/block_overlap.lua", function()
  it("gives the union ratio 0.5 when both halves of every 128-row tile keep the same key blocks", function()
    local path = spec_tmpfile("grouped.safetensors")
    local q = grouped()
    write(path, q, q, adaspa.randn({S, 1, D}, {seed = 3}))
    local so, se, code = spec_run("recipes/tools/block_overlap.lua " .. path .. " sparsity=0.75 densities=0.25")
    assert.equal(0, code, se)
    -- 8 key blocks of 64, 25% kept: the group's own two blocks, the same for both halves
    local r_img = field(so, "mean over heads and records%s+([%d%.]+)")
    assert.is_not_nil(r_img, so)
    assert.near(0.5, r_img, 1e-9)
    -- block 128 keeps its own group, which holds all the mass: recall 1, error ~0
    local rec128, err128 = so:match("0%.75%s+128%s+[%d%.]+%s+[%d%.]+%%%s+([%d%.]+)%s+([%d%.]+)")
    assert.is_not_nil(rec128, so)
    assert.near(1, tonumber(rec128), 1e-3)
    assert.is_true(tonumber(err128) < 1e-2, so)
    os.remove(path)
  end)

  it("gives a ratio above 0.5 when the halves' key lists differ (random q and k)", function()
    local path = spec_tmpfile("random.safetensors")
    write(path, adaspa.randn({S, 1, D}, {seed = 1}), adaspa.randn({S, 1, D}, {seed = 2}),
      adaspa.randn({S, 1, D}, {seed = 3}))
    local so, se, code = spec_run("recipes/tools/block_overlap.lua " .. path .. " sparsity=0.75 quality=0")
    assert.equal(0, code, se)
    local r_img = field(so, "mean over heads and records%s+([%d%.]+)")
    assert.is_not_nil(r_img, so)
    assert.is_true(r_img > 0.55 and r_img <= 1, so)
    assert.falsy(so:find("equal budget", 1, true), "quality=0 skips the quality tables")
    os.remove(path)
  end)

  it("names a bad argument", function()
    local _, se, code = spec_run("recipes/tools/block_overlap.lua x.safetensors block=32")
    assert.is_not.equal(0, code)
    assert.truthy(se:find("unknown argument", 1, true), se)
    _, se, code = spec_run("recipes/tools/block_overlap.lua x.safetensors sparsity=1.5")
    assert.is_not.equal(0, code)
    assert.truthy(se:find("sparsity", 1, true), se)
    _, se, code = spec_run("recipes/tools/block_overlap.lua x.safetensors device=tpu")
    assert.is_not.equal(0, code)
    assert.truthy(se:find("device = \"tpu\"", 1, true), se)
  end)
end)

describe("recipes/tools/record_trace.lua video size", function()
  it("records the grid of width= and height=", function()
    local path = spec_tmpfile("wide.safetensors")
    local _, se, code = spec_run("recipes/tools/record_trace.lua " .. path .. " steps=0 layers=1 sampling=2 frames=1 width=96 height=32")
    assert.equal(0, code, se)
    local tr = trace.open(path)
    assert.same({1, 2, 6}, tr.grid)
    os.remove(path)
  end)

  it("rejects a size that is not a multiple of 16", function()
    local _, se, code = spec_run("recipes/tools/record_trace.lua " .. spec_tmpfile("x.safetensors") .. " width=40 sampling=1 steps=0")
    assert.is_not.equal(0, code)
    assert.truthy(se:find("width = 40", 1, true), se)
  end)
end)
