-- Synthetic HunyuanVideo weights (adaspa.models.hunyuan_synth): every name and shape of
-- hy.weight_shapes, deterministic per seed (and thread count), bad options rejected, a mixed
-- plan of head kinds, and -- on a tiny grid -- attention with the structure the construction
-- promises: far above random weights' recall of the top blocks, spatial and temporal heads
-- taking different blocks, text keys as sinks in the strong-sink heads, stable masks across steps.
local hy = require "adaspa.models.hunyuan"
local synth = require "adaspa.models.hunyuan_synth"

-- A tiny configuration: 1 double + 1 single block, grid 3x16x20 (960 image + 32 text tokens,
-- 16 key blocks of 64).
local function tiny(heads)
  return hy.config("small", {heads = heads, hidden = heads * 128, text_dim = 64, pooled_dim = 32, mlp_ratio = 1,
    layers = {double = 1, single = 1, refiner = 1}, video = {frames = 9, width = 320, height = 256}})
end

local function identical(a, b)
  local d = adaspa.add(a, adaspa.scale(b, -1))
  return d:max() == 0 and d:min() == 0
end

describe("hunyuan_synth.weights", function()
  local cfg = tiny(2)
  local W = synth.weights(cfg, {seed = 3})

  it("gives every weight of hy.weight_shapes with its shape, f32 and finite, and nothing else", function()
    local shapes, n = hy.weight_shapes(cfg), 0
    for name, shape in pairs(shapes) do
      local t = W[name]
      assert(t, "missing " .. name)
      assert.are.same(shape, t:shape(), name)
      assert.are.equal("f32", t:dtype(), name)
      local norm = t:norm()
      assert(norm == norm and norm < math.huge, name .. " is not finite")
      n = n + 1
    end
    for name in pairs(W) do assert(shapes[name], "unexpected weight " .. name) end
    assert(n > 50)
    hy.new(cfg, W)                                           -- the model accepts them
  end)

  it("is deterministic: the same seed gives identical tensors (also with 1 thread); other seeds differ", function()
    local threads = adaspa.threads()
    adaspa.threads(1)
    local ok, again = pcall(synth.weights, cfg, {seed = 3})
    adaspa.threads(threads)
    assert(ok, again)
    local other = synth.weights(cfg, {seed = 4})
    local differ, random = 0, 0
    for name, t in pairs(W) do
      assert(identical(t, again[name]), name .. " differs between two calls with seed 3")
      if #t:shape() == 2 then
        random = random + 1
        if not identical(t, other[name]) then differ = differ + 1 end
      end
    end
    assert(random > 20)
    assert.are.equal(random, differ)                         -- every weight matrix changes with the seed
  end)

  it("structure = false gives the same shapes with no bias structure", function()
    local R = synth.weights(cfg, {seed = 3, structure = false})
    for name, t in pairs(W) do assert.are.same(t:shape(), R[name]:shape(), name) end
    -- the structured q bias is large (RMS 1); the random one small
    local b = R["double_blocks.0.img_attn_qkv.bias"]:narrow(1, 1, cfg.hidden)
    assert(b:norm() / math.sqrt(cfg.hidden) < 0.1)
    b = W["double_blocks.0.img_attn_qkv.bias"]:narrow(1, 1, cfg.hidden)
    assert(math.abs(b:norm() / math.sqrt(cfg.hidden) - 1) < 0.05)
  end)

  it("rejects bad options, naming the option", function()
    spec_error(function() synth.weights(cfg, {sede = 1}) end, "hunyuan_synth.weights", "sede")
    spec_error(function() synth.weights(cfg, {seed = -1}) end, "hunyuan_synth.weights", "seed", "-1")
    spec_error(function() synth.weights(cfg, {seed = 1.5}) end, "hunyuan_synth.weights", "seed")
    spec_error(function() synth.weights(cfg, {constants = {qk = 1}}) end, "hunyuan_synth.weights", "qk")
    spec_error(function() synth.weights(cfg, {constants = {qk_norm = "x"}}) end, "qk_norm", "number")
  end)
end)

