-- The AdaSpa cache (adaspa.Cache): per-layer layouts, cached LSE, steps, density and recall;
-- memory accounting; save/load round trips; malformed cache files; bad arguments; use after free.

-- Temporary paths, removed after each spec.
local temps = {}
local function tmp()
  local p = os.tmpname()
  os.remove(p)
  p = p .. ".safetensors"
  temps[#temps + 1] = p
  return p
end
local function cleanup()
  for _, p in ipairs(temps) do os.remove(p); os.remove(p .. ".tmp") end
  temps = {}
end

local rand_mass = spec_rand_mass

-- A thresholded random layout over S tokens (block 64 unless given), its mass and per-head recall.
local function rand_layout(h, s, seed, block)
  block = block or 64
  local nqb = math.ceil(s / block)
  local mass = rand_mass(h, nqb, nqb, seed)
  local recall = {}
  for i = 1, h do recall[i] = 0.5 + 0.45 * ((seed * 7 + i * 13) % 10) / 10 end
  local l = adaspa.layout.threshold(mass, {recall = recall, force = {diagonal = true}, block = block})
  return l, mass, l:recall(mass)
end

local function f32(x) return adaspa.tensor({x}):get(1) end
local function f32_list(t) local r = {} for i, x in ipairs(t) do r[i] = f32(x) end return r end

local function mean_min_max(t)
  local s, mn, mx = 0, math.huge, -math.huge
  for _, x in ipairs(t) do s = s + x / #t; mn = math.min(mn, x); mx = math.max(mx, x) end
  return s, mn, mx
end

-- Bytes of a layout in memory: int64 offsets and int32 indices.
local function layout_bytes(l) return l:heads() * (l:nqb() + 1) * 8 + l:nnz() * 4 end

describe("adaspa.Cache", function()
  after_each(cleanup)

  it("starts empty", function()
    local c = adaspa.Cache.new(4)
    assert.equal(4, c:layers())
    for i = 1, 4 do
      assert.is_nil(c:layout(i)); assert.is_nil(c:lse(i)); assert.is_nil(c:step(i)); assert.is_nil(c:lse_step(i))
      assert.is_nil(c:density(i)); assert.is_nil(c:recall(i))
    end
    local st = c:stats()
    assert.same({host = 0, device = 0}, st.memory)
    assert.same({}, st.layers)
    assert.equal(4, st.n_layers)
  end)

  it("set/get round trip: the layout is shared and works in sparse_attention", function()
    local H, S, D = 3, 300, 16
    local l, mass, recall = rand_layout(H, S, 5)
    local lse = adaspa.randn({H, S}, {seed = 11})
    local c = adaspa.Cache.new(6)
    c:set(2, {layout = l, lse = lse, step = 10, recall = recall})
    local got = c:layout(2)
    assert.same(l:to_mask():totable(), got:to_mask():totable())
    assert.equal(l:nnz(), got:nnz()); assert.equal(64, got:block())
    -- the same runtime object: dropping the caller's and the returned handles leaves the cache's
    l:free(); got:free()
    local again = c:layout(2)
    assert.equal(H, again:heads())
    local q = adaspa.randn({S, H, D}, {seed = 1})
    local k = adaspa.randn({S, H, D}, {seed = 2})
    local v = adaspa.randn({S, H, D}, {seed = 3})
    local want_layout = adaspa.layout.threshold(mass, {recall = (function()
      local r = {} for i = 1, H do r[i] = 0.5 + 0.45 * ((5 * 7 + i * 13) % 10) / 10 end return r end)(),
      force = {diagonal = true}})
    local o1, lse1 = adaspa.sparse_attention(q, k, v, want_layout)
    local o2, lse2 = adaspa.sparse_attention(q, k, v, again)
    assert.equal(0, spec_maxdiff(o1, o2)); assert.equal(0, spec_maxdiff(lse1, lse2))
    assert.is_true(o1:norm() > 0)
    assert.equal(10, c:step(2)); assert.equal(10, c:lse_step(2))
    assert.same(lse:totable(), c:lse(2):totable())
    assert.same(f32_list(recall), c:recall(2))
    assert.is_nil(c:layout(1)); assert.is_nil(c:layout(3))
  end)

  it("keeps the lse as a view (documented: the caller must not modify it afterwards)", function()
    local lse = adaspa.randn({2, 130}, {seed = 21})
    local before = lse:get(2, 7)
    local c = adaspa.Cache.new(1)
    c:set(1, {lse = lse, step = 3})
    local got = c:lse(1)
    assert.is_true(got:shares_storage(lse))
    lse:set(before + 5, 2, 7) -- a write shows through: no copy was made
    assert.equal(f32(before + 5), c:lse(1):get(2, 7))
    lse:free()                -- the caller's handle may go; the cache keeps the storage
    assert.equal(f32(before + 5), c:lse(1):get(2, 7))
    assert.equal(130 * 2, c:lse(1):numel())
    got:free()
    assert.equal(3, c:lse_step(1)); assert.is_nil(c:step(1))
  end)

  it("computes density from the layout and stores recall at f32 precision", function()
    local l, mass, recall = rand_layout(4, 500, 9)
    local c = adaspa.Cache.new(2)
    c:set(1, {layout = l, step = 4})
    assert.is_nil(c:recall(1)); assert.is_nil(c:lse(1)); assert.is_nil(c:lse_step(1))
    local d, m = c:density(1), l:to_mask():totable()
    assert.same(l:density(), d)
    for h = 1, 4 do
      local n = 0
      for _, row in ipairs(m[h]) do for _, x in ipairs(row) do n = n + x end end
      assert.equal(n / (l:nqb() * l:nkb()), d[h])
      assert.is_true(d[h] > 0 and d[h] < 1)
    end
    c:set(1, {recall = recall}) -- recall alone belongs to the cached layout
    assert.same(f32_list(recall), c:recall(1))
    assert.equal(4, c:step(1))
    -- a new layout without recall drops the old recall; the lse may come alone later
    local l2 = rand_layout(4, 500, 10)
    c:set(1, {layout = l2, step = 8})
    assert.is_nil(c:recall(1)); assert.equal(8, c:step(1)); assert.same(l2:density(), c:density(1))
    c:set(1, {lse = adaspa.randn({4, 500}, {seed = 2}), step = 9})
    assert.equal(8, c:step(1)); assert.equal(9, c:lse_step(1))
    c:clear(1)
    assert.is_nil(c:layout(1)); assert.is_nil(c:lse(1)); assert.is_nil(c:step(1))
  end)

  it("stats: exact memory that grows with nnz, per-layer summaries", function()
    local c = adaspa.Cache.new(3)
    local l1 = rand_layout(2, 640, 3)
    local l2 = rand_layout(2, 640, 4)
    local full = adaspa.layout.full(2, 10, 10)
    c:set(1, {layout = l1, step = 1})
    assert.same({host = layout_bytes(l1), device = 0}, c:stats().memory)
    c:set(1, {layout = full, step = 1})
    assert.equal(2 * 11 * 8 + 200 * 4, c:stats().memory.host)
    assert.is_true(full:nnz() > l1:nnz())
    c:set(1, {layout = l1, step = 1})
    local lse = adaspa.randn({2, 640}, {seed = 8})
    c:set(2, {layout = l2, lse = lse, step = 2, recall = {0.25, 0.75}})
    local host = layout_bytes(l1) + layout_bytes(l2) + 2 * 640 * 4
    assert.equal(host, c:stats().memory.host)
    -- the same layout or lse view in another layer counts once
    c:set(3, {layout = l2, lse = lse, step = 2})
    assert.equal(host, c:stats().memory.host)
    local st = c:stats()
    assert.equal(1, st.layers[1].step); assert.is_nil(st.layers[1].lse_step); assert.is_nil(st.layers[1].recall)
    assert.equal(2, st.layers[2].heads); assert.equal(2, st.layers[2].lse_step)
    local mean, mn, mx = mean_min_max(l2:density())
    assert.near(mean, st.layers[2].density.mean, 1e-12)
    assert.equal(mn, st.layers[2].density.min); assert.equal(mx, st.layers[2].density.max)
    assert.same({mean = 0.5, min = 0.25, max = 0.75}, st.layers[2].recall)
    c:clear(3)
    assert.is_nil(c:stats().layers[3])
  end)

  it("tostring: a readable summary, the first 10 layers then ...", function()
    local c = adaspa.Cache.new(12)
    local l, _, recall = rand_layout(2, 256, 1)
    c:set(1, {layout = l, lse = adaspa.randn({2, 256}, {seed = 4}), step = 10, recall = recall})
    c:set(2, {lse = adaspa.randn({2, 256}, {seed = 5}), step = 9})
    local s = tostring(c)
    for _, part in ipairs({"12 layers, 1 with a layout, 2 with an lse", "memory: host", "layer 1: layout step 10",
      "density", "recall", "lse step 10 [2, 256] cpu", "layer 2: lse step 9", "layer 10: empty", "... (2 more layers)"}) do
      assert.truthy(s:find(part, 1, true), string.format("%q lacks %q", s, part))
    end
    assert.falsy(s:find("layer 11:", 1, true))
    assert.falsy(tostring(adaspa.Cache.new(3)):find("...", 1, true))
  end)

  it("save/load round trip: masks, lse, steps, density, recall identical", function()
    local c = adaspa.Cache.new(5)
    local l1, _, r1 = rand_layout(3, 300, 31)
    local l3 = rand_layout(2, 1000, 32, 128)
    local zero = adaspa.layout.from_mask(adaspa.zeros({2, 3, 3}, {dtype = "u8"})) -- nnz 0
    local lse1 = adaspa.randn({3, 300}, {seed = 41})
    c:set(1, {layout = l1, lse = lse1, step = 10, recall = r1})
    c:set(2, {lse = adaspa.randn({4, 77}, {seed = 42}), step = 7})
    c:set(3, {layout = l3, step = 30})
    c:set(5, {layout = zero, lse = adaspa.full({2, 150}, -math.huge), step = 0})
    local p = tmp()
    c:save(p)
    local d = adaspa.Cache.load(p)
    assert.equal(5, d:layers())
    for i = 1, 5 do
      assert.equal(c:step(i), d:step(i)); assert.equal(c:lse_step(i), d:lse_step(i))
      assert.same(c:density(i), d:density(i)); assert.same(c:recall(i), d:recall(i))
      if c:layout(i) then
        local a, b = c:layout(i), d:layout(i)
        assert.same(a:to_mask():totable(), b:to_mask():totable())
        assert.same({a:heads(), a:nqb(), a:nkb(), a:block(), a:nnz()}, {b:heads(), b:nqb(), b:nkb(), b:block(), b:nnz()})
      else
        assert.is_nil(d:layout(i))
      end
      if c:lse(i) then assert.same(c:lse(i):totable(), d:lse(i):totable()) else assert.is_nil(d:lse(i)) end
    end
    assert.equal(128, d:layout(3):block()); assert.equal(0, d:layout(5):nnz())
    assert.is_nil(d:layout(4)); assert.is_nil(d:lse(4))
    assert.same(c:stats(), d:stats())
    -- the loaded cache works like any other: its layout drives sparse attention
    local q, k, v = adaspa.randn({300, 3, 8}, {seed = 1}), adaspa.randn({300, 3, 8}, {seed = 2}), adaspa.randn({300, 3, 8}, {seed = 3})
    assert.equal(0, spec_maxdiff(adaspa.sparse_attention(q, k, v, l1), adaspa.sparse_attention(q, k, v, d:layout(1))))
    -- an empty cache round-trips too
    local e = tmp()
    adaspa.Cache.new(2):save(e)
    assert.same({}, adaspa.Cache.load(e):stats().layers)
  end)

  it_gpu("keeps an lse on the GPU, counts it as device memory and saves it", function()
    local l = rand_layout(2, 200, 3)
    local lse = adaspa.randn({2, 200}, {seed = 5}):to("cuda")
    local c = adaspa.Cache.new(1)
    c:set(1, {layout = l, lse = lse, step = 1})
    assert.same({host = layout_bytes(l), device = 2 * 200 * 4}, c:stats().memory)
    assert.equal(lse:device(), c:lse(1):device())
    local p = tmp()
    c:save(p)
    assert.same(lse:to("cpu"):totable(), adaspa.Cache.load(p):lse(1):totable())
  end)
end)

describe("adaspa.Cache.load of malformed files", function()
  after_each(cleanup)

  -- A valid 2-layer cache file; returns its tensors (as a list of {name, tensor}), metadata and layout 1.
  local function good()
    local c = adaspa.Cache.new(2)
    local l, _, r = rand_layout(2, 400, 77)
    c:set(1, {layout = l, lse = adaspa.randn({2, 400}, {seed = 3}), step = 10, recall = r})
    c:set(2, {lse = adaspa.randn({2, 400}, {seed = 4}), step = 9})
    local p = tmp()
    c:save(p)
    local tensors, meta = adaspa.safetensors.load(p)
    return tensors, meta, l
  end

  -- Writes tensors (minus drop, plus/replaced by add) and metadata to a new file; returns its path.
  local function write(tensors, meta, drop, add)
    local list = {}
    for name, t in pairs(tensors) do
      if name ~= drop and not (add and add[name]) then list[#list + 1] = {name, t} end
    end
    for name, t in pairs(add or {}) do list[#list + 1] = {name, t} end
    local p = tmp()
    adaspa.safetensors.save(p, list, meta)
    return p
  end

  local function load_error(p, ...)
    return spec_error(function() adaspa.Cache.load(p) end, "adaspa.Cache.load", p, ...)
  end

  it("accepts the unmodified file", function()
    local t, m = good()
    local c = adaspa.Cache.load(write(t, m))
    assert.equal(10, c:step(1)); assert.equal(9, c:lse_step(2))
  end)

  it("missing keys", function()
    local t, m = good()
    load_error(write(t, m, "layer.1.indices"), "layer.1.indices is missing")
    load_error(write(t, m, "layer.1.offsets"), "layer.1.offsets is missing")
    load_error(write(t, m, "layer.1.lse"), "layer.1.lse is missing")
    load_error(write(t, m, "layer.1.density"), "layer.1.density is missing")
    local m2 = {} for k, v in pairs(m) do m2[k] = v end
    m2["layer.1.nkb"] = nil
    load_error(write(t, m2), "metadata layer.1.nkb is missing")
    local m3 = {} for k, v in pairs(m) do m3[k] = v end
    m3["layer.2.lse_step"] = nil
    load_error(write(t, m3), "layer.2.lse is present", "layer.2.lse_step is missing")
    local m4 = {} for k, v in pairs(m) do m4[k] = v end
    m4["layer.1.step"] = nil
    load_error(write(t, m4), "present", "layer.1.step")
  end)

  it("key block out of range and rows not increasing", function()
    local t, m, l = good()
    local idx = t["layer.1.indices"]:clone()
    idx:set(l:nkb(), 3)
    load_error(write(t, m, nil, {["layer.1.indices"] = idx}), "layer.1.indices", "entry 2", "outside [0, " .. l:nkb() .. ")")
    idx = t["layer.1.indices"]:clone()
    idx:set(-1, 1)
    load_error(write(t, m, nil, {["layer.1.indices"] = idx}), "layer.1.indices", "is key block -1")
    -- a row with two blocks, its second made equal to its first
    local row
    for qb = 1, l:nqb() do if #l:row(1, qb) >= 2 then row = qb break end end
    assert.truthy(row, "the random layout has a row with two blocks")
    local start = 0
    for qb = 1, row - 1 do start = start + #l:row(1, qb) end
    idx = t["layer.1.indices"]:clone()
    idx:set(idx:get(start + 1), start + 2)
    load_error(write(t, m, nil, {["layer.1.indices"] = idx}), "layer.1.indices", "strictly increasing")
  end)

  it("non-monotone offsets and a wrong last offset", function()
    local t, m, l = good()
    local off = t["layer.1.offsets"]:clone() -- i32 [2, nqb + 1]
    local a = off:get(1, 3)
    off:set(off:get(1, 2) - 1, 1, 3)
    assert.is_true(off:get(1, 3) < a)
    load_error(write(t, m, nil, {["layer.1.offsets"] = off}), "layer.1.offsets", "row 2 of head 1 decreases")
    off = t["layer.1.offsets"]:clone()
    off:set(off:get(1, l:nqb() + 1) + 1, 2, 1)
    load_error(write(t, m, nil, {["layer.1.offsets"] = off}), "layer.1.offsets", "head 2 starts at")
    local m2 = {} for k, v in pairs(m) do m2[k] = v end
    m2["layer.1.nnz"] = tostring(l:nnz() - 1)
    load_error(write(t, m2, nil, {["layer.1.indices"] = t["layer.1.indices"]:narrow(1, 1, l:nnz() - 1):clone()}),
      "layer.1.offsets")
  end)

  it("wrong lse shape, non-finite lse, wrong dtypes and shapes", function()
    local t, m = good()
    load_error(write(t, m, nil, {["layer.1.lse"] = adaspa.randn({3, 400}, {seed = 1})}), "layer.1.lse", "does not fit the layout")
    load_error(write(t, m, nil, {["layer.1.lse"] = adaspa.randn({2, 129}, {seed = 1})}), "layer.1.lse", "[2, 129]")
    load_error(write(t, m, nil, {["layer.1.lse"] = adaspa.randn({2, 400}, {seed = 1}):to("bf16")}), "layer.1.lse",
      "expected f32 with 2 dimensions, found bf16")
    local bad = t["layer.2.lse"]:clone()
    bad:set(0 / 0, 2, 5)
    load_error(write(t, m, nil, {["layer.2.lse"] = bad}), "layer.2.lse", "element [2, 5] is nan")
    load_error(write(t, m, nil, {["layer.1.offsets"] = t["layer.1.offsets"]:to("f32")}), "layer.1.offsets",
      "expected i32", "found f32")
    load_error(write(t, m, nil, {["layer.1.recall"] = adaspa.full({3}, 0.5)}), "layer.1.recall", "expected f32 [2], found f32 [3]")
    load_error(write(t, m, nil, {["layer.1.recall"] = adaspa.full({2}, 1.5)}), "layer.1.recall", "outside [0, 1]")
    local den = t["layer.1.density"]:clone()
    den:set(den:get(1) + 0.125, 1)
    load_error(write(t, m, nil, {["layer.1.density"] = den}), "layer.1.density", "the layout's density")
  end)

  it("bad metadata, unexpected keys, not a cache, no file", function()
    local t, m = good()
    local function with(k, v) local r = {} for a, b in pairs(m) do r[a] = b end r[k] = v return r end
    load_error(write(t, with("layer.1.heads", "two")), "metadata layer.1.heads must be an integer", "'two'")
    load_error(write(t, with("layer.1.block", "96")), "layer.1.block must be 64 or 128")
    load_error(write(t, with("n_layers", "0")), "metadata n_layers")
    load_error(write(t, with("version", "9")), "version")
    load_error(write(t, m, nil, {["layer.3.lse"] = adaspa.randn({2, 400}, {seed = 1})}), "unexpected tensor 'layer.3.lse'")
    load_error(write(t, m, nil, {["layer.1.mass"] = adaspa.randn({2}, {seed = 1})}), "unexpected tensor 'layer.1.mass'")
    load_error(write(t, with("layer.1.colour", "blue")), "unexpected metadata key 'layer.1.colour'")
    local plain = tmp()
    adaspa.safetensors.save(plain, {w = adaspa.randn({2, 2}, {seed = 1})})
    load_error(plain, "not an adaspa cache file")
    local missing = tmp()
    load_error(missing, "safetensors")
    spec_error(function() adaspa.Cache.load(7) end, "adaspa.Cache.load", "path must be a string")
  end)
end)

describe("adaspa.Cache arguments", function()
  after_each(cleanup)

  it("new checks n_layers", function()
    for _, bad in ipairs({0, -1, 1.5, "3"}) do
      spec_error(function() adaspa.Cache.new(bad) end, "adaspa.Cache.new", "n_layers must be an integer in [1, 1000000]")
    end
    spec_error(function() adaspa.Cache.new() end, "adaspa.Cache.new", "got no value")
  end)

  it("layer out of range and wrong types", function()
    local c = adaspa.Cache.new(3)
    for _, m in ipairs({"layout", "lse", "step", "lse_step", "density", "recall", "clear"}) do
      spec_error(function() c[m](c, 4) end, "cache:" .. m, "layer must be an integer in [1, 3], got 4")
      spec_error(function() c[m](c, 0) end, "cache:" .. m, "got 0")
      spec_error(function() c[m](c, "1") end, "cache:" .. m, "got string")
    end
    spec_error(function() c:set(4, {}) end, "cache:set", "layer must be an integer in [1, 3]")
    spec_error(function() c.layers(5) end, "cache:layers", "self must be a cache, got number")
    spec_error(function() c.set({}, 1, {}) end, "cache:set", "self must be a cache, got table")
  end)

  it("set checks its fields", function()
    local c = adaspa.Cache.new(2)
    local l = rand_layout(2, 300, 1)
    local lse = adaspa.randn({2, 300}, {seed = 1})
    spec_error(function() c:set(1, lse) end, "cache:set", "fields must be a table", "got tensor")
    spec_error(function() c:set(1) end, "cache:set", "fields must be a table", "got no value")
    spec_error(function() c:set(1, {lyout = l, step = 1}) end, "cache:set", "unknown option 'lyout'")
    spec_error(function() c:set(1, {}) end, "cache:set", "at least one of layout, lse and recall")
    spec_error(function() c:set(1, {layout = lse, step = 1}) end, "cache:set", "fields.layout must be a layout, got tensor")
    spec_error(function() c:set(1, {lse = l, step = 1}) end, "cache:set", "fields.lse must be a tensor")
    spec_error(function() c:set(1, {layout = l}) end, "cache:set", "fields.step must be an integer >= 0", "got nothing")
    spec_error(function() c:set(1, {layout = l, step = -1}) end, "cache:set", "fields.step", "got -1")
    spec_error(function() c:set(1, {layout = l, step = 2.5}) end, "cache:set", "fields.step", "got 2.5")
    spec_error(function() c:set(1, {recall = {0.5, 0.5}, step = 1}) end, "cache:set", "fields.step")
    spec_error(function() c:set(1, {recall = {0.5, 0.5}}) end, "cache:set", "fields.recall needs a layout", "layer 1 has none")
    spec_error(function() c:set(1, {layout = l, step = 1, recall = {0.5}}) end, "cache:set", "fields.recall must be a table of 2 numbers", "of 1")
    spec_error(function() c:set(1, {layout = l, step = 1, recall = {0.5, 1.5}}) end, "cache:set", "fields.recall[2] = 1.5 is outside [0, 1]")
    spec_error(function() c:set(1, {layout = l, step = 1, recall = {0.5, "x"}}) end, "cache:set", "fields.recall[2] must be a number")
    spec_error(function() c:set(1, {lse = adaspa.randn({2, 300}, {seed = 1}):to("bf16"), step = 1}) end, "cache:set",
      "layer 1: lse must be a contiguous f32 tensor [H, S], got bf16 [2, 300]")
    spec_error(function() c:set(1, {lse = adaspa.randn({2, 3, 50}, {seed = 1}), step = 1}) end, "cache:set", "got f32 [2, 3, 50]")
    spec_error(function() c:set(1, {lse = adaspa.randn({300, 2}, {seed = 1}):transpose(1, 2), step = 1}) end, "cache:set",
      "got non-contiguous f32 [2, 300]")
    -- layout and lse must agree: together, and against what the layer keeps
    spec_error(function() c:set(1, {layout = l, lse = adaspa.randn({3, 300}, {seed = 1}), step = 1}) end, "cache:set",
      "layer 1: lse has shape [3, 300]", "needs [2, S] with 257 <= S <= 320")
    spec_error(function() c:set(1, {layout = l, lse = adaspa.randn({2, 400}, {seed = 1}), step = 1}) end, "cache:set", "[2, 400]")
    c:set(1, {layout = l, step = 1})
    spec_error(function() c:set(1, {lse = adaspa.randn({2, 256}, {seed = 1}), step = 2}) end, "cache:set",
      "the layout (cached)", "set layout and lse together, or clear the layer first")
    c:set(2, {lse = lse, step = 1})
    spec_error(function() c:set(2, {layout = adaspa.layout.full(3, 5, 5), step = 2}) end, "cache:set", "lse (cached)")
    -- nothing changed by the failures
    assert.equal(1, c:step(1)); assert.is_nil(c:lse(1)); assert.is_nil(c:layout(2)); assert.equal(1, c:lse_step(2))
    -- both together may change the shapes
    c:set(2, {layout = adaspa.layout.full(3, 5, 5), lse = adaspa.randn({3, 300}, {seed = 2}), step = 3})
    assert.equal(3, c:layout(2):heads())
    l:free()
    spec_error(function() c:set(1, {layout = l, step = 1}) end, "cache:set", "fields.layout is layout #", "freed")
  end)

  it("save reports bad paths", function()
    local c = adaspa.Cache.new(1)
    c:set(1, {lse = adaspa.randn({1, 10}, {seed = 1}), step = 0})
    spec_error(function() c:save(nil) end, "cache:save", "path must be a string, got nil")
    spec_error(function() c:save("/nonexistent-dir/x.safetensors") end, "cache:save", "/nonexistent-dir/x.safetensors")
  end)

  it("use after free names the cache; free twice and garbage collection are fine", function()
    local c = adaspa.Cache.new(2)
    c:set(1, {layout = rand_layout(2, 200, 1), lse = adaspa.randn({2, 200}, {seed = 1}), step = 1})
    local kept = c:layout(1)
    c:free()
    c:free()
    for _, m in ipairs({"layout", "lse", "step", "lse_step", "density", "recall", "clear", "layers", "stats"}) do
      spec_error(function() c[m](c, 1) end, "cache:" .. m, "self is cache #", "(2 layers), which was freed")
    end
    spec_error(function() c:set(1, {lse = adaspa.randn({2, 200}, {seed = 1}), step = 1}) end, "cache:set", "freed")
    spec_error(function() c:save(tmp()) end, "cache:save", "freed")
    assert.truthy(tostring(c):find("freed; was 2 layers", 1, true))
    assert.equal(2, kept:heads()) -- a layout taken out of the cache outlives it
    for i = 1, 5 do
      local g = adaspa.Cache.new(3)
      g:set(2, {layout = rand_layout(1, 100, i), lse = adaspa.randn({1, 100}, {seed = i}), step = i})
    end
    collectgarbage(); collectgarbage()
  end)
end)
