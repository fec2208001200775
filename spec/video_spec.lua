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
    assert.truthy(o:find("step   1/3", 1, true), o)
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
      {"sampler.steps=0", "sampler.steps = 0", "positive"},
      {"sampler.steps=2.5", "sampler.steps", "integer"},
      {"model.preset=huge", "model.preset", "huge"},
      {"attention.policy=magic", "attention.policy", "magic"},
      {"attention.sparsity=1", "attention.sparsity = 1", "[0, 1)"},
      {"attention.block=96", "attention.block = 96", "64 or 128"},
      {"attention.search=10,60", "attention.search", "search step 60 is beyond the schedule"},
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
