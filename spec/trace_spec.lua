-- Attention traces (adaspa.trace), their replay (adaspa.jobs.replay, recipes/replay.lua) and the
-- dumper's self-test (recipes/tools/dump_trace.py --selftest, no torch needed).
local trace = require "adaspa.trace"
local recipe = require "adaspa.recipe"
local replay = require "adaspa.jobs.replay"

-- A small trace with structure: latent tokens of a T x Hh x Ww grid carry frame + row + column
-- features (spatial and temporal neighbours attend to each other), text tokens are noise; the
-- noise grows between steps, so layouts and LSE change a little. S = 573 (odd; 8 full blocks of
-- 64 and a partial one of 61), 3 padding keys.
local G = {T = 4, Hh = 10, Ww = 14, text = 13, H = 2, D = 32}
G.n_img = G.T * G.Hh * G.Ww
G.S = G.n_img + G.text
G.kv = G.S - 3
local STEPS, LAYERS = {0, 4}, {1, 2}

local function features(seed)
  local shape = {G.T, G.Hh, G.Ww, G.H, G.D}
  local F = adaspa.randn({G.T, 1, 1, G.H, G.D}, {seed = seed}):expand(shape):contiguous()
  local R = adaspa.randn({1, G.Hh, 1, G.H, G.D}, {seed = seed + 1}):expand(shape):contiguous()
  local C = adaspa.randn({1, 1, G.Ww, G.H, G.D}, {seed = seed + 2}):expand(shape):contiguous()
  return adaspa.add(adaspa.add(F, R), C):reshape({G.n_img, G.H, G.D})
end