describe("hunyuan_synth.plan", function()
  it("mixes every kind, reach and sink level; each layer of 24 heads has all four kinds", function()
    local cfg = hy.config("720p")
    local plan = synth.plan(cfg)
    assert.are.equal(cfg.layers.double + cfg.layers.single, #plan)
    local seen = {}
    for l, heads in ipairs(plan) do
      assert.are.equal(cfg.heads, #heads)
      local kinds = {}
      for _, hd in ipairs(heads) do
        kinds[hd.kind] = true
        seen[hd.kind] = true; seen["reach" .. hd.reach] = true; seen[hd.sink] = true
      end
      for _, k in ipairs({"spatial", "temporal", "local", "wide"}) do assert(kinds[k], "layer " .. l .. " has no " .. k) end
    end
    for _, k in ipairs({"reach1", "reach2", "reach3", "weak", "medium", "strong"}) do assert(seen[k], k) end
  end)
end)

describe("hunyuan_synth attention structure (tiny grid, 4 heads)", function()
  local cfg = tiny(4)
  local grid, lat = hy.grid(cfg.video)
  local n_img = grid[1] * grid[2] * grid[3]
  local B = 64
  local text = {states = adaspa.randn({cfg.text_len, cfg.text_dim}, {seed = 11}),
    pooled = adaspa.randn({1, cfg.pooled_dim}, {seed = 12}), valid = 10}
  local x = adaspa.randn(lat, {seed = 13})
  local x2 = adaspa.add(x, adaspa.scale(adaspa.randn(lat, {seed = 14}), 0.2))

  -- per layer: {mass [H, nqb, nkb], mask (table), recall (per head), text share (per head)}
  local function measure(W, xin, t)
    local out = {}
    local ctx = {attention = function(_, q, k, v, info)
      local o, lse = adaspa.attention(q, k, v, {kv_valid = info.kv_valid})
      local mass = adaspa.block_mass(q, k, lse, {block = B, kv_valid = info.kv_valid})
      local lay = adaspa.layout.topk(mass, {density = 0.2})
      local m, share = mass:totable(), {}
      for h = 1, #m do                                    -- image query blocks' mass on the text block
        local s = 0
        for qb = 1, n_img / B do s = s + m[h][qb][#m[h][qb]] end
        share[h] = s / (n_img / B)
      end
      out[info.layer] = {recall = lay:recall(mass), mask = lay:to_mask():totable(), text = share}
      return o
    end}
    hy.new(cfg, W):forward(xin, t, text, 6.0, ctx)
    return out
  end
  local function jaccard(a, b)
    local i, u = 0, 0
    for qb = 1, #a do
      for kb = 1, #a[qb] do
        if a[qb][kb] ~= 0 and b[qb][kb] ~= 0 then i = i + 1 end
        if a[qb][kb] ~= 0 or b[qb][kb] ~= 0 then u = u + 1 end
      end
    end
    return i / u
  end
  local function mean_recall(res)
    local s, n = 0, 0
    for _, l in ipairs(res) do for _, r in ipairs(l.recall) do s = s + r; n = n + 1 end end
    return s / n
  end

  local plan = synth.plan(cfg)
  local S = measure(synth.weights(cfg, {seed = 1}), x, 900)

  it("keeps far more mass in the top 20% of blocks than random weights", function()
    local R = measure(synth.weights(cfg, {seed = 1, structure = false}), x, 900)
    local rs, rr = mean_recall(S), mean_recall(R)
    assert(rr < 0.3, string.format("random weights' recall %.3f", rr))
    assert(rs > rr + 0.35, string.format("synthetic recall %.3f vs random %.3f", rs, rr))
    -- wide heads stay wide, local heads local
    for l, heads in ipairs(plan) do
      for h, hd in ipairs(heads) do
        if hd.kind == "wide" then assert(S[l].recall[h] < 0.4, "wide head recall " .. S[l].recall[h]) end
        if hd.kind == "local" and hd.reach == 1 then assert(S[l].recall[h] > 0.8, "local head recall " .. S[l].recall[h]) end
      end
    end
  end)

  it("gives spatial and temporal heads different masks", function()
    local checked = 0
    for l, heads in ipairs(plan) do
      for hs, a in ipairs(heads) do
        for ht, b in ipairs(heads) do
          if a.kind == "spatial" and b.kind == "temporal" then
            local j = jaccard(S[l].mask[hs], S[l].mask[ht])
            assert(j < 0.5, string.format("layer %d: spatial head %d and temporal head %d overlap %.3f", l, hs, ht, j))
            checked = checked + 1
          end
        end
      end
    end
    assert(checked >= 1)
  end)

  it("makes text keys sinks in the strong-sink heads only", function()
    local strong, weak = 1, 0
    for l, heads in ipairs(plan) do
      for h, hd in ipairs(heads) do
        if hd.sink == "strong" then strong = math.min(strong, S[l].text[h]) end
        if hd.sink == "weak" then weak = math.max(weak, S[l].text[h]) end
      end
    end
    assert(strong > 0.1, string.format("strong-sink heads' text share %.4f", strong))
    assert(weak < 0.01, string.format("weak-sink heads' text share %.4f", weak))
  end)

  it("keeps the masks across steps (later timestep, slightly changed latent)", function()
    local S2 = measure(synth.weights(cfg, {seed = 1}), x2, 700)
    local sum, n = 0, 0
    for l = 1, #S do
      for h = 1, cfg.heads do sum = sum + jaccard(S[l].mask[h], S2[l].mask[h]); n = n + 1 end
    end
    assert(sum / n > 0.85, string.format("mean Jaccard across steps %.3f", sum / n))
  end)
end)
