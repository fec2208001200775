-- adaspa.weights: HunyuanVideo checkpoints in the original and the diffusers key layouts
-- (load, save, validation errors, describe) and the `adaspa weights FILE` command.
local hy = require "adaspa.models.hunyuan"
local weights = require "adaspa.weights"

local cfg = hy.config("small", {hidden = 256, heads = 2, layers = {double = 1, single = 1, refiner = 1},
  text_dim = 64, pooled_dim = 32})
local shapes = hy.weight_shapes(cfg)
local names = {}
for n in pairs(shapes) do names[#names + 1] = n end
table.sort(names)

local function random_weights(seed0)
  local w = {}
  for i, n in ipairs(names) do w[n] = adaspa.scale(adaspa.randn(shapes[n], {seed = seed0 + i}), 0.02) end
  return w
end

-- true when a and b have the same shape and dtype and equal elements (a + (-b) is exact)
local function identical(a, b)
  if a:dtype() ~= b:dtype() or table.concat(a:shape(), ",") ~= table.concat(b:shape(), ",") then return false end
  local x, y = a:to("f32"):reshape({-1}), b:to("f32"):reshape({-1})
  return adaspa.add(x, adaspa.scale(y, -1)):norm() == 0
end

-- a tiny forward pass: latent of a 64x32, 5-frame video; 8 text tokens of which 5 are valid
local function forward(w)
  local _, latent = hy.grid({width = 64, height = 32, frames = 5})
  local x = adaspa.randn(latent, {seed = 7})
  local text = {states = adaspa.randn({8, cfg.text_dim}, {seed = 8}), valid = 5,
    pooled = adaspa.randn({1, cfg.pooled_dim}, {seed = 9})}
  return hy.new(cfg, w):forward(x, 700, text, 6.0)
end

describe("adaspa.weights", function()
  local w, orig, diff
  local made = {}
  local function tmp()   -- a new temporary file, removed at the end
    local p = os.tmpname()
    made[#made + 1] = p
    return p
  end
  local function save_raw(t)   -- a name -> tensor table straight to a new file
    local p = tmp()
    adaspa.safetensors.save(p, t)
    return p
  end
  -- the diffusers file's tensors with some keys replaced (false removes a key)
  local function diff_with(changes)
    local raw = adaspa.safetensors.load(diff)
    for k, v in pairs(changes) do raw[k] = v or nil end
    return save_raw(raw)
  end

  setup(function()
    w = random_weights(100)
    orig, diff = tmp(), tmp()
    weights.save(orig, w, "original")
    weights.save(diff, w, "diffusers")
  end)
  teardown(function()
    for _, p in ipairs(made) do os.remove(p) end
  end)

  it("hy.config takes the tiny overrides", function()
    assert.same({256, 2, 128, 64, 32}, {cfg.hidden, cfg.heads, cfg.head_dim, cfg.text_dim, cfg.pooled_dim})
    assert.same({double = 1, single = 1, refiner = 1}, cfg.layers)
  end)

  it("writes diffusers' names, splits and order", function()
    local info = adaspa.safetensors.info(diff)
    local got = {}
    for _, e in ipairs(info) do
      got[e.name] = table.concat(e.shape, ",")
      assert.falsy(e.name:match("^double_blocks") or e.name:match("^single_blocks") or e.name:match("^txt_in")
        or e.name:match("^final_layer") or e.name:match("^img_in"), e.name)
    end
    -- 74 original keys; 3 fused qkv pairs become 3 parts (+12), linear1's pair becomes 4 parts (+6)
    assert.equal(#names + 12 + 6, #info)
    local want = {
      ["x_embedder.proj.weight"] = "256,16,1,2,2",
      ["time_text_embed.timestep_embedder.linear_1.weight"] = "256,256",
      ["time_text_embed.guidance_embedder.linear_2.bias"] = "256",
      ["time_text_embed.text_embedder.linear_1.weight"] = "256,32",
      ["context_embedder.proj_in.weight"] = "256,64",
      ["context_embedder.time_text_embed.timestep_embedder.linear_2.weight"] = "256,256",
      ["context_embedder.time_text_embed.text_embedder.linear_1.weight"] = "256,64",
      ["context_embedder.token_refiner.refiner_blocks.0.norm1.weight"] = "256",
      ["context_embedder.token_refiner.refiner_blocks.0.attn.to_v.bias"] = "256",
      ["context_embedder.token_refiner.refiner_blocks.0.attn.to_out.0.weight"] = "256,256",
      ["context_embedder.token_refiner.refiner_blocks.0.ff.net.0.proj.weight"] = "1024,256",
      ["context_embedder.token_refiner.refiner_blocks.0.ff.net.2.weight"] = "256,1024",
      ["context_embedder.token_refiner.refiner_blocks.0.norm_out.linear.weight"] = "512,256",
      ["transformer_blocks.0.norm1.linear.weight"] = "1536,256",
      ["transformer_blocks.0.norm1_context.linear.bias"] = "1536",
      ["transformer_blocks.0.attn.to_q.weight"] = "256,256",
      ["transformer_blocks.0.attn.add_k_proj.bias"] = "256",
      ["transformer_blocks.0.attn.norm_q.weight"] = "128",
      ["transformer_blocks.0.attn.norm_added_k.weight"] = "128",
      ["transformer_blocks.0.attn.to_out.0.weight"] = "256,256",
      ["transformer_blocks.0.attn.to_add_out.weight"] = "256,256",
      ["transformer_blocks.0.ff.net.0.proj.weight"] = "1024,256",
      ["transformer_blocks.0.ff_context.net.2.weight"] = "256,1024",
      ["single_transformer_blocks.0.attn.to_k.weight"] = "256,256",
      ["single_transformer_blocks.0.proj_mlp.weight"] = "1024,256",
      ["single_transformer_blocks.0.proj_mlp.bias"] = "1024",
      ["single_transformer_blocks.0.proj_out.weight"] = "256,1280",
      ["single_transformer_blocks.0.attn.norm_k.weight"] = "128",
      ["single_transformer_blocks.0.norm.linear.weight"] = "768,256",
      ["proj_out.weight"] = "64,256",
      ["norm_out.linear.weight"] = "512,256",
    }
    for k, s in pairs(want) do assert.equal(s, got[k], k) end
    -- the values: q/k/v are row thirds, linear1 is q|k|v|mlp, the final adaLN is stored (scale, shift)
    local raw = adaspa.safetensors.load(diff)
    local h = cfg.hidden
    assert.is_true(identical(raw["transformer_blocks.0.attn.add_k_proj.weight"],
      w["double_blocks.0.txt_attn_qkv.weight"]:narrow(1, h + 1, h)))
    assert.is_true(identical(raw["context_embedder.token_refiner.refiner_blocks.0.attn.to_v.bias"],
      w["txt_in.individual_token_refiner.blocks.0.self_attn_qkv.bias"]:narrow(1, 2 * h + 1, h)))
    assert.is_true(identical(raw["single_transformer_blocks.0.proj_mlp.weight"],
      w["single_blocks.0.linear1.weight"]:narrow(1, 3 * h + 1, 4 * h)))
    assert.is_true(identical(raw["single_transformer_blocks.0.attn.to_v.bias"],
      w["single_blocks.0.linear1.bias"]:narrow(1, 2 * h + 1, h)))
    local ada = w["final_layer.adaLN_modulation.1.weight"]
    assert.is_true(identical(raw["norm_out.linear.weight"]:narrow(1, 1, h), ada:narrow(1, h + 1, h)))
    assert.is_true(identical(raw["norm_out.linear.weight"]:narrow(1, h + 1, h), ada:narrow(1, 1, h)))
    assert.is_false(identical(raw["norm_out.linear.weight"], ada))
  end)

  it("loads both layouts back to the original tensors exactly", function()
    local a, b = weights.load(orig, cfg), weights.load(diff, cfg)
    local n = 0
    for _, name in ipairs(names) do
      assert.is_true(identical(a[name], w[name]), name)
      assert.is_true(identical(b[name], w[name]), name)
      assert.equal("cpu", b[name]:device())
      n = n + 1
    end
    for k in pairs(b) do assert.truthy(shapes[k], k) end
    assert.equal(74, n)
  end)

  it("gives the model identical outputs from either file", function()
    local ref = forward(w)
    assert.is_true(ref:norm() > 0)
    assert.equal(0, spec_maxdiff(forward(weights.load(orig, cfg)), ref))
    assert.equal(0, spec_maxdiff(forward(weights.load(diff, cfg)), ref))
    -- the check can fail: the final adaLN left in diffusers' (scale, shift) order changes the output
    local swapped = {}
    for k, v in pairs(w) do swapped[k] = v end
    local raw = adaspa.safetensors.load(diff)
    swapped["final_layer.adaLN_modulation.1.weight"] = raw["norm_out.linear.weight"]
    swapped["final_layer.adaLN_modulation.1.bias"] = raw["norm_out.linear.bias"]
    assert.is_true(spec_maxdiff(forward(swapped), ref) > 0)
  end)

  it("converts the dtype on request and keeps the stored one by default", function()
    local wb = {}
    for k, v in pairs(w) do wb[k] = v:to("bf16") end
    local p = tmp()
    weights.save(p, wb, "diffusers")
    local as_stored, as_f16 = weights.load(p, cfg), weights.load(p, cfg, {dtype = "f16", device = "cpu"})
    local to_bf16 = weights.load(orig, cfg, {dtype = "bf16"})
    for _, name in ipairs(names) do
      assert.is_true(identical(as_stored[name], wb[name]), name)
      assert.is_true(identical(as_f16[name], wb[name]:to("f16")), name)
      assert.is_true(identical(to_bf16[name], wb[name]), name)
    end
    spec_error(function() weights.load(orig, cfg, {dtype = "i32"}) end, "weights.load", "opts.dtype", "i32")
    spec_error(function() weights.load(orig, cfg, {dtyp = "f32"}) end, "weights.load", "unknown option 'dtyp'")
    spec_error(function() weights.load(orig, "small") end, "weights.load", "cfg must be")
  end)

  it("names the file and the key of a missing, unexpected, misshapen or non-float tensor", function()
    local p = diff_with({["transformer_blocks.0.attn.add_k_proj.bias"] = false})
    spec_error(function() weights.load(p, cfg) end, "weights.load", p, "diffusers layout",
      "missing key 'transformer_blocks.0.attn.add_k_proj.bias'", "expected shape [256]")
    p = diff_with({["transformer_blocks.0.attn.extra.weight"] = adaspa.randn({3, 4}, {seed = 1})})
    spec_error(function() weights.load(p, cfg) end, p, "unexpected key 'transformer_blocks.0.attn.extra.weight'",
      "[3, 4]")
    p = diff_with({["single_transformer_blocks.0.proj_mlp.weight"] = adaspa.randn({1000, 256}, {seed = 2})})
    spec_error(function() weights.load(p, cfg) end, p, "key 'single_transformer_blocks.0.proj_mlp.weight'",
      "shape [1000, 256], expected [1024, 256]")
    p = diff_with({["norm_out.linear.bias"] = adaspa.scale(adaspa.randn({512}, {seed = 3}), 100):to("i32")})
    spec_error(function() weights.load(p, cfg) end, p, "key 'norm_out.linear.bias'", "dtype i32",
      "expected f32, bf16 or f16")
    -- the original layout too
    local raw = adaspa.safetensors.load(orig)
    raw["double_blocks.0.txt_attn_qkv.weight"] = nil
    p = save_raw(raw)
    spec_error(function() weights.load(p, cfg) end, p, "original layout",
      "missing key 'double_blocks.0.txt_attn_qkv.weight'", "[768, 256]")
    -- a complete file of other sizes: the first problem, with the config it was checked against
    spec_error(function() weights.load(orig, hy.config("small")) end, orig,
      "key 'txt_in.c_embedder.linear_1.weight' has shape [256, 64], expected [256, 4096]", "32 missing", "config small")
  end)

  it("refuses a file of neither layout and passes on a malformed file's error with its name", function()
    local p = save_raw({["encoder.layer.0.weight"] = adaspa.randn({4, 4}, {seed = 4}),
      ["decoder.bias"] = adaspa.randn({4}, {seed = 5})})
    spec_error(function() weights.load(p, cfg) end, "weights.load", p, "cannot tell the key layout", "decoder.bias")
    local f = assert(io.open(orig, "rb"))
    local bytes = f:read("*a")
    f:close()
    local cut = tmp()
    f = assert(io.open(cut, "wb"))
    f:write(bytes:sub(1, math.floor(#bytes / 2)))
    f:close()
    spec_error(function() weights.load(cut, cfg) end, cut)
    spec_error(function() weights.describe(cut) end, cut)
  end)

  it("save checks its arguments", function()
    spec_error(function() weights.save(tmp(), w, "onnx") end, "weights.save", "layout", "onnx")
    spec_error(function() weights.save(tmp(), {["not.a.hunyuan.weight"] = w["final_layer.linear.weight"]},
      "diffusers") end, "weights.save", "not.a.hunyuan.weight")
    spec_error(function() weights.save(tmp(), {["single_blocks.0.linear1.bias"] = w["single_blocks.0.linear1.bias"]},
      "diffusers") end, "single_blocks.0.linear1.weight")
    spec_error(function() weights.save(tmp(), {x = 3}, "original") end, "weights['x'] must be a tensor")
  end)

  it("describe reports the layout, the sizes and completeness per preset", function()
    local rep = weights.describe(diff)
    assert.equal("diffusers", rep.layout)
    assert.equal(92, rep.tensors)
    local numel = 0
    for _, n in ipairs(names) do numel = numel + w[n]:numel() end
    assert.equal(4 * numel, rep.bytes)
    assert.same({f32 = 92}, rep.dtypes)
    assert.same({"inferred"}, rep.complete)
    local c = rep.inferred
    assert.same({256, 2, 128, 4, 64, 32, 16}, {c.hidden, c.heads, c.head_dim, c.mlp_ratio, c.text_dim,
      c.pooled_dim, c.in_channels})
    assert.same({double = 1, single = 1, refiner = 1}, c.layers)
    assert.same({}, rep.assumed)
    local by = {}
    for _, cand in ipairs(rep.candidates) do by[cand.name] = cand end
    assert.truthy(by["720p"] and by.small and by.inferred)
    assert.is_false(by.small.complete)
    assert.equal(3, by.small.n_shape)
    assert.truthy(table.concat(by.small.mismatched, "\n"):find(
      "context_embedder.proj_in.weight: expected [256, 4096], found [256, 64]", 1, true))
    assert.truthy(by.small.missing[1]:find("_blocks.1.", 1, true))
    assert.equal(0, by.inferred.n_missing + by.inferred.n_shape + by.inferred.n_unexpected)
    assert.equal("original", weights.describe(orig).layout)
    assert.same({"inferred"}, weights.describe(orig).complete)

    local p = diff_with({["transformer_blocks.0.ff.net.2.bias"] = false,
      ["extra.thing"] = adaspa.randn({2}, {seed = 6})})
    rep = weights.describe(p)
    assert.same({}, rep.complete)
    by = {}
    for _, cand in ipairs(rep.candidates) do by[cand.name] = cand end
    assert.same({"transformer_blocks.0.ff.net.2.bias [256]"}, by.inferred.missing)
    assert.same({"extra.thing [2]"}, by.inferred.unexpected)

    p = diff_with({["norm_out.linear.bias"] = adaspa.scale(adaspa.randn({512}, {seed = 9}), 100):to("i16")})
    rep = weights.describe(p)
    assert.same({"norm_out.linear.bias (i16)"}, rep.bad_dtypes)
    assert.same({}, rep.complete)

    p = save_raw({["encoder.weight"] = adaspa.randn({2, 2}, {seed = 7})})
    rep = weights.describe(p)
    assert.is_nil(rep.layout)
    assert.truthy(rep.layout_error:find("cannot tell the key layout", 1, true))
    assert.same({}, rep.complete)
  end)

  it("adaspa weights FILE prints the report; exit 0 only for a complete checkpoint", function()
    local out, err, code = spec_run("weights " .. diff)
    assert.equal(0, code, err)
    assert.truthy(out:find("layout    diffusers", 1, true), out)
    assert.truthy(out:find("inferred  hidden 256, heads 2 x head_dim 128", 1, true), out)
    assert.truthy(out:find("inferred  complete", 1, true), out)
    assert.truthy(out:find("small     not complete", 1, true), out)
    assert.truthy(out:find("complete checkpoint for: inferred", 1, true), out)

    local p = diff_with({["single_transformer_blocks.0.attn.norm_k.weight"] = false})
    out, err, code = spec_run("weights " .. p)
    assert.equal(1, code, err)
    assert.truthy(out:find("missing     single_transformer_blocks.0.attn.norm_k.weight [128]", 1, true), out)
    assert.truthy(out:find("not a complete checkpoint", 1, true), out)

    p = save_raw({["encoder.weight"] = adaspa.randn({2, 2}, {seed = 8})})
    out, err, code = spec_run("weights " .. p)
    assert.equal(1, code, err)
    assert.truthy(out:find("cannot tell the key layout", 1, true), out)

    out, err, code = spec_run("weights /nonexistent/x.safetensors")
    assert.equal(1, code)
    assert.truthy(err:find("/nonexistent/x.safetensors", 1, true), err)
    out, err, code = spec_run("weights")
    assert.equal(1, code)
    assert.truthy(err:find("usage: adaspa weights FILE", 1, true), err)
  end)

  it("block counts come from indices without gaps, never from the largest index", function()
    -- a lone key with a huge index: work stays bounded by the file (before, 10 GB and minutes)
    local p = save_raw({["transformer_blocks.1000000000.attn.to_q.weight"] = adaspa.randn({1}, {seed = 3})})
    local t0 = adaspa.now()
    local rep = weights.describe(p)
    assert.is_true(adaspa.now() - t0 < 5)
    assert.equal("diffusers", rep.layout)
    assert.same({double = 0, single = 0, refiner = 0}, rep.inferred.layers)
    assert.truthy(rep.inferred_error:find("double block indices must run from 0 without gaps: key " ..
      "'transformer_blocks.1000000000.attn.to_q.weight' has index 1000000000 but no key has index 0", 1, true),
      rep.inferred_error)
    assert.same({}, rep.complete)
    local out, _, code = spec_run("weights " .. p)
    assert.equal(1, code)
    assert.truthy(out:find("config: double block indices must run from 0", 1, true), out)

    -- a complete file plus one block far past the others: the count stays at the real blocks
    p = diff_with({["single_transformer_blocks.7.attn.norm_k.weight"] = adaspa.randn({128}, {seed = 4})})
    rep = weights.describe(p)
    assert.same({double = 1, single = 1, refiner = 1}, rep.inferred.layers)
    assert.truthy(rep.inferred_error:find("single block indices must run from 0 without gaps: key " ..
      "'single_transformer_blocks.7.attn.norm_k.weight' has index 7 but no key has index 1", 1, true),
      rep.inferred_error)
    assert.same({}, rep.complete)
  end)
end)
