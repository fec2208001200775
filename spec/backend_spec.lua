-- The backend interface seen from Lua (runtime/backend.h): the registry, device timers
-- (adaspa.timer), the attention plan (adaspa.attention_plan) and its kernel options (family,
-- variant), and the one userdata class helper (free, is_freed, id, tostring) that tensors,
-- layouts, caches and timers share. GPU parts are tagged gpu.

local rel_l2, flat = spec_rel_l2, spec_flat

local function qkv(S, H, D, seed, device)
  local o = {seed = seed, device = device}
  return adaspa.randn({S, H, D}, o), adaspa.randn({S, H, D}, {seed = seed + 1, device = device}),
    adaspa.randn({S, H, D}, {seed = seed + 2, device = device})
end

describe("backends", function()
  it("lists the registered backends, the CPU first, cuda exactly when this build has it", function()
    local b = adaspa.backends()
    assert.equal("cpu", b[1])
    local has = false
    for _, n in ipairs(b) do has = has or n == "cuda" end
    assert.equal(adaspa.cuda.built(), has)
    if not adaspa.cuda.built() then
      assert.equal("this adaspa was built without CUDA", adaspa.cuda.reason())
      spec_error(function() adaspa.cuda.memory() end, "adaspa.cuda.memory", "built without CUDA")
    end
  end)

  it("refuses a GPU tensor without a GPU, naming why", function()
    if adaspa.cuda.available() then return end
    spec_error(function() adaspa.zeros({2}, {device = "cuda"}) end, "adaspa.zeros", "no GPU is available",
      adaspa.cuda.reason())
  end)
end)

describe("adaspa.timer", function()
  it("measures the wall time between start and stop on the CPU", function()
    local t = adaspa.timer("cpu")
    assert.equal("cpu", t:device())
    -- the timer's interval holds the loop [w0, w1] and lies inside [wa, wb] (CI once read
    -- 0.0199999870 s with the loop timed from before start: the loop's clock started earlier)
    local wa = adaspa.now()
    t:start()
    local w0 = adaspa.now()
    local x = 0
    repeat x = x + 1 until adaspa.now() - w0 > 0.02
    local w1 = adaspa.now()
    t:stop()
    local wb = adaspa.now()
    local s = t:seconds()
    assert.is_true(s >= (w1 - w0) - 1e-6 and s <= (wb - wa) + 1e-6,
      "timer read " .. s .. " s for a " .. (w1 - w0) .. " s loop inside " .. (wb - wa) .. " s")
    -- a second interval replaces the first
    t:start()
    t:stop()
    assert.is_true(t:seconds() < s)
  end)

  it("takes a tensor for its device and refuses bad use", function()
    local t = adaspa.timer(adaspa.zeros({3}))
    assert.equal("cpu", t:device())
    spec_error(function() t:seconds() end, "timer:seconds", "before start and stop")
    spec_error(function() t:stop() end, "timer:stop", "stop before start")
    spec_error(function() adaspa.timer("tpu") end, "adaspa.timer", "device must be", "tpu")
    if not adaspa.cuda.available() then
      spec_error(function() adaspa.timer("cuda") end, "adaspa.timer", "no GPU is available")
    end
    t:free()
    assert.is_true(t:is_freed())
    spec_error(function() t:start() end, "timer:start", "self is timer #", "(cpu), which was freed")
    assert.truthy(tostring(t):find("^timer #%d+ %(freed; was cpu%)"))
  end)

  it_gpu("measures device time by events, without synchronizing at start or stop", function()
    local a = adaspa.randn({2048, 2048}, {seed = 3, device = "cuda", dtype = "bf16"})
    local t = adaspa.timer(a)
    assert.equal("cuda:0", t:device())
    adaspa.cuda.synchronize()
    t:start()
    local w0 = adaspa.now()
    for _ = 1, 20 do adaspa.matmul(a, a):free() end
    t:stop()
    local queued = adaspa.now() - w0
    local s = t:seconds()
    local w1 = adaspa.now() - w0
    assert.is_true(s > 0 and s <= w1 + 1e-3, "events " .. s .. " s, wall " .. w1 .. " s")
    assert.is_true(queued < w1, "start/stop did not wait for the work")
  end)
end)

