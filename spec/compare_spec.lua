-- The compare job on a tiny model: runs per entry and sweep value against one dense reference,
-- the table, CSV and JSON, the chart, the gallery (masks where the report says, block for block),
-- a policy object that plans its own layouts, and errors that name the bad entry or field.
local recipe = require "adaspa.recipe"
local compare = require "adaspa.jobs.compare"

local tmpdir, slurp = spec_tmpdir, spec_slurp

-- 256x128, 9 frames: latent [16, 3, 16, 32], patches 3 x 8 x 16 = 384 image tokens + 32 text = 416
-- tokens, 7 blocks of 64
-- (block 7 holds the text). 1 double + 1 single block, 3 steps.
local TINY = {"model.preset=small", "model.layers.double=1", "model.layers.single=1", "model.layers.refiner=1",
  "video.width=256", "video.height=128", "video.frames=9", "sampler.steps=3", "attention.warmup=1", "attention.search=1",
  "output.quiet=true"}
local NB, TEXT_BLOCK = 7, 7

-- A recipe with a policy object that plans a band (|qb - kb| <= 1) plus the text block as row
-- and column, every step, and reports planning FLOPs of a tenth of a dense pass.
local RECIPE = [[
local band = {name = "band", block = 64, label = "band+text"}
function band:mode(step, layer) return "plan" end
function band:plan(q, k, v, info, ctx)
  local S, H, D = unpack(q:shape())
  local nqb, nkb = math.ceil(S / 64), math.ceil(info.kv_valid / 64)
  local text = math.floor(info.n_img / 64) + 1
  local m = {}
  for h = 1, H do
    m[h] = {}
    for qb = 1, nqb do
      m[h][qb] = {}
      for kb = 1, nkb do
        m[h][qb][kb] = (math.abs(qb - kb) <= 1 or qb >= text or kb >= text) and 1 or 0
      end
    end
  end
  local layout = adaspa.layout.from_mask(adaspa.tensor(m, {dtype = "u8"}), 64)
  return layout, {flops = 0.1 * 4 * S * info.kv_valid * D * H}
end
return {
  job = "compare",
  policies = {"dense", "adaspa", {"adaspa", recall = 0.9, sweep = false}, band},
  sweep = {sparsity = {0, 0.8}},
  gallery = {layers = {1, 2}, heads = {2}, size = 70},
  chart = {width = 420, height = 300},
}
]]

local function band_kept(qb, kb) return math.abs(qb - kb) <= 1 or qb >= TEXT_BLOCK or kb >= TEXT_BLOCK end

-- Loads, overrides and validates a recipe as `adaspa recipe` does; returns cfg.
local function configure(path, overrides)
  local cfg = recipe.load(path, adaspa)
  for _, a in ipairs(overrides) do
    local keys, value = recipe.parse_override(a)
    assert(keys, value)
    recipe.set_path(cfg, keys, value)
  end
  cfg.job = nil
  return recipe.validate(cfg, compare.schema, path)
end

