-- The main job end to end on a tiny configuration: outputs, report, determinism, validation.
local tiny = "recipes/hunyuan.lua model.preset=small model.layers.double=1 model.layers.single=1 " ..
  "model.layers.refiner=1 video.width=64 video.height=32 video.frames=5 sampler.steps=3 output.quiet=true " ..
  "attention.warmup=1 attention.search=1"

local function run_tiny(dir, extra)
  return spec_run("recipe " .. tiny .. " output.dir=" .. dir .. " " .. (extra or ""))
end

local tmpdir = spec_tmpdir

describe("adaspa recipe hunyuan (tiny)", function()
  local dir, err, code
  setup(function()
    dir = tmpdir()
    _, err, code = run_tiny(dir)
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("runs and writes latents, previews, a contact sheet and reports", function()
    assert.equal(0, code, err)
    local t = adaspa.safetensors.load(dir .. "/latents.safetensors")
    assert.same({16, 2, 4, 8}, t.latents:shape())
    assert.is_true(t.latents:norm() > 0)
    local f0 = adaspa.png.read(dir .. "/frame_000.png")
    assert.same({32, 64, 3}, f0:shape()) -- 4x8 latent pixels upscaled 8x
    -- synthetic weights are said on the pictures too: a yellow "SYNTHETIC WEIGHTS" banner
    assert.same({255, 221, 0}, {f0:get(1, 1, 1), f0:get(1, 1, 2), f0:get(1, 1, 3)})
    assert.same({0, 0, 0}, {f0:get(4, 6, 1), f0:get(4, 6, 2), f0:get(4, 6, 3)}) -- top bar of the S
    assert.truthy(io.open(dir .. "/frame_001.png"))
    local sheet = adaspa.png.read(dir .. "/contact_sheet.png")
    assert.equal(3, sheet:shape()[3])
    local txt = io.open(dir .. "/report.txt"):read("*a")
    assert.truthy(txt:find("SYNTHETIC", 1, true), txt)
    assert.truthy(txt:find("3 steps", 1, true), txt)
    assert.truthy(txt:find("adaspa: sparsity 0.8", 1, true), txt)
    assert.truthy(txt:find("search", 1, true), txt)
    -- the cache of the run, pictures of layer 1 head 1 at the search step, the density grid
    local cache = adaspa.Cache.load(dir .. "/cache.safetensors")
    assert.equal(1, cache:step(1))
    assert.same({32, 64, 3}, f0:shape())
    assert.truthy(io.open(dir .. "/step01_layer01_head01_mask.png"))
    assert.truthy(io.open(dir .. "/step01_layer01_head01_mass.png"))
    assert.truthy(io.open(dir .. "/densities.png"))
    local js = io.open(dir .. "/report.json"):read("*a")
    assert.truthy(js:find('"weights"', 1, true))
    assert.truthy(js:find('"seconds_per_step"', 1, true))
  end)

  it("is deterministic: the same seed gives the same latents, another seed differs", function()
    local dir2, dir3 = tmpdir(), tmpdir()
    local _, e2, c2 = run_tiny(dir2)
    local _, e3, c3 = run_tiny(dir3, "sampler.seed=7")
    assert.equal(0, c2, e2)
    assert.equal(0, c3, e3)
    local a = adaspa.safetensors.load(dir .. "/latents.safetensors").latents
    local b = adaspa.safetensors.load(dir2 .. "/latents.safetensors").latents
    local c = adaspa.safetensors.load(dir3 .. "/latents.safetensors").latents
    assert.equal(0, spec_maxdiff(a, b))
    assert.is_true(spec_maxdiff(a, c) > 1e-3)
    os.execute("rm -rf " .. dir2 .. " " .. dir3)
  end)

  it("prints a progress line per step unless quiet", function()
    local d = tmpdir()
    local o, e, c = spec_run("recipe " .. tiny:gsub("output.quiet=true", "") .. " output.dir=" .. d)
    assert.equal(0, c, e)
    assert.truthy(o:find("step   0/2", 1, true), o) -- steps count from 0, as the schedule does
    assert.truthy(o:find("step   2/2", 1, true), o)
    assert.falsy(o:find("step   3/", 1, true), o)
    assert.truthy(o:find("sparse attention", 1, true), o)
    assert.truthy(o:find("recall", 1, true), o)
    assert.truthy(o:find("eta", 1, true), o)
    os.execute("rm -rf " .. d)
  end)

  it("rejects bad fields, naming the recipe file, the field and the value", function()
    local cases = {
      {"video.height=100", "video.height = 100", "multiple of 16"},
      {"video.frames=32", "video.frames = 32", "4k+1"},
      {"video.widht=64", "unknown field video.widht"},
      {"sampler.steps=0", "sampler.steps = 0", "must be in [1, 1000]"},
      {"sampler.steps=2.5", "sampler.steps", "integer"},
      {"model.preset=huge", "model.preset", "huge"},
      {"attention.policy=magic", "attention.policy", "magic"},
      {"attention.sparsity=1", "attention.sparsity = 1", "[0, 1)"},
      {"attention.block=96", "attention.block = 96", "64 or 128"},
      {"attention.search=10,60", "attention.search", "search step 60 (entry 2) is beyond the schedule"},
      -- values that reached internal errors before (issue 11): each names the field and the value
      {"sampler.shift=inf", "sampler.shift = inf", "finite"},
      {"sampler.guidance=nan", "sampler.guidance = nan", "finite"},
      {"sampler.guidance=-1e308", "sampler.guidance = -1e+308", "[0, 100]"},
      {"sampler.steps=1e9", "sampler.steps = 1000000000", "[1, 1000]"},
      {"model.weights=/nonexistent", "model.weights = \"/nonexistent\"", "No such file"},
      {"model.weights=/", "model.weights", "holds none of"},  -- a folder of shards needs its index
      {"model.weights=/nonexistent.safetensors", "model.weights", "cannot be read"},
      {"text.embeds=/nonexistent/e.safetensors", "text.embeds", "cannot be read"},
      {"output.dir=", "output.dir = \"\"", "empty"},
      {"attention.warmup=100", "attention.warmup = 100", "the schedule has 50 steps"},
      {"attention.warmup=-1", "attention.warmup = -1", "[0, 1000]"},
      {"video.frames=nan", "video.frames", "integer"},
      {"video.width=1e300", "video.width", "[16, 16384]"},
      {"model.device=gpu", "model.device = \"gpu\"", "cuda:N"},
      {"model.layers.double=-1", "model.layers.double = -1", "[0, 1000]"},
      {"output.upscale=0", "output.upscale = 0", "[1, 64]"},
      {"output.error_steps=50", "output.error_steps", "beyond the schedule"},
      {"output.picture_heads=0", "output.picture_heads", "entry 1"},
      {"attention.recall=nan", "attention.recall = nan", "finite"},
      {"attention.options.bogus=1", "attention: policy adaspa: unknown option bogus"},
      {"sampler.steps=5 attention.search=1,3 attention.warmup=2", "search step 1 falls inside the dense warm-up"},
      {"novalue", "path.to.field=value"},
    }
    for _, c in ipairs(cases) do
      local _, e, code = spec_run("recipe recipes/hunyuan.lua " .. c[1])
      assert.equal(1, code, c[1])
      assert.truthy(e:find("recipes/hunyuan.lua", 1, true), e)
      for i = 2, #c do assert.truthy(e:find(c[i], 1, true), c[1] .. ": " .. e) end
    end
  end)

  it("sparsity 0 reproduces the dense run exactly, and compare_dense reports the quality", function()
    local d1, d2 = tmpdir(), tmpdir()
    local _, e1, c1 = run_tiny(d1, "attention.sparsity=0 output.compare_dense=true output.error_steps=2")
    local _, e2, c2 = run_tiny(d2, "attention.policy=dense")
    assert.equal(0, c1, e1)
    assert.equal(0, c2, e2)
    local a = adaspa.safetensors.load(d1 .. "/latents.safetensors").latents
    local b = adaspa.safetensors.load(d2 .. "/latents.safetensors").latents
    assert.equal(0, spec_maxdiff(a, b))
    local txt = io.open(d1 .. "/report.txt"):read("*a")
    assert.truthy(txt:find("PSNR inf dB", 1, true), txt)
    assert.truthy(txt:find("step 2 attention rel. error per layer: mean 0.0000", 1, true), txt)
    os.execute("rm -rf " .. d1 .. " " .. d2)
  end)

  it("finds the recipe by name", function()
    local d = tmpdir()
    local _, e, c = spec_run("recipe hunyuan " .. tiny:gsub("^recipes/hunyuan.lua ", "") .. " output.dir=" .. d)
    assert.equal(0, c, e)
    os.execute("rm -rf " .. d)
  end)
end)

describe("the video job's schedule and estimate (issue 11)", function()
  it("defaults follow the step count: the README's sampler.steps=20 video.frames=9 runs, warm-up 4, searches 4 and 12", function()
    local d = tmpdir()
    local o, e, c = spec_run("recipe hunyuan sampler.steps=20 video.frames=9 video.width=64 video.height=32 " ..
      "model.layers.double=1 model.layers.single=1 output.pictures=false output.previews=false output.dir=" .. d)
    assert.equal(0, c, e)
    assert.truthy(o:find("dense warm-up 4 steps, search at {4, 12}", 1, true), o)
    local txt = io.open(d .. "/report.txt"):read("*a")
    assert.truthy(txt:find("dense    4 steps", 1, true), txt)
    assert.truthy(txt:find("search   2 steps", 1, true), txt)
    assert.truthy(txt:find("sparse  14 steps", 1, true), txt)
    os.execute("rm -rf " .. d)
  end)

  it("the paper's schedule as fractions; explicit values stay absolute and are checked", function()
    local P = require "adaspa.policy.adaspa"
    local function sched(n, w) local a, b = P.schedule(n, w); return {a, b} end
    assert.same({10, {10, 30}}, sched(50))
    assert.same({4, {4, 12}}, sched(20))
    assert.same({0, {0}}, sched(1))
    assert.same({0, {0, 1}}, sched(2))
    assert.same({7, {7, 12}}, sched(20, 7))        -- an explicit warm-up: searches start there
    local p = P.new({}, 20)
    assert.same({4, {4, 12}}, {p.warmup, p.search})
    p = P.new({warmup = 10, search = {10, 30}}, 50)
    assert.same({10, {10, 30}}, {p.warmup, p.search})
    p = P.new({search = {3, 8}}, 20)               -- search given alone: the warm-up ends at its first
    assert.equal(3, p.warmup)
    local ok, err = pcall(P.new, {warmup = 10, search = {10, 30}}, 20)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("search step 30 is beyond the schedule (steps 0..19)", 1, true), err)
    -- the zoo's warm-up follows the steps too in the video job (adaspa.policy.from_attention)
    local policies = require "adaspa.policy"
    assert.equal(4, policies.from_attention({policy = "window"}, 20).warmup)
    assert.equal(2, policies.from_attention({policy = "window", warmup = 2}, 20).warmup)
  end)

  it("prints the estimate before the first step and refuses, at once and leaving no folder, what does not fit", function()
    local d = tmpdir() .. "/new"
    local t0 = adaspa.now()
    local o, e, c = spec_run("recipe hunyuan video.frames=1001 video.width=1280 video.height=720 output.dir=" .. d)
    assert.equal(1, c)
    assert.is_true(adaspa.now() - t0 < 20, "refused at once")
    assert.truthy(o:find("estimate: %d+ tokens"), o)
    assert.truthy(e:find("GiB of host memory", 1, true), e)
    assert.truthy(e:find("video.frames", 1, true), e)
    assert.is_nil(io.open(d .. "/report.txt"))
    local _, e2, c2 = spec_run("recipe hunyuan model.preset=720p model.device=cpu output.dir=" .. d)
    assert.equal(1, c2)
    assert.truthy(e2:find("of host memory (weights", 1, true), e2)
  end)

  it("estimates from the configuration: weights from the shapes, activations from the tokens, time from measured rates", function()
    local fp = require "adaspa.footprint"
    local hy = require "adaspa.models.hunyuan"
    local mcfg = hy.config("small", {layers = {double = 1, single = 1, refiner = 1}})
    local rates = {linear = 1e10, attention = 5e9}
    local function est(video, extra)
      local o = {mcfg = mcfg, video = video, device = "cpu", dtype = "f32", steps = 10, sparsity = 0.8, warmup = 2,
                 policy = "adaspa", rates = rates}
      for k, v in pairs(extra or {}) do o[k] = v end
      return fp.estimate(o)
    end
    local a = est({width = 64, height = 32, frames = 5})
    local b = est({width = 128, height = 64, frames = 5})
    -- the weights are exactly the model's parameters, as the synthetic weights hold them
    local w = require("adaspa.models.hunyuan_synth").weights(mcfg, {seed = 1})
    local n = 0
    for _, t in pairs(w) do n = n + t:numel() end
    assert.equal(n, a.params)
    assert.equal(4 * n, a.host.parts.weights)
    assert.equal(2 * n, est({width = 64, height = 32, frames = 5}, {dtype = "bf16"}).host.parts.weights)
    -- tokens: 2 x 2 x 4 latent patches + 32 text; four times the image tokens at twice the size
    assert.equal(2 * 2 * 4 + 32, a.tokens)
    assert.equal(2 * 4 * 8 + 32, b.tokens)
    assert.is_true(b.host.parts.activations > a.host.parts.activations)
    assert.is_true(b.flops.attention / a.flops.attention > (b.tokens / a.tokens) ^ 2 * 0.99)
    assert.is_true(math.abs(a.seconds.dense_step - (a.flops.linear / 1e10 + a.flops.attention / 5e9)) < 1e-12)
    assert.is_true(a.seconds.sparse_step < a.seconds.dense_step)
    local dense = est({width = 64, height = 32, frames = 5}, {policy = "dense", sparsity = 0})
    assert.equal(0, dense.host.parts.layouts)
    -- classifier-free guidance: two passes a step, two caches; with a guidance interval the time
    -- counts the mean passes over the steps (here 1.5), the memory still two branches' caches
    local cfg2 = est({width = 64, height = 32, frames = 5}, {forwards = 2})
    local half = est({width = 64, height = 32, frames = 5}, {forwards = 2, passes = 1.5})
    assert.is_true(math.abs(cfg2.flops.dense_step - 2 * a.flops.dense_step) < 1e-6 * a.flops.dense_step)
    assert.is_true(math.abs(half.flops.dense_step - 1.5 * a.flops.dense_step) < 1e-6 * a.flops.dense_step)
    assert.is_true(math.abs(half.seconds.run - 0.75 * cfg2.seconds.run) < 1e-9 + 1e-6 * cfg2.seconds.run)
    assert.equal(cfg2.host.parts.lse, half.host.parts.lse)
    assert.equal(2 * a.host.parts.lse, half.host.parts.lse)
    -- a GPU run puts the model in GPU memory and keeps little on the host
    local g = est({width = 64, height = 32, frames = 5}, {device = "cuda"})
    assert.equal(4 * n, g.gpu.parts.weights)
    assert.is_nil(g.host.parts.weights)
    assert.is_false((fp.fits(g, 1e12, 1e6)))
    assert.is_true((fp.fits(g, 1e12, 1e12)))
    local ok, why = fp.fits(a, 1e6, nil)
    assert.is_false(ok)
    assert.truthy(why:find("host memory", 1, true), why)
    -- the measured rates are positive and finite
    local r = fp.measure("cpu", "f32")
    assert.is_true(r.linear > 1e6 and r.linear < 1e14, tostring(r.linear))
    assert.is_true(r.attention > 1e6 and r.attention < 1e14, tostring(r.attention))
  end)

  it("checks the policy's options before any work (no folder made)", function()
    local d = tmpdir() .. "/new"
    local _, e, c = spec_run("recipe hunyuan attention.options.threshold=2 output.dir=" .. d)
    assert.equal(1, c)
    assert.truthy(e:find("unknown option threshold", 1, true), e)
    assert.is_nil(io.open(d))
  end)
end)