describe("adaspa.attention_plan", function()
  local q, k = qkv(200, 2, 48, 11)

  it("gives the CPU plan: dense 128-row tiles against 64 keys, else blocks x blocks", function()
    local p = adaspa.attention_plan(q, k)
    assert.same({family = "cpu", variant = "", tile_rows = 128, tile_keys = 64, dim = 48, schedule = "natural"}, p)
    local m = adaspa.attention_plan(q, k, {mode = "mass", block = 128})
    assert.equal(128, m.tile_rows)
    assert.equal(128, m.tile_keys)
    local l = adaspa.layout.full(2, 2, 2, 128)
    local sp = adaspa.attention_plan(q, k, {mode = "sparse", layout = l})
    assert.equal(128, sp.tile_rows)
    assert.equal("cpu", adaspa.attention_plan(q, k, {family = "cpu"}).family)
  end)

  it("validates as the ops do", function()
    spec_error(function() adaspa.attention_plan(q, k, {mode = "sparse"}) end, "adaspa.attention_plan", "needs option layout")
    spec_error(function() adaspa.attention_plan(q, k, {mode = "fast"}) end, "adaspa.attention_plan", "mode must be")
    spec_error(function() adaspa.attention_plan(q, k, {mode = "mass", block = 96}) end, "adaspa.attention_plan",
      "block must be 64 or 128, got 96")
    local l = adaspa.layout.full(2, 3, 3, 64)
    spec_error(function() adaspa.attention_plan(q, k, {mode = "sparse", layout = l}) end, "adaspa.attention_plan",
      "layout has 3 x 3 blocks of 64")
  end)

  it("refuses kernel options the CPU backend does not have, in the plan and in the ops", function()
    if q:device() ~= "cpu" then return end
    spec_error(function() adaspa.attention_plan(q, k, {family = "sm80"}) end, "adaspa.attention_plan",
      "family sm80", "cpu only")
    local v = adaspa.randn({200, 2, 48}, {seed = 99})
    spec_error(function() adaspa.attention(q, k, v, {variant = "rows"}) end, "adaspa.attention", "variant rows")
    spec_error(function() adaspa.attention(q, k, v, {family = 3}) end, "adaspa.attention", "option family must be a string")
  end)

  it("runs the same kernels with family = cpu named: the same bits", function()
    local v = adaspa.randn({200, 2, 48}, {seed = 99})
    local o1, l1 = adaspa.attention(q, k, v)
    local o2, l2 = adaspa.attention(q, k, v, {family = "cpu"})
    assert.same(flat(o1), flat(o2))
    assert.same(flat(l1), flat(l2))
  end)

  it_gpu("picks a CUDA family for the device; the sparse-64 variant is an option, not an environment variable", function()
    local gq, gk, gv = qkv(300, 2, 128, 21, "cuda")
    gq, gk, gv = gq:to("bf16"), gk:to("bf16"), gv:to("bf16")
    local dense = adaspa.attention_plan(gq, gk)
    local cc = adaspa.cuda.devices()[1].capability
    assert.truthy(dense.family == "sm80" or (dense.family == "sm90" and cc:sub(1, 1) == "9"))
    assert.equal(128, dense.dim)
    local keep = {}
    for h = 1, 2 do keep[h] = {} for a = 1, 5 do keep[h][a] = {} for b = 1, 5 do keep[h][a][b] = (a == b or (a * b + h) % 3 == 0) and 1 or 0 end end end
    local l = adaspa.layout.from_mask(adaspa.tensor(keep, {dtype = "u8"}), 64)
    if dense.family == "sm80" then
      local sp = adaspa.attention_plan(gq, gk, {mode = "sparse", layout = l})
      assert.same({"halves", 64, "longest-first"}, {sp.variant, sp.tile_rows, sp.schedule})
      assert.equal("rows", adaspa.attention_plan(gq, gk, {mode = "sparse", layout = l, variant = "rows"}).variant)
      local o1 = adaspa.sparse_attention(gq, gk, gv, l)
      local o2 = adaspa.sparse_attention(gq, gk, gv, l, {variant = "rows"})
      assert.is_true(rel_l2(flat(o1), flat(o2)) < 1e-2)
    end
    spec_error(function() adaspa.attention_plan(gq, gk, {variant = "diagonal"}) end, "adaspa.attention_plan",
      "variant diagonal is unknown")
    spec_error(function() adaspa.attention_plan(gq, gk, {family = "sm70"}) end, "adaspa.attention_plan",
      "family sm70 is not built")
    local big = adaspa.randn({64, 1, 192}, {seed = 4, device = "cuda", dtype = "bf16"})
    spec_error(function() adaspa.attention_plan(big, big) end, "adaspa.attention_plan", "the CUDA kernels take at most 128")
  end)
end)

describe("userdata classes", function()
  it("give tensors, layouts, caches and timers one free / is_freed / id / tostring", function()
    local objs = {tensor = adaspa.zeros({2, 3}), layout = adaspa.layout.full(1, 2, 2, 64), cache = adaspa.Cache.new(2),
                  timer = adaspa.timer()}
    local ids = {}
    for kind, o in pairs(objs) do
      assert.is_false(o:is_freed())
      assert.truthy(tostring(o):find("^" .. kind .. " #" .. o:id()), tostring(o))
      ids[#ids + 1] = o:id()
      o:free()
      o:free() -- twice is fine
      assert.is_true(o:is_freed())
      assert.truthy(tostring(o):find("^" .. kind .. " #%d+ %(freed; was .+%)$"), tostring(o))
    end
    assert.equal(4, #ids)
  end)
end)