local function with(list, more)
  local t = {}
  for _, x in ipairs(list) do t[#t + 1] = x end
  for _, x in ipairs(more) do t[#t + 1] = x end
  return t
end

describe("adaspa recipe compare (tiny)", function()
  local file, dir, code, report
  setup(function()
    file = spec_tmpfile(RECIPE)
    dir = tmpdir()
    local cfg = configure(file, with(TINY, {"output.dir=" .. dir}))
    code, report = compare.run(cfg, {recipe = file, name = "compare"})
  end)
  teardown(function()
    os.remove(file)
    os.execute("rm -rf " .. dir)
  end)

  local function row(label)
    for _, r in ipairs(report.rows) do if r.label == label then return r end end
    error("no row " .. label)
  end

  it("runs the reference once and every entry per sweep value, and writes every file", function()
    assert.equal(0, code)
    local labels = {}
    for i, r in ipairs(report.rows) do labels[i] = r.label end
    assert.same({"dense (reference)", "adaspa sparsity=0", "adaspa sparsity=0.8", "adaspa recall=0.9", "band+text"}, labels)
    for _, f in ipairs({"table.txt", "table.md", "results.csv", "results.json", "chart.png", "gallery.png", "previews.png"}) do
      assert.truthy(io.open(dir .. "/" .. f), f)
    end
    local txt = slurp(dir .. "/table.txt")
    for _, l in ipairs(labels) do assert.truthy(txt:find("\n" .. l:gsub("%p", "%%%0") .. "%s"), l .. "\n" .. txt) end
    assert.truthy(txt:find("seed 42", 1, true))
    assert.truthy(txt:find("SYNTHETIC", 1, true))
    -- the CSV: a header and one line per run, in the same order
    local lines = {}
    for l in slurp(dir .. "/results.csv"):gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal(6, #lines)
    assert.truthy(lines[1]:find("^label,policy,flops_fraction"))
    for i, l in ipairs(labels) do assert.equal(l, lines[i + 1]:match("^([^,]+),")) end
    local md = slurp(dir .. "/table.md")
    assert.truthy(md:find("| adaspa sparsity=0.8 |", 1, true))
    local js = slurp(dir .. "/results.json")
    assert.truthy(js:find('"runs"', 1, true) and js:find('"gallery"', 1, true))
  end)

  it("dense against itself and sparsity 0 are exact (infinite PSNR); sparsity 0.8 is sparse and close", function()
    local ref = row("dense (reference)")
    assert.equal(math.huge, ref.latent_psnr)
    assert.equal(1, ref.flops_fraction)
    local s0 = row("adaspa sparsity=0")
    assert.equal(math.huge, s0.latent_psnr)
    assert.equal(math.huge, s0.preview_psnr)
    assert.equal(1, s0.latent_ssim)
    local s8 = row("adaspa sparsity=0.8")
    assert.is_true(s8.latent_psnr < math.huge and s8.latent_psnr > 20, tostring(s8.latent_psnr))
    assert.is_true(s8.density < 0.9 and s8.density > 0, tostring(s8.density))
    assert.is_true(s8.flops_fraction < 1 and s8.flops_fraction > s8.density / 3, tostring(s8.flops_fraction))
    assert.is_true(s8.recall > 0 and s8.recall < 1, tostring(s8.recall))
    local rc = row("adaspa recall=0.9")
    assert.is_true(rc.recall >= 0.9 - 1e-6, tostring(rc.recall))
    assert.truthy(slurp(dir .. "/table.txt"):find("\ndense %(reference%)%s+100%.0%%%s"))
  end)

  it("counts a policy object's planning FLOPs and its layouts' density", function()
    local b = row("band+text")
    local kept = 0
    for qb = 1, NB do for kb = 1, NB do if band_kept(qb, kb) then kept = kept + 1 end end end
    local d = kept / (NB * NB)
    assert.is_true(math.abs(b.density - d) < 1e-9, b.density .. " vs " .. d)
    assert.is_true(math.abs(b.plan_fraction - 0.1) < 1e-9, tostring(b.plan_fraction))
    assert.is_true(math.abs(b.flops_fraction - (d + 0.1)) < 1e-9, tostring(b.flops_fraction))
    assert.is_true(b.latent_psnr < math.huge)
  end)

  it("draws the chart at its size and the gallery with each run's masks where the report says", function()
    assert.same({300, 420, 3}, adaspa.png.read(dir .. "/chart.png"):shape())
    local g = adaspa.png.read(dir .. "/gallery.png")
    local cells = report.gallery.cells
    assert.equal(2, report.gallery.step)
    assert.equal(4 * 2, #cells)                 -- 4 policy runs x (layers 1, 2) x head 2
    local s = g:shape()
    for _, c in ipairs(cells) do
      assert.equal(70, c.h)                     -- 7 blocks x 10 pixels (gallery.size = 70)
      assert.is_true(c.y + c.h - 1 <= s[1] and c.x + c.w - 1 <= s[2])
    end
    local P = require "adaspa.pictures"
    local function is(c, want) return c[1] == want[1] and c[2] == want[2] and c[3] == want[3] end
    for _, c in ipairs(cells) do
      if c.run == "band+text" then
        assert.equal("plan", c.mode)
        for qb = 1, NB do
          for kb = 1, NB do
            local y, x = c.y + (qb - 1) * 10 + 5, c.x + (kb - 1) * 10 + 5
            local got = {g:get(y, x, 1), g:get(y, x, 2), g:get(y, x, 3)}
            local want = band_kept(qb, kb) and P.colors.kept or P.colors.dropped
            assert.is_true(is(got, want), string.format("layer %d block (%d, %d): {%s}", c.layer, qb, kb, table.concat(got, ",")))
          end
        end
      elseif c.run == "adaspa sparsity=0" then
        assert.equal("sparse", c.mode)
        assert.equal(1, c.density)
      end
    end
  end)
end)

describe("compare recipe fields", function()
  local file
  setup(function() file = spec_tmpfile(RECIPE) end)
  teardown(function() os.remove(file) end)

  local function fails(overrides, ...)
    local parts = {...}
    spec_error(function()
      local cfg = configure(file, with(TINY, overrides))
      compare.plan(cfg)
    end, file, unpack(parts))
  end

  it("names the entry, option or field that is wrong", function()
    fails({"policies=dense,magic"}, "policies", "entry 2", "unknown policy \"magic\"")
    fails({"policies.2.speed=2"}, "entry 2", "no option speed")
    fails({"policies.2.label=5"}, "entry 2", "label must be a string")
    fails({"policies.2.sweep=maybe"}, "entry 2", "sweep must be true or false")
    fails({"sweep.speed=1,2"}, "field sweep", "no policy has the option speed")
    fails({"attention.bogus=1"}, "field attention", "no policy has the option bogus")
    fails({"gallery.step=3"}, "gallery.step = 3", "0..2")
    fails({"gallery.heads=0"}, "gallery.heads", "not a head number")
    fails({"chart.x=time"}, "chart.x", "one of")
    fails({"output.verbose=true"}, "unknown field output.verbose")
  end)

  it("a sweep over an option no listed policy has applies to nothing, and measures recall by default", function()
    -- recall is adaspa's alone
    local only = spec_tmpfile('return {job = "compare", policies = {"dense", "spatial_temporal"}, sweep = {recall = {0.9, 0.95}}}')
    local cfg = configure(only, TINY)
    os.remove(only)
    local runs = compare.plan(cfg)
    local names = {}
    for _, r in ipairs(runs) do names[#names + 1] = r.name end
    assert.same({"spatial_temporal"}, names)
    assert.is_true(runs[1].opts.exact_recall)
    assert.is_nil(runs[1].opts.recall)
    -- window, spatial_temporal and estimate have sparsity: listed by name they are swept; the
    -- default list's entries are not (sweep = false: their papers' settings)
    runs = compare.plan(configure(file, with(TINY, {"policies=dense,window,spatial_temporal,estimate",
      "sweep.sparsity={0.5,0.8}"})))
    local got = {}
    for _, r in ipairs(runs) do got[#got + 1] = r.name .. " " .. tostring(r.opts.sparsity) end
    assert.same({"window 0.5", "window 0.8", "spatial_temporal 0.5", "spatial_temporal 0.8", "estimate 0.5",
      "estimate 0.8"}, got)
    runs = compare.plan(configure("recipes/compare.lua", TINY))   -- the shipped list
    local zoo = 0
    for _, r in ipairs(runs) do
      if r.name == "window" or r.name == "estimate" or r.name == "spatial_temporal" then
        assert.is_nil(r.opts.sparsity, r.name)
        zoo = zoo + 1
      end
    end
    assert.equal(3, zoo)
  end)

  it("rejects entries that are not policies, and options on policy objects", function()
    local bad = spec_tmpfile('return {job = "compare", policies = {"dense", {42}}}')
    spec_error(function() configure(bad, {}) end, "entry 2", "first item must be a policy name")
    local obj = spec_tmpfile([[
local p = {name = "mine", mode = function() return "dense" end, select = function() end}
return {job = "compare", policies = {{p, sparsity = 0.5}}}]])
    spec_error(function() configure(obj, {}) end, "entry 1", "a policy object takes no options")
    os.remove(bad)
    os.remove(obj)
  end)

  it("fails on a bad option value before running anything, naming the entry and the run", function()
    local _, err, code = spec_run("recipe " .. file .. " " .. table.concat(TINY, " ") .. " policies.2.sparsity=1.5")
    assert.equal(1, code)
    assert.truthy(err:find("entry 2", 1, true), err)
    assert.truthy(err:find("adaspa sparsity=1.5", 1, true), err)
    assert.truthy(err:find("[0, 1)", 1, true), err)
    local _, err2, code2 = spec_run("recipe " .. file .. " " .. table.concat(TINY, " ") .. " gallery.heads=5")
    assert.equal(1, code2)
    assert.truthy(err2:find("gallery.heads", 1, true) and err2:find("beyond the model's 2 heads", 1, true), err2)
  end)

  it("a run that fails is marked FAILED with its error; the others finish and the exit status is 1", function()
    local eager = spec_tmpfile([[
local eager = {name = "eager", label = "eager", mode = function() return "sparse" end, select = function() end}
return {job = "compare", policies = {"dense", eager, "adaspa"}, gallery = {layers = {}}, output = {previews = false}}]])
    local d = tmpdir()
    local cfg = configure(eager, with(TINY, {"output.dir=" .. d}))
    local c, rep = compare.run(cfg, {recipe = eager, name = "compare"})
    assert.equal(1, c)
    assert.equal("eager", rep.rows[2].label)
    assert.truthy(rep.rows[2].error:find("no layout has been searched", 1, true), rep.rows[2].error)
    assert.is_nil(rep.rows[3].error)
    assert.is_true(rep.rows[3].latent_psnr > 0)
    assert.truthy(slurp(d .. "/table.txt"):find("\neager%s+FAILED"))
    assert.truthy(io.open(d .. "/chart.png"))
    assert.is_nil(io.open(d .. "/gallery.png"))
    os.remove(eager)
    os.execute("rm -rf " .. d)
  end)

  it("plans runs from entries, the sweep grid and command-line entry fields", function()
    local cfg = configure(file, with(TINY, {"sweep.block=64,128", "policies.2.recall=0.95"}))
    local runs = compare.plan(cfg)
    local labels = {}
    for i, r in ipairs(runs) do labels[i] = r.label end
    assert.same({"adaspa recall=0.95 block=64 sparsity=0", "adaspa recall=0.95 block=64 sparsity=0.8",
      "adaspa recall=0.95 block=128 sparsity=0", "adaspa recall=0.95 block=128 sparsity=0.8",
      "adaspa recall=0.9", "band+text"}, labels)
    assert.equal(128, runs[3].opts.block)
    assert.same({1}, runs[1].opts.search)       -- attention.search=1 reaches every adaspa run, as a list
    assert.equal(0.95, runs[1].opts.recall)
    assert.is_nil(runs[5].opts.sparsity)        -- sweep = false
    -- the shipped recipe validates and plans with its defaults
    local shipped = configure("recipes/compare.lua", {})
    assert.is_true(#compare.plan(shipped) >= 4)
  end)
end)