local function synthetic_records()
  local recs = {}
  for si, s in ipairs(STEPS) do
    for _, l in ipairs(LAYERS) do
      local base = features(100 * l)
      local r = {step = s, layer = l}
      for fi, f in ipairs({"q", "k", "v"}) do
        local noise = adaspa.randn({G.S, G.H, G.D}, {seed = 1000 * l + 10 * fi + si})
        local img = adaspa.add(base, adaspa.scale(noise:narrow(1, 1, G.n_img):contiguous(), 0.5 + 0.1 * si))
        r[f] = adaspa.concat({img, noise:narrow(1, G.n_img + 1, G.text):contiguous()}):to("bf16")
      end
      recs[#recs + 1] = r
    end
  end
  return recs
end

local META = {model = "synthetic", grid = {G.T, G.Hh, G.Ww}, text_len = G.text, kv_valid = G.kv, num_steps = 6,
              timesteps = {[0] = 1000, [4] = 733.25}, kinds = {[1] = "double", [2] = "single"}, source = "trace_spec"}

local RECORDS = synthetic_records()
local PATH = os.tmpname() .. ".safetensors"
trace.write(PATH, RECORDS, META)

local tmpdir, exists = spec_tmpdir, spec_exists

-- Runs the replay job in this process on cfg (validated like a recipe); returns the results.
local function run_replay(cfg)
  cfg.output = cfg.output or {}
  cfg.output.quiet = true
  cfg.output.dir = cfg.output.dir or tmpdir()
  recipe.validate(cfg, replay.schema, "trace_spec")
  local code, res = replay.run(cfg, {recipe = "trace_spec", name = "replay"})
  assert.equal(0, code)
  return res
end

local function policy_of(res, name)
  for _, p in ipairs(res.policies) do if p.name == name then return p end end
  error("no policy " .. name .. " in the results")
end

describe("adaspa.trace", function()
  it("round-trips every record exactly, with its metadata", function()
    local tr = trace.open(PATH)
    assert.same({0, 4}, tr.steps)
    assert.same({1, 2}, tr.layers)
    assert.same({G.T, G.Hh, G.Ww}, tr.grid)
    assert.equal(G.S, tr.S)
    assert.equal(G.kv, tr.kv_valid)
    assert.equal(G.text, tr.text_len)
    assert.equal(6, tr.num_steps)
    assert.equal(733.25, tr.timesteps[4])
    assert.equal("single", tr.kinds[2])
    assert.equal(G.H, tr.heads)
    assert.equal(G.D, tr.head_dim)
    assert.equal("bf16", tr.dtype)
    assert.equal("trace_spec", tr.meta.source)
    assert.equal(4, #tr:records())
    for _, r in ipairs(RECORDS) do
      local q, k, v, info = tr:load(r.step, r.layer)
      assert.same({G.S, G.H, G.D}, q:shape())
      assert.equal("bf16", q:dtype())
      assert.equal(0, spec_maxdiff(q, r.q))
      assert.equal(0, spec_maxdiff(k, r.k))
      assert.equal(0, spec_maxdiff(v, r.v))
      assert.equal(r.layer, info.layer)
      assert.equal(G.n_img, info.n_img)
      assert.equal(G.text, info.n_txt)
      assert.equal(G.kv, info.kv_valid)
      assert.same({G.T, G.Hh, G.Ww}, info.grid)
    end
    -- a copy on request
    local q = tr:load(4, 2, {dtype = "f32"})
    assert.equal("f32", q:dtype())
    assert.equal(0, spec_maxdiff(q, RECORDS[4].q))
    spec_error(function() tr:load(1, 1) end, PATH, "no record step 1 layer 1")
  end)

  it("stores f32 when asked, and a record's own kv_valid", function()
    local p = os.tmpname() .. ".safetensors"
    local q = adaspa.randn({G.S, 1, 8}, {seed = 5})
    trace.write(p, {{step = 2, layer = 3, q = q, k = adaspa.scale(q, 2), v = adaspa.scale(q, -1), kv_valid = G.S}},
      {model = "m", grid = {G.T, G.Hh, G.Ww}, text_len = G.text, kv_valid = G.kv, dtype = "f32"})
    local tr = trace.open(p)
    local a, b, c, info = tr:load(2, 3)
    assert.equal("f32", a:dtype())
    assert.equal(0, spec_maxdiff(a, q))
    assert.equal(0, spec_maxdiff(b, adaspa.scale(q, 2)))
    assert.equal(0, spec_maxdiff(c, adaspa.scale(q, -1)))
    assert.equal(G.S, info.kv_valid)
    assert.equal(G.kv, tr.kv_valid)
    assert.equal("3", tr.meta.layers)
    os.remove(p)
  end)

  -- malformed files: the content of the good trace, one defect each
  local function malformed(edit)
    local tensors, md = trace.encode(RECORDS, META)
    local named = {}
    for _, nt in ipairs(tensors) do named[nt[1]] = nt[2] end
    edit(named, md)
    local p = os.tmpname() .. ".safetensors"
    adaspa.safetensors.save(p, named, md)
    return p
  end

  local cases = {
    {"a missing tensor", function(t) t["step4.layer2.k"] = nil end,
      {"step 4 layer 2", "missing tensor step4.layer2.k", "field k"}},
    {"k and q of different shapes", function(t) t["step0.layer1.k"] = adaspa.zeros({G.S, G.H, 16}, {dtype = "bf16"}) end,
      {"step 0 layer 1", "field k has shape [573, 2, 16] but q has [573, 2, 32]"}},
    {"a tensor that is not [S, H, D]", function(t) t["step0.layer2.v"] = adaspa.zeros({G.S, G.H * G.D}, {dtype = "bf16"}) end,
      {"step 0 layer 2", "field v", "must be [S, H, D]"}},
    {"grid and text that do not add up to S", function(_, m) m.text_len = "20" end,
      {"step 0 layer 1", "field q has S = 573 tokens but grid 4x10x14 (560 latent tokens) + text_len 20 = 580"}},
    {"a grid that does not fit S", function(_, m) m.grid = "4,10,13"; m.kv_valid = "530" end,
      {"step 0 layer 1", "field q has S = 573 tokens but grid 4x10x13 (520 latent tokens) + text_len 13 = 533"}},
    {"kv_valid beyond S", function(_, m) m.kv_valid = "574" end, {"metadata kv_valid = 574", "[560, 573]"}},
    {"kv_valid masking latent tokens", function(_, m) m.kv_valid = "500" end, {"metadata kv_valid = 500"}},
    {"a record's kv_valid beyond S", function(_, m) m["step4.layer1.kv_valid"] = "600" end,
      {"metadata step4.layer1.kv_valid = \"600\""}},
    {"an f16 tensor", function(t) t["step4.layer1.q"] = t["step4.layer1.q"]:to("f16") end,
      {"step 4 layer 1", "field q (step4.layer1.q) is f16; a trace stores bf16 or f32"}},
    {"an integer tensor", function(t) t["step0.layer1.v"] = adaspa.zeros({G.S, G.H, G.D}, {dtype = "i32"}) end,
      {"step 0 layer 1", "field v", "is i32"}},
    {"q, k, v of different dtypes", function(t) t["step0.layer2.k"] = t["step0.layer2.k"]:to("f32") end,
      {"step 0 layer 2", "field k is f32 but q is bf16"}},
    {"missing metadata", function(_, m) m.grid = nil end, {"metadata lacks grid"}},
    {"missing layers metadata", function(_, m) m.layers = nil end, {"metadata lacks layers"}},
    {"another format", function(_, m) m.format = "other" end, {"metadata format = \"other\": not an adaspa trace"}},
    {"a malformed grid", function(_, m) m.grid = "4,10" end, {"metadata grid = \"4,10\"", "3 integers"}},
    {"steps out of order", function(_, m) m.steps = "4,0" end, {"metadata steps = \"4,0\"", "increasing"}},
    {"a step beyond num_steps", function(_, m) m.num_steps = "4" end, {"step 4 is beyond num_steps = 4"}},
    {"a tensor of no record", function(t) t["step9.layer1.q"] = t["step0.layer1.q"] end,
      {"tensor step9.layer1.q: step 9 is not among the recorded steps"}},
    {"a stray tensor", function(t) t["latents"] = adaspa.zeros({2}) end, {"unexpected tensor latents"}},
    {"timesteps of another length", function(_, m) m.timesteps = "1000" end, {"timesteps has 1 entries but steps has 2"}},
    -- found by hand and by spec/fuzz/trace_fuzz.lua: each used to pass silently or print nonsense
    {"a record's kv_valid key with leading zeros", function(_, m) m["step04.layer02.kv_valid"] = tostring(G.S) end,
      {"metadata key step04.layer02.kv_valid: step and layer must be integers in [0, 2147483647] written without " ..
       "leading zeros (step4.layer2.kv_valid)"}},
    {"a kv_valid key of a step not recorded, with zeros", function(_, m) m["step02.layer1.kv_valid"] = "570" end,
      {"metadata key step02.layer1.kv_valid", "without leading zeros (step2.layer1.kv_valid)"}},
    {"a kv_valid key of a record not recorded", function(_, m) m["step2.layer1.kv_valid"] = "570" end,
      {"metadata step2.layer1.kv_valid names a record that is not in the trace"}},
    {"an unknown metadata key", function(_, m) m.layer_kind = "double,single" end,
      {"metadata key \"layer_kind\" is not part of a version 1 trace"}},
    {"unknown layer kinds", function(_, m) m.layer_kinds = "x,y" end,
      {"metadata layer_kinds = \"x,y\": entry 1 (\"x\") is not a layer kind (double, single or self)"}},
    {"NaN timesteps", function(_, m) m.timesteps = "nan,nan" end,
      {"metadata timesteps = \"nan,nan\": entry 1 (\"nan\") is not a decimal number"}},
    {"infinite timesteps", function(_, m) m.timesteps = "1000,1e999" end,
      {"metadata timesteps = \"1000,1e999\": entry 2 (\"1e999\") must be finite and >= 0"}},
    {"negative timesteps", function(_, m) m.timesteps = "-1,0" end, {"entry 1 (\"-1\") must be finite and >= 0"}},
    {"a kv_valid beyond 64 bits", function(_, m) m.kv_valid = "99999999999999999999" end,
      {"metadata kv_valid = \"99999999999999999999\": must be an integer in [0, 2147483647]"}},
    {"a grid entry beyond 32 bits", function(_, m) m.grid = "4,10,99999999999" end,
      {"metadata grid = \"4,10,99999999999\": \"99999999999\" is not an integer in [0, 2147483647]"}},
    {"a grid of more than 2^31 tokens", function(_, m) m.grid = "2000,2000,2000" end,
      {"metadata grid = \"2000,2000,2000\": 8000000000 latent tokens, more than 2147483647"}},
    {"a step beyond 32 bits", function(_, m) m.steps = "0,99999999999" end,
      {"metadata steps = \"0,99999999999\": \"99999999999\" is not an integer in [0, 2147483647]"}},
    {"a tensor name with a 20-digit step", function(t) t["step99999999999999999999.layer1.q"] = t["step0.layer1.q"] end,
      {"tensor step99999999999999999999.layer1.q: step and layer must be integers in [0, 2147483647]"}},
    {"a tensor name with leading zeros", function(t) t["step00.layer1.q"] = t["step0.layer1.q"] end,
      {"tensor step00.layer1.q", "without leading zeros (step0.layer1.q)"}},
    {"more steps than the tensors can hold", function(_, m) m.steps = "0,1,2,3,4,5,6,7,8,9,10,11,12" end,
      {"metadata steps lists 13 entries but the file holds 12 tensors, enough for 4 records (3 each)"}},
  }
  for _, c in ipairs(cases) do
    it("rejects " .. c[1] .. ", naming the file and the defect", function()
      local p = malformed(c[2])
      local args = {p}
      for _, s in ipairs(c[3]) do args[#args + 1] = s end
      spec_error(function() trace.open(p) end, unpack(args))
      os.remove(p)
    end)
  end

  it("names the record and the field when loaded data is not finite", function()
    local p = malformed(function(t)
      local v = t["step4.layer2.v"]:to("f32")
      v:set(0 / 0, 7, 2, 5)
      t["step4.layer2.v"] = v:to("bf16")
      local k = t["step0.layer1.k"]:to("f32")
      k:set(-math.huge, 1, 1, 1)
      t["step0.layer1.k"] = k:to("bf16")
    end)
    local tr = trace.open(p)   -- the header is fine; the data is read when a record loads
    local q = tr:load(4, 1)
    assert.equal(G.S, q:shape()[1])
    spec_error(function() tr:load(4, 2) end, p, "step 4 layer 2: field v (step4.layer2.v) holds NaN values")
    spec_error(function() tr:load(0, 1) end, p, "step 0 layer 1: field k (step0.layer1.k) holds -inf values")
    os.remove(p)
  end)

  it("rejects files that are not safetensors, naming the file", function()
    local p = os.tmpname()
    local f = assert(io.open(p, "wb"))
    f:write("\1\0\0\0\0\0\0\0{this is not json")
    f:close()
    spec_error(function() trace.open(p) end, "adaspa.trace: " .. p, "not a readable safetensors file")
    os.remove(p)
    spec_error(function() trace.open(p) end, p, "cannot open")
  end)

  it("refuses to write a malformed trace, and writes nothing", function()
    local p = os.tmpname() .. ".safetensors"
    os.remove(p)
    local r = RECORDS[1]
    spec_error(function() trace.write(p, {{step = 0, layer = 1, q = r.q, k = r.k}}, META) end,
      p, "step 0 layer 1: field v must be a tensor")
    spec_error(function() trace.write(p, {{step = 0, layer = 1, q = r.q, k = r.k:narrow(1, 1, 500), v = r.v}}, META) end,
      p, "step 0 layer 1: field k has shape [500, 2, 32] but q has [573, 2, 32]")
    spec_error(function() trace.write(p, {{step = 0, layer = 1, q = r.q, k = r.k, v = r.v},
                                          {step = 4, layer = 2, q = r.q, k = r.k, v = r.v}}, META) end,
      p, "step 0 layer 2: missing tensor")
    spec_error(function() trace.write(p, {r, r}, META) end, "step 0 layer 1 is recorded twice")
    local m = {}
    for k, v in pairs(META) do m[k] = v end
    m.kv_valid = G.S + 1
    spec_error(function() trace.write(p, {r}, m) end, p, "metadata kv_valid = 574")
    assert.is_false(exists(p))
  end)
end)

describe("trace replay", function()
  local res
  setup(function() res = run_replay({trace = PATH, policies = {"dense", "adaspa"}}) end)

  it("runs dense exactly: error 0, recall 1, every block", function()
    local d = policy_of(res, "dense")
    assert.equal(4, d.summary.records)
    assert.equal(4, d.summary.modes.dense)
    assert.equal(0, d.summary.rel_error_max)
    assert.equal(1, d.summary.recall_mean)
    assert.equal(1, d.summary.density_mean)
    assert.near(1, d.summary.flop_fraction, 1e-12)
    for _, r in ipairs(d.records) do assert.is_true(r.seconds > 0) end
  end)

  it("searches adaspa's layouts at the first step with its own LSE and reuses them at the next", function()
    local a = policy_of(res, "adaspa")
    assert.same({search = 2, sparse = 2}, a.summary.modes)
    for _, r in ipairs(a.records) do
      if r.step == 0 then
        assert.equal("search", r.mode)
        assert.equal(0, r.rel_error)      -- the search pass outputs dense attention
        assert.equal(0, r.lse_step)       -- with no earlier step, its own LSE (two passes)
        assert.is_true(r.layout_recall > 0.5 and r.layout_recall < 1, tostring(r.layout_recall))
      else
        assert.equal("sparse", r.mode)
        assert.equal(0, r.layout_step)
        assert.is_true(r.density > 0 and r.density < 1, tostring(r.density))
        assert.is_true(r.recall > 0.3 and r.recall < 1, tostring(r.recall))
        assert.is_true(r.rel_error > 0 and r.rel_error < 1, tostring(r.rel_error))
        assert.near(r.density, r.flop_fraction, 1e-9)
      end
    end
    assert.is_true(a.summary.sparse_recall_mean < 1)
  end)

  it("measures LSE and layout stability across the steps, in range and consistent", function()
    local st = res.stability
    assert.equal(2, #st.pairs)                 -- one pair of steps x 2 layers
    local tr = trace.open(PATH)
    for _, e in ipairs(st.pairs) do
      assert.equal(0, e.from)
      assert.equal(4, e.to)
      for _, key in ipairs({"exact_recall", "reuse_recall", "reuse_jaccard", "cached_lse_recall", "cached_lse_jaccard"}) do
        assert.is_true(e[key] >= 0 and e[key] <= 1, key .. " = " .. tostring(e[key]))
      end
      -- every layout keeps the same number of blocks per row: the step's own top-k holds the most mass
      assert.is_true(e.exact_recall >= e.reuse_recall - 1e-6)
      assert.is_true(e.exact_recall >= e.cached_lse_recall - 1e-6)
      -- the LSE change, recomputed here
      local q0, k0, v0 = tr:load(0, e.layer)
      local q4, k4, v4 = tr:load(4, e.layer)
      local _, l0 = adaspa.attention(q0, k0, v0, {kv_valid = G.kv})
      local _, l4 = adaspa.attention(q4, k4, v4, {kv_valid = G.kv})
      local a, b = spec_flat(l4:narrow(2, 1, G.kv)), spec_flat(l0:narrow(2, 1, G.kv))
      local rel = spec_rel_l2(a, b)
      assert.is_true(rel > 0.01, tostring(rel))
      assert.near(rel, e.lse_rel_change, 1e-4 * rel)
      assert.is_true(e.lse_max_change >= e.lse_rms_change)
    end
    for _, key in ipairs({"reuse_jaccard", "cached_lse_recall", "lse_rel_change"}) do
      local s = st.summary[key]
      assert.is_true(s.min <= s.mean and s.mean <= s.max, key)
    end
  end)

  it("writes table.txt, results.json and mask pictures", function()
    local f = assert(io.open(res.dir .. "/table.txt"))
    local text = f:read("*a")
    f:close()
    for _, s in ipairs({"policy", "dense ", "adaspa ", "search 2, sparse 2", "stability", "0->4"}) do
      assert.truthy(text:find(s, 1, true), "table.txt lacks " .. s)
    end
    assert.is_true(exists(res.dir .. "/results.json"))
    local g = adaspa.png.read(res.dir .. "/step04_layer01_head01_gallery.png")
    local m = adaspa.png.read(res.dir .. "/step04_layer01_head01_adaspa_sparse.png")
    assert.equal(3, g:shape()[3])
    assert.is_true(g:shape()[2] > 2 * m:shape()[2])   -- the mass and the adaspa mask side by side
    assert.is_true(exists(res.dir .. "/step00_layer01_head01_mass.png"))
    assert.is_false(exists(res.dir .. "/step00_layer02_head01_mass.png"))   -- pictures of the first layer only
  end)

  it("replays a real schedule: a dense step's LSE serves the next recorded search", function()
    local r = run_replay({trace = PATH, policies = {"adaspa"}, warmup = 4, search = {4}, stability = {enabled = false},
                          output = {pictures = false}})
    local a = policy_of(r, "adaspa")
    assert.same({dense = 2, search = 2}, a.summary.modes)
    for _, rec in ipairs(a.records) do
      if rec.step == 4 then
        assert.equal("search", rec.mode)
        assert.equal(0, rec.lse_step)     -- the LSE kept at the dense step 0
        assert.equal(0, rec.rel_error)
      end
    end
    assert.is_nil(r.stability)
  end)

  it("searches where a policy asks for a layout it never searched (its search step not recorded)", function()
    local r = run_replay({trace = PATH, policies = {"adaspa"}, options = {adaspa = {warmup = 1, search = {1}}},
                          output = {pictures = false}})
    local a = policy_of(r, "adaspa")
    assert.same({dense = 2, search = 2}, a.summary.modes)
    assert.equal(2, a.summary.substituted)
    for _, rec in ipairs(a.records) do
      if rec.step == 4 then
        assert.is_true(rec.substituted)
        assert.equal(0, rec.lse_step)
      end
    end
    local noted = false
    for _, n in ipairs(r.notes) do if n:find("searched instead", 1, true) then noted = true end end
    assert.is_true(noted)
  end)

  it("is exact at sparsity 0", function()
    local r = run_replay({trace = PATH, policies = {"adaspa"}, sparsity = 0, output = {pictures = false},
                          stability = {enabled = false}})
    assert.equal(0, policy_of(r, "adaspa").summary.rel_error_max)
  end)

  it("runs from the command line with every available policy", function()
    local d = tmpdir()
    local _, err, code = spec_run("recipe recipes/replay.lua trace=" .. PATH .. " output.dir=" .. d .. " output.quiet=true")
    assert.equal(0, code, err)
    local f = assert(io.open(d .. "/results.json"))
    local text = f:read("*a")
    f:close()
    for _, n in ipairs(require("adaspa.policy").names) do
      if pcall(require, "adaspa.policy." .. n) then
        assert.truthy(text:find('"name": "' .. n .. '"', 1, true), "results.json lacks policy " .. n)
      end
    end
    -- every policy's numbers are in range
    local res2 = run_replay({trace = PATH, output = {pictures = false}, stability = {enabled = false}})
    for _, p in ipairs(res2.policies) do
      for _, rec in ipairs(p.records) do
        assert.is_true(rec.rel_error >= 0 and rec.rel_error < 2, p.name .. " error " .. tostring(rec.rel_error))
        assert.is_true(rec.recall >= 0 and rec.recall <= 1 + 1e-9, p.name .. " recall " .. tostring(rec.recall))
        assert.is_true(rec.density > 0 and rec.density <= 1, p.name .. " density " .. tostring(rec.density))
      end
    end
  end)

  it("fails clearly on a bad recipe field or a missing trace", function()
    local _, err, code = spec_run("recipe recipes/replay.lua trace=/nonexistent/x.safetensors output.quiet=true")
    assert.equal(1, code)
    assert.truthy(err:find("/nonexistent/x.safetensors", 1, true), err)
    _, err, code = spec_run("recipe recipes/replay.lua trace=" .. PATH .. " policies=dense,nope")
    assert.equal(1, code)
    assert.truthy(err:find("policies", 1, true) and err:find("nope", 1, true), err)
    _, err, code = spec_run("recipe recipes/replay.lua output.quiet=true")
    assert.equal(1, code)
    assert.truthy(err:find("field trace is required", 1, true), err)
    spec_error(function() run_replay({trace = PATH, steps = {1}}) end, "steps = 1 is not recorded", "0, 4")
  end)

  it_gpu("gives the CPU's numbers on the GPU", function()
    local g = run_replay({trace = PATH, policies = {"dense", "adaspa"}, device = "cuda", output = {pictures = false}})
    assert.equal("cuda", g.device)
    assert.equal(0, policy_of(g, "dense").summary.rel_error_max)
    local ca, ga = policy_of(res, "adaspa"), policy_of(g, "adaspa")
    for i, r in ipairs(ca.records) do
      assert.equal(r.mode, ga.records[i].mode)
      assert.near(r.recall, ga.records[i].recall, 0.02)
      assert.near(r.rel_error, ga.records[i].rel_error, 0.02)
    end
    for i, e in ipairs(res.stability.pairs) do
      assert.near(e.lse_rel_change, g.stability.pairs[i].lse_rel_change, 1e-3)
      assert.near(e.exact_recall, g.stability.pairs[i].exact_recall, 1e-3)
    end
  end)
end)

-- The dumper's self-test: written by Python (no torch), read by adaspa.
local function has_python()
  local code = os.execute("python3 -c 'import sys; sys.exit(0)' > /dev/null 2>&1")
  return code == 0 or code == true
end

describe("recipes/tools/dump_trace.py", function()
  if not has_python() then
    pending("dump_trace.py --selftest (no python3 on this machine)")
    return
  end

  it("--selftest writes a trace that adaspa reads back, value for value", function()
    local p = os.tmpname() .. ".safetensors"
    local code = os.execute("python3 recipes/tools/dump_trace.py --selftest " .. p .. " > /dev/null")
    assert.is_true(code == 0 or code == true)
    local tr = trace.open(p)
    assert.equal("selftest", tr.model)
    assert.same({2, 5, 7}, tr.grid)
    assert.equal(9, tr.text_len)
    assert.equal(79, tr.S)
    assert.equal(76, tr.kv_valid)
    assert.same({0, 3}, tr.steps)
    assert.same({1, 2}, tr.layers)
    assert.equal(5, tr.num_steps)
    assert.equal(812.5, tr.timesteps[3])
    assert.equal("double", tr.kinds[1])
    assert.equal("bf16", tr.dtype)
    assert.equal(75, tr:info(3, 2).kv_valid)
    assert.equal(76, tr:info(3, 1).kv_valid)
    -- the values: the script's formula, rounded to bf16
    local fi = {q = 0, k = 1, v = 2}
    for _, rec in ipairs(tr:records()) do
      local q, k, v = tr:load(rec.step, rec.layer, {dtype = "f32"})
      for f, t in pairs({q = q, k = k, v = v}) do
        local vals = t:totable()
        local worst = 0
        for s = 0, 78 do
          for h = 0, 1 do
            for d = 0, 15 do
              local want = math.sin(0.37 * (s + 1) + 1.3 * (d + 1) * (h + 1) + 0.71 * rec.layer + 0.05 * rec.step + fi[f])
                * (1 + 0.1 * fi[f])
              -- bf16 keeps 8 significant bits: the rounding error is at most 2^-8 of the value
              worst = math.max(worst, math.abs(vals[s + 1][h + 1][d + 1] - want) / math.max(math.abs(want), 1e-3))
            end
          end
        end
        assert.is_true(worst <= 2 ^ -8 + 1e-7, string.format("step %d layer %d %s: %.3g", rec.step, rec.layer, f, worst))
      end
    end
    -- and the replay runs on it
    local r = run_replay({trace = p, policies = {"dense", "adaspa"}, output = {pictures = false}})
    assert.equal(0, policy_of(r, "dense").summary.rel_error_max)
    assert.equal(2, #r.stability.pairs)
    os.remove(p)
  end)
end)

describe("recipes/tools/record_trace.lua", function()
  it("records the chosen steps and layers of adaspa's own model into a valid trace", function()
    local path = spec_tmpfile("rec.safetensors")
    local so, se, code = spec_run("recipes/tools/record_trace.lua " .. path .. " steps=1 layers=2,3 sampling=2 frames=1")
    assert.equal(0, code, se)
    local trace = require "adaspa.trace"
    local tr = trace.open(path)
    assert.same({1}, tr.steps)
    assert.same({2, 3}, tr.layers)
    local q = tr:load(1, 2)
    assert.equal("bf16", q:dtype())
    assert.is_true(q:to("f32"):norm() > 0)
    assert.truthy(so:find("steps {1}", 1, true), so)
  end)

  it("names a bad argument", function()
    local _, se, code = spec_run("recipes/tools/record_trace.lua " .. spec_tmpfile("x.safetensors") .. " sparsity=2")
    assert.is_not.equal(0, code)
    assert.truthy(se:find("unknown argument", 1, true), se)
  end)
end)
